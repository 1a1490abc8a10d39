"""Random-access sources the source tests hand to workers (by reference: worker processes import this module).

No keras here: a worker that imports this module stays lean; the PyDataset is in _keras_data.py.
"""

import os
import time

import numpy as np

import pyfastq


class Items:
    """Item i is np.int64(i)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return np.int64(i)


class HeldAt(Items):
    """Item `held` is made only once the file `gate` exists (the test's word); the others at once."""

    def __init__(self, n: int, held: int, gate: str):
        super().__init__(n)
        self.held = held
        self.gate = gate

    def __getitem__(self, i: int):
        while i == self.held and not os.path.exists(self.gate):
            time.sleep(0.005)
        return np.int64(i)


class Sleepy(Items):
    """Each item takes `seconds` of waiting (not CPU): more workers make more of them."""

    def __init__(self, n: int, seconds: float):
        super().__init__(n)
        self.seconds = seconds

    def __getitem__(self, i: int):
        time.sleep(self.seconds)
        return np.int64(i)


class Unequal(Items):
    """Items of odd index take a while: workers finish their claims out of order."""

    def __getitem__(self, i: int):
        if i % 2:
            time.sleep(0.002 * (i % 5))
        return np.int64(i)


class ShortLen(Items):
    """Its len() promises one item more than __getitem__ has: an IndexError inside len(), the source's bug."""

    def __getitem__(self, i: int):
        if i >= self.n - 1:
            raise IndexError(f"index {i} is out of range")
        return np.int64(i)


class WhoReads(Items):
    """Item i is (i, the index of the worker that read it, 1 if worker_info() says the mode given).

    Each item takes `seconds` of waiting first (not CPU).
    """

    def __init__(self, n: int, mode: str, seconds: float = 0.0):
        super().__init__(n)
        self.mode = mode
        self.seconds = seconds

    def __getitem__(self, i: int):
        time.sleep(self.seconds)
        info = pyfastq.worker_info()
        return np.int64(i), np.int64(info.index), np.int64(info.mode == self.mode)


class NodeTagged(Items):
    """Item i is (i, a number naming the Ray node that read it), after `seconds` of waiting."""

    def __init__(self, n: int, seconds: float = 0.0):
        super().__init__(n)
        self.seconds = seconds

    def __getitem__(self, i: int):
        import ray

        time.sleep(self.seconds)
        return np.int64(i), np.int64(int(ray.get_runtime_context().get_node_id()[:15], 16))
