"""The limits any feeding sits under, as methods: one np.copyto of the batch (warm and cache-cold), and the
consumer's graph loop with no feeding at all."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .registry import method
from .timing import copy_rate, graph_loop, timed
from .workloads import COLD_COPY, GRAPH_LOOP, Workload


@method("np_copyto")
def measure_np_copyto(w: Workload, seconds: float) -> float:
    """np.copyto of one pre-made batch into one buffer, again and again: the one-copy limit, cache-warm."""
    src = np.ones((w.batch, *w.element_shape), w.dtype)
    return copy_rate([(np.empty_like(src), src)] * 10, seconds)


@method(COLD_COPY)
def measure_np_copyto_cold(w: Workload, seconds: float) -> float:
    """np.copyto of one pre-made batch into buffers as large as the ring, in turn, as a producer fills its slots."""
    src = np.ones((w.batch, *w.element_shape), w.dtype)
    return copy_rate([(np.empty_like(src), src) for _ in range(w.capacity // w.batch or 1)], seconds)


@method(GRAPH_LOOP)
def measure_graph_loop(w: Workload, seconds: float) -> float:
    """The consumer's graph loop with no feeding: each step reads a pre-made batch from a tf.Variable."""
    batch = tf.Variable(np.ones((w.batch, *w.element_shape) if w.batch > 1 else w.element_shape, w.dtype))
    return timed(graph_loop(batch.read_value), seconds)
