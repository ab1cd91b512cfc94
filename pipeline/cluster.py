"""The Ray cluster a job runs on: ``connect`` is every stage's ``ray.init``."""

from __future__ import annotations

import importlib
import os
import signal
import threading
from typing import Any

import ray

from pipeline.disk import quiet_disk_full_traces

from pipeline.logs import QUIET_ENVIRONMENT
from pipeline.submission import submitted_job


def worker_environment() -> dict[str, str]:
    """What the job's workers and actors are given: the cluster's address (Ray's own helpers inside
    them, Ray Train's placement-group cleaner among them, look their cluster up as "auto", which
    fails with "Found multiple active Ray instances", a 30-line traceback in the job's log, on a
    machine that runs two clusters), and the log settings ``configure_logging`` chose (no progress
    bars in a log file). Variables the submitted job's own runtime env sets are left to it."""
    environment = {name: os.environ[name] for name in QUIET_ENVIRONMENT if name in os.environ}
    address = os.environ.get("RAY_ADDRESS", "")
    if address and "://" not in address and address != "auto":  # a GCS address, ip:port
        environment["RAY_ADDRESS"] = address
    owned = (submitted_job() or {}).get("env_vars") or {}
    return {name: value for name, value in environment.items() if name not in owned}


def point_at_own_cluster() -> None:
    """Every worker's setup hook: Ray's own helpers inside a worker (Ray Train's placement-group
    cleaner polls the state API) look their cluster up as "auto", which on a machine running two
    clusters fails with "Found multiple active Ray instances" and a 30-line traceback in the job's
    log. A worker knows which cluster it belongs to: say so in ``RAY_ADDRESS``. This covers a local
    cluster too, whose address is not known before ``ray.init`` starts it."""
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def stop_cleanly_on_sigterm() -> None:
    """``ray job stop`` (and a cluster's shutdown) ends a job's driver with SIGTERM, which by
    default ends Python without running its ``finally`` blocks: turn it into KeyboardInterrupt, so
    the job's MLflow run ends KILLED instead of staying RUNNING forever. Main thread only."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def connect(**init_options: Any) -> None:
    """Join the cluster of ``$RAY_ADDRESS`` (a job submitted with ``ray job submit`` has it), else
    start a local one, with ``worker_environment()`` for every worker; nothing when Ray is
    initialised already. A SIGTERM then stops the job cleanly (``stop_cleanly_on_sigterm``), and
    a full disk ends it in one line, without Ray's traces of it (``quiet_disk_full_traces``)."""
    stop_cleanly_on_sigterm()
    importlib.import_module("ray.data")  # its loggers exist from here on
    quiet_disk_full_traces()
    if ray.is_initialized():
        return
    runtime_env = dict(init_options.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**worker_environment(), **runtime_env.get("env_vars", {})}
    if "worker_process_setup_hook" not in (submitted_job() or {}):  # a submitted job's own hook is its own
        runtime_env.setdefault("worker_process_setup_hook", point_at_own_cluster)
    ray.init(runtime_env=runtime_env, **init_options)
