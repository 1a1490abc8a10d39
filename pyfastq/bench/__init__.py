"""pyfastq's benchmark (``pyfastq bench``): Python producers feeding a TF graph, against the tools people use today.

Importing pyfastq does not import this; it imports TensorFlow.
"""
