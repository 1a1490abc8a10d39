"""pyfastq.Producer: what TF1's QueueRunner + Coordinator were, for Python producers."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from ._errors import QueueClosed
from .queue import Queue

# A worker blocked in put() re-checks for stop() this often.
_STOP_CHECK_S = 0.05


class Producer:
    """Runs ``fn(worker_index, num_workers)`` in workers and puts every element it yields.

    >>> with pyfastq.Producer(q, lambda i, n: (make(k) for k in range(i, 1000, n)), workers=4):
    ...     model.fit(q.dataset(batch_size=32))

    When every worker has finished, the queue is closed (``close_on_exit``); a
    worker's exception fails the queue, so consumers raise it. Leaving the
    ``with`` block (or ``stop()``) stops the workers, waking any blocked in
    put, and joins them.
    """

    def __init__(
        self,
        queue: Queue,
        fn: Callable[[int, int], Iterable[Any]],
        workers: int = 1,
        mode: str = "thread",
        close_on_exit: bool = True,
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if mode not in ("thread", "process"):
            raise ValueError(f'mode must be "thread" or "process", got {mode!r}')
        if mode == "process":
            raise ValueError("mode=\"process\" needs Queue(..., shared=True), which this version does not have yet")
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(worker_index, num_workers), got {fn!r}")
        self.queue = queue
        self._fn = fn
        self._workers = workers
        self._close_on_exit = close_on_exit
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 0
        self.errors: list[BaseException] = []

    def start(self) -> Producer:
        if self._threads:
            raise RuntimeError("this Producer was already started")
        self._running = self._workers
        for i in range(self._workers):
            t = threading.Thread(target=self._run, args=(i,), name=f"pyfastq-{self.queue.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops the workers (a worker blocked in put wakes within 50 ms) and joins them.

        With ``close_on_exit`` the queue is closed too, so no consumer waits forever.
        """
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        if self._close_on_exit:
            self.queue.close()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Producer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, index: int) -> None:
        try:
            for element in self._fn(index, self._workers):
                while True:
                    if self._stop.is_set():
                        return
                    try:
                        self.queue.put(element, timeout=_STOP_CHECK_S)
                        break
                    except TimeoutError:
                        continue
        except QueueClosed:
            return  # the consumer side ended the queue: nothing left to do
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            self.errors.append(e)
            text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self.queue.fail(f"pyfastq producer worker {index} of {self._workers} raised {type(e).__name__}: {e}\n{text}")
            self._stop.set()
            return
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
        if last and self._close_on_exit and not self._stop.is_set():
            self.queue.close()
