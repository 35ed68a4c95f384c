"""Where a sweep's fits run: a loky process pool on this machine, or Ray tasks on a Ray cluster.

Both run :func:`~l1inf_lightning.cv.execution.fit_and_store` per run; :func:`~l1inf_lightning.cv.execution.execute`
decides what to start and when to stop.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import loky
import torch
from typing_extensions import override

from l1inf_lightning._checks import is_int
from l1inf_lightning.cv.execution import Backend, WorkerLost, fit_and_store
from l1inf_lightning.cv.settings import RunSpec, SweepError

__all__ = ["BACKENDS", "LocalBackend", "RayBackend", "make_backend"]

BACKENDS = ("local", "ray")


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker(parent_pid: int, num_threads: int) -> None:
    """Pool worker set-up: share the cores, leave Ctrl-C to the sweep, and die with the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep stops the workers; no tracebacks from them
    torch.set_num_threads(num_threads)

    def exit_with_parent() -> None:
        # A killed sweep cannot stop its workers, and loky's only notice their parent between tasks: an orphan would
        # train on into a directory a resumed sweep reuses.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


class LocalBackend(Backend):
    """Fits in a pool of ``workers`` processes on this machine (loky, which can kill its workers on shutdown).

    ``concurrent.futures.ProcessPoolExecutor`` has no public way to stop a running task before Python 3.14; loky's
    ``shutdown(kill_workers=True)`` is one. torch's threads are shared out: usable cores // workers each.

    Args:
        workers: Parallel fits, at least 1.
    """

    name = "local"
    isolates_crashes = False  # a dead worker breaks the pool: every task in flight fails with it

    def __init__(self, workers: int = 1) -> None:
        if not is_int(workers) or workers < 1:
            raise SweepError(f"Expected `--workers` to be an integer >= 1, got {workers!r}")
        self.slots = workers
        self._num_threads = max(1, _usable_cpus() // workers)
        self._pool: loky.ProcessPoolExecutor | None = None

    @override
    def describe(self) -> str:
        return f"{self.slots} worker(s) on this machine"

    @override
    def submit(self, spec: RunSpec, output: Path) -> concurrent.futures.Future:
        if self._pool is None:  # first use, or the last pool broke
            self._pool = loky.ProcessPoolExecutor(
                self.slots, initializer=_init_worker, initargs=(os.getpid(), self._num_threads)
            )
        return self._pool.submit(fit_and_store, spec, str(output))

    @override
    def wait(self, handles: Sequence[concurrent.futures.Future], timeout: float) -> list[Any]:
        done, _ = concurrent.futures.wait(handles, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    @override
    def result(self, handle: concurrent.futures.Future) -> dict[str, Any]:
        try:
            return handle.result()
        except loky.BrokenProcessPool as error:
            self.stop([])  # a broken pool takes no more tasks; the next submit starts a fresh one
            raise WorkerLost(str(error)) from error

    @override
    def stop(self, handles: Sequence[concurrent.futures.Future]) -> None:
        if self._pool is not None:  # killing the workers ends every task in flight
            self._pool.shutdown(wait=True, kill_workers=True)
            self._pool = None

    @override
    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class RayBackend(Backend):
    """Each fit a Ray task (one CPU, no retry) on a Ray cluster: a new local one, or the one at ``address``.

    The workers write their logs and results into the output directory, so on more than one machine it must be on
    a file system that all of them share (as for a Slurm job array).

    Args:
        address: A running cluster's address (``ray start --head`` prints it; ``"auto"`` finds a local one), or
            None to start a Ray instance on this machine for the sweep's duration.
        workers: Runs in flight at once; by default the cluster's CPU count.
    """

    name = "ray"
    isolates_crashes = True  # a dead worker fails only its own task (retries are turned off)

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and (not is_int(workers) or workers < 1):
            raise SweepError(f"Expected `--workers` to be an integer >= 1, got {workers!r}")
        try:
            import ray  # an optional extra: imported only when this backend is asked for
        except ImportError:
            raise SweepError(
                "Expected `ray` to be installed for `--backend ray`: pip install 'l1inf-lightning[ray]'"
            ) from None
        self._ray = ray
        # The fits' console goes to console/<run_id>.log already; the driver's terminal keeps the progress bar.
        # A new local instance gets `workers` CPUs (all of this machine's by default); a cluster has its own.
        cpus = workers if address is None else None
        ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=0)(fit_and_store)
        self._address = address

    @override
    def describe(self) -> str:
        where = f"the Ray cluster at {self._address}" if self._address else "a local Ray instance"
        return f"{self.slots} Ray task(s) at a time on {where}"

    @override
    def submit(self, spec: RunSpec, output: Path) -> Any:
        return self._task.remote(spec, str(output))

    @override
    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        return ready

    @override
    def result(self, handle: Any) -> dict[str, Any]:
        try:
            return self._ray.get(handle)
        except (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.NodeDiedError) as error:
            raise WorkerLost(str(error)) from error

    @override
    def stop(self, handles: Sequence[Any]) -> None:
        for handle in handles:
            self._ray.cancel(handle, force=True)  # force: kill the worker process, not just ask the task to stop

    @override
    def close(self) -> None:
        self._ray.shutdown()


def make_backend(name: str, workers: int | None, address: str | None) -> Backend:
    """The backend ``--backend NAME [--workers N] [--address ADDR]`` asks for.

    Raises:
        SweepError: On an unknown name, a bad worker count, ``--address`` without Ray, or Ray not installed.
    """
    if name == "local":
        if address is not None:
            raise SweepError(f"Expected `--address` only with `--backend ray`, got {address!r} with `--backend local`")
        return LocalBackend(1 if workers is None else workers)
    if name == "ray":
        return RayBackend(address, workers)
    raise SweepError(f"Expected `--backend` to be one of {', '.join(BACKENDS)}, got {name!r}")
