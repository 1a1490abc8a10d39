"""A trainer for the kill-and-resume test: consumes in steps and logs each step as a checkpoint would.

Usage: _resume_child.py LOG N STEP [STATE_FILE]. Each finished step appends one JSON line to LOG: the
elements the step took and the producer's state() after it (fsync'ed: what a checkpoint keeps). With
STATE_FILE, the run resumes from the state of that file. Prints "ready" once it consumes.
"""

import json
import os
import sys

import tensorflow as tf

import pyfastq

from _sources_data import Sleepy

log_path, n, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resume = None
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        resume = json.load(f)

q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=64, shared=True)
source = Sleepy(n, 0.001)
with pyfastq.Producer(q, source, workers=2, mode="process", shuffle=True, seed=None if resume else 11,
                      resume=resume) as p, open(log_path, "a") as log:
    # dequeue_many, not a dataset: tf.data may put a prefetch buffer after a batch, whose elements
    # the queue has handed out but no step has trained on.
    print("ready", flush=True)
    while True:
        try:
            batch = q.dequeue_many(step, allow_smaller_final_batch=True)
        except tf.errors.OutOfRangeError:
            break
        state = p.state()
        log.write(json.dumps({"elements": [int(x) for x in batch], "state": state}) + "\n")
        log.flush()
        os.fsync(log.fileno())
