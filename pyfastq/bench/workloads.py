"""The benchmark's workloads: what one put carries, how the graph takes it, and the methods that apply.

Method names here are those of the registry (registry.py; methods.py loads every method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from . import gil_work
from . import sources as items

METHODS = ("native", "python", "from_generator", "numpy_function", "fifo_queue", "np_copyto")
GRAPH_LOOP = "graph_loop"  # the consumer's loop with no feeding: a limit
COLD_COPY = "np_copyto_cold"  # the producer's copy into ring-sized rotating buffers: a limit
IN_PLACE = ("reserve", "fresh_put")  # a producer making its data in the slot, against the same making an array
SHUFFLE = "shuffle"  # pyfastq native, Queue(shuffle=True): the seed and small workloads measure it against native
# The "python" workload's methods: Producer threads, processes and Ray actors, each with P workers, and from_generator.
PRODUCER_METHODS = ("thread", "process", "ray", "from_generator")
# The source workloads' methods: each reads the same random-access source (pyfastq/bench/sources.py).
# pyfastq.Producer with threads, processes and workers="auto" (processes), against the peers
# (pyfastq/bench/peers.py), those with a worker count measured once per P as Producer's are.
AUTO = "auto"
SOURCE_METHODS = ("thread", "process", AUTO, "pydataset_threads", "pydataset_processes", "grain", "tf_map",
                  "from_generator")


@dataclass
class Workload:
    name: str
    element_shape: tuple  # what one put carries
    dtype: type
    batch: int  # elements per consumed batch (1: each put is a whole batch)
    capacity: int  # queue capacity, in elements
    methods: tuple = METHODS  # the methods that apply
    make: Callable | None = None  # the producer's fn(worker, workers) -> elements; None: put one pre-made item
    source: Callable | None = None  # source workloads: makes the random-access source every method reads
    _source_object: object = field(default=None, repr=False)

    def random_access_source(self):
        """The one source object every method of a source workload reads (made at its first use)."""
        if self._source_object is None:
            self._source_object = self.source()
        return self._source_object

    @property
    def batch_bytes(self) -> int:
        return int(np.prod(self.element_shape)) * np.dtype(self.dtype).itemsize * self.batch

    @property
    def counts_elements(self) -> bool:
        """Whether its figures are also said in elements/s: the python and source workloads' producers."""
        return self.make is not None or self.source is not None

    def spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(self.element_shape, tf.as_dtype(self.dtype))

    @property
    def min_after_dequeue(self) -> int:
        """For the shuffle method: as many kept back as the FIFO queue holds; its capacity is twice that."""
        return self.capacity


WORKLOADS = {
    "seed": Workload("seed: [100] float32 elements, dequeue_many(128)", (100,), np.float32, 128, 1024,
                     (*METHODS, SHUFFLE, "put_many", GRAPH_LOOP)),
    "small": Workload("small batch [128,100] float32 (51 KB)", (128, 100), np.float32, 1, 8,
                      (*METHODS, SHUFFLE, "ray", "ray_data", GRAPH_LOOP)),
    "image": Workload("image batch [32,224,224,3] uint8 (4.8 MB)", (32, 224, 224, 3), np.uint8, 1, 8,
                      (*METHODS, *IN_PLACE, COLD_COPY)),
    "large": Workload("large batch [16,1024,1024] float32 (64 MB)", (16, 1024, 1024), np.float32, 1, 8,
                      (*METHODS, *IN_PLACE, COLD_COPY)),
    "python": Workload("Python-heavy producer: ~1 ms of GIL-bound Python per [100] float32 element, dequeue_many(32)",
                       gil_work.SHAPE, gil_work.DTYPE, 32, 128, PRODUCER_METHODS, gil_work.make),
    "source_gil": Workload("random-access source: ~1.7 ms of GIL-bound Python per [256] float32 item (1 KB), "
                           "batches of 32", items.GIL_SHAPE, np.float32, 32, 256, SOURCE_METHODS,
                           source=items.GilItems),
    "source_image": Workload("random-access source: crop, flip, brightness of a 224x224x3 uint8 image per item "
                             "(150 KB), batches of 32", items.IMAGE_SHAPE, np.uint8, 32, 256, SOURCE_METHODS,
                             source=items.AugmentedImages),
}

# Not a Workload: each figure is a fresh trainer process (startup.py runs pyfastq/bench/startup_trainer.py).
STARTUP = "startup"
# Not Workloads either: modules of their own, each with plan() -> [(label, measure(seconds))] and
# print_table(rows): q.dataset() and Keras fit against tf.data's own floor (tfdata.py); what tracking
# positions and restarting workers cost (resume.py).
CASE_MODULES = ("tfdata", "resume")
WORKLOAD_NAMES = (*WORKLOADS, STARTUP, *CASE_MODULES)
