"""The private APIs pyfastq._compat wraps: each still there, with the shape pyfastq relies on, and each wrapper working.

A failure here means an installed Python, Ray or Keras changed one of them: its message names the API
and the place to update, pyfastq/_compat.py (each entry there says what it wraps and why).
"""

import inspect
import multiprocessing.context
import multiprocessing.reduction
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from pyfastq import _compat

from support import START_BUDGET_S


def changed(api: str, what: str) -> str:
    return f"{api} {what} in this version; update its wrapper in pyfastq/_compat.py (and the versions checked there)"


def run_child(code: str, *flags: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(_compat.__file__)))
    return subprocess.run([sys.executable, *flags, "-c", f"import sys; sys.path.insert(0, {root!r})\n{code}"],
                          capture_output=True, text=True, timeout=START_BUDGET_S)


# -- the standard library -----------------------------------------------------------------------------


def test_threading_register_atexit_runs_before_the_threads_are_joined():
    api = "threading._register_atexit"
    assert callable(getattr(threading, "_register_atexit", None)), changed(api, "is gone")
    params = list(inspect.signature(threading._register_atexit).parameters.values())
    assert params and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, changed(api, "takes other arguments")
    # A non-daemon thread waits for what the hook sets: the interpreter exits only if the hook runs before the join.
    child = run_child(textwrap.dedent("""
        import threading
        from pyfastq._compat import run_before_threads_join
        woken = threading.Event()
        threading.Thread(target=lambda: print("joined", woken.wait(20))).start()
        run_before_threads_join(woken.set)
    """))
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["joined", "True"], changed(api, "runs its hooks after the threads are joined")


def test_subprocess_args_from_interpreter_flags_starts_a_child_that_runs_alike():
    api = "subprocess._args_from_interpreter_flags"
    assert callable(getattr(subprocess, "_args_from_interpreter_flags", None)), changed(api, "is gone")
    # A child started with -O -X dev -W ... starts a grandchild with interpreter_flags(): both see the same.
    child = run_child(textwrap.dedent("""
        import subprocess, sys
        from pyfastq._compat import interpreter_flags
        show = "import sys; print(sys.flags, sys.warnoptions, sys._xoptions)"
        print(subprocess.run([sys.executable, *interpreter_flags(), "-c", show], capture_output=True, text=True,
                             check=True).stdout.strip())
        print(sys.flags, sys.warnoptions, sys._xoptions)
        print(interpreter_flags())
    """), "-O", "-X", "dev", "-W", "error::ResourceWarning")
    assert child.returncode == 0, child.stderr
    grandchild, mine, flags = child.stdout.splitlines()
    assert "optimize=1" in mine and "dev_mode=True" in mine and "error::ResourceWarning" in mine
    assert grandchild == mine, changed(api, f"gives {flags}, which start {grandchild}, not {mine}")


class Recorder:
    """A spawning Popen as multiprocessing.reduction.DupFd uses one."""

    def __init__(self):
        self.fds = []

    def duplicate_for_child(self, fd):
        self.fds.append(fd)
        return fd + 1000

    def DupFd(self, fd):
        return ("dup", fd)


def test_multiprocessing_set_spawning_popen_is_what_dupfd_asks():
    api = "multiprocessing.context.set_spawning_popen"
    for name in ("set_spawning_popen", "get_spawning_popen"):
        assert callable(getattr(multiprocessing.context, name, None)), changed(f"multiprocessing.context.{name}",
                                                                               "is gone")
    popen = Recorder()
    with _compat.spawning_popen(popen):
        assert multiprocessing.context.get_spawning_popen() is popen, changed(api, "sets something else")
        dup = multiprocessing.reduction.DupFd(7)
    assert popen.fds == [7] and dup == ("dup", 1007), changed(api, "is no longer what reduction.DupFd asks")
    assert multiprocessing.context.get_spawning_popen() is None
    with pytest.raises(KeyError), _compat.spawning_popen(popen):
        raise KeyError("a pickling error")
    assert multiprocessing.context.get_spawning_popen() is None


def test_frame_f_locals_reads_a_local_of_a_running_frame():
    api = "frame.f_locals"

    def paused():
        here = "a value"
        yield here

    gen = paused()
    next(gen)
    assert _compat.frame_local(gen.gi_frame, "here") == "a value", changed(api, "does not read a running frame's local")
    assert _compat.frame_local(gen.gi_frame, "nowhere") is None, changed(api, "reads a name the frame does not have")
    mine = inspect.currentframe()
    assert _compat.frame_local(mine, "gen") is gen, changed(api, "does not read the current frame's local")


# -- Ray ----------------------------------------------------------------------------------------------


def test_ray_generator_backpressure_option():
    ray = pytest.importorskip("ray")
    from ray.actor import ActorMethod

    api = f"Ray's {_compat.GENERATOR_BACKPRESSURE_OPTION} option (ActorMethod.options)"
    accepted = inspect.signature(ActorMethod._remote).parameters
    assert _compat.GENERATOR_BACKPRESSURE_OPTION in accepted, changed(api, f"is gone (Ray {ray.__version__})")
    assert "num_returns" in accepted
    options = _compat.streaming_options(4)
    assert set(options) <= set(accepted), changed(api, f"is refused (Ray {ray.__version__})")


