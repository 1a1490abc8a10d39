"""pyfastq.Producer: what TF1's QueueRunner + Coordinator were, for Python producers.

Threads here; worker processes that write straight into a shared ring in
``_process``; Ray actors streaming chunks to a feeder in ``_ray``. No
TensorFlow is imported here: worker processes and Ray actors import this
module and should not pay for TF.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _process
from ._contract import MAX_ORDERED_WORKERS
from ._errors import QueueClosed
from ._sources import (
    EpochEnds,
    LocalClaims,
    Plan,
    RingTurns,
    Sampler,
    SharedClaims,
    has_epoch_end,
    is_keras_batches,
    is_random_access,
    run_claims,
)
from ._worker import (
    WorkerInfo,
    failure_message,
    put_until_stopped,
    set_thread_info,
    worker_info,
    worker_seed,
)

if TYPE_CHECKING:
    from . import _ray
    from .queue import Queue

__all__ = ["Producer", "WorkerInfo", "worker_info"]

MODES = ("thread", "process", "ray")
STATE_VERSION = 1  # of the dict Producer.state() returns

log = logging.getLogger("pyfastq")

# workers="auto": every AUTO_TICK_S the pool is judged over the last AUTO_WINDOW_S; it grows while consumers
# waited for data at least GROW_SHARE of the window, shrinks while producers waited for room at least
# SHRINK_SHARE of it, and after a change waits AUTO_SETTLE_S (a new process takes a while to start), then a
# whole window, before judging again. The first judgement needs no whole window: until the first change
# every tick judges the time since the start, so a consumer waiting from its first step gets its second
# worker within a tick or two instead of half a second later.
AUTO_TICK_S = 0.1
AUTO_WINDOW_S = 0.5
GROW_SHARE = 0.1
SHRINK_SHARE = 0.8
AUTO_SETTLE_S = 1.0


class Producer:
    """Runs ``fn(worker_index, num_workers)`` in workers and puts what it yields; or reads a random-access source.

    >>> with pyfastq.Producer(q, lambda i, n: (make(k) for k in range(i, 1000, n)), workers=4):
    ...     model.fit(q.dataset(batch_size=32))

    ``source`` may instead be a random-access source: any object with
    ``__len__`` and ``__getitem__`` (a Keras ``PyDataset``, a grain or
    torch-style map dataset, a list). Item ``i`` is one element; for a Keras
    ``PyDataset``/``Sequence`` (or ``batched=True``) it is a batch whose dim 0
    splits into elements. A sampler here decides which index each position of
    the run reads: ``epochs`` passes (None: forever), each over the indices in
    order or, with ``shuffle``, in a permutation drawn from ``seed`` and the
    epoch; ``shard=(index, count)`` reads only indices ``index, index + count,
    ...`` (for tf.distribute: ``shard=(ctx.input_pipeline_id,
    ctx.num_input_pipelines)``). Workers claim a few positions at a time as they
    go, so a slow item or worker holds back no other; ``ordered=True`` delivers
    in the sampler's order whichever worker read the item. ``workers="auto"``
    starts one worker, adds one while the consumers wait for data and retires
    one while the workers wait for room, up to ``max_workers`` (the cores this
    process may use); ``p.workers`` is the count now, and each change is logged
    at INFO on the "pyfastq" logger. A Keras ``PyDataset`` with an
    ``on_epoch_end`` of its own has it called between epochs in
    ``mode="thread"`` (no read of the next epoch starts before it returns); in
    the other modes each worker holds a copy, and it is not called (a warning
    says so).

    >>> with pyfastq.Producer(q, my_pydataset, workers="auto", mode="process", shuffle=True, epochs=3):
    ...     model.fit(q.dataset(batch_size=32))

    When every worker has finished, the queue is closed (``close_on_exit``); a
    worker's exception fails the queue, so consumers raise it. Leaving the
    ``with`` block (or ``stop()``) stops the workers, waking any blocked in
    put, and joins them.

    ``mode="process"`` runs the workers in processes (GIL-bound Python scales
    with cores) that write into the ring of a ``Queue(shared=True)``. Each is a
    lean interpreter: it never runs this program's main module nor imports
    TensorFlow (unless ``fn`` does); ``fn`` travels by cloudpickle, by value if
    it comes from ``__main__`` (a script, ``python -c``, a notebook), so a
    lambda or a local function works. Each worker process seeds ``random`` and
    ``numpy.random`` from ``seed`` and its index; a worker that dies (a signal,
    ``os._exit``) fails the queue within a second; if this process dies, the
    workers exit by themselves.

    ``ordered=True`` delivers in a fixed round-robin of workers (worker 0's
    first element, worker 1's first, ..., worker 0's second, ...; a worker
    that has finished is skipped), so a run is reproducible whatever the
    timing. Workers still make their elements in parallel.

    With a random-access source, ``p.state()`` says what the consumers have
    taken (a JSON-able dict, for a checkpoint) and ``resume=state`` delivers
    each position not taken before exactly once, then the later epochs.
    With Keras, ``pyfastq.keras.BackupAndRestore`` stores that state with each
    backup and gives it back (``resume=backup.data_state()``).
    ``restarts=k`` (process and Ray modes) replaces a worker that dies, up to
    k times over the run: a worker process's slots come back and the rest of
    its claim goes to its replacement; a Ray actor's replacement reads again
    the positions it had under way (none of which was put). Past k, the
    death fails the queue as without restarts.

    ``mode="ray"`` runs the workers in Ray actors (options from
    ``ray_options``, e.g. ``{"num_cpus": 2, "resources": {...}}``) anywhere in
    the Ray cluster this process is connected to (a local one is started if
    Ray is not initialised). Each streams what ``fn`` yields back in chunks,
    with backpressure; a feeder thread here puts them into the queue, which
    may be any Queue. Seeds and ``ordered`` as with processes; an actor that
    dies fails the queue within seconds, naming the worker (with restarts
    left, a random-access source's actor is replaced instead); leaving the
    ``with`` block kills the actors (``p.actors``).
    """

    def __init__(
        self,
        queue: Queue,
        source: Callable[[int, int], Iterable[Any]] | Any,
        workers: int | str = 1,
        mode: str = "thread",
        close_on_exit: bool = True,
        *,
        ordered: bool = False,
        seed: int | None = None,
        shuffle: bool = False,
        epochs: int | None = 1,
        shard: tuple[int, int] | None = None,
        restarts: int = 0,
        resume: dict | None = None,
        max_workers: int | None = None,
        batched: bool | None = None,
        ray_options: dict | None = None,
        _track_positions: bool = True,  # False: record nothing of what is taken, as a queue that cannot (the bench)
    ):
        random_access = is_random_access(source)
        _check_arguments(queue, source, workers, mode, ordered, seed, ray_options)
        _check_sampling(random_access, workers, shuffle, epochs, shard, max_workers, batched, restarts, resume)
        if resume is not None:
            seed = _check_resume(resume, len(source), shuffle, seed, shard)
        if restarts and mode == "thread":
            raise ValueError('restarts replace dead worker processes and Ray actors: mode="process" or mode="ray", '
                             f"not mode={mode!r}")
        self.queue = queue
        self.mode = mode
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self.ordered = ordered
        self.errors: list[BaseException] = []
        self._fn = source
        self.auto = workers == "auto"
        self.max_workers = (max_workers or len(os.sched_getaffinity(0))) if self.auto else workers
        self._workers = 1 if self.auto else workers
        self._close_on_exit = close_on_exit
        self._stop = threading.Event()
        self._started = False
        self.plan: Plan | None = None
        self._resume = resume
        self._epoch_ends: EpochEnds | None = None
        if random_access:
            sampler = Sampler(len(source), shuffle=shuffle, seed=self.seed, epochs=epochs, shard=shard)
            start = int(resume["position"]) if resume is not None else 0
            claims = SharedClaims(start=start) if mode == "process" else LocalClaims(start)
            # The ring records the positions consumers take (for state()) where the queue's backend can.
            tagged = _track_positions and bool(getattr(queue._impl, "tracks_positions", False))
            skip = frozenset(int(p) for p in resume["taken"]) if resume is not None else frozenset()
            self.plan = Plan(sampler, claims, is_keras_batches(source) if batched is None else batched, tagged,
                             skip, restarts, start)
            if resume is not None and not tagged:
                raise ValueError(f"resume needs a queue that records what consumers take: the native backend's; "
                                 f"queue '{queue.name}' has the {queue.backend} backend")
            if has_epoch_end(source):
                if mode == "thread":
                    self._epoch_ends = EpochEnds(source, sampler, start)
                else:
                    log.warning(
                        "pyfastq: %s.on_epoch_end is not called in mode=%r: each worker reads a copy of the "
                        "source, and copies changed apart (a reshuffle of each one's own) would no longer "
                        "read each index once per epoch; shuffle=True shuffles every epoch, or use "
                        'mode="thread"', type(source).__name__, mode)
        # thread mode
        self._threads: list[threading.Thread] = []
        self._retire: list[threading.Event] = []  # per thread: claim no more
        self._lock = threading.Lock()
        self._running = 0
        # Ordered thread workers take turns in the queue's turnstile, as worker processes do in the ring's.
        self._turns = RingTurns(queue._impl) if ordered and mode == "thread" else None
        self._scaler: threading.Thread | None = None
        # process and ray modes: the workers' pool (start, stop, running)
        wiring = (queue, source, self._workers, self.seed, ordered, self.errors, self._stop, self._all_done)
        self._pool: _process.WorkerProcesses | _ray.RayActors | None = None
        if mode == "process":
            self._pool = _process.WorkerProcesses(*wiring, self.plan)
        elif mode == "ray":
            self._pool = _ray_mode().RayActors(*wiring, ray_options, self.plan)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Producer:
        """Starts the workers (what entering the ``with`` block does); returns self.

        >>> p = pyfastq.Producer(q, fn, workers=4).start()
        >>> ...; p.stop()
        """
        if self._started:
            raise RuntimeError("this Producer was already started")
        self._started = True
        if self.plan is not None and self.plan.tagged:
            self.queue._impl.begin_tracking(self.plan.start, sorted(self.plan.skip))
        if self._pool is not None:
            self._pool.start()
        else:
            if self._turns is not None:
                # A random-access source's tickets are sampler positions, whichever worker holds them.
                if self.plan is not None:
                    self.queue._impl.begin_turns(1, self.plan.start)
                else:
                    self.queue._impl.begin_turns(self._workers)
            with self._lock:
                for _ in range(self._workers):
                    self._add_thread()
        if self.auto:
            self._scaler = threading.Thread(target=self._scale, name=f"pyfastq-{self.queue.name}-auto", daemon=True)
            self._scaler.start()
        return self

    def _add_thread(self) -> None:
        """One more worker thread (under the lock)."""
        i = len(self._threads)
        self._running += 1
        self._retire.append(threading.Event())
        t = threading.Thread(target=self._run_thread, args=(i,), name=f"pyfastq-{self.queue.name}-{i}", daemon=True)
        self._threads.append(t)
        t.start()

    def state(self) -> dict:
        """What the consumers have taken so far: a small JSON-able dict for ``Producer(..., resume=state)``.

        Elements still in the queue or being made are not counted: a run resumed
        from this state delivers each of them (and every position not yet
        taken) exactly once, then the later epochs. Store it with the model's
        checkpoint (``json.dumps``), taken at a step boundary.

        >>> state = p.state()                      # e.g. at a checkpoint
        >>> Producer(q2, source, seed=state["seed"], resume=state)
        """
        if self.plan is None or not self.plan.tagged:
            raise ValueError("state() needs a random-access source and a queue that records what consumers take "
                             "(the native backend)")
        sampler = self.plan.sampler
        if not self._started:
            watermark, above, overflowed = self.plan.start, sorted(self.plan.skip), False
        else:
            watermark, above, overflowed = self.queue._impl.taken_state()
        if overflowed:
            raise RuntimeError(
                f"pyfastq: queue '{self.queue.name}' was taken more than 2**20 positions ahead of the oldest position "
                "not yet taken: what was taken is no longer known exactly"
            )
        return {
            "pyfastq_state": STATE_VERSION,
            "length": sampler.length,
            "shard": list(sampler.shard),
            "seed": self.seed,
            "shuffle": sampler.shuffle,
            "epochs": sampler.epochs,
            "epoch": watermark // sampler.per_epoch if sampler.per_epoch else 0,
            "position": int(watermark),
            "taken": [int(p) for p in above],
        }

    @property
    def workers(self) -> int:
        """The workers the pool has now (with workers="auto", as it grows and shrinks)."""
        return self._workers

    # -- workers="auto" ------------------------------------------------------------
    def _scale(self) -> None:
        """Grows the pool while consumers wait for data, shrinks it while the workers wait for room."""
        window = collections.deque([(time.monotonic(), self.queue.stats())])  # (when, stats) samples, oldest first
        changed, settled_at = False, 0.0
        while not self._stop.wait(AUTO_TICK_S):
            if not self.running:
                return
            at, now = time.monotonic(), self.queue.stats()
            if at < settled_at:
                continue
            if not window:  # settled: a new window starts now
                window.append((at, now))
                continue
            window.append((at, now))
            while at - window[1][0] >= AUTO_WINDOW_S:  # the oldest sample still covering a whole window
                window.popleft()
            since, then = window[0]
            if changed and at - since < AUTO_WINDOW_S:
                continue
            if self._resize(then, now, at - since):
                changed, settled_at = True, at + AUTO_SETTLE_S
                window.clear()

    def _resize(self, last: dict, now: dict, span: float) -> bool:
        """The judgement of the span seconds between two stats; True if the pool changed."""
        starved = (now["get_blocked_s"] - last["get_blocked_s"]) / span
        crowded = (now["put_blocked_s"] - last["put_blocked_s"]) / span
        if starved >= GROW_SHARE and self._workers < self.max_workers:
            if not self._grow():
                return False
            self._workers += 1
            log.info("pyfastq: queue '%s' waited for data %.0f%% of the last %.1f s: %d workers now (max %d)",
                     self.queue.name, 100 * min(starved, 1), span, self._workers, self.max_workers)
            return True
        if crowded >= SHRINK_SHARE and self._workers > 1:
            if not self._shrink():
                return False
            self._workers -= 1
            log.info("pyfastq: queue '%s' workers waited for room %.0f%% of the last %.1f s: %d workers now",
                     self.queue.name, 100 * min(crowded, 1), span, self._workers)
            return True
        return False

    def _grow(self) -> bool:
        if self._pool is not None:
            return self._pool.add()
        with self._lock:
            if self._running == 0 or self._stop.is_set():
                return False
            self._add_thread()
        return True

    def _shrink(self) -> bool:
        if self._pool is not None:
            return self._pool.retire()
        with self._lock:
            working = [e for t, e in zip(self._threads, self._retire, strict=True) if t.is_alive() and not e.is_set()]
            if len(working) <= 1:
                return False
            working[-1].set()
        return True

    def stop(self, timeout: float | None = None) -> None:
        """Stops the workers and joins them; with ``close_on_exit`` the queue is closed too: no consumer waits forever.

        A worker blocked in put wakes within 50 ms. A worker process still busy
        in ``fn`` after 0.5 s is sent SIGTERM (it unwinds: nothing is
        half-enqueued), and SIGKILL 0.5 s later; a worker killed that way may
        have held a slot, so the queue is failed rather than closed. Ray actors
        are killed at once: they hold no slot.

        >>> p.stop()   # what leaving the ``with`` block does
        """
        self._stop.set()
        if self._pool is not None:
            self._pool.stop()
        else:
            for t in self._threads:
                t.join(timeout)
        if self._close_on_exit:
            self.queue.close()

    @property
    def running(self) -> bool:
        """True while any worker is alive.

        >>> while p.running: time.sleep(0.1)
        """
        return any(t.is_alive() for t in self._threads) or (self._pool is not None and self._pool.running())

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (mode="process"), in worker order."""
        return [w.pid for w in self._pool.procs] if self.mode == "process" else []

    @property
    def actors(self) -> list:
        """The Ray actors' handles (mode="ray"), in worker order."""
        return list(self._pool.actors) if self.mode == "ray" else []

    def _all_done(self) -> None:
        """Every worker finished normally."""
        if self._close_on_exit:
            self.queue.close()

    def __enter__(self) -> Producer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- threads -------------------------------------------------------------------
    def _run_thread(self, index: int) -> None:
        workers = max(self._workers, index + 1)
        set_thread_info(WorkerInfo(index, workers, worker_seed(self.seed, index), "thread", self.queue))
        made = 0
        try:
            if self.plan is not None:
                run_claims(self._fn, self.plan, self.queue, self._stop, self._turns, self._retire[index],
                           epoch_ends=self._epoch_ends)
            else:
                made = self._put_generated(index)
        except QueueClosed:
            return  # the consumer side ended the queue: nothing left to do
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            self.errors.append(e)
            self.queue.fail(failure_message(index, workers, e))
            self._stop.set()
            return
        finally:
            if self._turns is not None and self.plan is None:
                self.queue._impl.finish_turns(index, made)
            with self._lock:
                self._running -= 1
                last = self._running == 0
        if last and not self._stop.is_set():
            self._all_done()

    def _put_generated(self, index: int) -> int:
        """A generator fn's worker thread: puts what it yields (in turn, if ordered); returns how many."""
        made = 0
        for element in self._fn(index, self._workers):
            ticket = made * self._workers + index
            if self._turns is not None and not self._turns.wait(ticket, self._stop):
                return made
            if not put_until_stopped(self.queue.put, element, self._stop):
                return made
            made += 1
            if self._turns is not None:
                self._turns.passed(ticket)
        return made


def _ray_mode():
    """The ray mode's module; an ImportError saying how to install Ray if it does not import."""
    try:
        import ray  # noqa: F401 - only whether it imports
    except ImportError as e:
        raise ImportError(
            f'mode="ray" needs Ray, which does not import here ({e}): pip install "pyfastq[ray]"'
        ) from e
    from . import _ray

    return _ray


def _check_resume(state: Any, length: int, shuffle: bool, seed: int | None, shard: Any) -> int:
    """A resume state checked against this run's source and sampler; returns the seed to use (the state's)."""
    if not isinstance(state, dict) or state.get("pyfastq_state") != STATE_VERSION:
        raise ValueError(
            f"resume must be a dict from Producer.state() (pyfastq_state={STATE_VERSION}), got {state!r:.200}")
    given = {"length": length, "shuffle": bool(shuffle), "shard": list(shard or (0, 1))}
    if seed is not None:
        given["seed"] = seed
    for field, value in given.items():
        if state.get(field) != value:
            raise ValueError(f"resume: the state's {field} is {state.get(field)!r}, this Producer's is {value!r}: "
                             "a state resumes only the same source with the same seed, shuffle and shard")
    taken = state.get("taken")
    position = state.get("position")
    if not isinstance(position, int) or position < 0 or not isinstance(taken, list) or not all(
            isinstance(p, int) and p >= position for p in taken):
        raise ValueError(f"resume: position and taken of the state are not what state() makes: {state!r:.200}")
    return int(state["seed"])


def _check_sampling(random_access: bool, workers: Any, shuffle: Any, epochs: Any, shard: Any, max_workers: Any,
                    batched: Any, restarts: Any = 0, resume: Any = None) -> None:
    """The sampler's arguments checked: what needs a random-access source, and each one's type and range."""
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"restarts must be an int >= 0, got {restarts!r}")
    if not random_access:
        asked = [name for name, given in (("shuffle=True", shuffle), ("epochs != 1", epochs != 1),
                                          ("shard", shard is not None), ('workers="auto"', workers == "auto"),
                                          ("batched", batched is not None), ("restarts", restarts != 0),
                                          ("resume", resume is not None)) if given]
        if asked:
            raise ValueError(
                f"{', '.join(asked)} need a random-access source (an object with __len__ and __getitem__, such as "
                "a keras PyDataset or a list); fn(worker_index, num_workers) is a generator function, which "
                "decides its own order and sharding"
            )
        return
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be None (forever) or an int >= 1, got {epochs!r}")
    if shard is not None:
        ok = isinstance(shard, (tuple, list)) and len(shard) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in shard)
        if not ok or not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    if max_workers is not None:
        if workers != "auto":
            raise ValueError(f'max_workers is for workers="auto", not workers={workers!r}')
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, got {max_workers!r}")


