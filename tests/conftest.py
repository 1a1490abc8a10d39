"""Fixtures only; shared helpers are in support.py."""

import os
import signal
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF is first imported
# The tests send Ctrl-C to child interpreters, as a terminal would. Started with SIGINT ignored (a
# background job of a shell without job control), this process would pass that on to every child,
# and they would ignore it: give SIGINT Python's usual handler, which a child starts without.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# The Ray clusters the tests start listen on the loopback address only (before Ray is first imported;
# Ray's switch for that is named for Windows and macOS, where it is the default).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

import pyfastq

BACKENDS = ["native", "python"]
# Only for a checkout whose native build is known to be missing: its tests are then skipped.
# Otherwise a missing native backend fails them: a broken build must not pass as 96 skips.
ALLOW_NO_NATIVE = os.environ.get("PYFASTQ_TEST_WITHOUT_NATIVE") == "1"


def _require_native():
    why = pyfastq.native_unavailable()
    if why is None:
        return
    if ALLOW_NO_NATIVE:
        pytest.skip(f"native backend unavailable: {why}")
    pytest.fail(
        f"native backend unavailable: {why}. Test an installed pyfastq (.venv/bin/pytest after pip install), "
        "or set PYFASTQ_TEST_WITHOUT_NATIVE=1 to test the python backend alone",
        pytrace=False,
    )


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "native":
        _require_native()
    return request.param


@pytest.fixture
def native():
    _require_native()
    return "native"


@pytest.fixture
def leftovers():
    """Processes a test started (Popen or psutil.Process): whatever the test's outcome, none outlives it."""
    procs: list = []
    yield procs
    for p in procs:
        if isinstance(p, subprocess.Popen):
            p.kill()
            p.wait(10)
        elif p.is_running():  # psutil: False too if the pid now belongs to a later process
            p.kill()
