"""Both backends against the declared Backend protocol, and the ring's own copies of the shared contract."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import pyfastq
from pyfastq import _contract, backends
from pyfastq.backends.python import PythonBackend

SPEC = tf.TensorSpec([3], tf.float32)


def backend_classes():
    classes = [PythonBackend]
    if pyfastq.native_unavailable() is None:
        from pyfastq.backends.native import NativeBackend

        classes.append(NativeBackend)
    return classes


def protocol_members(protocol) -> dict:
    """name -> what the protocol declares: a function, a property, or None for an annotated attribute."""
    members = {name: None for name in protocol.__annotations__}
    for name, value in vars(protocol).items():
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property)):
            members[name] = value
    return members


def test_the_protocol_declares_the_backend_api():
    members = protocol_members(backends.Backend)
    for name in ("put", "put_many", "reserve", "close", "fail", "state", "stats", "dequeue", "dequeue_many",
                 "dataset", "begin_turns", "wait_turn", "pass_turn", "finish_turns", "turn", "kind", "fd"):
        assert name in members, name


@pytest.mark.parametrize("cls", backend_classes(), ids=lambda c: c.__name__)
def test_each_backend_class_has_every_protocol_member_with_a_compatible_signature(cls):
    for name, declared in protocol_members(backends.Backend).items():
        assert hasattr(cls, name) or name in getattr(cls, "__annotations__", {}), f"{cls.__name__} lacks {name}"
        given = inspect.getattr_static(cls, name, None)
        if inspect.isfunction(declared):
            assert inspect.isfunction(given), f"{cls.__name__}.{name} is not a method"
            want = list(inspect.signature(declared).parameters.values())
            have = list(inspect.signature(given).parameters.values())
            # Every declared parameter, in its place, of its kind; a default where the protocol has one.
            for w, h in zip(want, have, strict=False):
                assert (h.name, h.kind) == (w.name, w.kind), f"{cls.__name__}.{name}: {h} where {w} is declared"
                if w.default is not inspect.Parameter.empty:
                    assert h.default == w.default, f"{cls.__name__}.{name}: {h} where {w} is declared"
            assert len(have) >= len(want), f"{cls.__name__}.{name} takes fewer parameters than declared"
            # Parameters beyond the protocol's are optional: a call as declared works.
            for h in have[len(want):]:
                assert h.default is not inspect.Parameter.empty or h.kind is inspect.Parameter.VAR_KEYWORD, (
                    f"{cls.__name__}.{name}: {h} is required but not declared")


def test_both_backends_of_a_queue_are_backends(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    assert isinstance(q._impl, backends.Backend)
    assert q._impl.kind == q.backend == backend
    q.put(np.zeros(3, np.float32))
    res = q._impl.reserve(None)
    assert isinstance(res, backends.Reservation)
    res.abort()


# -- the ring's copies of the contract agree with the shared module ------------------------------


def test_the_rings_constants_are_the_shared_ones(native):
    from pyfastq import _core

    assert _core.FILL_BINS == _contract.FILL_BINS
    assert _core.MAX_ORDERED_WORKERS == _contract.MAX_ORDERED_WORKERS
    q = pyfastq.Queue(SPEC, capacity=4, backend=native)
    assert len(q.stats()["fill_histogram"]) == _contract.FILL_BINS


def message_of(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:  # the type is compared by the caller
        call()
    return info.type, str(info.value)


def both(native, make, call) -> None:
    """call(queue) raises the same error, type and message, on both backends."""
    got = [message_of(lambda b=b: call(make(b))) for b in (native, "python")]
    assert got[0] == got[1]
    return got[0]


def test_a_bad_timeout_is_refused_alike(native):
    kind, message = both(native, lambda b: pyfastq.Queue(SPEC, capacity=2, backend=b, name="q"),
                         lambda q: q.put(np.zeros(3, np.float32), timeout=-1))
    assert (kind, message) == message_of(lambda: _contract.deadline_from(-1))


@pytest.mark.parametrize("ending", ["close", "cancel", "fail"])
def test_an_ended_queue_refuses_puts_alike(native, ending):
    def ended(b):
        q = pyfastq.Queue(SPEC, capacity=2, backend=b, name="q")
        q.fail("boom") if ending == "fail" else q.close(cancel=ending == "cancel")
        return q

    state = {"close": "closed", "cancel": "cancelled", "fail": "failed"}[ending]
    kind, message = both(native, ended, lambda q: q.put(np.zeros(3, np.float32)))
    assert (kind, message) == (pyfastq.QueueClosed, str(_contract.refused("q", state)))


def test_timeouts_read_alike(native):
    def full(b):
        q = pyfastq.Queue(SPEC, capacity=1, backend=b, name="q")
        q.put(np.zeros(3, np.float32))
        return q

    assert both(native, full, lambda q: q.put(np.zeros(3, np.float32), timeout=0.01)) == (
        TimeoutError, str(_contract.no_free_slot("q")))

    def ordered(b):
        q = pyfastq.Queue(SPEC, capacity=2, backend=b, name="q")
        q._impl.begin_turns(2)
        return q

    assert both(native, ordered, lambda q: q._impl.wait_turn(1, 0.01)) == (
        TimeoutError, str(_contract.no_turn("q", 1)))


def test_an_all_or_nothing_put_many_over_capacity_is_refused_alike(native):
    kind, message = both(native, lambda b: pyfastq.Queue(SPEC, capacity=2, backend=b, name="q"),
                         lambda q: q.put_many(np.zeros([3, 3], np.float32), timeout=1))
    assert kind is ValueError and "cannot be all-or-nothing within a timeout" in message


@pytest.mark.parametrize("workers", [0, _contract.MAX_ORDERED_WORKERS + 1])
def test_the_turnstile_takes_as_many_workers_on_both(native, workers):
    kind, message = both(native, lambda b: pyfastq.Queue(SPEC, capacity=2, backend=b),
                         lambda q: q._impl.begin_turns(workers))
    assert (kind, message) == message_of(lambda: _contract.check_turn_workers(workers))


def test_the_turnstile_moves_alike(backend):
    """Ticket k*P + i is worker i's k-th; finished workers' tickets are skipped; all finished: no turn."""
    impl = pyfastq.Queue(SPEC, capacity=4, backend=backend)._impl
    impl.begin_turns(2)
    seen = [impl.turn]
    impl.finish_turns(1, 1)  # worker 1 makes one element only
    impl.pass_turn(0)
    seen.append(impl.turn)
    impl.pass_turn(1)  # worker 1's only element; its next ticket (3) is skipped after worker 0's (2)
    seen.append(impl.turn)
    impl.pass_turn(2)
    seen.append(impl.turn)
    impl.finish_turns(0, 3)
    seen.append(impl.turn)
    impl.finish_turns(0, 2)
    seen.append(impl.turn)
    assert seen == [0, 1, 2, 4, 4, _contract.Turnstile.DONE]
    impl.begin_turns(1, 7)  # a run's positions, from position 7
    assert impl.turn == 7
    impl.wait_turn(7, 0)
    impl.pass_turn(7)
    assert impl.turn == 8


def test_a_put_with_a_ticket_waits_for_its_turn_and_passes_it(backend):
    impl = pyfastq.Queue(SPEC, capacity=4, backend=backend)._impl
    impl.begin_turns(2)
    with pytest.raises(TimeoutError):
        impl.put([np.ones(3, np.float32)], 0.01, 1)
    assert impl.size() == 0
    impl.put([np.zeros(3, np.float32)], None, 0)
    impl.put([np.ones(3, np.float32)], None, 1)
    assert impl.size() == 2 and impl.turn == 2


def three_unequal_workers(i, n):
    """Worker i makes i + 1 elements, 10*i + k."""
    return (np.full(3, 10 * i + k, np.float32) for k in range(i + 1))


def test_ordered_thread_workers_take_turns_in_the_queues_turnstile(backend):
    q = pyfastq.Queue(SPEC, capacity=64, backend=backend)
    with pyfastq.Producer(q, three_unequal_workers, workers=3, ordered=True):
        got = [int(q.dequeue()[0]) for _ in range(6)]
    assert got == [0, 10, 20, 11, 21, 22]
    assert q._impl.turn == _contract.Turnstile.DONE  # every worker finished: the turnstile has no turn left


def test_ordered_thread_workers_are_as_many_as_a_turnstile_takes(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    with pytest.raises(ValueError, match=f"at most {_contract.MAX_ORDERED_WORKERS} worker threads"):
        pyfastq.Producer(q, three_unequal_workers, workers=_contract.MAX_ORDERED_WORKERS + 1, ordered=True)


def test_a_reservation_is_finished_once_and_its_views_are_then_read_only_alike(native):
    def finished(b):
        q = pyfastq.Queue(SPEC, capacity=2, backend=b)
        res = q._impl.reserve(None)
        res.commit()
        assert not res.active and not any(v.flags.writeable for v in res.views)
        return res

    assert both(native, finished, lambda res: res.abort()) == (ValueError, _contract.RESERVATION_FINISHED)