def _check_arguments(
    queue: Any, fn: Any, workers: Any, mode: Any, ordered: bool, seed: Any, ray_options: Any
) -> None:
    """Producer's arguments checked, before anything starts (fn's pickling is checked by the process or ray mode)."""
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f'workers must be an int >= 1 or "auto", got {workers!r}')
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if not callable(fn) and not is_random_access(fn):
        raise TypeError(
            f"source must be callable as fn(worker_index, num_workers), or a random-access source (__len__ and "
            f"__getitem__), got {fn!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    if mode == "thread" and ordered and isinstance(workers, int) and not is_random_access(fn) and (
            workers > MAX_ORDERED_WORKERS):
        raise ValueError(f"ordered=True takes at most {MAX_ORDERED_WORKERS} worker threads, got {workers}")
    if ray_options is not None:
        if mode != "ray":
            raise ValueError(f'ray_options is for mode="ray", not mode={mode!r}')
        if not isinstance(ray_options, dict):
            raise TypeError(f"ray_options must be a dict of Ray actor options, got {ray_options!r}")
    if mode != "process":
        return
    if not getattr(queue, "shared", False):
        raise ValueError(
            'mode="process" needs Queue(..., shared=True): worker processes write into a ring in shared '
            f"memory, and queue '{queue.name}' ({queue.backend} backend) has none"
        )
    if ordered and not is_random_access(fn) and workers > MAX_ORDERED_WORKERS:
        raise ValueError(f"ordered=True takes at most {MAX_ORDERED_WORKERS} worker processes, got {workers}")
