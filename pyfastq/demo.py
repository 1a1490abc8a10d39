"""The end-to-end demo: Python producers feed Keras `fit` through a pyfastq queue.

Run it with ``pyfastq demo`` (producer threads), ``pyfastq demo --mode process``
(worker processes writing into a ring in shared memory) or ``pyfastq demo --mode ray``
(Ray actors, on the cluster in RAY_ADDRESS or a local Ray started for it). It trains a small
classifier on synthetic data that only Python code can make, then prints what
went through the queue; a ``pyfastq.keras.QueueMonitor`` says at the end of ``fit``
whether the model or the producers waited (``--log-dir`` also writes its TensorBoard scalars).
"""

from __future__ import annotations

import functools
import time
import warnings

import numpy as np

from .producer import Producer

# TensorFlow is imported in main() only: worker processes import this module
# for make_examples and have no use for it.


def make_examples(worker: int, workers: int, count: int, rng_seed: int = 0):
    """Synthetic 'decoded' examples: a 32x32x3 image whose mean brightness sets the label."""
    rng = np.random.default_rng(rng_seed + worker)
    for _ in range(worker, count, workers):
        label = np.int32(rng.integers(0, 4))
        image = (rng.random((32, 32, 3), dtype=np.float32) * 0.5 + label * 0.15).astype(np.float32)
        yield image, label


def main(
    examples: int = 20_000,
    batch_size: int = 64,
    workers: int = 2,
    backend: str = "auto",
    mode: str = "thread",
    log_dir: str | None = None,
    compare: bool = True,
) -> dict:
    import tensorflow as tf

    from .keras import QueueMonitor
    from .queue import Queue

    specs = (tf.TensorSpec([32, 32, 3], tf.float32), tf.TensorSpec([], tf.int32))
    q = Queue(specs, capacity=1024, backend=backend, shared=mode == "process", name="demo")
    model = _model(tf)
    kind = {"thread": "threads", "process": "processes", "ray": "Ray actors"}[mode]
    print(f"pyfastq demo: {workers} producer {kind} -> queue ({q.backend} backend) -> Keras fit, "
          f"{examples} examples in batches of {batch_size}", flush=True)
    start = time.perf_counter()
    fn = functools.partial(make_examples, count=examples)
    monitor = QueueMonitor(q, log_dir=log_dir)  # prints who waited, the model or the producers, when fit ends
    with Producer(q, fn, workers=workers, mode=mode):
        history = _fit(model, q.dataset(batch_size=batch_size), callbacks=[monitor])
    seconds = time.perf_counter() - start
    stats = q.stats()
    accuracy = float(history.history["accuracy"][-1])
    print(f"trained on {stats['gets']} examples in {seconds:.1f} s ({stats['gets'] / seconds:,.0f} examples/s), "
          f"accuracy {accuracy:.2f}; producers waited {stats['put_wait_s']:.1f} s for space, "
          f"the model waited {stats['get_wait_s']:.1f} s for data", flush=True)
    if stats["gets"] != examples:
        raise SystemExit(f"demo failed: {examples} examples made, {stats['gets']} trained on")
    result = {"examples": stats["gets"], "seconds": seconds, "accuracy": accuracy, "backend": q.backend,
              "mode": mode, "verdict": monitor.verdict}
    if compare:
        result["from_generator"] = _from_generator(tf, specs, examples, batch_size, seconds)
    return result


def _model(tf):
    model = tf.keras.Sequential([
        tf.keras.Input([32, 32, 3]),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(4),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _fit(model, dataset, callbacks=()):
    """One epoch of model.fit on dataset, which ends when its data does."""
    with warnings.catch_warnings():
        # Keras says this of every dataset whose length it cannot know ahead (a queue's ends when it is
        # closed, a generator's when it returns).
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        return model.fit(dataset, epochs=1, verbose=2, shuffle=False, callbacks=list(callbacks))


def _from_generator(tf, specs, examples: int, batch_size: int, pyfastq_seconds: float) -> dict:
    """The same examples and model fed the way most code does it today: tf.data's from_generator."""
    print(f"the same through tf.data.Dataset.from_generator (one generator: it holds the GIL for every "
          f"element), {examples} examples in batches of {batch_size}", flush=True)
    ds = tf.data.Dataset.from_generator(lambda: make_examples(0, 1, examples), output_signature=specs)
    start = time.perf_counter()
    history = _fit(_model(tf), ds.batch(batch_size).prefetch(2))
    seconds = time.perf_counter() - start
    accuracy = float(history.history["accuracy"][-1])
    ratio = seconds / pyfastq_seconds
    print(f"from_generator: {examples} examples in {seconds:.1f} s ({examples / seconds:,.0f} examples/s), "
          f"accuracy {accuracy:.2f}; pyfastq trained {ratio:.1f}x as fast", flush=True)
    return {"seconds": seconds, "accuracy": accuracy, "speedup": ratio}


if __name__ == "__main__":
    main()
