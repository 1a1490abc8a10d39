"""Producer(mode="ray"): Ray actors anywhere in a cluster stream chunks to a feeder that puts them into the queue.

The trainer's side (``RayActors``: start, feed, watch, stop) and the actor's side
(``ProducerActor``). No TensorFlow here: actors import this module.

Each actor runs ``fn(index, workers)`` (in a thread) and a Ray streaming
generator (``run``) that yields what fn makes to Ray's object store in chunks,
one stacked array per component; Ray pauses the generator while ``IN_FLIGHT``
of its chunks are waiting for the trainer, and fn with it, so a slow consumer
holds every actor back and the object store never fills. One feeder thread in the trainer takes the
chunks (a chunk's arrays are views of the object store, not copies) and puts
them with ``put_many``, the one copy into the ring. Each actor also answers a
second call, ``outcome``, from a thread of its own: it returns when ``run``
ends, with fn's failure if it raised, so that a failure (or, as a Ray error,
the actor's death) reaches the consumer at once even when ``ordered`` has the
feeder waiting on another actor's chunk.

A random-access source's actors instead answer ``read(start, end)`` calls for
the positions the feeder claims for them. A read's rows reach the queue only
once the whole read is in the trainer, so when an actor dies the reads it had
under way are exactly the positions not yet put: with ``restarts`` left, a new
actor takes its place and reads them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import ray

from ._compat import actor_id, streaming_options
from ._errors import QueueClosed
from ._layout import Layout
from ._process import pickle_for_workers
from ._sources import read_item
from ._worker import (
    STOP_CHECK_S,
    WorkerPool,
    become_worker_process,
    failure_message,
    failure_report,
    reported_exception,
)

# A chunk goes to the trainer once it holds CHUNK_BYTES, or once its first element is CHUNK_S old:
# large enough that Ray's cost per object (a fraction of a millisecond) is small beside the data,
# soon enough that a slow fn's elements are not held back.
CHUNK_BYTES = 1 << 20
CHUNK_S = 0.05
# Chunks an actor may have waiting for the trainer before Ray pauses it (Ray's generator backpressure).
IN_FLIGHT = 4
# A random-access source: positions per read() call (enough work to outweigh Ray's cost per call, a
# fraction of a millisecond), and reads queued on each actor so it never waits for the next claim.
READ_CLAIM = 8
READS_AHEAD = 2
# Actor options unless ray_options says otherwise: one core each, like a worker process.
DEFAULT_OPTIONS = {"num_cpus": 1}
# How long an actor Ray calls "temporarily unavailable" (ActorUnavailableError) may stay so before it counts
# as dead. Ray says so of a live actor too: a new actor given the port of one that just exited is refused
# by the trainer's stale connection to that port until gRPC reconnects (about a second).
UNAVAILABLE_S = 30.0


_UNAVAILABLE = object()  # _answer(): a call brought no answer (the actor died, or Ray could not reach it)

log = logging.getLogger("pyfastq")


class _Ended(Exception):
    """The feeder stops: stop() was called, or a worker failed and the queue was failed."""


class _Gone(Exception):
    """An actor died (or stayed unreachable UNAVAILABLE_S): the Ray error that says so is ``error``."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


