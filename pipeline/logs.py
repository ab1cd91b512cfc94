"""One log format for the jobs, their Ray workers and the libraries underneath.

Library modules log through ``logging.getLogger(__name__)``; ``configure_logging`` (called first
by each job, before Ray and the model libraries are imported, and by the code that runs inside Ray
workers) gives the project's loggers one handler and one format (inside a Ray Train worker, whose
log capture already owns the root logger, it only sets the levels). When the output is not a terminal (``make run > run.log``), the progress bars of Ray Data,
tqdm, diffusers and transformers are switched off and Ray prints worker lines without colour
codes, so a log file reads as a log: one line per event, none redrawn. The environment variables
are set before Ray starts, so the local cluster's workers inherit them.
"""

from __future__ import annotations

import logging
import os
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
PROJECT_LOGGERS = ("camera", "render", "pipeline", "models", "jobs", "benchmarks")

# Set when the output is a file or a pipe: progress bars off, plain worker prefixes.
QUIET_ENVIRONMENT = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_COLOR_PREFIX": "0",
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # Worker lines Ray forwards to the driver that are routine bookkeeping; they stay in the
    # workers' own files under /tmp/ray/session_latest/logs. Warnings and errors pass, but for the
    # few below that Ray prints on routine events.
    # (Ray applies this only while it deduplicates worker lines: RAY_DEDUP_LOGS=0 shows them all.)
    "RAY_DEDUP_LOGS_SKIP_REGEX": "|".join((
        r"^(?!.*(WARNING|ERROR|Error|Traceback)).*\bINFO \d{4}-\d\d-\d\d ",  # Ray Serve's INFO lines
        r"^(?!.*(WARNING|ERROR|Error|Traceback)).*\tINFO \S+\.py:\d+ -- ",  # Ray core/Data INFO lines
        r"Failed to query Ray Train Controller actor state",  # Ray Train 2.60's cleaner, polling
        r"^Requesting resources|^Attempting to start training worker group|^Started training worker group",
        r"^- \(ip=|^Setting up process group|^Moving model to device|^Wrapping provided model",
        r"^Reporting training result \d+: ",  # Ray Train V2: every report of every worker
        r"^Starting execution of Dataset|^Execution plan of Dataset|Dataset \S+ execution finished in",
        r"has constructor arguments in the object store",  # Ray core's note on every actor pool
        r"A new progress UI is available|^Progress bars disabled",
        r"RayDeprecationWarning: `ExecutionOptions|self\.exclude_resources = exclude_resources",
        # Ray Serve 2.60's controller on every deploy and delete of a deployment without autoscaling,
        # and its shutdown killing the controller it asked to stop: routine, though they read as faults.
        r"Cannot deregister autoscaling state for deployment|Task ServeController\.graceful_shutdown failed",
        r"fork_posix\.cc:\d+\] Other threads are currently calling into gRPC",  # gRPC, when a worker forks
    )),
}
# The driver's own records of the same kind, by logger: a note on progress bars we switched off,
# and Serve's "New http_options ... will not be applied" after ``serve.start`` applied ours
# (``pipeline.serve.app.start_http`` says when an older Serve instance keeps its own).
QUIET_RECORDS = {
    "ray.data._internal.progress": r"^Progress bars disabled",
    "ray.serve": r"^Connecting to existing Serve app",
}
# Loggers whose records carry terminal colour codes whatever the output (Ray's worker module
# colours the dashboard's address): written without them to a file.
COLOURED_LOGGERS = ("ray._private.worker",)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Ray's own chatter worth a line only when something is wrong.
NOISY_LOGGERS = ("ray.data", "ray.train", "ray.serve", "mlflow", "alembic", "diffusers", "transformers",
                 "httpx", "urllib3", "filelock")


class _DropMatching(logging.Filter):
    """Drops the records whose message matches ``pattern``."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


class _PlainText(logging.Filter):
    """Writes a record's message without terminal colour codes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = ANSI_ESCAPE.sub("", message), ()
        return True


_QUIET_FILTERS = [*((name, _DropMatching(pattern)) for name, pattern in QUIET_RECORDS.items()),
                  *((name, _PlainText()) for name in COLOURED_LOGGERS)]


def interactive() -> bool:
    """True when standard error is a terminal (progress bars are welcome there)."""
    return sys.stderr.isatty()


def configure_logging(level: int = logging.INFO, quiet: bool | None = None) -> None:
    """Give the project's loggers one stderr handler in ``FORMAT``; idempotent.

    Args:
        level: level of the project's loggers.
        quiet: switch progress bars off and turn library chatter down to warnings (default: when
            stderr is not a terminal). Set before Ray starts so its workers inherit it.
    """
    quiet = (not interactive()) if quiet is None else quiet
    if quiet:
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name, quiet_filter in _QUIET_FILTERS:
            logging.getLogger(name).addFilter(quiet_filter)  # the same object twice is added once
        if "ray.data" in sys.modules:  # imported before us: its context read the environment already
            context = sys.modules["ray.data"].DataContext.get_current()
            context.enable_progress_bars = False
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    if root.handlers:
        # Ours already, or the host process's (Ray Train's worker log capture): one line per
        # record either way, so nothing is printed twice.
        return
    # On the root logger, so other libraries' warnings share the format; the root's own level stays
    # at WARNING, so only the project's loggers speak at INFO.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
