"""Ctrl-C for a trainer whose main thread waits in a dequeue.

Python runs its SIGINT handler only when the main thread returns to Python
code, and a dequeue op waiting for data (eagerly, in a tf.function, or in a
dataset iterator's get_next) does not return until data comes: Ctrl-C would
wait for it. So the first queue made in the main thread, while SIGINT has
Python's default handler, puts two handlers in its place:

- in C (pyfastq._core), in front of Python's: it raises a flag; a dequeue op
  waiting for data takes it and ends with ``tf.errors.CancelledError`` ("...
  interrupted by Ctrl-C (SIGINT) ..."), so the main thread gets back to Python;
- in Python, in place of ``default_int_handler``: it lowers the flag and
  raises KeyboardInterrupt, as the default does, except while an exception is
  being constructed: TF's C++ builds its errors by calling Python, and a
  KeyboardInterrupt raised in there comes out as a RuntimeError ("MISMATCH of
  original and normalized active exception types"); and except inside a
  ``__del__``, where Python would print the KeyboardInterrupt as "Exception
  ignored" and go on (TF's objects have finalizers that the garbage collector
  runs at any moment, so a Ctrl-C would now and then be lost). If an op took
  the interrupt, the CancelledError being built carries it; if not, the
  handler asks again 10 ms later.

Other places that swallow exceptions (weakref callbacks, gc callbacks) show
the KeyboardInterrupt to ``sys.unraisablehook``: ours, put in front of the one
there was, asks for it again 10 ms later instead of printing it.

An application that installs its own SIGINT handler replaces both, and gets
Python's behaviour back (the unraisablehook then passes everything on).
"""

from __future__ import annotations

import signal
import sys
import threading

from ._compat import frame_local

_installed = False
_retry_lock = threading.Lock()
_retrying = False
_RETRY_S = 0.01
_next_unraisablehook = sys.__unraisablehook__
_epoch = 0  # SIGINTs seen by the Python handler: the python backend's waits end when it moves


def install() -> None:
    """Takes over SIGINT as above, if this is the main thread and SIGINT has Python's default handler."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # the application handles Ctrl-C its own way
    try:
        from . import _core
    except ImportError:
        return  # no native backend: waits are the python backend's, which Python interrupts itself
    signal.signal(signal.SIGINT, _on_sigint)  # installs Python's C handler ...
    _core.chain_sigint()  # ... and ours goes in front of it
    global _next_unraisablehook
    _next_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _on_unraisable
    _installed = True


def epoch() -> int:
    return _epoch


def take(since: int) -> bool:
    """For a consumer waiting in Python since epoch() was ``since``: True if a Ctrl-C came meanwhile.

    The caller then ends with CancelledError.
    """
    if not _installed:
        return False
    from . import _core

    return _core.take_consumer_interrupt() or _epoch != since


def _on_sigint(signum, frame):
    global _epoch
    _epoch += 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # asked again from in here: where the main thread really is is further out
    from . import _core

    if frame is not None and (_building_an_exception(frame) or _in_a_finalizer(frame)):
        if _core.consumer_interrupt() == _core.Interrupt.TAKEN:
            _core.clear_consumer_interrupt()  # a consumer's CancelledError carries it out
        else:
            _retry_later(signum)
        return
    _core.clear_consumer_interrupt()
    raise KeyboardInterrupt


def _building_an_exception(frame) -> bool:
    return frame.f_code.co_name in ("__init__", "__new__") and isinstance(frame_local(frame, "self"), BaseException)


def _in_a_finalizer(frame) -> bool:
    """True if `frame` or a caller of it is a ``__del__``, which would swallow the KeyboardInterrupt."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _on_unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is _on_sigint:
        _retry_later(signal.SIGINT)  # raised by _on_sigint where Python drops it: deliver it again
        return
    _next_unraisablehook(unraisable)


def _retry_later(signum: int) -> None:
    # Not a signal from in here: Python would call this handler again at once, recursively.
    global _retrying
    with _retry_lock:
        if _retrying:
            return
        _retrying = True
    timer = threading.Timer(_RETRY_S, _retry, args=(signum,))
    timer.daemon = True
    timer.start()


def _retry(signum: int) -> None:
    global _retrying
    with _retry_lock:
        _retrying = False
    # A real signal, not _thread.interrupt_main(): that only sets Python's flag, and a main thread
    # asleep in a system call (time.sleep, a lock) would not see it until the call returns.
    signal.pthread_kill(threading.main_thread().ident, signum)
