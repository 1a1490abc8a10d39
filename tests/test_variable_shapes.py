"""Specs with None dims, bounded by max_shapes: true shapes on dequeue, padded batches, on both backends."""

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

SPECS = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int64))
BOUNDS = ([6, 3], [4], None)  # a fully defined component needs no bound


def element(rows, tokens, label):
    return (
        np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + 100 * label,
        np.arange(1, tokens + 1, dtype=np.int32),
        np.int64(label),
    )


ELEMENTS = [element(2, 4, 0), element(5, 1, 1), element(1, 0, 2), element(6, 3, 3), element(3, 2, 4)]


def queue(backend, **kwargs):
    return pyfastq.Queue(SPECS, capacity=8, max_shapes=BOUNDS, backend=backend, **kwargs)


def test_dequeue_gives_each_element_its_own_shape(backend):
    q = queue(backend)
    for e in ELEMENTS:
        q.put(e)
    q.close()
    for want in ELEMENTS:
        got = q.dequeue()
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g.numpy(), w)


def test_static_shapes_keep_the_none_dims(backend):
    q = queue(backend)
    shapes = {}

    @tf.function
    def step():
        x, t, y = q.dequeue()
        xs, ts, ys = q.dequeue_many(2)
        shapes.update(x=x.shape, t=t.shape, y=y.shape, xs=xs.shape, ts=ts.shape, ys=ys.shape)
        return x, xs

    step.get_concrete_function()
    assert shapes["x"].as_list() == [None, 3] and shapes["t"].as_list() == [None] and shapes["y"] == []
    assert shapes["xs"].as_list() == [2, None, 3] and shapes["ts"].as_list() == [2, None]
    assert q.max_shapes == (tf.TensorShape([6, 3]), tf.TensorShape([4]), tf.TensorShape([]))


