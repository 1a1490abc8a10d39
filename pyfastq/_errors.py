"""Exceptions of pyfastq's public API (imported by the compiled module too)."""


class QueueClosed(Exception):
    """A put, put_many or reserve on a queue that is closed, cancelled or failed."""
