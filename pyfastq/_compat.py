"""The private APIs of the standard library, Ray and Keras that pyfastq relies on, each in one place.

Each entry names what it wraps, why no public API does the job, and the versions it was checked on;
``tests/test_compat.py`` fails, naming the API and this file, when an installed version no longer
has it. Product code reaches these APIs only through here.

Nothing here imports TensorFlow, Keras or Ray: worker processes import this module, and the Ray and
Keras entries work on objects their callers already hold.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# -- the standard library: checked on CPython 3.10.13, 3.11.7, 3.12.1 and 3.13.0 ----------------------


def run_before_threads_join(func: Callable[[], None]) -> None:
    """Runs func at interpreter exit before the non-daemon threads are joined (not after, as atexit does)."""
    # threading._register_atexit (3.9+): the hooks threading._shutdown runs before it joins the non-daemon
    # threads; concurrent.futures registers its own wake-up there. atexit.register's functions run only
    # after those joins, too late to wake a thread blocked in a put, which the interpreter waits for.
    threading._register_atexit(func)


def interpreter_flags() -> list[str]:
    """The command-line options (-O, -B, -E, -X ..., -W ...) this interpreter runs with, for a child to run alike."""
    # subprocess._args_from_interpreter_flags (2.7+; multiprocessing's spawn starts its children with it).
    # sys.flags holds the flags but not as options, and the -X and -W options it misses are in
    # sys._xoptions and sys.warnoptions: rebuilding them would be as private and longer.
    import subprocess

    return subprocess._args_from_interpreter_flags()


@contextlib.contextmanager
def spawning_popen(popen: Any) -> Iterator[None]:
    """Within the block, multiprocessing's spawning Popen is ``popen``: what pickles a DupFd asks for descriptors.

    ``popen`` needs ``duplicate_for_child(fd) -> int`` and ``DupFd(fd)`` (an object whose ``detach()``
    gives the descriptor in the child).
    """
    # multiprocessing.context.set_spawning_popen (3.4+, no underscore but undocumented): the documented
    # multiprocessing.reduction.DupFd hands a descriptor to a child only through the spawning Popen it
    # reads with get_spawning_popen; a pickler outside multiprocessing's Popen sets its own with this.
    from multiprocessing import context

    context.set_spawning_popen(popen)
    try:
        yield
    finally:
        context.set_spawning_popen(None)


def frame_local(frame: FrameType, name: str) -> Any:
    """The value of local variable ``name`` in ``frame`` (a running one too); None if it has none."""
    # frame.f_locals: a documented attribute whose meaning changed in 3.13 (PEP 667): a function's frame
    # gives a write-through proxy where 3.10-3.12 give a dict refreshed from the fast locals at each
    # access. Reading one name through .get() is the same on both; no other API reads another frame's locals.
    return frame.f_locals.get(name)


def add_note(e: BaseException, note: str) -> None:
    """PEP 678's ``e.add_note(note)``, on 3.10 too (where format_exception below shows it)."""
    if sys.version_info >= (3, 11):
        e.add_note(note)
    else:  # the __notes__ list 3.11's add_note keeps, as PEP 678's backports keep it
        e.__notes__ = [*getattr(e, "__notes__", ()), note]


