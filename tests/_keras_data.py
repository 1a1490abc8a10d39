"""A keras PyDataset for the source tests: worker processes import this module (and keras) to read it."""

import time

import keras
import numpy as np


class Pairs(keras.utils.PyDataset):
    """`batches` batches of (x, y): x[k] = [i, i, i] and y[k] = i for the i-th element, counting from 0."""

    def __init__(self, batches: int, batch_size: int):
        super().__init__()
        self.batches = batches
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, b: int):
        i = np.arange(b * self.batch_size, (b + 1) * self.batch_size, dtype=np.int64)
        return np.repeat(i[:, None], 3, axis=1).astype(np.float32), i


class Reshuffled(keras.utils.PyDataset):
    """A PyDataset reshuffling its own rows in on_epoch_end, as Keras' examples do; each row stamped with its epoch.

    Batch b holds rows order[b*batch_size : (b+1)*batch_size] of a permutation of 0..n-1 that on_epoch_end
    draws anew: a read racing on_epoch_end would mix two permutations (a row twice, another never) and
    carry the wrong epoch. Items take `seconds` each, so that several workers read at once.
    """

    def __init__(self, batches: int, batch_size: int, seconds: float = 0.0):
        super().__init__()
        self.batches = batches
        self.batch_size = batch_size
        self.seconds = seconds
        self.order = np.arange(batches * batch_size, dtype=np.int64)
        self.epoch = 0
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, b: int):
        rows = self.order[b * self.batch_size : (b + 1) * self.batch_size].copy()
        time.sleep(self.seconds)
        return rows, np.full(len(rows), self.epoch, np.int64)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.rng.shuffle(self.order)
