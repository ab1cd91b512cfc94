"""MLflow for every job: one place that decides the tracking store and opens runs."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(flag: str | None = None) -> str:
    """The tracking store: the flag, else ``MLFLOW_TRACKING_URI``, else a local SQLite file."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@contextlib.contextmanager
def mlflow_run(experiment: str, run_name: str | None, uri: str | None, params: dict[str, Any]) -> Iterator[Any]:
    """Start an MLflow run with ``params`` logged; yields the ``mlflow`` module for logging."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params({key: _param(value) for key, value in params.items()})
        yield mlflow


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_shards_input(data: str, context: str) -> None:
    """Record the orbit shards a run reads as an MLflow dataset input of the active run: one row per
    shard file (path, bytes, modification time), so the run says exactly which files it used."""
    import fsspec
    import mlflow
    import pandas as pd

    from pipeline import shards

    paths = shards.list_shards(data)
    filesystem, _ = fsspec.core.url_to_fs(data)
    listing = []
    for path in paths:
        info = filesystem.info(path)
        listing.append({"shard": path, "bytes": int(info.get("size") or 0),
                        "modified": str(info.get("mtime") or info.get("LastModified") or info.get("created") or "")})
    frame = pd.DataFrame(listing, columns=["shard", "bytes", "modified"])
    with warnings.catch_warnings():  # MLflow's hints on source types and integer columns, not ours to act on
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        dataset = mlflow.data.from_pandas(frame, source=data, name=data.rstrip("/").split("/")[-1] or data)
        mlflow.log_input(dataset, context=context)
