"""Keras callbacks: QueueMonitor (who waits during ``fit``) and BackupAndRestore (exact resume of the data).

QueueMonitor: who waits during Keras ``fit``, the model or the producers.

The queue's own counters say it: ``get_blocked_s`` is the time the model (the
queue's consumer) waited for data, ``put_blocked_s`` the time producers waited
for space. A model that waits is input-bound (more producers help); producers
that wait mean the model is the bottleneck (compute-bound). The window starts
when ``fit``'s first step has finished: while Keras traces and compiles that
step, producers fill the queue and wait, whatever the steady state will be.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ._compat import keras_backup_missing

__all__ = ["BackupAndRestore", "QueueMonitor"]

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


class BackupAndRestore(tf.keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` that also backs up what the model has trained on, for an exact resume.

    >>> backup = pyfastq.keras.BackupAndRestore("backup", save_freq=50)
    >>> with pyfastq.Producer(q, source, shuffle=True, seed=0, resume=backup.data_state()) as p:
    ...     backup.track(p)  # before q.dataset()
    ...     model.fit(q.dataset(32), epochs=3, callbacks=[backup])

    Each backup stores the model's weights (as Keras' does) and the tracked producer's ``state()``
    at the same step; ``data_state()`` reads that state back before the producer starts (None
    when ``backup_dir`` holds no backup), and a producer started with ``resume=`` it delivers
    every element the backed-up weights have not trained on exactly once: what the killed run
    trained after its last backup is lost with its weights and comes again. Like Keras', the
    backup is deleted at the end of a ``fit`` that finishes (``delete_checkpoint``).

    Exact, because no element taken from the queue waits untrained in a buffer when a backup is
    written: ``q.dataset()`` made after ``track(p)`` turns off the prefetch buffer tf.data would
    otherwise add behind it (``inject_prefetch``), so each step takes its batch from the queue
    itself; ``q.dataset().batch(n)`` and ``.map(f)`` (without ``num_parallel_calls``) stay exact,
    and ``q.dataset(n)`` costs nothing measurable in ``fit`` for it, where ``.batch(n)``, run in
    the step, halves the steps/s of the ``tfdata`` bench's fit case. A pipeline that keeps elements ahead
    of the step cannot be exact, and nothing here can see it: an explicit ``.prefetch()``,
    ``.shuffle()`` or ``.cache()`` after ``q.dataset()``, a parallel map or batch,
    ``fit(class_weight=...)`` (Keras adds a prefetch), or an iterator of a tf.distribute strategy
    that buffers. There, a backup counts as trained the elements in those buffers, and a resumed
    run skips them.

    Keras restores the epoch of a backup, not the step within it: resumed from a backup made
    mid-epoch, ``fit`` runs that epoch's ``steps_per_epoch`` again in full, on the data that
    follows the backup (none is repeated). With ``Producer(epochs=k)`` and ``fit`` running until
    the queue ends, every element of the k epochs is trained on once across the runs.

    ``backup_dir`` is a local directory used by this callback alone. ``double_checkpoint`` is
    refused: a backup here is written whole or not at all (see ``_save_model``), and falling back
    to older weights after the producer has started from the newer data state would not be exact.
    """

    # Keras runs batch-end callbacks on a thread of its own only when every callback says it may:
    # a backup must be written at its step boundary, before the next step takes from the queue.
    async_safe = False

    def __init__(self, backup_dir: str, save_freq: str | int = "epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True):
        base, version = tf.keras.callbacks.BackupAndRestore, getattr(tf.keras, "__version__", "2")
        if missing := keras_backup_missing(base):
            raise ImportError("pyfastq.keras.BackupAndRestore extends Keras 3's BackupAndRestore; tf.keras here is "
                              f"Keras {version}, whose BackupAndRestore has no {', '.join(missing)}")
        if double_checkpoint:
            raise ValueError("pyfastq.keras.BackupAndRestore writes each backup whole or not at all, and cannot "
                             "fall back to the previous weights once the producer has resumed from the latest "
                             "data state: double_checkpoint must be False")
        if isinstance(backup_dir, str) and "://" in backup_dir:
            raise ValueError(f"backup_dir must be a local directory (backups are renamed into place), "
                             f"got {backup_dir!r}")
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        if missing := keras_backup_missing(base, self):
            raise ImportError("pyfastq.keras.BackupAndRestore reads state of Keras' BackupAndRestore that Keras "
                              f"{version} does not have: {', '.join(missing)}")
        self.producer: Any = None
        self._serial = 0  # of the last weights file written: weights-<serial>.weights.h5

    def data_state(self) -> dict | None:
        """The producer state of the backup in ``backup_dir``, for ``Producer(..., resume=)``; None if there is none.

        >>> pyfastq.Producer(q, source, shuffle=True, seed=0, resume=backup.data_state())
        """
        metadata = self._metadata()
        if metadata is None:
            return None
        if "pyfastq" not in metadata:
            raise ValueError(f"pyfastq: the backup in {self.backup_dir!r} holds no data state (was it written by "
                             "keras.callbacks.BackupAndRestore?); delete it or resume it with Keras' callback")
        return metadata["pyfastq"]

    def track(self, producer: Any) -> Any:
        """The producer whose ``state()`` each backup stores; returns it. Call it before ``q.dataset()``.

        >>> backup.track(p)
        >>> model.fit(q.dataset(32), callbacks=[backup])
        """
        producer.state()  # a clear error now if it has none: a generator fn, the python backend
        q = producer.queue
        if q._datasets_made:
            raise ValueError(
                f"pyfastq: queue '{q.name}' made a dataset before track(): that dataset keeps tf.data's "
                "prefetch buffer, whose elements a backup would count as trained; call q.dataset() after "
                "backup.track(p)")
        q._unbuffered_datasets = True
        self.producer = producer
        return producer

    # -- Keras hooks (_load_model and _save_model are private: see _compat.KERAS_BACKUP_HOOKS) -----------
    def on_train_begin(self, logs=None):
        if self.producer is None:
            raise ValueError("pyfastq.keras.BackupAndRestore: track(p) the Producer that feeds the model before fit")
        saved = self.data_state()
        if saved is not None and self.producer._resume != saved:
            raise ValueError(
                f"pyfastq: the backup in {self.backup_dir!r} holds a data state, and the tracked Producer did not "
                "start from it: restoring the weights would train again on what they have trained on, or skip "
                "what they have not; start it with Producer(..., resume=backup.data_state())")
        super().on_train_begin(logs)

    def _load_model(self):
        metadata = self._metadata()
        if metadata is not None and "weights" in metadata:
            self._weights_path = os.path.join(self.backup_dir, metadata["weights"])
            self._serial = int(metadata["serial"])
        super()._load_model()

    def _save_model(self):
        """Writes the weights to a new file, then renames into place the metadata naming it, with the data state.

        The rename commits the backup: a run killed at any moment leaves either the previous backup
        or this one, each weights file with the data state of its own step (both taken at this step
        boundary: no step runs while callbacks do). Files are fsync'ed before the rename, and the
        directory after it, so that a machine that loses power keeps one of the two as well. What
        remains is the training done since the last backup, which a kill loses with its data
        (that data comes again).
        """
        state = self.producer.state()
        os.makedirs(self.backup_dir, exist_ok=True)
        serial = self._serial + 1
        name = f"weights-{serial}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        self.model.save_weights(filepath=path, overwrite=True)
        _fsync(path)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name,
                    "serial": serial, "pyfastq": state}
        tmp = self._training_metadata_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(metadata))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._training_metadata_path)
        _fsync(self.backup_dir)
        self._serial, self._weights_path = serial, path
        for old in glob.glob(os.path.join(glob.escape(self.backup_dir), "weights-*.weights.h5")):
            if old != path:
                os.remove(old)

    def _metadata(self) -> dict | None:
        """The committed backup's metadata; None if there is none."""
        try:
            with open(self._training_metadata_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
