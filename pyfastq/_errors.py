"""Exceptions of pyfastq's public API (imported by the compiled module too)."""


class QueueClosed(Exception):
    """A put, put_many or reserve that the queue refused: it is closed, cancelled or failed.

    A put that was already waiting for room when ``close()`` came is not
    refused: it completes once room frees (TF's FIFOQueue rule). Only
    ``close(cancel=True)`` and ``fail()`` refuse puts that are waiting.

    ``enqueued`` is how many rows of a refused ``put_many`` went in before it
    was refused (0 for put and reserve).

    >>> try:
    ...     q.put_many(rows)
    ... except pyfastq.QueueClosed as e:
    ...     rest = rows[e.enqueued:]   # what did not go in
    """

    def __init__(self, message: str = "", enqueued: int = 0):
        super().__init__(message)
        self.enqueued = enqueued

    def __reduce__(self):
        return type(self), (str(self), self.enqueued)
