"""pyfastq: feed TensorFlow from Python producers at the speed of memory.

    q = pyfastq.Queue(tf.TensorSpec([128, 100], tf.float32), capacity=8)
    with pyfastq.Producer(q, lambda i, n: batches()):
        model.fit(q.dataset(), epochs=1)
"""

from ._errors import QueueClosed
from .backends import native_unavailable
from .producer import Producer
from .queue import Queue

__version__ = "0.1.0"
__all__ = ["Queue", "Producer", "QueueClosed", "native_unavailable", "__version__"]
