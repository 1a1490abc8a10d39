"""pyfastq.keras.BackupAndRestore: Keras' backups with the data state, and an exact resume after a kill."""

import collections
import json
import os

import pytest
from _backup_model import Steps, model, queue
from _resume_data import Examples

import pyfastq
import pyfastq.keras
from pyfastq._sources import Sampler

from support import START_BUDGET_S, read_line, start_child, wait_until

pytestmark = pytest.mark.timeout(300)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
BATCH = 32


def metadata(backup_dir):
    path = os.path.join(backup_dir, "training_metadata.json")
    return json.loads(open(path).read()) if os.path.exists(path) else None


def test_a_trainer_killed_after_a_backup_trains_on_every_index_once(native, tmp_path, leftovers):
    n, save_freq = 4000, 10
    log, backup_dir = tmp_path / "steps.jsonl", str(tmp_path / "backup")
    args = (log, backup_dir, n, BATCH, save_freq)

    def steps():
        return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("]")] \
            if log.exists() else []

    child = start_child(os.path.join(TESTS_DIR, "_backup_child.py"), *args, cwd=tmp_path)
    leftovers.append(child)
    assert read_line(child) == "ready"
    wait_until(lambda: metadata(backup_dir) is not None and len(steps()) >= save_freq + 5,
               "the trainer to back up and train on")
    child.kill()
    child.wait(30)
    first = steps()
    assert sum(map(len, first)) < n, "the first run ended before it was killed"
    backed_up = metadata(backup_dir)
    covered = first[: backed_up["batch"] + 1]  # what the backup's weights trained on; the rest was lost with them
    assert backed_up["pyfastq"]["position"] + len(backed_up["pyfastq"]["taken"]) == sum(map(len, covered))
    log.write_text("")
    second = start_child(os.path.join(TESTS_DIR, "_backup_child.py"), *args, cwd=tmp_path)
    leftovers.append(second)
    assert read_line(second) == "ready"
    assert read_line(second) == "done"
    assert second.wait(START_BUDGET_S) == 0
    trained = [i for s in covered + steps() for i in s]
    assert collections.Counter(trained) == {i: 1 for i in range(n)}
    assert not os.path.exists(backup_dir)  # removed at the end of the fit that finished


def test_each_backup_holds_exactly_what_the_trained_steps_took(native, tmp_path):
    backup_dir = str(tmp_path / "backup")
    backup = pyfastq.keras.BackupAndRestore(backup_dir, save_freq=3)
    assert backup.data_state() is None
    q, m, seen, backups = queue(), model(BATCH), [], []

    def record(indices):
        seen.append(indices)
        if len(seen) % 3 == 1 and len(seen) > 1:  # the backup of the step before this one is on disk
            backups.append((len(seen) - 1, backup.data_state()))

    with pyfastq.Producer(q, Examples(BATCH * 40), workers=2, shuffle=True, seed=4, epochs=None) as p:
        backup.track(p)
        m.fit(q.dataset(BATCH), epochs=2, steps_per_epoch=20, callbacks=[Steps(record), backup], verbose=0)
    assert len(seen) == 40 and len(backups) == 13
    sampler = Sampler(BATCH * 40, shuffle=True, seed=4, epochs=None)
    for steps, state in backups:
        trained = [i for s in seen[:steps] for i in s]
        taken = [sampler.index(p) for p in [*range(state["position"]), *state["taken"]]]
        assert len(trained) == steps * BATCH and sorted(taken) == sorted(trained)
    assert not os.path.exists(backup_dir)
    assert backup.data_state() is None


def test_a_backup_kept_resumes_only_its_own_source_and_seed(native, tmp_path):
    backup_dir = str(tmp_path / "backup")
    backup = pyfastq.keras.BackupAndRestore(backup_dir, save_freq=2, delete_checkpoint=False)
    q, m = queue(), model(BATCH)
    with pyfastq.Producer(q, Examples(BATCH * 10), shuffle=True, seed=4) as p:
        backup.track(p)
        m.fit(q.dataset(BATCH), epochs=1, steps_per_epoch=5, callbacks=[backup], verbose=0)
    state = backup.data_state()
    assert state["seed"] == 4 and state["position"] + len(state["taken"]) == 4 * BATCH  # the backup of step 4
    assert sorted(os.listdir(backup_dir)) == ["training_metadata.json", "weights-2.weights.h5"]
    for source, seed, field in [(Examples(BATCH * 11), 4, "length"), (Examples(BATCH * 10), 5, "seed")]:
        with pytest.raises(ValueError, match=f"state's {field}"):
            pyfastq.Producer(queue(), source, shuffle=True, seed=seed, resume=backup.data_state())
    # A producer that does not start from the backup is refused before the weights are restored.
    again = pyfastq.keras.BackupAndRestore(backup_dir, save_freq=2)
    with pyfastq.Producer(q2 := queue(), Examples(BATCH * 10), shuffle=True, seed=4) as p:
        again.track(p)
        with pytest.raises(ValueError, match=r"resume=backup\.data_state\(\)"):
            model(BATCH).fit(q2.dataset(BATCH), epochs=1, callbacks=[again], verbose=0)
    with pyfastq.Producer(q3 := queue(), Examples(BATCH * 10), shuffle=True, seed=4, resume=again.data_state()) as p:
        again.track(p)
        seen = []
        model(BATCH).fit(q3.dataset(BATCH), epochs=1, callbacks=[Steps(seen.append), again], verbose=0)
    assert len(seen) == 6 and not os.path.exists(backup_dir)


def test_track_refuses_what_cannot_be_exact(native, tmp_path):
    backup = pyfastq.keras.BackupAndRestore(str(tmp_path / "backup"), save_freq=2)
    q = queue()
    q.dataset(BATCH)
    p = pyfastq.Producer(q, Examples(100), close_on_exit=False)
    with pytest.raises(ValueError, match=r"call q\.dataset\(\) after backup\.track\(p\)"):
        backup.track(p)
    with pytest.raises(ValueError, match="random-access source"):
        backup.track(pyfastq.Producer(queue(), lambda i, n: iter(())))
    with pytest.raises(ValueError, match=r"track\(p\)"):
        model(BATCH).fit(queue().dataset(BATCH), epochs=1, callbacks=[backup], verbose=0)
    with pytest.raises(ValueError, match="double_checkpoint"):
        pyfastq.keras.BackupAndRestore(str(tmp_path / "b2"), double_checkpoint=True)


def test_a_backup_without_a_data_state_is_named(native, tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    with pytest.raises(ValueError, match="holds no data state"):
        pyfastq.keras.BackupAndRestore(str(backup_dir)).data_state()


def test_backups_at_epoch_ends_hold_the_epochs_trained(native, tmp_path):
    backup_dir = str(tmp_path / "backup")
    backup = pyfastq.keras.BackupAndRestore(backup_dir, delete_checkpoint=False)  # save_freq="epoch"
    q = queue()
    with pyfastq.Producer(q, Examples(BATCH * 20), shuffle=True, seed=1, epochs=None) as p:
        backup.track(p)
        model(BATCH).fit(q.dataset(BATCH), epochs=3, steps_per_epoch=4, callbacks=[backup], verbose=0)
    state = backup.data_state()
    assert metadata(backup_dir)["epoch"] == 3
    assert state["position"] + len(state["taken"]) == 3 * 4 * BATCH
