"""A keras PyDataset for the source tests: worker processes import this module (and keras) to read it."""

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
