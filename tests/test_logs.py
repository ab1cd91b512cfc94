"""``pipeline/logs.py``: which of Ray's routine lines a log file leaves out, and that nothing else
is (the whole log of a run: tests/test_local_run.py)."""

from __future__ import annotations

import logging
import os
import re

import pytest

from pipeline.logs import COLOURED_LOGGERS, NOISY_LOGGERS, QUIET_ENVIRONMENT, QUIET_RECORDS, configure_logging

# Lines as Ray 2.60 forwarded them to the driver of a `make run` (2026-12-07).
ROUTINE = [
    "(ServeController pid=20900) WARNING 2026-12-07 08:13:40,882 controller 20900 -- Cannot deregister autoscaling "
    "state for deployment Deployment(name='Ingress', app='videomv') because it is not registered",
    "Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task will be "
    "retried. Error: The actor is dead because it was killed by `ray.kill`.",
    "I1207 08:13:49.658880   21082 fork_posix.cc:71] Other threads are currently calling into gRPC, skipping fork() "
    "handlers",
    "INFO 2026-12-07 08:13:40,639 serve 19329 -- Started Serve in namespace \"serve\".",
]
TROUBLE = [
    "(ServeController pid=20900) WARNING 2026-12-07 08:13:40,882 controller 20900 -- Deployment 'VideoMV' in "
    "application 'videomv' has 1 replicas that have taken more than 30s to initialize.",
    "Task ServeController.run_control_loop failed. Error: The actor died unexpectedly before finishing this task.",
    "(RayTrainWorker pid=1) 08:13:02 ERROR pipeline.train.worker: step 3 failed",
    "Traceback (most recent call last):",
]


def test_the_worker_lines_left_out_are_rays_routine_ones_and_no_trouble():
    skip = re.compile(QUIET_ENVIRONMENT["RAY_DEDUP_LOGS_SKIP_REGEX"])
    assert [line for line in ROUTINE if not skip.search(line)] == []
    assert [line for line in TROUBLE if skip.search(line)] == []


@pytest.fixture
def quiet_logging(monkeypatch):
    """``configure_logging(quiet=True)``, its environment and logger settings undone afterwards."""
    for name in QUIET_ENVIRONMENT:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    loggers = [logging.getLogger(name) for name in (*NOISY_LOGGERS, *QUIET_RECORDS, *COLOURED_LOGGERS)]
    before = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    configure_logging(quiet=True)
    yield
    for logger, level, filters in before:
        logger.setLevel(level)
        logger.filters[:] = filters


def test_the_drivers_own_routine_records_are_left_out_once_and_only_they(quiet_logging):
    configure_logging(quiet=True)  # again: idempotent, one filter per logger
    progress, serve = logging.getLogger("ray.data._internal.progress"), logging.getLogger("ray.serve")
    assert len(progress.filters) == len(serve.filters) == 1

    def kept(logger: logging.Logger, message: str) -> bool:
        return bool(logger.filter(logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)))

    assert not kept(progress, "Progress bars disabled. To enable, set `ray.data.DataContext.get_current()...`")
    assert not kept(serve, 'Connecting to existing Serve app in namespace "serve". New http_options/'
                           "controller_options will not be applied.")
    assert kept(serve, "Deployment 'VideoMV' has 1 replicas that have taken more than 30s to initialize.")
    assert kept(progress, "Progress bars for operators disabled.")


def test_rays_coloured_dashboard_address_is_written_as_plain_text(quiet_logging):
    logger = logging.getLogger("ray._private.worker")
    # colorama's BRIGHT, GREEN, RESET and NORMAL, as Ray 2.60 passes them
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "Started a local Ray instance. View the "
                               "dashboard at %s%s%s %s%s", ("\x1b[1m", "\x1b[32m", "http://127.0.0.1:8265",
                                                          "\x1b[39m", "\x1b[22m"), None)
    assert logger.filter(record)
    assert record.getMessage() == "Started a local Ray instance. View the dashboard at http://127.0.0.1:8265 "
