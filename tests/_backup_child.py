"""A Keras trainer for the kill-and-restart test of pyfastq.keras.BackupAndRestore.

Usage: _backup_child.py LOG BACKUP_DIR N BATCH SAVE_FREQ. Resumes from BACKUP_DIR if it holds a backup.
Each training step appends one line to LOG, before the backup of that step is written: the indices the
model trained on (a JSON list). Steps last 20 ms more (a slow model), so the workers run ahead and fill
the queue: a buffer behind it would hold elements taken but untrained when a backup is written. Prints
"ready" once the producer runs, and "done" after fit.
"""

import json
import sys
import time

from _backup_model import Steps, model, queue
from _resume_data import Examples

import pyfastq
import pyfastq.keras

log_path, backup_dir, n, batch, save_freq = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
backup = pyfastq.keras.BackupAndRestore(backup_dir, save_freq=save_freq)
q = queue(shared=True)
m = model(batch)
with open(log_path, "a") as log:
    def record(indices):
        log.write(json.dumps(indices) + "\n")
        log.flush()
        time.sleep(0.02)

    with pyfastq.Producer(q, Examples(n), workers=2, mode="process", shuffle=True, seed=11,
                          resume=backup.data_state()) as p:
        backup.track(p)
        print("ready", flush=True)
        m.fit(q.dataset(batch), epochs=1, callbacks=[Steps(record), backup], verbose=0)
print("done", flush=True)
