"""Child processes for the tf.distribute tests: each is a fresh interpreter, as a strategy's devices and
TF_CONFIG must be set before TensorFlow starts its runtime.

    python _distribute.py mirrored                          # 2 logical CPUs, Keras fit
    python _distribute.py worker INDEX PORT0,PORT1 VARIANT  # one MultiWorkerMirroredStrategy worker
    python _distribute.py worker-fit INDEX PORT0,PORT1 HOW  # Keras fit instead (fails in Keras 3 here)

VARIANT is "pyfastq" (q.dataset() fed by a Producer, which closes the queue when training is over),
"pyfastq-open" (the same numbers put by a thread of the test's own, the queue left open and empty:
the iterator's prefetch is still waiting in a dequeue when the interpreter exits) or "tfdata" (the
same numbers from tf.data.Dataset.from_tensor_slices): the control for what TF does by itself.
Each child prints one line starting with "RESULT " and a JSON object once it has finished training;
what happens after that (interpreter exit) is judged apart.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

FEATURES = 4
PER_REPLICA = 8
STEPS = 12


def examples(worker_seed: int, count: int):
    rng = np.random.default_rng(worker_seed)
    for _ in range(count):
        x = rng.standard_normal(FEATURES).astype(np.float32)
        yield x, np.array([x.sum()], np.float32)


def report(**fields) -> None:
    print("RESULT " + json.dumps(fields), flush=True)


def mirrored() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import pyfastq

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    spec = (tf.TensorSpec([FEATURES], tf.float32), tf.TensorSpec([1], tf.float32))
    q = pyfastq.Queue(spec, capacity=64)
    total = STEPS * PER_REPLICA * strategy.num_replicas_in_sync
    dist = strategy.distribute_datasets_from_function(lambda ctx: q.dataset(PER_REPLICA, drop_remainder=True))
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input([FEATURES]), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    with pyfastq.Producer(q, lambda worker, workers: examples(0, total)):
        history = model.fit(dist, epochs=1, verbose=0)
    report(replicas=strategy.num_replicas_in_sync, gets=q.stats()["gets"], total=total,
           loss=float(history.history["loss"][-1]))


def configure(index: int, ports: str) -> None:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports.split(",")]}
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def worker(index: int, ports: str, variant: str) -> None:
    configure(index, ports)
    variant, exhaust = variant.removesuffix("-exhaust"), variant.endswith("-exhaust")
    import tensorflow as tf

    import pyfastq

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec = (tf.TensorSpec([FEATURES], tf.float32), tf.TensorSpec([1], tf.float32))
    count = STEPS * PER_REPLICA
    if variant.startswith("pyfastq"):
        q = pyfastq.Queue(spec, capacity=64)
        make = lambda ctx: q.dataset(PER_REPLICA, drop_remainder=True)  # noqa: E731 - as docs/gpus.md shows it
    else:
        xs, ys = map(np.stack, zip(*examples(index, count), strict=True))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        make = lambda ctx: tf.data.Dataset.from_tensor_slices((xs, ys)).batch(PER_REPLICA).with_options(options)  # noqa: E731
    dist = strategy.distribute_datasets_from_function(make)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input([FEATURES]), tf.keras.layers.Dense(1)])
        optimizer = tf.keras.optimizers.SGD(0.05)

    def step(x, y):  # one replica's step, run by strategy.run
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator):
        return strategy.reduce("MEAN", strategy.run(step, args=next(iterator)), axis=None)

    @tf.function
    def train_batch(x, y):
        return strategy.reduce("MEAN", strategy.run(step, args=(x, y)), axis=None)

    def train() -> list:
        if exhaust:  # to the dataset's end: q.dataset() ends when the queue is closed and drained
            return [float(train_batch(x, y)) for x, y in dist]
        iterator = iter(dist)
        return [float(train_step(iterator)) for _ in range(STEPS)]

    if variant == "pyfastq":
        with pyfastq.Producer(q, lambda w, n: examples(index, count)):
            losses = train()
        gets = q.stats()["gets"]
    elif variant == "pyfastq-open":
        import threading

        threading.Thread(target=lambda: [q.put(e) for e in examples(index, count)], daemon=True).start()
        losses = train()
        gets = q.stats()["gets"]
    else:
        losses, gets = train(), count
    weights = [w.numpy().ravel().tolist() for w in model.trainable_variables]
    report(index=index, variant=variant, steps=len(losses), first_loss=losses[0], last_loss=losses[-1],
           gets=gets, weights=weights)
    # For the exit study (docs/gpus.md: Exit under MultiWorkerMirroredStrategy): worker 1 lingers, so
    # the workers exit apart.
    if index == 1 and os.environ.get("DISTRIBUTE_EXIT_DELAY_S"):
        import time

        time.sleep(float(os.environ["DISTRIBUTE_EXIT_DELAY_S"]))


def worker_fit(index: int, ports: str, how: str) -> None:
    """Keras fit under MWMS on a plain tf.data dataset: HOW "function" hands fit the
    distribute_datasets_from_function result, "dataset" the dataset itself (Keras distributes it)."""
    configure(index, ports)
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    xs, ys = map(np.stack, zip(*examples(index, STEPS * PER_REPLICA), strict=True))
    make = lambda ctx: tf.data.Dataset.from_tensor_slices((xs, ys)).batch(PER_REPLICA)  # noqa: E731
    dist = strategy.distribute_datasets_from_function(make) if how == "function" else make(None)
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input([FEATURES]), tf.keras.layers.Dense(1)])
        model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="mse")
    try:
        model.fit(dist, epochs=1, verbose=0)
    except Exception as e:  # noqa: BLE001 - the failure is what this child reports
        report(index=index, fit="failed", error=f"{type(e).__name__}: {str(e)[:300]}")
    else:
        report(index=index, fit="ok")


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "mirrored":
        mirrored()
    elif kind == "worker":
        worker(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif kind == "worker-fit":
        worker_fit(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