class _Chunks:
    """An actor's chunks: fn's thread stacks elements into one, the streaming generator's thread takes them.

    A chunk is taken once it holds CHUNK_BYTES, or once its first element is
    CHUNK_S old even while fn is busy making the next (a thread of its own runs
    fn for that). Each component's elements are stacked along a new dim 0. At
    most one full chunk waits to be taken: then fn's thread waits too, so a
    paused generator (Ray's backpressure) pauses fn.
    """

    def __init__(self, layout: Layout, chunk_bytes: int):
        self._layout = layout
        self._rows_max = max(1, chunk_bytes // max(1, sum(layout.nbytes)))
        self._cond = threading.Condition()
        self._arrays: list[np.ndarray] | None = None  # the chunk being filled
        self._rows = 0
        self._since = 0.0  # when its first element came
        self._full: list[np.ndarray] | None = None  # a full chunk not yet taken
        self._ended = False
        self.failure: BaseException | None = None  # what fn raised

    def make(self, elements: Iterable[Any]) -> None:
        """fn's thread: converts and stacks every element fn yields; records what it raises."""
        layout = self._layout
        try:
            for element in elements:
                flat = layout.convert(layout.flatten(element))
                with self._cond:
                    if self._arrays is None:
                        # np.empty: the pages of rows a chunk taken early never fills are never touched.
                        self._arrays = [np.empty((self._rows_max, *s), d)
                                        for s, d in zip(layout.shapes, layout.dtypes, strict=True)]
                        self._since = time.monotonic()
                    for buf, a in zip(self._arrays, flat, strict=True):
                        buf[self._rows] = a
                    self._rows += 1
                    if self._rows == self._rows_max:
                        # Waits while the last full chunk is not taken (unless take() takes this one meanwhile).
                        self._cond.wait_for(lambda: self._full is None or self._rows < self._rows_max)
                        if self._rows == self._rows_max:
                            self._full = self._cut()
                            self._cond.notify_all()
                    elif self._rows == 1:
                        self._cond.notify_all()  # a new chunk: take() times it from now
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            self.failure = e
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def take(self) -> list[np.ndarray] | None:
        """The generator's thread: the next chunk, once it is due; None once fn has ended and every row is taken."""
        with self._cond:
            while True:
                if self._full is not None:
                    chunk, self._full = self._full, None
                    self._cond.notify_all()
                    return chunk
                age = time.monotonic() - self._since
                if self._rows and (self._ended or age >= CHUNK_S):
                    return self._cut()
                if self._ended:
                    return None
                self._cond.wait(CHUNK_S - age if self._rows else None)

    def _cut(self) -> list[np.ndarray]:
        chunk = [a[: self._rows] for a in self._arrays]
        self._arrays, self._rows = None, 0
        return chunk


@ray.remote(concurrency_groups={"outcome": 1})
class ProducerActor:
    """One producer worker in a Ray actor: ``run`` streams fn's elements in chunks; ``outcome`` tells how it ended."""

    def __init__(self):
        self._ended = threading.Event()
        self._failure: tuple[str, bytes | None] | None = None

    def run(self, payload: bytes, index: int, workers: int, base_seed: int, trainer_path: list, layout: Layout):
        """A streaming generator: chunks (lists of arrays, one per component) until fn ends or raises."""
        try:
            context = ray.get_runtime_context()
            where = f" (Ray actor {context.get_actor_id()} on {ray.util.get_node_ip_address()}, pid {os.getpid()})"
            # fn's module, if it travels by reference, imports as in the trainer where this node has it too;
            # this node's own entries stay first.
            sys.path.extend(p for p in trainer_path if p not in sys.path)
            try:
                fn = pickle.loads(payload)
                become_worker_process(index, workers, base_seed, "ray", None)
                elements = fn(index, workers)
            except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
                self._fail(e, failure_message(index, workers, e, where + ", loading fn,"))
                return
            chunks = _Chunks(layout, CHUNK_BYTES)
            threading.Thread(target=chunks.make, args=(elements,), name="pyfastq-fn", daemon=True).start()
            while (chunk := chunks.take()) is not None:
                yield chunk
            if chunks.failure is not None:
                self._fail(chunks.failure, failure_message(index, workers, chunks.failure, where))
        finally:
            self._ended.set()

    def _fail(self, e: BaseException, message: str) -> None:
        self._failure = failure_report(e, message)

    def load(self, payload: bytes, index: int, workers: int, base_seed: int, trainer_path: list, layout: Layout):
        """A random-access source's actor: unpickles the source once; read() then reads its items.

        Returns None, or a failure report if the source does not load.
        """
        self._where = (f" (Ray actor {ray.get_runtime_context().get_actor_id()} on "
                       f"{ray.util.get_node_ip_address()}, pid {os.getpid()})")
        self._index, self._workers, self._layout = index, workers, layout
        sys.path.extend(p for p in trainer_path if p not in sys.path)
        try:
            self._source, _, self._plan = pickle.loads(payload)
            become_worker_process(index, workers, base_seed, "ray", None)
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            return failure_report(e, failure_message(index, workers, e, self._where + ", loading the source,"))
        return None

    def read(self, start: int, end: int) -> tuple[str, Any]:
        """The items of sampler positions start..end-1: ("rows", (arrays, rows per position)), or ("error", report).

        The arrays stack every item's rows, one array per component (None if there are none); a position
        taken before a resume is not read, and has 0 rows.
        """
        layout, plan = self._layout, self._plan
        try:
            parts, counts = [], []
            for position in range(start, end):
                if position in plan.skip:
                    counts.append(0)
                    continue
                item = read_item(self._source, plan.sampler.index(position), plan.sampler.length)
                if plan.batched:
                    parts.append(layout.convert(layout.flatten(item), many=True))
                else:
                    parts.append([a[None] for a in layout.convert(layout.flatten(item))])
                counts.append(len(parts[-1][0]))
            rows = [np.concatenate(c) for c in zip(*parts, strict=True)] if parts else None
            return "rows", (rows, counts)
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            return "error", failure_report(e, failure_message(self._index, self._workers, e, self._where))

    def ready(self) -> bool:
        """Answers once the actor is up: the feeder calls it until Ray reaches the actor (see UNAVAILABLE_S)."""
        return True

    @ray.method(concurrency_group="outcome")
    def outcome(self) -> tuple[str, bytes | None] | None:
        """Returns once run has ended: None if fn finished, else (message, pickled exception or None)."""
        self._ended.wait()
        return self._failure


class _Stream:
    """The feeder's state for one actor: its chunk stream, its outcome, and (ordered) the rows taken but not put."""

    def __init__(self, index: int, actor: Any, chunks: Any, outcome: Any):
        self.index = index
        self.actor = actor
        self.chunks = chunks  # ray.ObjectRefGenerator
        self.outcome = outcome  # ray.ObjectRef of actor.outcome()
        self.ended = False  # the stream has no more chunks
        self.held: deque = deque()  # ordered: [arrays, first row not yet put]

    def held_rows(self) -> int:
        return sum(len(arrays[0]) - start for arrays, start in self.held)

    def take_rows(self, n: int) -> list[np.ndarray]:
        """The next n held rows, per component (views if they lie in one chunk)."""
        parts: list[list[np.ndarray]] = []
        while n:
            arrays, start = self.held[0]
            k = min(n, len(arrays[0]) - start)
            parts.append([a[start : start + k] for a in arrays])
            if start + k == len(arrays[0]):
                self.held.popleft()
            else:
                self.held[0][1] = start + k
            n -= k
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(c) for c in zip(*parts, strict=True)]


