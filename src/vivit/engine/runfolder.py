"""A training run's folder (`run.out`): a run is never trained over unless asked (`--resume` or
`run.overwrite=true`), and a lock file keeps two trainings from writing into one folder at once."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vivit.errors import ConfigError, VivitError

RUN_MARKERS = ("last.pt", "best.pt", "best", "metrics.csv")  # a folder holding one of these holds a run
RUN_OUTPUTS = (*RUN_MARKERS, "training_curves.png")  # removed by run.overwrite=true (with TensorBoard events)
LOCK_FILE = "train.lock"


def run_files(out: Path) -> list[str]:
    """The names in `out` that show it holds a training run."""
    return [name for name in RUN_MARKERS if (out / name).exists()]


def check_run_folder(out: Path, *, resume: str | Path | bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that already holds one, unless overwriting; `--resume` without
    a path needs `out/last.pt` there when the folder holds a run."""
    found = [] if overwrite or (resume and resume is not True) else run_files(out)
    if resume is True and found and not (out / "last.pt").is_file():
        raise ConfigError(f"--resume: run.out={out} holds a run ({', '.join(found)}) but no last.pt to continue "
                          "from; give --resume CKPT, or replace the run with run.overwrite=true")
    if found and resume is not True:
        raise ConfigError(f"run.out={out} already holds a training run ({', '.join(found)}): continue it with "
                          "--resume, train into another folder (run.out=...), or replace it with run.overwrite=true")


def clear_run(out: Path) -> None:
    """Remove the outputs of a previous run (run.overwrite=true), so none of them is mistaken for the new run's."""
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for events in out.glob("events.out.tfevents.*"):
        events.unlink()


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold `out/train.lock` (host and pid of this process) for the block. A lock left by a process of this
    host that no longer runs (killed) is taken over; one held by a live process, or by another host, refuses.
    SIGTERM (a scheduler's preemption) ends the block as an exception (SystemExit(143)), so the lock is removed
    then too; inside `sigterm_deferred` (a training step) it waits for the end of that block. The signal is also
    recorded (`terminated`): where the exception is lost (PyAV drops exceptions raised inside its own Python-level
    code, such as `err_check` while demuxing), `raise_if_terminated` ends the block at the training loop's next
    batch, and the block's end raises it at the latest."""
    global _terminated_by
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    _acquire(lock)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    _terminated_by = None
    try:
        yield
        raise_if_terminated()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        _terminated_by = None
        lock.unlink(missing_ok=True)


_terminated_by: int | None = None  # the signal received inside `run_lock`, if any
_deferring = False  # inside `sigterm_deferred`


def _exit_on_sigterm(signum: int, frame: object) -> None:
    global _terminated_by
    _terminated_by = signum
    if not _deferring:
        raise SystemExit(128 + signum)


def terminated() -> bool:
    """Whether a SIGTERM reached `run_lock` (raised, deferred or lost on the way)."""
    return _terminated_by is not None


def raise_if_terminated() -> None:
    """SystemExit(128 + signal) when a SIGTERM reached `run_lock` and is still to be acted on: deferred by
    `sigterm_deferred`, or its exception lost on the way."""
    if _terminated_by is not None:
        raise SystemExit(128 + _terminated_by)


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Inside the block a SIGTERM is only recorded, and acted on when the (outermost) block ends, so that an
    optimiser step and its bookkeeping are never cut in half and the state can be saved."""
    global _deferring
    previous, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = previous
    if not previous:
        raise_if_terminated()


def _acquire(lock: Path) -> None:
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _live_holder(lock)
            if holder is None:
                lock.unlink(missing_ok=True)
                continue
            raise VivitError(f"{lock.parent} is in use by another training ({holder}); wait until it ends, "
                             f"or delete {lock} if no training runs there") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return
    raise VivitError(f"cannot take the lock {lock}: another training keeps taking it")


def _live_holder(lock: Path) -> str | None:
    """'pid N on HOST' when the lock's process may still run; None when it is gone (a stale lock)."""
    try:
        host, pid_text = lock.read_text().split()
        pid = int(pid_text)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"an unreadable lock file {lock}"
    if host != socket.gethostname():
        return f"pid {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # a live process of another user
        pass
    return f"pid {pid} on {host}"
