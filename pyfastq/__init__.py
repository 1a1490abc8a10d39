"""pyfastq: feed TensorFlow from Python producers at the speed of memory.

    q = pyfastq.Queue(tf.TensorSpec([128, 100], tf.float32), capacity=8)
    with pyfastq.Producer(q, lambda i, n: batches()):
        model.fit(q.dataset(), epochs=1)
"""

from ._errors import QueueClosed
from ._worker import WorkerInfo, worker_info
from .backends import native_unavailable
from .producer import Producer

__version__ = "0.1.0"  # the only place the version is written: the build reads it from here
__all__ = [
    "Producer",
    "Queue",
    "QueueClosed",
    "WorkerInfo",
    "__version__",
    "keras",
    "native_unavailable",
    "worker_info",
]


_NO_TENSORFLOW = (
    "pyfastq.Queue needs TensorFlow, the minor version pyfastq was built against: pip install pyfastq installs "
    "tensorflow; with --no-deps install it yourself (tensorflow, tensorflow-cpu, or \"pyfastq[gpu]\" for CUDA)"
)


def __getattr__(name: str):
    # Queue and keras bring TensorFlow in; worker processes import pyfastq without it.
    if name == "Queue":
        try:
            from .queue import Queue
        except ModuleNotFoundError as e:
            if e.name != "tensorflow":
                raise
            raise ImportError(_NO_TENSORFLOW) from None

        return Queue
    if name == "keras":
        import importlib

        return importlib.import_module(".keras", __name__)
    raise AttributeError(f"module 'pyfastq' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
