"""Every dtype a Queue accepts dequeues, with its exact bytes, eagerly, in a tf.function and in a TF1 session."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import dtypes as tf_dtypes

import pyfastq

# TF's dtypes that a slot cannot hold (they are not fixed-size data).
_REFUSED = {tf.string, tf.resource, tf.variant}
# Every other dtype TF defines: numeric (bfloat16, half, complex, unsigned, the quantized, float8 and the
# sub-byte ints among them) and bool. Collected from TF itself, so a dtype TF adds is tested too.
DTYPES = sorted(
    {d for d in vars(tf_dtypes).values() if isinstance(d, tf.DType) and not d._is_ref_dtype} - _REFUSED,
    key=lambda d: d.name,
)
# tf.data's graph rewriting cannot convert this dtype ("Converting f8E5M2 to DataType"), whatever makes it.
_NO_DATASET = {"float8_e5m2"}


def test_the_list_holds_the_dtypes_the_issue_names():
    names = {d.name for d in DTYPES}
    assert {"bfloat16", "float16", "complex64", "complex128", "uint16", "uint32", "uint64", "bool"} <= names
    assert {"qint8", "quint8", "qint16", "quint16", "qint32"} <= names


def _values(dtype: tf.DType, rows: int) -> np.ndarray:
    """rows elements of shape [2, 3] whose bytes differ from element to element and from zero."""
    ints = (np.arange(rows * 6) % 7 - 2).reshape(rows, 2, 3)
    if dtype == tf.bool:
        return ints % 2 == 1
    if dtype.name in ("int2", "uint2"):
        ints %= 2  # 2 bits: keep within what both signs hold
    return ints.astype(dtype.as_numpy_dtype)


def _bytes(x) -> bytes:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x).tobytes()


def _filled(backend, dtype, rows=4):
    """A closed queue of (component of dtype, int32 row index) holding `rows` elements, and those values."""
    q = pyfastq.Queue(
        (tf.TensorSpec([2, 3], dtype), tf.TensorSpec([], tf.int32)), capacity=rows, backend=backend
    )
    values = _values(dtype, rows)
    q.put_many((values, np.arange(rows, dtype=np.int32)))
    q.close()
    return q, values


def _check(got, values, rows):
    """got: (x, index) for rows elements taken as [one, one, batch of the rest]."""
    (x0, i0), (x1, i1), (xs, is_) = got
    assert [int(np.asarray(i)) for i in (i0, i1)] == [0, 1]
    assert list(np.asarray(is_)) == list(range(2, rows))
    assert _bytes(x0) == values[0].tobytes() and _bytes(x1) == values[1].tobytes()
    assert _bytes(xs) == values[2:].tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_every_dtype_dequeues_exactly_in_each_mode(backend, dtype):
    q, values = _filled(backend, dtype)
    got = [q.dequeue(), q.dequeue(), q.dequeue_many(2)]
    assert all(x.dtype == dtype for x, _ in got)
    _check(got, values, 4)

    q, values = _filled(backend, dtype)

    @tf.function
    def step():
        return q.dequeue(), q.dequeue(), q.dequeue_many(2)

    got = step()
    assert all(x.dtype == dtype for x, _ in got)
    _check(got, values, 4)

    q, values = _filled(backend, dtype)
    graph = tf.Graph()
    with graph.as_default():
        one, many = q.dequeue(), q.dequeue_many(2)
        assert one[0].dtype == dtype and many[0].dtype == dtype
        with tf.compat.v1.Session(graph=graph) as sess:
            got = [sess.run(one), sess.run(one), sess.run(many)]
    _check(got, values, 4)


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(d, marks=pytest.mark.xfail(raises=tf.errors.UnimplementedError, strict=True))
        if d.name in _NO_DATASET else d
        for d in DTYPES
    ],
    ids=lambda d: d.name,
)
def test_every_dtype_through_dataset(backend, dtype):
    q, values = _filled(backend, dtype, rows=6)
    got = [_bytes(x) for x, _ in q.dataset()]
    assert got == [v.tobytes() for v in values]

    q, values = _filled(backend, dtype, rows=6)
    graph = tf.Graph()
    with graph.as_default():
        batch = tf.compat.v1.data.make_one_shot_iterator(q.dataset(batch_size=3)).get_next()
        with tf.compat.v1.Session(graph=graph) as sess:
            got = [_bytes(sess.run(batch)[0]) for _ in range(2)]
    assert got == [values[:3].tobytes(), values[3:].tobytes()]


def test_a_dtype_control_flow_takes_crosses_it_as_itself(backend):
    # Only components whose dtype needs it are reinterpreted: a float32 queue's graph has no Bitcast.
    q = pyfastq.Queue(
        (tf.TensorSpec([3], tf.float32), tf.TensorSpec([3], tf.qint16)), capacity=4, backend=backend
    )
    graph = tf.Graph()
    with graph.as_default():
        q.dequeue_many(2)
    casts = [op for op in graph.get_operations() if op.type == "Bitcast"]
    assert [op.get_attr("type") for op in casts] == [tf.qint16]


@pytest.mark.parametrize("dtype", [tf.qint16, tf_dtypes.float8_e4m3fn], ids=lambda d: d.name)
def test_a_variable_shape_component_crosses_control_flow(backend, dtype):
    q = pyfastq.Queue(tf.TensorSpec([None], dtype), capacity=4, max_shapes=[5], backend=backend)
    short, long = np.arange(1, 4).astype(dtype.as_numpy_dtype), np.arange(1, 6).astype(dtype.as_numpy_dtype)
    for x in (short, long, short):
        q.put(x)
    q.close()
    batch, one = tf.function(lambda: (q.dequeue_many(2), q.dequeue()))()
    padded = np.concatenate([short, np.zeros(2, dtype.as_numpy_dtype)])
    assert batch.dtype == dtype and _bytes(batch) == np.stack([padded, long]).tobytes()
    assert one.shape == [3] and _bytes(one) == short.tobytes()


@pytest.mark.parametrize("dtype", [tf.qint16, tf.quint8, tf.bfloat16], ids=lambda d: d.name)
def test_padding_values_of_any_dtype(backend, dtype):
    q = pyfastq.Queue(tf.TensorSpec([None], dtype), capacity=4, max_shapes=[4], backend=backend)
    short, long = np.arange(1, 3).astype(dtype.as_numpy_dtype), np.arange(1, 5).astype(dtype.as_numpy_dtype)
    q.put(short)
    q.put(long)
    q.close()
    # A Python int converts as tf.convert_to_tensor would, which takes none for a quantized dtype: an array does.
    pad = np.full(2, 7).astype(dtype.as_numpy_dtype)
    batch = q.dequeue_many(2, padding_values=pad[0])
    assert batch.dtype == dtype and _bytes(batch) == np.stack([np.concatenate([short, pad]), long]).tobytes()
