"""The Ray cluster a job runs on: ``connect`` is every stage's ``ray.init``."""

from __future__ import annotations

import os
from typing import Any

import ray


def connect(**init_options: Any) -> None:
    """Join the cluster of ``$RAY_ADDRESS`` (a job submitted with ``ray job submit`` has it), else
    start a local one; nothing when Ray is initialised already.

    The address is handed on to every worker and actor of the job: Ray's own helpers inside them
    (Ray Train's placement-group cleaner) look their cluster up as "auto", which fails with "Found
    multiple active Ray instances" (a 30-line traceback in the job's log) on a machine that runs
    two clusters."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS", "")
    if address and "://" not in address and address != "auto":  # a GCS address, ip:port
        runtime_env = dict(init_options.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "RAY_ADDRESS": address}
        init_options["runtime_env"] = runtime_env
    ray.init(**init_options)
