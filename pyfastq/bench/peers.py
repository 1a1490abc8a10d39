"""The peers of the source workloads, each reading the same random-access source and entering TF as its users do.

- Keras ``PyDataset`` (``SourceBatches``: batch b stacks items b*32 .. b*32+31 of the source) with
  ``workers=P`` threads or ``use_multiprocessing=True`` processes, entering TF as ``Model.fit`` does:
  ``PyDatasetAdapter(ds)``, ``on_epoch_begin()`` (which starts the enqueuer), ``get_tf_dataset()``.
- grain ``DataLoader(data_source=source, worker_count=P, operations=[Batch(32)])``, entering TF through
  ``from_generator`` over the loader, as Keras' ``GrainDatasetAdapter.get_tf_dataset()`` does (the adapter
  itself cannot serve here: the map it appends to the loader's operations reaches, in grain's worker
  processes, Keras' lazily imported TensorFlow, which recurses until RecursionError with Keras 3.15 and
  grain 0.2.18). Optional: the method is skipped, saying so, where grain does not import.
- tf.data: ``range(n).map(py_function(getitem), num_parallel_calls=AUTOTUNE).batch(32)``.
- tf.data: ``from_generator`` of the items in order, ``.batch(32)``.

Each returns an iterator of batches (a tensor, or a tuple whose first item is one) and a function that
stops what it started.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter


class SourceBatches(keras.utils.PyDataset):
    """A PyDataset over a random-access source: batch b is items b*batch .. (b+1)*batch - 1, stacked."""

    def __init__(self, source, batch: int, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.batch = batch

    def __len__(self) -> int:
        return len(self.source) // self.batch

    def __getitem__(self, b: int) -> np.ndarray:
        start = b * self.batch
        return np.stack([self.source[i] for i in range(start, start + self.batch)])


def pydataset(source, batch: int, workers: int, processes: bool):
    """Keras PyDataset(workers, use_multiprocessing=processes) over source, as fit iterates it."""
    adapter = PyDatasetAdapter(SourceBatches(source, batch, workers=workers, use_multiprocessing=processes))
    adapter.on_epoch_begin()
    it = iter(adapter.get_tf_dataset())
    return it, adapter.on_epoch_end


def grain_loader(source, batch: int, workers: int):
    """grain DataLoader(worker_count=workers) over source, batched, into TF by from_generator (as Keras' adapter)."""
    import grain

    sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=grain.sharding.NoSharding(),
                                          shuffle=False, num_epochs=1, seed=0)
    loader = grain.DataLoader(data_source=source, sampler=sampler, worker_count=workers,
                              operations=[grain.transforms.Batch(batch, drop_remainder=True)])
    spec = tf.TensorSpec((batch, *source.shape), tf.as_dtype(source.dtype))
    it = iter(tf.data.Dataset.from_generator(lambda: loader, output_signature=spec))
    # The loader's worker processes end with its iterator, which ends with ours.
    return it, lambda: None


def tf_map(source, batch: int):
    """range(n).map(py_function(source.__getitem__), num_parallel_calls=AUTOTUNE).batch(batch)."""
    dtype = tf.as_dtype(source.dtype)

    def read(i):
        x = tf.py_function(lambda i: source[int(i)], [i], dtype)
        x.set_shape(source.shape)
        return x

    ds = tf.data.Dataset.range(len(source)).map(read, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)), lambda: None


def from_generator(source, batch: int):
    """from_generator over source's items in order, .batch(batch)."""

    def items():
        for i in range(len(source)):
            yield source[i]

    spec = tf.TensorSpec(source.shape, tf.as_dtype(source.dtype))
    ds = tf.data.Dataset.from_generator(items, output_signature=spec)
    return iter(ds.batch(batch, drop_remainder=True).prefetch(2)), lambda: None


def first(x):
    """The batch of what a peer's iterator yields: PyDataset's adapter yields (x,) tuples."""
    return x[0] if isinstance(x, tuple) else x


def stop_quietly(stop) -> None:
    """A peer's stop, its errors beside the point once the figure is taken (a pool torn down mid-batch)."""
    with contextlib.suppress(Exception):
        stop()