def format_exception(e: BaseException) -> str:
    """The traceback Python prints for ``e``, its notes included (3.10's traceback module leaves them out)."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    notes = "".join(f"{note}\n" for note in getattr(e, "__notes__", ()))
    # On 3.10 exceptiongroup's backport (which pytest installs there) prints the notes already.
    if sys.version_info < (3, 11) and not text.endswith(notes):
        text += notes
    return text


# -- Ray: checked on Ray 2.60.0 ------------------------------------------------------------------------

# The option of ActorMethod.options() (and ray.method(), ray.remote()) that bounds a streaming generator: it
# pauses while this many of its objects wait for the caller. No public option does it; Ray Data's map
# operators bound their own streaming generators with it.
GENERATOR_BACKPRESSURE_OPTION = "_generator_backpressure_num_objects"


def streaming_options(in_flight: int) -> dict[str, Any]:
    """Options for ``actor.method.options(...)``: a streaming generator paused while in_flight objects wait."""
    return {"num_returns": "streaming", GENERATOR_BACKPRESSURE_OPTION: in_flight}


def actor_id(actor: Any) -> str:
    """The id (hex) of the Ray actor behind a handle, as ``get_actor_id()`` says it inside the actor."""
    # ActorHandle._actor_id: the trainer names an actor (in a death message, in a producer's list of
    # replaced workers) that may have died before answering any call; the public
    # ray.get_runtime_context().get_actor_id() answers only inside the actor, and repr(handle)'s format
    # is no API either.
    return actor._actor_id.hex()


# -- Keras: checked on Keras 3.15.1 (with TensorFlow 2.21.0) -------------------------------------------

# pyfastq.keras.BackupAndRestore extends keras.callbacks.BackupAndRestore: it overrides these hooks (what
# on_train_begin calls to restore, what on_epoch_end and on_train_batch_end call to back up) ...
KERAS_BACKUP_HOOKS = ("_load_model", "_save_model")
# ... and reads or sets this state of Keras' (the weights file _load_model reads, the metadata file, the
# epoch and batch a backup records). Keras offers no public hook around a backup that could store the
# producer's state at the same step, nor one that writes a backup whole or not at all.
KERAS_BACKUP_STATE = ("_weights_path", "_training_metadata_path", "_current_epoch", "_last_batch_seen")


def keras_backup_missing(base: type, callback: Any = None) -> list[str]:
    """The KERAS_BACKUP_HOOKS that ``base`` lacks and, given an instance, the KERAS_BACKUP_STATE it lacks."""
    missing = [name for name in KERAS_BACKUP_HOOKS if not callable(getattr(base, name, None))]
    if callback is not None:
        missing += [name for name in KERAS_BACKUP_STATE if not hasattr(callback, name)]
    return missing


# -- TensorFlow: checked on TensorFlow 2.21.0 ---------------------------------------------------------
# Imported inside each function: worker processes import this module without TensorFlow.


def tf_runtime_started() -> bool:
    """Whether TF's eager runtime has started (its device configuration is then fixed)."""
    # Context._context_handle (tensorflow.python.eager.context): set when the runtime starts. The public
    # tf.config.list_logical_devices answers only by starting it, which would fix set_visible_devices,
    # set_memory_growth and virtual devices for good in a program that only builds a graph yet.
    from tensorflow.python.eager import context

    return getattr(context.context(), "_context_handle", None) is not None


def eager_device_name() -> str:
    """The device of the innermost tf.device scope in eager mode: "" outside any."""
    # Context.device_name: what tf.device set for eager ops; no public API reads the scope back.
    from tensorflow.python.eager import context

    return context.context().device_name or ""


def graph_device_scopes(graph: Any) -> list | None:
    """The tf.device scopes in force in ``graph`` (a tf.Graph), innermost first; None if this TF keeps none there.

    Each has ``is_null_merge``, ``function`` and ``string_merge(node_def)``: how TF merges them into a new op.
    """
    # Graph._device_function_stack: a graph merges these into each op it makes (Graph._apply_device_functions);
    # no public API tells on which device an op made now will be requested without adding it to the graph.
    stack = getattr(graph, "_device_function_stack", None)
    return None if stack is None else list(stack.peek_objs())


def dataset_source_base() -> type:
    """tf.data's base class for a dataset whose variant an op makes (tensorflow-io's datasets subclass it too)."""
    # tensorflow.python.data.ops.dataset_ops.DatasetSource: tf.data exports no base for a dataset made by a
    # custom op; tf.data.Dataset itself is abstract over the same _variant_tensor this class sets.
    from tensorflow.python.data.ops import dataset_ops

    return dataset_ops.DatasetSource
