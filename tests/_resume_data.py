"""Sources for the resume and restart tests (by reference: worker processes import this module)."""

import os
import time

import numpy as np

import pyfastq

from _sources_data import Items


class Rows(Items):
    """Item i is a batch of `rows` rows: i * rows .. i * rows + rows - 1 (batched=True)."""

    def __init__(self, n: int, rows: int, seconds: float = 0.0):
        super().__init__(n)
        self.rows = rows
        self.seconds = seconds

    def __getitem__(self, i: int):
        time.sleep(self.seconds)
        return np.arange(i * self.rows, (i + 1) * self.rows, dtype=np.int64)


class ReservesAt(Items):
    """Reading item `held` the first time, the worker reserves a slot of its queue, fills it, writes its pid to
    the file `marker` and waits there to be killed, the slot in its hands; read again (marker there), it is
    item `held`."""

    def __init__(self, n: int, held: int, marker: str):
        super().__init__(n)
        self.held = held
        self.marker = marker

    def __getitem__(self, i: int):
        if i == self.held and not os.path.exists(self.marker):
            with pyfastq.worker_info().queue.reserve() as view:
                view[...] = -1
                with open(self.marker + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename(self.marker + ".tmp", self.marker)
                time.sleep(3600)
        return np.int64(i)


class Examples(Items):
    """Item i is a Keras example (x, y) = ([i], i) in float32, taking `seconds`: a model can see which it trains on."""

    def __init__(self, n: int, seconds: float = 0.0):
        super().__init__(n)
        self.seconds = seconds

    def __getitem__(self, i: int):
        time.sleep(self.seconds)
        return np.array([i], np.float32), np.float32(i)


class HeldUntil(Items):
    """Item `held` is made only once the file `gate` exists; the worker that begins reading it before then first
    writes its index to the file `gate`.reading, so the test knows whose read of it is under way."""

    def __init__(self, n: int, held: int, gate: str):
        super().__init__(n)
        self.held = held
        self.gate = gate

    def __getitem__(self, i: int):
        if i == self.held and not os.path.exists(self.gate):
            with open(self.gate + ".tmp", "w") as f:
                f.write(str(pyfastq.worker_info().index))
            os.rename(self.gate + ".tmp", self.gate + ".reading")
            while not os.path.exists(self.gate):
                time.sleep(0.005)
        return np.int64(i)
