"""Producer(mode="ray") on a Ray cluster of several nodes on this machine (ray.cluster_utils.Cluster, loopback only)."""

import functools
import time

import pytest
import tensorflow as tf

import pyfastq
from pyfastq._compat import actor_id

from _sources_data import NodeTagged
from _workers import forever, node_tagged
from support import wait_until

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

SPEC = tf.TensorSpec([], tf.int64)
NODE = {"num_cpus": 1, "object_store_memory": 100 << 20}


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more, one CPU each, for the whole module; this process is the trainer, on the head."""
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        c.add_node(**NODE)
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def node_numbers() -> set:
    """The live nodes, named as node_tagged names them."""
    return {int(n["NodeID"][:15], 16) for n in ray.nodes() if n["Alive"]}


def test_actors_on_both_nodes_feed_one_queue_exactly_once(native, cluster):
    q = pyfastq.Queue((SPEC, SPEC), capacity=16)
    # One CPU per actor and per node: one actor on each node.
    with pyfastq.Producer(q, functools.partial(node_tagged, total=2000), workers=2, mode="ray") as p:
        got = [(int(k), int(node)) for k, node in q.dataset()]
    assert sorted(k for k, _ in got) == list(range(2000))
    nodes = node_numbers()
    assert len(nodes) == 2 and {node for _, node in got} == nodes  # both nodes produced
    assert p.errors == []


def test_losing_a_node_fails_the_queue_naming_the_worker_within_5_s(native, cluster):
    doomed = cluster.add_node(**NODE, resources={"doomed": 1})
    cluster.wait_for_nodes()
    q = pyfastq.Queue(SPEC, capacity=4)
    with pyfastq.Producer(q, forever, workers=1, mode="ray", ray_options={"resources": {"doomed": 1}}) as p:
        wait_until(lambda: q.size() == 4, "the actor on the doomed node to fill the queue")
        lost = time.monotonic()
        cluster.remove_node(doomed, allow_graceful=False)  # its raylet and workers SIGKILLed: a crash, not a drain
        wait_until(lambda: q.closed, "the loss to fail the queue", timeout=5.0)
        took = time.monotonic() - lost
        with pytest.raises(tf.errors.AbortedError) as info:
            q.dequeue()
    assert took < 5.0
    assert f"worker 0 of 1 (Ray actor {actor_id(p.actors[0])}) died" in str(info.value)
    assert len(p.errors) == 1


def test_losing_a_node_with_restarts_left_replaces_its_actor_on_another(native, cluster):
    spares = [cluster.add_node(**NODE, resources={"spare": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    q = pyfastq.Queue((SPEC, SPEC), capacity=16)
    doomed = None
    try:
        with pyfastq.Producer(q, NodeTagged(2000, seconds=0.002), workers=1, mode="ray", restarts=1,
                              ray_options={"resources": {"spare": 1}}) as p:
            got = [(int(k), int(node)) for k, node in (q.dequeue() for _ in range(100))]
            first = got[-1][1]
            doomed = next(n for n in spares if int(n.node_id[:15], 16) == first)
            cluster.remove_node(doomed, allow_graceful=False)  # its raylet and workers SIGKILLed
            got += [(int(k), int(node)) for k, node in q.dataset()]
    finally:
        for n in spares:
            if n is not doomed:
                cluster.remove_node(n)
    assert sorted(k for k, _ in got) == list(range(2000))
    assert {node for _, node in got} == {int(n.node_id[:15], 16) for n in spares}  # the replacement on the other
    assert p.errors == [] and len(p._pool.replaced) == 1
