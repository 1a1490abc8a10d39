import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import pyfastq  # noqa: E402

BACKENDS = ["native", "python"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "native":
        why = pyfastq.native_unavailable()
        if why is not None:
            pytest.skip(f"native backend unavailable: {why}")
    return request.param


@pytest.fixture
def native():
    why = pyfastq.native_unavailable()
    if why is not None:
        pytest.skip(f"native backend unavailable: {why}")
    return "native"


def error_class(backend, native_error):
    """The error a consumer sees: the python backend's numpy_function turns Aborted/Cancelled into UnknownError."""
    return native_error if backend == "native" else tf.errors.UnknownError


def f32(*shape, value=0.0):
    return np.full(shape, value, np.float32)