def test_dequeue_many_pads_to_the_largest_in_the_batch(backend):
    q = queue(backend)
    for e in ELEMENTS[:3]:
        q.put(e)
    x, t, y = q.dequeue_many(3)
    assert x.shape == [3, 5, 3] and t.shape == [3, 4] and y.numpy().tolist() == [0, 1, 2]
    assert t.numpy().tolist() == [[1, 2, 3, 4], [1, 0, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(x.numpy()[0, :2], ELEMENTS[0][0])
    assert not x.numpy()[0, 2:].any() and not x.numpy()[2, 1:].any()
    # padding_values, a nest like specs: None pads with zeros.
    for e in ELEMENTS[:2]:
        q.put(e)
    x, t, _ = q.dequeue_many(2, padding_values=(-1.0, -7, None))
    assert t.numpy().tolist() == [[1, 2, 3, 4], [1, -7, -7, -7]]
    assert (x.numpy()[0, 2:] == -1).all()


def test_padded_batches_through_dataset_match_padded_batch(backend):
    q = queue(backend)
    for e in ELEMENTS:
        q.put(e)
    q.close()
    ours = list(q.dataset(batch_size=2))
    reference = list(
        tf.data.Dataset.from_generator(lambda: iter(ELEMENTS), output_signature=SPECS).padded_batch(2)
    )
    assert len(ours) == len(reference) == 3
    for got, want in zip(ours, reference, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g.numpy(), w.numpy())
    with_value = queue(backend)
    for e in ELEMENTS[:2]:
        with_value.put(e)
    with_value.close()
    (x, t, _), = list(with_value.dataset(batch_size=2, drop_remainder=True, padding_values=(0.5, -1, None)))
    assert t.numpy().tolist() == [[1, 2, 3, 4], [1, -1, -1, -1]] and x.numpy()[0, 2:].tolist() == [[0.5] * 3] * 3


def test_an_element_over_its_bound_is_a_value_error_and_nothing_is_enqueued(backend):
    q = queue(backend)
    with pytest.raises(ValueError, match=r"component \[0\].*\[7, 3\].*bound \[6, 3\]"):
        q.put(element(7, 1, 0))
    with pytest.raises(ValueError, match=r"component \[1\].*\[5\].*bound \[4\]"):
        q.put(element(1, 5, 0))
    with pytest.raises(ValueError, match=r"bound"):
        q.put_many((np.zeros([2, 7, 3], np.float32), np.zeros([2, 1], np.int32), np.zeros([2], np.int64)))
    with pytest.raises(ValueError, match=r"expected shape \[None, 3\], got \[2, 4\]"):
        q.put((np.zeros([2, 4], np.float32), np.zeros([1], np.int32), np.int64(0)))
    with pytest.raises(ValueError, match="bound"):
        q.reserve(shapes=([7, 3], [1], []))
    assert q.size() == 0 and q.stats()["puts"] == 0
    q.put(element(6, 4, 0))  # at the bound is fine
    assert q.size() == 1


@pytest.mark.parametrize(
    "specs, max_shapes, error, match",
    [
        (tf.TensorSpec([None, 3], tf.float32), None, ValueError, "max_shapes"),
        (tf.TensorSpec([None, 3], tf.float32), [None, 3], ValueError, "no bound"),
        (tf.TensorSpec([None, 3], tf.float32), [4, 2], ValueError, "differs in dim 1"),
        (tf.TensorSpec([None, 3], tf.float32), [4], ValueError, "rank"),
        (tf.TensorSpec(None, tf.float32), [4], ValueError, "unknown rank"),
        ((tf.TensorSpec([None], tf.float32), tf.TensorSpec([2], tf.int32)), [[4]], TypeError, "nest like specs"),
    ],
)
def test_a_none_without_a_bound_is_a_value_error_at_queue(specs, max_shapes, error, match, backend):
    with pytest.raises(error, match=match):
        pyfastq.Queue(specs, max_shapes=max_shapes, backend=backend)


def test_put_many_and_reserve_with_shapes(backend):
    q = queue(backend)
    q.put_many((np.ones([3, 2, 3], np.float32), np.ones([3, 4], np.int32), np.arange(3, dtype=np.int64)))
    with pytest.raises(ValueError, match="shapes"):
        q.reserve()
    with q.reserve(shapes=([1, 3], [2], [])) as (x, t, y):
        assert x.shape == (1, 3) and t.shape == (2,)
        x[:] = 9
        t[:] = [5, 6]
        y[...] = 3
    q.close()
    x, t, y = q.dequeue_many(4)
    assert x.shape == [4, 2, 3] and x.numpy()[3].tolist() == [[9, 9, 9], [0, 0, 0]]
    assert t.numpy()[3].tolist() == [5, 6, 0, 0] and y.numpy().tolist() == [0, 1, 2, 3]


def test_variable_and_shuffled_together(native):
    q = queue(native, shuffle=True, min_after_dequeue=2, seed=4)
    for e in ELEMENTS:
        q.put(e)
    q.close()
    labels = []
    for x, t, y in q.dataset():
        want = ELEMENTS[int(y)]
        np.testing.assert_array_equal(x.numpy(), want[0])
        np.testing.assert_array_equal(t.numpy(), want[1])
        labels.append(int(y))
    assert sorted(labels) == [0, 1, 2, 3, 4]


def test_variable_shapes_from_process_workers(native):
    q = pyfastq.Queue(
        (tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)), capacity=8, max_shapes=([9], None),
        shared=True, backend=native,
    )
    with pyfastq.Producer(q, _ragged, workers=2, mode="process"):
        batches = list(q.dataset(batch_size=4))
    seen = {}
    for tokens, lengths in batches:
        assert tokens.shape[1] == max(lengths.numpy())  # padded to the longest in its batch
        for row, n in zip(tokens.numpy(), lengths.numpy(), strict=True):
            assert row[:n].tolist() == list(range(1, n + 1)) and not row[n:].any()
            seen[int(n)] = seen.get(int(n), 0) + 1
    assert seen == {n: 2 for n in range(10)}


def _ragged(worker, workers):
    for n in range(10):
        yield np.arange(1, n + 1, dtype=np.int32), np.int32(n)
