"""A Keras model that shows what it trains on, for the BackupAndRestore tests: its Seen layer keeps the
indices of the batch the last training step took (x[:, 0] of Examples' items), -1 where the batch was short."""

import keras
import tensorflow as tf

import pyfastq

SPECS = (tf.TensorSpec([1], tf.float32), tf.TensorSpec([], tf.float32))


class Seen(keras.layers.Layer):
    def __init__(self, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(self.batch_size,), dtype="int64", initializer="zeros", trainable=False,
                                    name="seen")

    def call(self, x, training=False):
        if training:
            indices = tf.cast(x[:, 0], tf.int64)
            self.seen.assign(tf.pad(indices, [[0, self.batch_size - tf.shape(indices)[0]]], constant_values=-1))
        return x


def model(batch_size: int) -> keras.Model:
    m = keras.Sequential([keras.Input((1,)), Seen(batch_size), keras.layers.Dense(1)])
    m.compile(keras.optimizers.SGD(1e-9), "mse")
    return m


def trained(m: keras.Model) -> list[int]:
    """The indices the last training step of m took."""
    return [int(i) for i in m.layers[0].seen.numpy() if i >= 0]


class Steps(keras.callbacks.Callback):
    """Calls `record(indices)` with what each training step took, before later callbacks run."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_train_batch_end(self, batch, logs=None):
        self.record(trained(self.model))


def queue(shared: bool = False, capacity: int = 64) -> pyfastq.Queue:
    return pyfastq.Queue(SPECS, capacity=capacity, shared=shared, backend="native")