class _Reader:
    """The feeder's state for one actor reading a random-access source: its reads in flight, whether it retires."""

    def __init__(self, index: int, actor: Any, loaded: Any):
        self.index = index
        self.actor = actor
        self.loaded = loaded  # ObjectRef of actor.load(), until it is seen
        self.load_args: tuple = ()
        self.reads: set = set()
        self.retired = False
        self.killed = False


class RayActors(WorkerPool):
    """The trainer's side: starts the actors, feeds their chunks into the queue, watches them, kills them.

    Made with WorkerPool's arguments and the actors' options (a dict, or None) before the last:
    (queue, fn, workers, seed, ordered, errors, stopping, on_all_done, ray_options, plan).
    """

    def __init__(self, *wiring: Any):
        *wiring, ray_options, plan = wiring
        super().__init__(*wiring, plan)
        fn, queue = self._fn, self._queue
        self._layout: Layout = queue._layout
        self._actor_layout = Layout(queue._layout.skeleton)  # TF-free, whatever the queue's is
        # Pickled once, here, so that what does not pickle is a TypeError before anything starts.
        # The actors get the sampler, not the claims: the feeder claims for them.
        shipped = fn if plan is None else (fn, None, dataclasses.replace(plan, claims=None))
        self._payload, fds = pickle_for_workers(shipped, "ray")
        if fds:
            raise TypeError(
                'mode="ray" sends fn to actors that may run on other machines, and fn holds a shared queue, '
                "which only another process on this machine can use: yield the elements instead"
            )
        self._options = {**DEFAULT_OPTIONS, **(ray_options or {})}
        ProducerActor.options(**self._options)  # Ray checks the options now, before anything starts
        self.actors: list = []
        self._streams: list[_Stream] = []
        self._feeder: threading.Thread | None = None
        self._killed = False
        self._lock = threading.Lock()
        self._readers: list[_Reader] = []
        self._target = self._workers
        self.replaced: list[tuple[int, str, float]] = []  # (index, dead actor's id, monotonic time of the death seen)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if not ray.is_initialized():
            ray.init()  # connects to the cluster in RAY_ADDRESS, or to one started here, else starts a local one
        try:
            payload = ray.put(self._payload)  # one copy in the object store for every actor
            if self._plan is not None:
                self._payload_ref = payload
                for _ in range(self._workers):
                    self._add_reader()
                self._target = self._workers
                self._feeder = threading.Thread(target=self._feed, name=f"pyfastq-{self._queue.name}-ray-feeder",
                                                daemon=True)
                self._feeder.start()
                return
            self._payload_ref = payload
            for _ in range(self._workers):
                self.actors.append(ProducerActor.options(**self._options).remote())
        except BaseException:
            self._stopping.set()  # nothing half-started: the actors made so far are killed
            self.stop()
            raise
        self._feeder = threading.Thread(target=self._feed, name=f"pyfastq-{self._queue.name}-ray-feeder", daemon=True)
        self._feeder.start()

    def running(self) -> bool:
        return self._feeder is not None and self._feeder.is_alive()

    def stop(self) -> None:
        """Kills the actors (they hold nothing of the queue's: nothing is half-enqueued) and joins the feeder."""
        self._kill()
        if self._feeder is not None and self._feeder is not threading.current_thread():
            self._feeder.join(5.0)

    def _kill(self) -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = True
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead, or Ray already shut down
                ray.kill(actor)

    # -- the feeder ------------------------------------------------------------------
    def _feed(self) -> None:
        finished = False
        try:
            if self._plan is not None:
                self._feed_claims()
            else:
                self._start_streams()
                if self._ordered:
                    self._feed_in_turn()
                else:
                    self._feed_as_they_come()
            self._await_outcomes()  # every stream has ended: did each fn finish, or raise?
            finished = True
        except (_Ended, QueueClosed):
            pass  # stopped, failed (already reported), or the consumer side ended the queue
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            if not self._stopping.is_set():  # else stop() was called (and Ray may be shut down already)
                self._errors.append(e)
                self._queue.fail(
                    f"pyfastq's Ray feeder for queue '{self._queue.name}' failed: {type(e).__name__}: {e}"
                )
                self._stopping.set()
        finally:
            self._kill()  # finished, failed or stopped: no actor keeps its CPU
        if finished and not self._stopping.is_set():
            self._on_all_done()

    def _start_streams(self) -> None:
        """Starts run() and outcome() on every actor, once Ray reaches it: what run() sent cannot be asked for twice."""
        for i, actor in enumerate(self.actors):
            try:
                self._reach(actor)
            except _Gone as g:
                self._died(i, actor, g.error)
            chunks = actor.run.options(**streaming_options(IN_FLIGHT)).remote(
                self._payload_ref, i, self._workers, self._seed, sys.path, self._actor_layout)
            self._streams.append(_Stream(i, actor, chunks, actor.outcome.remote()))

    def _reach(self, actor: Any) -> None:
        """Returns once the actor answers ready(); raises _Gone if it died or stays unavailable UNAVAILABLE_S."""
        deadline = time.monotonic() + UNAVAILABLE_S
        while True:
            if self._stopping.is_set():
                raise _Ended()
            ref = actor.ready.remote()
            while True:
                ready, _ = ray.wait([ref], timeout=STOP_CHECK_S)
                if ready:
                    break
                if self._stopping.is_set():
                    raise _Ended()
            try:
                ray.get(ref)
                return
            except ray.exceptions.ActorUnavailableError as e:
                if time.monotonic() > deadline:
                    raise _Gone(e) from e
                time.sleep(STOP_CHECK_S)
            except ray.exceptions.RayError as e:
                raise _Gone(e) from e

    def _feed_as_they_come(self) -> None:
        streams = list(self._streams)
        while streams:
            stream, chunk = self._next_chunk(streams)
            if chunk is None:
                streams.remove(stream)
            else:
                self._put(chunk)

    def _feed_in_turn(self) -> None:
        """Round-robin as thread workers take turns: worker 0's first element, worker 1's first, ...; ended ones leave.

        Only the actor whose turn it is is read from, so the others wait in Ray's backpressure, not here.
        """
        rotation = list(self._streams)
        turn = 0  # index into rotation of the worker whose element is next
        while rotation:
            order = rotation[turn:] + rotation[:turn]
            rounds = min(s.held_rows() for s in order)
            if rounds:  # whole rounds: m rows of each worker, interleaved
                parts = [s.take_rows(rounds) for s in order]
                rows = [np.empty((rounds * len(order), *a.shape[1:]), a.dtype) for a in parts[0]]
                for j, part in enumerate(parts):
                    for out, a in zip(rows, part, strict=True):
                        out[j :: len(order)] = a
                self._put(rows)
                continue
            # A part round: one row of each worker in turn up to the first with none held.
            short = next(j for j, s in enumerate(order) if not s.held_rows())
            if short:
                parts = [s.take_rows(1) for s in order[:short]]
                self._put([np.concatenate(c) for c in zip(*parts, strict=True)])
            waiting = order[short]
            turn = rotation.index(waiting)
            if waiting.ended:
                rotation.remove(waiting)
                turn = turn % len(rotation) if rotation else 0
                continue
            _, chunk = self._next_chunk([waiting])
            if chunk is None:
                waiting.ended = True
            else:
                waiting.held.append([chunk, 0])

    def _next_chunk(self, streams: list[_Stream]) -> tuple[_Stream, list[np.ndarray] | None]:
        """The next chunk of whichever of streams has one first (None: that stream has ended); watches every actor."""
        by_waitable: dict = {s.chunks: s for s in streams}
        while True:
            if self._stopping.is_set():
                raise _Ended()
            watched = self._watched()
            ready, _ = ray.wait([*by_waitable, *watched], num_returns=1, timeout=STOP_CHECK_S)
            for r in ready:
                if not isinstance(r, ray.ObjectRefGenerator):
                    self._outcome(watched[r])
                    continue
                stream = by_waitable[r]
                try:
                    ref = next(stream.chunks)
                except StopIteration:
                    stream.ended = True
                    return stream, None
                try:
                    return stream, ray.get(ref)
                except ray.exceptions.RayError as e:
                    self._died(stream.index, stream.actor, e)

    def _put(self, rows: list[np.ndarray], tag: int | None = None) -> None:
        """put_many of every row, in slices that fit the free slots, so that stop() and failures are seen.

        With a tag (the position whose item the rows are), the last row carries it into the ring.
        """
        n, done = len(rows[0]), 0
        fit = max(1, min(n, self._queue.capacity - self._queue.size()))
        impl = self._queue._impl
        while done < n:
            if self._stopping.is_set():
                raise _Ended()
            k = min(n - done, fit)
            try:
                if tag is None:
                    impl.put_many([a[done : done + k] for a in rows], STOP_CHECK_S)
                else:
                    impl.put_many([a[done : done + k] for a in rows], STOP_CHECK_S, tag if done + k == n else None)
            except TimeoutError:
                # Full (or slots held by consumers' tensors): a smaller slice, and a look at the actors.
                self._check_outcomes()
                fit = max(1, min(k // 2, self._queue.capacity - self._queue.size()))
                continue
            done += k
            fit = max(1, self._queue.capacity - self._queue.size())

    def _watched(self) -> dict:
        """The streams whose outcome is still to be seen, by its ObjectRef."""
        return {s.outcome: s for s in self._streams if s.outcome is not None}

    def _await_outcomes(self) -> None:
        while self._watched():
            if self._stopping.is_set():
                raise _Ended()
            self._check_outcomes(STOP_CHECK_S)

    def _check_outcomes(self, timeout: float = 0) -> None:
        """Takes in every outcome that is ready within timeout (seconds)."""
        watched = self._watched()
        if watched:
            ready, _ = ray.wait(list(watched), num_returns=len(watched), timeout=timeout, fetch_local=False)
            for r in ready:
                self._outcome(watched[r])

    def _outcome(self, stream: _Stream) -> None:
        """An actor's run has ended (its outcome is ready): fails the queue if fn raised or the actor died."""
        ref, stream.outcome = stream.outcome, None
        try:
            failure = ray.get(ref)
        except ray.exceptions.RayError as e:
            self._died(stream.index, stream.actor, e)  # raises
        if failure is None:
            return  # fn finished: its last chunks are still to be read from its stream
        self._fail(reported_exception(failure), failure[0])

    def _died(self, index: int, actor: Any, e: BaseException) -> None:
        if self._stopping.is_set():
            raise _Ended()  # killed by stop()
        message = self._death_message(
            f"pyfastq producer worker {index} of {self._workers} (Ray actor {actor_id(actor)}) died before it "
            f"finished; chunks it had sent may be lost. Ray says: {type(e).__name__}: {e}"
        )
        self._fail(RuntimeError(message), message)

    # -- a random-access source: the feeder claims positions for the actors ----------------------
    def _add_reader(self) -> _Reader:
        """One more actor reading the source; its load() call is queued before any read()."""
        index = len(self.actors)
        actor = ProducerActor.options(**self._options).remote()
        self.actors.append(actor)
        args = (self._payload_ref, index, max(self._workers, index + 1), self._seed, sys.path, self._actor_layout)
        reader = _Reader(index, actor, actor.load.remote(*args))
        reader.load_args = args
        self._readers.append(reader)
        return reader

    def add(self) -> bool:
        """workers="auto": one more actor (the feeder starts it)."""
        with self._lock:
            if self._killed or self._feeder is None or not self._feeder.is_alive():
                return False
            self._target += 1
        return True

    def retire(self) -> bool:
        """workers="auto": the newest actor gets no more claims; it is killed once its reads are in."""
        with self._lock:
            if self._target <= 1:
                return False
            self._target -= 1
        return True

    def _feed_claims(self) -> None:
        """Claims READ_CLAIM positions at a time for each actor (READS_AHEAD reads queued on each) and puts the rows.

        Unordered, rows go in as reads finish; ordered, each read's rows wait for the reads of earlier positions.
        """
        sampler = self._plan.sampler
        claims = self._plan.claims
        pending: dict = {}  # ObjectRef of a read -> (reader, start, end)
        done: dict[int, tuple[int, tuple]] = {}  # ordered: start -> (end, what read() made) of reads not yet put
        next_start = self._plan.start  # ordered: the position whose rows go in next
        exhausted = False
        while True:
            if self._stopping.is_set():
                raise _Ended()
            with self._lock:
                target = self._target
            working = [r for r in self._readers if not r.retired]
            while len(working) < target and not exhausted:
                working.append(self._add_reader())
            for r in working[target:]:
                r.retired = True  # its reads in flight still count
            for r in self._readers:
                if r.retired and not r.reads and not r.killed:
                    r.killed = True
                    with contextlib.suppress(Exception):
                        ray.kill(r.actor)
            for r in working[:target]:
                while not exhausted and len(r.reads) < READS_AHEAD:
                    start = claims.claim(READ_CLAIM)
                    end = sampler.end(start, READ_CLAIM)
                    if start >= end:
                        exhausted = True
                        break
                    self._send(r, pending, [(start, end)])
            if not pending:
                return
            waited = [*pending, *(r.loaded for r in self._readers if r.loaded is not None)]
            ready, _ = ray.wait(waited, num_returns=1, timeout=STOP_CHECK_S)
            for ref in ready:
                if ref not in pending:
                    reader = next((r for r in self._readers if r.loaded == ref), None)
                    if reader is None:
                        continue  # a call dropped by a reconnection
                    failure = self._answer(reader, ref, pending)
                    if failure is _UNAVAILABLE:
                        continue
                    reader.loaded = None
                    if failure is not None:
                        self._fail(reported_exception(failure), failure[0])
                    continue
                reader, start, end = pending[ref]
                result = self._answer(reader, ref, pending)
                if result is _UNAVAILABLE:
                    continue
                del pending[ref]
                reader.reads.discard(ref)
                kind, value = result
                if kind == "error":
                    self._fail(reported_exception(value), value[0])
                if not self._ordered:
                    self._put_read(start, value)
                    continue
                done[start] = (end, value)
                while next_start in done:
                    end, read = done.pop(next_start)
                    self._put_read(next_start, read)
                    next_start = end

    def _put_read(self, start: int, read: tuple) -> None:
        """A read()'s rows into the queue; when the queue records what consumers take, item by item, tagged."""
        rows, counts = read
        if rows is None:
            return
        if not self._plan.tagged:
            self._put(rows)
            return
        row = 0
        for position, count in enumerate(counts, start):
            if count:
                self._put([a[row : row + count] for a in rows], position)
                row += count

    def _answer(self, reader: _Reader, ref: Any, pending: dict) -> Any:
        """What the reader's load() or read() call returned; _UNAVAILABLE if it brought no answer.

        Then the reader's calls in flight go again: to its actor once Ray reaches it again (_reconnect),
        or, if it died, to its replacement (_lost).
        """
        try:
            return ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            self._reconnect(reader, pending)
        except ray.exceptions.RayError as e:
            self._lost(reader, e, pending)
        return _UNAVAILABLE

    def _withdraw(self, reader: _Reader, pending: dict) -> list[tuple[int, int]]:
        """The reader's reads in flight as (start, end), taken out of pending: results they still bring are ignored."""
        mine = sorted((start, end) for r, start, end in pending.values() if r is reader)
        for ref in [ref for ref, (r, _, _) in pending.items() if r is reader]:
            del pending[ref]
        reader.reads.clear()
        return mine

    def _send(self, reader: _Reader, pending: dict, spans: list[tuple[int, int]]) -> None:
        """read() calls to the reader's actor, one per (start, end), in pending."""
        for start, end in spans:
            ref = reader.actor.read.remote(start, end)
            reader.reads.add(ref)
            pending[ref] = (reader, start, end)

    def _reconnect(self, reader: _Reader, pending: dict) -> None:
        """Ray could not reach the reader's actor: once it answers again, its load() (if unseen) and reads go again.

        Both only read: calling them twice changes nothing. Calls to one actor run in the order they are made.
        If it does not answer again (it died), a replacement takes its reads, or the run fails (_replace).
        """
        mine = self._withdraw(reader, pending)
        try:
            self._reach(reader.actor)
        except _Gone as g:
            self._replace(reader, g.error)
        else:
            if reader.loaded is not None:
                reader.loaded = reader.actor.load.remote(*reader.load_args)
        self._send(reader, pending, mine)

    def _lost(self, reader: _Reader, e: BaseException, pending: dict) -> None:
        """A call to the reader's actor says it died: a replacement reads what it had in flight (or the run fails).

        Nothing of a read reaches the queue before the whole read is in this process, so the positions
        of the reads in flight are exactly those not yet put: each is read again once, by the replacement.
        """
        if reader.killed:  # retired and killed here, its reads all in: nothing is lost
            reader.loaded = None
            return
        mine = self._withdraw(reader, pending)
        self._replace(reader, e)
        self._send(reader, pending, mine)

    def _replace(self, reader: _Reader, e: BaseException) -> None:
        """The reader's actor is gone: a new actor, with the same options and worker index, takes its place.

        Raises (via _died) once the restarts are used up. The new actor's load() is queued before any read.
        """
        if self._stopping.is_set():
            raise _Ended()  # killed by stop()
        if self.restarts_left <= 0:
            self._died(reader.index, reader.actor, e)  # raises
        dead = reader.actor
        with contextlib.suppress(Exception):  # a death Ray saw is final; one assumed (unreachable) is made so
            ray.kill(dead, no_restart=True)
        actor = ProducerActor.options(**self._options).remote()
        with self._lock:
            if self._killed:  # stop() got there first: it would not kill this one
                ray.kill(actor)
                raise _Ended()
            self.actors[reader.index] = actor
        reader.actor = actor
        reader.loaded = actor.load.remote(*reader.load_args)
        self.restarts_left -= 1
        self.replaced.append((reader.index, actor_id(dead), time.monotonic()))
        log.warning("pyfastq: producer worker %d (Ray actor %s) of queue '%s' died (%s); replaced by Ray actor %s "
                    "(%d restarts left)", reader.index, actor_id(dead), self._queue.name, type(e).__name__,
                    actor_id(actor), self.restarts_left)

    def _fail(self, exc: BaseException, message: str) -> None:
        self._record_failure(exc, message)
        raise _Ended()
