"""Running a sweep's fits on a backend, one task per run, stopped within moments by Ctrl-C or SIGTERM.

:func:`execute` owns what every backend shares: it keeps at most ``backend.slots`` runs in flight (so a run that has
not started can simply not be submitted once a signal comes), reports each result as it arrives, retries alone a run
lost with others to a dead worker, and on a signal stops the runs in flight and records them as interrupted.
The backends (``backends.py``) only start, wait for and kill tasks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

from l1inf_lightning.cv.fit import new_result, now, run_one
from l1inf_lightning.cv.settings import RunSpec
from l1inf_lightning.cv.store import CONSOLE_DIR, is_finished, read_result, write_result

__all__ = ["Backend", "SweepInterrupted", "WorkerLost", "execute", "fit_and_store"]

# How often the loop looks at the stop flag while runs are in flight: the signal-to-exit delay is about this.
_POLL_S = 0.1
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class WorkerLost(RuntimeError):
    """The process that ran a run died during it (killed, e.g. out of memory, or crashed)."""


class SweepInterrupted(Exception):
    """A signal stopped the sweep; the runs in flight were recorded as interrupted.

    Args:
        signum: The signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        interrupted: Run ids of the runs that were stopped half-way.
    """

    def __init__(self, signum: int, interrupted: Sequence[str]) -> None:
        self.signum = signum
        self.interrupted = list(interrupted)
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def fit_and_store(spec: RunSpec, output: str, num_threads: int | None = None) -> dict[str, Any]:
    """What a worker does per run, on any backend: train with the console in a file, then store the result.

    Args:
        spec: The run.
        output: The sweep's output directory, which the worker must see (a shared file system across machines).
        num_threads: torch's intra-op threads, or None to keep the worker's.

    Returns:
        The stored result (:func:`~l1inf_lightning.cv.fit.run_one`).
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    with _redirect_output(_console(output, spec)):
        result = run_one(spec)
    write_result(output, spec, result)
    return result


@contextlib.contextmanager
def _redirect_output(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C libraries too) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w", encoding="utf-8") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


class Backend(ABC):
    """Where the fits run: starts :func:`fit_and_store` tasks, waits for them, and kills them on demand.

    Attributes:
        name: The ``--backend`` value.
        slots: How many runs to keep in flight.
        isolates_crashes: Whether a dead worker fails only its own task (else every task in flight fails with it).
    """

    name: str
    slots: int
    isolates_crashes: bool

    @abstractmethod
    def submit(self, spec: RunSpec, output: Path) -> Any:
        """Start ``fit_and_store(spec, output)``; return a handle for :meth:`wait` and :meth:`result`."""

    @abstractmethod
    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` whose task has ended, waiting at most ``timeout`` seconds for one."""

    @abstractmethod
    def result(self, handle: Any) -> dict[str, Any]:
        """The result of an ended task; raises :class:`WorkerLost` if its worker died, or the task's own error."""

    @abstractmethod
    def stop(self, handles: Sequence[Any]) -> None:
        """Kill the tasks of ``handles``, all those in flight, now (:func:`execute` records them as interrupted)."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers once no task is in flight."""

    def describe(self) -> str:
        """A few words for the sweep's first line, e.g. ``2 worker(s) on this machine``."""
        return f"{self.slots} worker(s) ({self.name})"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def _stop_flag() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set (the signal number in ``event.signum``), instead of raising mid-call.

    A ``KeyboardInterrupt`` could land anywhere, e.g. between a result's arrival and its report; a flag that the loop
    reads between steps keeps the bookkeeping whole. Off the main thread no handler can be installed: the flag is
    then never set and signals act as usual.
    """
    event = threading.Event()
    event.signum = None  # type: ignore[attr-defined]

    def handle(signum: int, frame: FrameType | None) -> None:
        event.signum = signum  # type: ignore[attr-defined]
        event.set()

    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {signum: signal.signal(signum, handle) for signum in _STOP_SIGNALS}
    try:
        yield event
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def execute(
    specs: Sequence[RunSpec], output: str | Path, backend: Backend, on_result: Callable[[dict[str, Any]], None]
) -> None:
    """Run ``specs`` on ``backend``; each worker stores its result as soon as its run ends.

    A worker that dies (a segfault, the OOM killer) fails its run. On a backend where it takes the other runs in
    flight with it, those are rerun one at a time, and one whose worker dies alone is recorded as failed.

    Args:
        specs: The runs, started in this order.
        output: The sweep's output directory.
        backend: Where the fits run; :func:`execute` neither opens nor closes it.
        on_result: Called in this process with each result, in the order they end.

    Raises:
        SweepInterrupted: On SIGINT or SIGTERM, after the runs in flight were stopped and recorded as interrupted
            (a run handed to a worker that had not started it yet stays pending); no run starts after the signal.
    """
    output = Path(output)
    queue, alone = deque(specs), deque[RunSpec]()
    in_flight: dict[Any, RunSpec] = {}
    with _stop_flag() as stop:
        while queue or alone or in_flight:
            while not stop.is_set() and len(in_flight) < backend.slots and (queue or alone):
                if alone and in_flight:  # a suspect of killing its worker runs by itself
                    break
                spec = alone.popleft() if alone else queue.popleft()
                in_flight[backend.submit(spec, output)] = spec
            if stop.is_set():
                break
            lost = []
            for handle in backend.wait(list(in_flight), _POLL_S):
                spec = in_flight.pop(handle)
                try:
                    on_result(backend.result(handle))
                except WorkerLost:
                    lost.append(spec)
                except Exception as error:  # e.g. the output directory went away: say so, go on with the others
                    shown = f"{type(error).__name__}: {error}"
                    print(f"Run {spec.run_id} stopped without a result ({shown})", file=sys.stderr)
            for spec in lost:
                stored = read_result(output, spec)
                if is_finished(stored):  # it stored its result just before its worker died
                    on_result(stored)  # type: ignore[arg-type]
                elif backend.isolates_crashes or (len(lost) == 1 and not in_flight):
                    on_result(_record(output, spec, "failed", _crash_message(output, spec)))
                else:
                    alone.append(spec)
        if stop.is_set():
            _interrupt(output, backend, in_flight, on_result, stop.signum)  # type: ignore[attr-defined]


def _interrupt(
    output: Path,
    backend: Backend,
    in_flight: dict[Any, RunSpec],
    on_result: Callable[[dict[str, Any]], None],
    signum: int,
) -> None:
    backend.stop(list(in_flight))
    interrupted = []
    for spec in in_flight.values():
        stored = read_result(output, spec)
        if is_finished(stored):  # it ended between the signal and the kill: keep it
            on_result(stored)  # type: ignore[arg-type]
        elif _console(output, spec).exists():  # its worker had started it (fit_and_store opens the log first)
            _record(output, spec, "interrupted", f"stopped by {signal.Signals(signum).name}")
            interrupted.append(spec.run_id)
    raise SweepInterrupted(signum, interrupted)


def _record(output: Path, spec: RunSpec, status: str, error: str) -> dict[str, Any]:
    result = new_result(spec)
    result["status"], result["error"], result["finished_at"] = status, error, now()
    write_result(output, spec, result)
    return result


def _crash_message(output: Path, spec: RunSpec) -> str:
    return (
        f"the worker process died during the run (killed, e.g. out of memory, or crashed); see {_console(output, spec)}"
    )


def _console(output: str | Path, spec: RunSpec) -> Path:
    return Path(output) / CONSOLE_DIR / f"{spec.run_id}.log"
