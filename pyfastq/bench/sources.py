"""The random-access sources of the benchmark's source workloads: one object, handed to every method.

    python -m pyfastq.bench.sources   # ms per item of each source on one core of this machine

Each is what a Keras, grain or torch user holds: a class with ``__len__`` and
``__getitem__(i)`` -> one element, made from ``i`` alone (so any worker may read
any index, in any order). Only numpy and the standard library here: worker
processes (pyfastq's, grain's, Keras' pool) unpickle a source by importing this
module, and stay lean.

- ``GilItems``: about 1.7 ms of GIL-bound pure Python per item (gil_work's loop,
  GIL_LOOPS steps), a [256] float32 element (1 KB): threads cannot run two at once.
- ``AugmentedImages``: a random 224x224 crop of one of a few 256x256x3 uint8
  images, a horizontal flip half the time and a brightness factor in [0.8, 1.2],
  all numpy (which releases the GIL only in parts of it): a 224x224x3 uint8
  element (150 KB).
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import gil_work

# gil_work.LOOPS makes about 1 ms on the bench machine; 1.7 times as many make 1.7 ms, a GIL-bound item's cost.
GIL_LOOPS = round(gil_work.LOOPS * 1.7)
GIL_SHAPE = (256,)  # float32: 1 KB
IMAGE_SHAPE = (224, 224, 3)  # uint8: 150 KB
BASE_SHAPE = (256, 256, 3)  # the images crops are cut from
BASE_IMAGES = 4
LENGTH = 1 << 20  # far more items than a measurement reads: no method reaches an epoch's end


class _Items:
    """len() items; __getitem__ checks the index as a sequence does (IndexError past the end)."""

    def __init__(self, length: int = LENGTH):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def _check(self, i) -> int:
        i = int(i)  # numpy ints from samplers, tf.data's int64 via py_function
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of len {self.length}")
        return i


class GilItems(_Items):
    """Item i: GIL_LOOPS steps of pure-Python arithmetic seeded by i, as a [256] float32 array."""

    shape, dtype = GIL_SHAPE, np.float32

    def __getitem__(self, i) -> np.ndarray:
        i = self._check(i)
        return np.full(GIL_SHAPE, gil_work.work(i, GIL_LOOPS) % 65521, np.float32)


class AugmentedImages(_Items):
    """Item i: image i % BASE_IMAGES, cropped, flipped and brightened by draws from a generator seeded by i."""

    shape, dtype = IMAGE_SHAPE, np.uint8

    def __init__(self, length: int = LENGTH):
        super().__init__(length)
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (BASE_IMAGES, *BASE_SHAPE), np.uint8)

    def __getitem__(self, i) -> np.ndarray:
        i = self._check(i)
        rng = np.random.default_rng(i)
        top, left = rng.integers(0, BASE_SHAPE[0] - IMAGE_SHAPE[0] + 1, 2)
        crop = self.images[i % BASE_IMAGES, top : top + IMAGE_SHAPE[0], left : left + IMAGE_SHAPE[1]]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        bright = crop.astype(np.float32)
        bright *= rng.uniform(0.8, 1.2)
        np.clip(bright, 0, 255, out=bright)
        return bright.astype(np.uint8)


class Premade(_Items):
    """Item i: one pre-made array of `shape` float32, whatever i: what it costs to move an element, no making."""

    dtype = np.float32

    def __init__(self, shape: tuple, length: int = LENGTH):
        super().__init__(length)
        self.shape = shape
        self.element = np.ones(shape, np.float32)

    def __getitem__(self, i) -> np.ndarray:
        self._check(i)
        return self.element


class WhoMade(_Items):
    """Item i: [i, the pid of the process that read it] (int64): which worker made each element."""

    def __getitem__(self, i) -> np.ndarray:
        return np.array([self._check(i), os.getpid()], np.int64)


SOURCES = {"gil": GilItems, "image": AugmentedImages}


def ms_per_item(source, items: int = 50, repeats: int = 3) -> float:
    """Best-of-repeats wall time of one item, in ms, on one core of this machine."""
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        for k in range(items):
            source[r * items + k]
        best = min(best, (time.perf_counter() - start) / items)
    return best * 1e3


if __name__ == "__main__":
    for name, make in SOURCES.items():
        print(f"{name}: {ms_per_item(make()):.3f} ms per item")
