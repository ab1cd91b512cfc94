"""A full disk, said in one line: found inside whatever wraps it (Ray's task and training errors,
exception chains), and checked before work that would fill it (a checkpoint's staging copy)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
from typing import Any, Iterator

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """Not enough free space for what is about to be written; the message names the folder and sizes."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def disk_full_cause(error: BaseException | None, _seen: set[int] | None = None) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``error``: itself, its cause or context, a Ray task
    error's ``cause``, a training failure's worker errors; None when the disk is not the reason."""
    seen = _seen if _seen is not None else set()
    if error is None or id(error) in seen:
        return None
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return error
    nested: list[Any] = [error.__cause__, error.__context__, getattr(error, "cause", None)]
    for name in ("worker_failures", "errors"):  # Ray Train's failures keep one error per worker
        value = getattr(error, name, None)
        if isinstance(value, dict):
            nested.extend(value.values())
        elif isinstance(value, (list, tuple)):
            nested.extend(value)
    for inner in nested:
        if isinstance(inner, BaseException):
            found = disk_full_cause(inner, seen)
            if found is not None:
                return found
    return None


def disk_full_line(error: BaseException) -> str | None:
    """One line for a job's log when ``error`` comes from a full disk (None otherwise)."""
    cause = disk_full_cause(error)
    if cause is None:
        return None
    filename = getattr(cause, "filename", None)
    # Ray Data rebuilds the error with its own message where the file name was: a name only when it is a path.
    where = (f" writing {filename}" if isinstance(filename, str) and "\n" not in filename
             and (os.path.isabs(filename) or "://" in filename) else "")
    detail = cause.strerror or str(cause)
    return (f"the disk is full{where}: {detail}. Free space there (or point the output, TMPDIR or Ray's temp dir "
            "elsewhere) and run the same command again: finished work is kept")


@contextlib.contextmanager
def atomic_directory(target: str) -> Iterator[str]:
    """A staging folder beside local ``target`` to write into: when the block ends, it replaces
    ``target`` (a previous one is moved aside until then, never a moment without one); when the
    block raises (a full disk), it is removed and ``target`` stays as it was."""
    target = target.rstrip(os.sep)
    staging, previous = f"{target}.partial-{os.getpid()}", f"{target}.previous-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(target):
        os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)


def log_if_disk_full(error: BaseException, logger: logging.Logger) -> bool:
    """Log ``disk_full_line(error)`` and return True when a full disk caused ``error``: a job's
    ``except`` then ends with exit 1, and re-raises anything else."""
    line = disk_full_line(error)
    if line is not None:
        logger.error("%s", line)
    return line is not None


def require_free_space(folder: str, needed_bytes: int, what: str) -> None:
    """``DiskFullError`` unless ``folder``'s filesystem has ``needed_bytes`` free for ``what``."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise DiskFullError(f"{what} needs about {needed_bytes / 2**30:.2f} GB in {os.path.abspath(folder)}, which has "
                            f"{free / 2**30:.2f} GB free")


class _DiskFullTraces(logging.Filter):
    """Drops a library's records (and their stack traces) logged while a full disk's error is
    raised or handled: the job says it in one line (``disk_full_line``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return error is None or disk_full_cause(error) is None


def quiet_disk_full_traces(loggers: tuple[str, ...] = ("ray.data", "ray")) -> None:
    """Keep Ray's own error records about a full disk (a 190-line trace of a failed shard write,
    and a request to report it as a Ray bug) out of the job's log: the job ends with one line."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DiskFullTraces) for f in handler.filters):
                handler.addFilter(_DiskFullTraces())
