"""Engines: who runs the workers. Each yields :class:`ResultRecord` lists shard by shard, in completion order.

``local``  one worker in this process (``workers=1``) or ``workers`` spawned processes, each loading the model once.
           A worker process exits on its own when the driver dies (even by SIGKILL, which runs no clean-up), so no
           orphaned worker keeps computing, and the multiprocessing resource tracker, which ends when its last
           client is gone, follows.
``ray``    ``workers`` Ray actors (one CPU each, the model loaded once per actor), scheduled by Ray's actor pool;
           connects to ``ray_address`` or starts a local Ray instance with ``workers`` CPUs.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Iterator, Sequence

from .store import ResultRecord
from .work import ItemSpec, Worker

Shard = Sequence[tuple[ItemSpec, Sequence[str]]]

_WORKER: Worker | None = None
PARENT_POLL_SECONDS = 0.5


def watch_parent(parent_pid: int, interval: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """Start a daemon thread that ends this process as soon as its parent ``parent_pid`` is gone.

    A process whose parent dies is re-parented (to init or a subreaper), so ``os.getppid()`` changing is a
    portable signal of the parent's death. Polling rather than ``prctl(PR_SET_PDEATHSIG)``: that is Linux-only and
    fires when the *thread* that started the worker ends, which need not be the driver's main thread.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(3)   # no clean-up to run: the driver owns the store, a half-computed shard is simply lost

    thread = threading.Thread(target=watch, name="pathxai-parent-watch", daemon=True)
    thread.start()
    return thread


def _init_process(config: dict[str, Any], parent_pid: int) -> None:
    global _WORKER
    watch_parent(parent_pid)   # first, so a driver killed while the model loads does not leave us behind
    _WORKER = Worker(config)


def _process_in_pool(shard: Shard) -> list[ResultRecord]:
    assert _WORKER is not None
    return _WORKER.process(shard)


def run_local(config: dict[str, Any], shards: list[Shard], workers: int) -> Iterator[list[ResultRecord]]:
    """Process ``shards`` on this machine with ``workers`` processes (1: in this process)."""
    if not shards:
        return
    if workers <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            worker = Worker(config)
            for shard in shards:
                yield worker.process(shard)
        finally:
            torch.set_num_threads(threads)
        return
    env_threads = str(config["threads_per_worker"])
    old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({"OMP_NUM_THREADS": env_threads, "MKL_NUM_THREADS": env_threads})
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_process, initargs=(config, os.getpid())) as pool:
            # keep at most 2 shards per worker in flight, so a crash loses little queued work
            queue = list(shards)
            running = set()
            while queue or running:
                while queue and len(running) < 2 * workers:
                    running.add(pool.submit(_process_in_pool, queue.pop(0)))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _RayWorker:
    """A Ray actor body: one :class:`Worker` (model and methods loaded once per actor)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.worker = Worker(config)

    def process(self, shard: Shard) -> list[ResultRecord]:
        return self.worker.process(shard)


def run_ray(config: dict[str, Any], shards: list[Shard], workers: int,
            address: str | None = None) -> Iterator[list[ResultRecord]]:
    """Process ``shards`` on Ray actors (started here when no Ray instance is running)."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as err:
        raise ImportError("the ray engine needs Ray: pip install 'pathxai[ray]' (or pip install 'ray==2.60.*')"
                          ) from err
    if not shards:
        return
    started = False
    if not ray.is_initialized():
        threads = str(config["threads_per_worker"])
        env = {"env_vars": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                            "TOKENIZERS_PARALLELISM": "false"}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, runtime_env=env, log_to_driver=False)
        started = True
    try:
        # a worker on a CUDA device asks Ray for a GPU, so that the scheduler places it on a machine that has one
        gpus = 1 if str(config.get("device", "cpu")).startswith("cuda") else 0
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus)(_RayWorker)
        actors = [actor_cls.remote(config) for _ in range(max(1, workers))]
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda a, shard: a.process.remote(shard), shards)
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()
