"""The source workloads' peers as methods: Keras PyDataset (threads, processes), grain's DataLoader,
map(py_function, AUTOTUNE) and from_generator, each over the workload's random-access source (peers.py,
imported when one runs: it imports Keras)."""

from __future__ import annotations

import functools

from .registry import source_method
from .workloads import Workload


def peer_pipeline(start):
    """(take, stop) of a peer: start(peers) -> (an iterator of its batches, what stops it)."""
    from . import peers

    it, end = start(peers)

    def take():
        return peers.first(next(it))

    return take, functools.partial(peers.stop_quietly, end)


@source_method("pydataset_threads", peer=True, per_worker_count=True)
def pydataset_threads(w: Workload, source, workers: int):
    return peer_pipeline(lambda peers: peers.pydataset(source, w.batch, workers, processes=False))


@source_method("pydataset_processes", peer=True, per_worker_count=True)
def pydataset_processes(w: Workload, source, workers: int):
    return peer_pipeline(lambda peers: peers.pydataset(source, w.batch, workers, processes=True))


@source_method("grain", peer=True, per_worker_count=True,
               imports=("grain", "pip install grain to measure its DataLoader"))
def grain(w: Workload, source, workers: int):
    return peer_pipeline(lambda peers: peers.grain_loader(source, w.batch, workers))


@source_method("tf_map", peer=True)
def tf_map(w: Workload, source, workers: int):
    return peer_pipeline(lambda peers: peers.tf_map(source, w.batch))


@source_method("from_generator", peer=True)
def from_generator(w: Workload, source, workers: int):
    return peer_pipeline(lambda peers: peers.from_generator(source, w.batch))
