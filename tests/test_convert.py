"""Python scalars and lists convert as tf.convert_to_tensor converts them, without loading TensorFlow.

The reference is tf.convert_to_tensor in a graph (what a TF1 session or a tf.function constant takes):
eager conversion refuses some of what it accepts (bools into ints, ints past int64) and aborts the
interpreter on a negative int into uint64, so it cannot serve for a grid of out-of-range values.
"""

import math
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyfastq

from support import CHILD_ENV, START_BUDGET_S

# numpy warns, as TF's conversion does, when a value overflows a float dtype (to inf, or nan for complex)
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning"),
]


def accepted_dtypes():
    """Every dtype Queue accepts: tf.dtypes' own and experimental ones (float8, int4, ...), less those it refuses."""
    out = []
    spaces = (tf.dtypes, tf.dtypes.experimental)
    every = {d for space in spaces for d in vars(space).values() if isinstance(d, tf.DType)}
    for dtype in sorted(every, key=lambda d: d.name):
        try:
            pyfastq.Queue(tf.TensorSpec([], dtype), capacity=1, backend="python")
        except TypeError:
            continue
        out.append(dtype)
    return out


DTYPES = accepted_dtypes()

INTS = [0, 1, -1, 2**70, -(2**70)]
for bits in (8, 16, 32, 64):
    INTS += [2 ** (bits - 1) - 1, 2 ** (bits - 1), 2**bits - 1, 2**bits, -(2 ** (bits - 1)), -(2 ** (bits - 1)) - 1]
FLOATS = [0.0, -0.0, 1.5, -1.5, 2.0, 1e10, 1e300, 65504.0, 65520.0, math.nan, math.inf, -math.inf]
OTHERS = [True, False, 1 + 2j, -0.5j, complex(math.inf, 1), None, "a", b"a"]
LISTS = [
    [1, 2, 3], [[1, 2], [3, 4]], [[[1], [2]]], [1, 2.5], [True, 1], [True, False], [1.5, 2j], [-1, 300, 2**63],
    [2**64], [1, 2**64], [], [[]], [[], []], [(1, 2), (3, 4)], [np.int32(5), 6], [np.float32(1.5), 2],
    [np.bool_(True)], [np.uint64(2**64 - 1), -1], [np.float64(np.nan)], [[1 + 1j, 2]],
    [[1, 2], [3]], [[1], 2], [1, [2]], [[1, 2], 3], [None], [1, None], ["a", "b"],
]
VALUES = INTS + FLOATS + OTHERS + LISTS


def convert_to_tensor_in_a_graph(value, dtype):
    with tf.Graph().as_default():
        return tf.get_static_value(tf.convert_to_tensor(value, dtype))


def assert_puts_as_convert_to_tensor(value, dtype):
    """Put as a component of dtype, value comes out as TF converts it, or is refused (TypeError) where TF refuses it."""
    try:
        want = convert_to_tensor_in_a_graph(value, dtype)
    except (TypeError, ValueError, OverflowError):
        want = None
    spec = tf.TensorSpec([] if want is None else want.shape, dtype)
    q = pyfastq.Queue(spec, capacity=1, backend="native")
    if want is None:
        with pytest.raises(TypeError, match=f"component 0: cannot convert {type(value).__name__} to"):
            q.put(value, timeout=0)
        assert q.size() == 0
        return
    q.put(value, timeout=0)
    got = q.dequeue()
    assert (got.dtype, got.shape) == (dtype, want.shape), (value, dtype)
    assert got.numpy().tobytes() == want.tobytes(), (value, dtype, got, want)  # bit for bit: wrap-around, -0.0, nan


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_python_values_convert_as_convert_to_tensor_does(native, dtype):
    for value in VALUES:
        assert_puts_as_convert_to_tensor(value, dtype)


def test_the_grid_covers_every_kind_of_dtype_and_outcome():
    kinds = {"bool", "bfloat16", "float16", "complex128", "int8", "uint64", "qint8", "quint16", "float8_e5m2", "int4"}
    assert kinds <= {d.name for d in DTYPES}
    outcomes = set()
    for value in VALUES:
        for dtype in (tf.int8, tf.float32):
            try:
                convert_to_tensor_in_a_graph(value, dtype)
                outcomes.add("converted")
            except Exception as e:  # noqa: BLE001 - which errors the grid reaches is the point
                outcomes.add(type(e).__name__)
    assert outcomes == {"converted", "TypeError", "ValueError", "OverflowError"}


scalars = st.one_of(
    st.integers(), st.floats(), st.booleans(), st.complex_numbers(), st.integers(-300, 300), st.none(),
)


@st.composite
def python_values(draw):
    """A scalar, a dense nest of them (rows of one length), or now and then a ragged one."""
    if draw(st.booleans()):
        return draw(scalars)
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    leaf = draw(st.sampled_from([st.integers(), st.floats(), st.booleans(), st.integers(-300, 300), scalars]))

    def build(dims):
        if not dims:
            return draw(leaf)
        return [build(dims[1:]) for _ in range(dims[0])]

    value = build(shape)
    if value and draw(st.integers(0, 9)) == 0:
        value[0] = draw(scalars)  # ragged, unless the nest was one level deep
    return value


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=python_values(), dtype=st.sampled_from(DTYPES))
def test_property_any_python_value_converts_as_convert_to_tensor_does(native, value, dtype):
    assert_puts_as_convert_to_tensor(value, dtype)


def test_converting_python_values_leaves_tensorflow_unloaded(backend):
    specs = (tf.TensorSpec([2], tf.float32), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool),
             tf.TensorSpec([], tf.complex64), tf.TensorSpec([3], tf.uint8), tf.TensorSpec([2, 2], tf.float16))
    layout = pyfastq.Queue(specs, capacity=1, backend=backend)._layout.layout()  # what a producer process gets
    element = ([0.5, 1], 7, True, 1 + 2j, [300, -1, 2], [[1, 2.5], [1e5, -0.0]])
    want = [tf.convert_to_tensor(v, s.dtype).numpy() for v, s in zip(element, specs, strict=True)]
    script = (
        "import pickle, sys\n"
        "layout, element = pickle.load(sys.stdin.buffer)\n"
        "flat = layout.convert(layout.flatten(element))\n"
        "try:\n"
        "    layout.convert([[0.5, 1], 1.5, True, 1, [1, 2, 3], [[1, 2], [3, 4]]])\n"
        "except TypeError as e:\n"
        "    error = str(e)\n"
        "pickle.dump((flat, error, sorted(sys.modules)), sys.stdout.buffer)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], input=pickle.dumps((layout, element)), capture_output=True,
                          env=CHILD_ENV, cwd=tempfile.gettempdir(), timeout=START_BUDGET_S)
    assert proc.returncode == 0, proc.stderr.decode()
    flat, error, modules = pickle.loads(proc.stdout)
    assert [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")] == []
    assert "pyfastq._layout" in modules  # the check saw the module it names
    for got, w in zip(flat, want, strict=True):
        assert got.dtype == w.dtype and got.tobytes() == w.tobytes()
    assert error.startswith("component [1]: cannot convert float to int64: Expected int64, but got 1.5"), error
