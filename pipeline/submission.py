"""Where a job's paths point when it runs under ``ray job submit``.

A submitted job runs in a temporary copy of ``--working-dir`` on the head node (or in the job
supervisor's folder without one), not in the folder the user submitted from. A relative output,
tracking store or artifact root would land in that copy, which Ray deletes, and which no other
node sees: the job would say "succeeded" and the user's folder stay empty. So under a submission
every location a config marks "output" or "tracking" must be absolute or a URI, and a relative
input that is missing from the copy (git-ignored, never uploaded) is named as such. Run directly
(``python jobs/render.py``), relative paths mean the current folder, as usual.

A config class says which of its fields are locations in its ``LOCATIONS`` class attribute
(field name -> "input", "output" or "tracking"); ``pipeline.cli.config_from_args`` calls
``check_locations`` on every config it builds. Processes that work in another folder than the
job's own (Ray Train's workers run in their run's folder) are handed ``absolute_locations(config)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

# Set by Ray's job supervisor in the environment of every submitted job's entrypoint.
JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"
LOCATION_KINDS = ("input", "output", "tracking")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # s3://, gs://, models:/, http://, sqlite:, file:...
# Tracking stores MLflow names without a scheme (mlflow.utils.uri.is_databricks_uri): not paths.
MLFLOW_NAMED_STORES = ("databricks",)


class SubmittedPathError(ValueError):
    """A path a submitted job cannot use as given; the message says which and what to pass instead."""


def submitted_job() -> dict[str, Any] | None:
    """The runtime environment of the ``ray job submit`` job this process runs, else None."""
    raw = os.environ.get(JOB_CONFIG_VARIABLE)
    if raw is None:
        return None
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def _where(runtime_env: dict[str, Any]) -> str:
    if runtime_env.get("working_dir"):
        return "a temporary copy of --working-dir on the head node, deleted after the job and seen by no other node"
    return f"the job supervisor's folder ({os.getcwd()}), not the folder you submitted from"


def relative_local_path(value: str) -> bool:
    """True for a local path that is relative (no URI scheme, not absolute, not ~)."""
    if value.startswith("file://"):
        value = value[len("file://"):]
    elif _URI.match(value) and not re.match(r"^[a-zA-Z]:[\\/]", value):
        return False
    return not os.path.isabs(os.path.expanduser(value))


def relative_sqlite(uri: str) -> bool:
    """True for ``sqlite:///relative.db`` (an absolute one has four slashes: ``sqlite:////abs.db``)."""
    return uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/")


def absolute_location(value: str, kind: str = "input") -> str:
    """``value`` (a location of ``kind``, as in ``LOCATIONS``) with a relative local path made
    absolute against the current folder: an output always, an input that exists here (one that does
    not is left to its reader: a Hugging Face repo id in the local cache, say), a tracking store
    that is a SQLite file or a folder. URIs, ``MLFLOW_NAMED_STORES`` and absolute paths as they
    are."""
    if relative_sqlite(value):
        return "sqlite:///" + os.path.abspath(value[len("sqlite:///"):])
    if value in MLFLOW_NAMED_STORES or value.startswith("file://") or not relative_local_path(value):
        return value
    if kind == "input" and not os.path.exists(value):
        return value
    return os.path.abspath(value)


def absolute_locations(config: Any) -> Any:
    """The dataclass ``config`` with every field its ``LOCATIONS`` lists made ``absolute_location``
    (anything else, None included, as it is)."""
    if not dataclasses.is_dataclass(config):
        return config
    fields = getattr(type(config), "LOCATIONS", {})
    changed = {name: absolute_location(getattr(config, name), kind) for name, kind in fields.items()
               if isinstance(getattr(config, name), str)}
    return dataclasses.replace(config, **changed)


def check_location(value: str | None, flag: str, kind: str) -> None:
    """Raise ``SubmittedPathError`` when ``value`` (given as ``flag``) cannot work in a submitted
    job; nothing outside one. ``kind``: "input", "output" or "tracking" (an MLflow URI; None
    stands for the default store)."""
    runtime_env = submitted_job()
    if runtime_env is None:
        return
    where = _where(runtime_env)
    if kind == "tracking":
        if value is None:
            value = os.environ.get("MLFLOW_TRACKING_URI")
            if value is None:
                raise SubmittedPathError(
                    f"{flag} is not given, and the default store sqlite:///mlflow.db would be made in {where}: give "
                    f"{flag} sqlite:////ABSOLUTE/PATH/mlflow.db (a folder every node sees) or a tracking server "
                    "http://HOST:5000 (docs/scale.md)")
        if value in MLFLOW_NAMED_STORES:
            return
        if relative_sqlite(value) or (not _URI.match(value) and relative_local_path(value)):
            raise SubmittedPathError(
                f"{flag} {value} is relative: in a submitted job it would be made in {where}; give an absolute "
                f"store (sqlite:////ABSOLUTE/PATH/mlflow.db, four slashes) or a tracking server http://HOST:5000")
        return
    if value is None or not relative_local_path(value):
        return
    if kind == "output":
        raise SubmittedPathError(
            f"{flag} {value} is a relative path: in a submitted job it would be written to {where}; give an "
            f"absolute path that every node sees (e.g. \"$PWD/{value}\" on one machine, a shared mount on a "
            "cluster) or a URI (s3://..., gs://...)")
    if not os.path.exists(value):
        raise SubmittedPathError(
            f"{flag} {value} is a relative path that is not in the job's working directory ({where}): only files "
            f"that `ray job submit --working-dir` uploads are there (git-ignored ones such as out/ are not); give "
            "an absolute path every node sees or a URI")


def check_locations(config: Any) -> None:
    """``check_location`` for every field that the dataclass ``config`` lists in its ``LOCATIONS``."""
    if submitted_job() is None:
        return
    for name, kind in getattr(type(config), "LOCATIONS", {}).items():
        if kind not in LOCATION_KINDS:
            raise TypeError(f"{type(config).__name__}.LOCATIONS[{name!r}]: one of {LOCATION_KINDS}, not {kind!r}")
        check_location(getattr(config, name), "--" + name.replace("_", "-"), kind)
