"""pyfastq.keras.QueueMonitor: who waits during Keras ``fit``, the model or the producers.

The queue's own counters say it: ``get_blocked_s`` is the time the model (the
queue's consumer) waited for data, ``put_blocked_s`` the time producers waited
for space. A model that waits is input-bound (more producers help); producers
that wait mean the model is the bottleneck (compute-bound). The window starts
when ``fit``'s first step has finished: while Keras traces and compiles that
step, producers fill the queue and wait, whatever the steady state will be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

__all__ = ["QueueMonitor"]

# What tf.summary.scalar writes (its plugin and data class), written with the core tf.summary.write:
# tf.summary.scalar itself lives in the tensorboard package, which TensorFlow does not require.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)

# Below this share of the run neither side is said to wait.
_BALANCED = 0.10


class QueueMonitor(tf.keras.callbacks.Callback):
    """A Keras callback: queue fill and waiting as TensorBoard scalars, and a verdict at the end of ``fit``.

    >>> monitor = pyfastq.keras.QueueMonitor(q, log_dir="logs/run1")
    >>> model.fit(q.dataset(batch_size=64), callbacks=[monitor])
    pyfastq: input-bound: the model waited for data 43% of the time; add workers

    Everything it measures starts when the first step of each ``fit`` has finished, so that
    the time Keras spends tracing and compiling that step counts for neither side.
    With ``log_dir``, every ``update_freq`` steps it writes TensorBoard scalars (``tf.summary``)
    ``pyfastq/fill_level`` (mean size/capacity at the step ends since the last write),
    ``pyfastq/model_waited`` (the share of that time the model waited for data) and
    ``pyfastq/producers_waited`` (the share producers waited for space). At the end of
    ``fit`` it prints one line (through ``print_fn``), kept in ``verdict``; ``summary``
    holds the figures behind it (``seconds`` and ``steps`` of the window). A ``fit`` of a
    single step has no such window: its verdict covers that step.
    """

    def __init__(
        self,
        queue: Any,
        log_dir: str | None = None,
        *,
        update_freq: int = 100,
        print_fn: Callable[[str], Any] | None = print,
    ):
        super().__init__()
        if isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1:
            raise ValueError(f"update_freq must be an int >= 1 (steps), got {update_freq!r}")
        self.queue = queue
        self.log_dir = log_dir
        self.update_freq = update_freq
        self.print_fn = print_fn
        self.verdict: str | None = None
        self.summary: dict = {}
        self._writer = None
        self._step = 0

    # -- Keras hooks ---------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # Steps count on across fit calls, so a second fit's scalars follow the first's in TensorBoard.
        self.verdict, self.summary = None, {}
        self._fit_begin, self._fit_step = self._snapshot(), self._step
        self._begin = self._last = None  # the window's start: when the first step has finished
        self._fills: list[float] = []
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._begin is None:
            self._begin = self._last = self._snapshot()
            self._begin_step = self._step
            return
        self._fills.append(self.queue.size() / self.queue.capacity)
        if self._writer is not None and self._step % self.update_freq == 0:
            self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            if self._fills:
                self._write()
            self._writer.flush()
        end = self._snapshot()
        if self._begin is not None and self._step > self._begin_step:
            begin, steps = self._begin, self._step - self._begin_step
        else:  # no step after the first: the whole fit is all there is to judge
            begin, steps = self._fit_begin, self._step - self._fit_step
        model, producers = _shares(begin, end)
        self.summary = {
            "seconds": end[0] - begin[0],
            "model_waited": model,
            "producers_waited": producers,
            "steps": steps,
        }
        self.verdict = verdict(model, producers)
        if self.print_fn is not None:
            self.print_fn(self.verdict)

    # -- figures -------------------------------------------------------------------
    def _snapshot(self) -> tuple[float, float, float]:
        stats = self.queue.stats()
        return time.monotonic(), stats["get_blocked_s"], stats["put_blocked_s"]

    def _write(self) -> None:
        now = self._snapshot()
        model, producers = _shares(self._last, now)
        fill = sum(self._fills) / len(self._fills) if self._fills else self.queue.size() / self.queue.capacity
        with self._writer.as_default():
            for tag, value in (("fill_level", fill), ("model_waited", model), ("producers_waited", producers)):
                tf.summary.write(f"pyfastq/{tag}", tf.constant(value, tf.float32), step=self._step, metadata=_SCALAR)
        self._last, self._fills = now, []


def _shares(before: tuple, after: tuple) -> tuple[float, float]:
    """The shares of the time between two snapshots during which the model, and the producers, waited."""
    seconds = after[0] - before[0]
    if seconds <= 0:
        return 0.0, 0.0
    return (min(1.0, max(0.0, (after[1] - before[1]) / seconds)),
            min(1.0, max(0.0, (after[2] - before[2]) / seconds)))


def verdict(model_waited: float, producers_waited: float) -> str:
    """The line QueueMonitor prints, from the shares of the run the model and the producers waited."""
    if max(model_waited, producers_waited) < _BALANCED:
        return (f"pyfastq: balanced: the model waited for data {model_waited:.0%} of the time, "
                f"producers waited for space {producers_waited:.0%}")
    if model_waited >= producers_waited:
        return f"pyfastq: input-bound: the model waited for data {model_waited:.0%} of the time; add workers"
    return f"pyfastq: compute-bound: producers waited for space {producers_waited:.0%} of the time"