def test_ray_actor_handle_actor_id():
    ray = pytest.importorskip("ray")
    from ray.actor import ActorHandle

    api = "ray.actor.ActorHandle._actor_id"
    assert isinstance(inspect.getattr_static(ActorHandle, "_actor_id", None), property), \
        changed(api, f"is gone (Ray {ray.__version__})")
    assert callable(getattr(ray.ActorID, "hex", None)), changed(f"{api}.hex()", f"is gone (Ray {ray.__version__})")
    # On live actors, test_ray_producer's failure tests check that actor_id(handle) is the id the actor
    # itself gives through the public get_runtime_context().get_actor_id().


# -- Keras --------------------------------------------------------------------------------------------


def test_keras_backup_and_restore_has_the_hooks_and_state_pyfastq_keras_uses(tmp_path):
    tf = pytest.importorskip("tensorflow")
    base = tf.keras.callbacks.BackupAndRestore
    api = f"keras.callbacks.BackupAndRestore (Keras {tf.keras.__version__})"
    calls = []

    class Recording(base):
        def _load_model(self):
            calls.append("_load_model")
            super()._load_model()

        def _save_model(self):
            calls.append("_save_model")
            super()._save_model()

    callback = Recording(str(tmp_path / "backup"), delete_checkpoint=False)
    missing = _compat.keras_backup_missing(base, callback)
    assert not missing, changed(api, f"has no {', '.join(missing)}")
    model = tf.keras.Sequential([tf.keras.Input([2]), tf.keras.layers.Dense(1)])
    model.compile(loss="mse")
    x, y = np.zeros([4, 2], np.float32), np.zeros([4, 1], np.float32)
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[callback], verbose=0)
    assert calls == ["_load_model", "_save_model"], changed(api, f"calls its hooks otherwise: {calls}")
    # Keras reads the weights from _weights_path, and its metadata from _training_metadata_path.
    assert os.path.exists(callback._weights_path), changed(f"{api}._weights_path", "is not where Keras writes")
    assert os.path.exists(callback._training_metadata_path), \
        changed(f"{api}._training_metadata_path", "is not where Keras writes")
    assert callback._current_epoch == 1, changed(f"{api}._current_epoch", "does not count epochs")


def test_a_note_shows_once_in_the_formatted_exception():
    try:
        try:
            [][3]
        except IndexError as e:
            _compat.add_note(e, "pyfastq: raised by source[3]")
            raise
    except IndexError as e:
        text = _compat.format_exception(e)
        pickled = pickle.loads(pickle.dumps(e))
    assert text.rstrip().endswith("pyfastq: raised by source[3]") and text.count("source[3]") == 1, text
    assert pickled.__notes__ == ["pyfastq: raised by source[3]"]  # a worker's exception reaches the trainer so


# -- TensorFlow ---------------------------------------------------------------------------------------


def test_tf_runtime_started_and_the_eager_device_scope():
    import tensorflow as tf

    tf.constant(1.0)  # an eager op starts the runtime
    assert _compat.tf_runtime_started(), changed("Context._context_handle", "is not set once TF's runtime has started")
    with tf.device("/CPU:0"):
        inside = _compat.eager_device_name()
    assert inside.endswith("/device:CPU:0"), changed("Context.device_name", f"gives {inside!r} under tf.device")
    assert _compat.eager_device_name() == "", changed("Context.device_name", "is not empty outside any tf.device")


def test_graph_device_scopes_merge_as_the_graph_merges_them():
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    api = "Graph._device_function_stack"
    graph = tf.Graph()
    with graph.as_default():
        assert _compat.graph_device_scopes(graph) == [], changed(api, "is not empty outside any tf.device")
        with tf.device("/job:a"), tf.device("/CPU:0"):
            scopes = _compat.graph_device_scopes(graph)
            made = tf.constant(1.0).device
    assert scopes is not None and len(scopes) == 2, changed(api, f"holds {scopes!r} under two tf.device scopes")
    node = node_def_pb2.NodeDef(op="PyfastqDequeue")
    for scope in reversed(scopes):  # outermost first, as the graph applies them
        assert not scope.is_null_merge and scope.function is not None, changed(api, "holds scopes of another shape")
        node.device = scope.string_merge(node)
    assert node.device == made, changed(api, f"merges to {node.device!r} where the graph put its op on {made!r}")


def test_dataset_source_is_the_base_tf_data_accepts():
    import tensorflow as tf

    base = _compat.dataset_source_base()
    assert issubclass(base, tf.data.Dataset), changed("dataset_ops.DatasetSource", "is no tf.data.Dataset")

    class Range(base):
        def __init__(self):
            super().__init__(tf.data.Dataset.range(3)._variant_tensor)

        @property
        def element_spec(self):
            return tf.TensorSpec([], tf.int64)

    assert [int(x) for x in Range()] == [0, 1, 2], changed("dataset_ops.DatasetSource", "no longer wraps a variant")
