"""MLflow for every job: one place that decides the tracking store and opens runs."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
import time
import warnings
from typing import Any, Iterator

from pipeline.submission import absolute_location

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


ARTIFACTS_FOLDER = "mlartifacts"  # beside a local SQLite store, as `mlflow server` names it
ARTIFACTS_HELP = ("where new MLflow experiments keep their artifacts (models, images): a folder or URI (default: "
                  f"{ARTIFACTS_FOLDER}/ beside a sqlite store, the store itself for a file store, the server's "
                  "choice for a tracking server)")


def tracking_uri(flag: str | None = None) -> str:
    """The tracking store: the flag, else ``MLFLOW_TRACKING_URI``, else a local SQLite file; a
    relative SQLite file made absolute (the processes it is handed to may work in other folders)."""
    return absolute_location(flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI, "tracking")


def artifact_location(uri: str, flag: str | None = None) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: ``flag``, else
    ``mlartifacts/`` beside a SQLite store; None (MLflow's choice) for file stores and servers.

    MLflow's own default for a SQLite store is ``./mlruns`` of the process's current folder: in a
    submitted Ray job that is a temporary copy of the working dir, so registered models would point
    into a folder that is deleted after the job and that no other node sees."""
    if flag:
        return flag if "://" in flag else "file://" + os.path.abspath(os.path.expanduser(flag))
    if uri.startswith("sqlite:///"):
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(uri[len("sqlite:///"):])), ARTIFACTS_FOLDER)
    return None


def experiment_id(client: Any, name: str, artifacts: str | None = None) -> str:
    """The id of experiment ``name`` in ``client``'s store, created with ``artifact_location(...)``
    if missing (an existing experiment keeps its location; a different ``artifacts`` is warned about)."""
    from mlflow.exceptions import MlflowException

    location = artifact_location(client.tracking_uri, artifacts)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as error:  # another job created it meanwhile
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if artifacts and found.artifact_location.rstrip("/") != location.rstrip("/"):
        logger.warning("MLflow experiment %s keeps its artifacts in %s (set when it was created), not %s: use "
                       "another --experiment for a new location", name, found.artifact_location, location)
    return found.experiment_id


@contextlib.contextmanager
def mlflow_run(experiment: str, run_name: str | None, uri: str | None, params: dict[str, Any],
               artifacts: str | None = None) -> Iterator[Any]:
    """Start an MLflow run with ``params`` logged; yields the ``mlflow`` module for logging.
    ``artifacts``: the experiment's artifact location if it is created (``artifact_location``)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment_id=experiment_id(mlflow.MlflowClient(), experiment, artifacts))
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params({key: _param(value) for key, value in params.items()})
        yield mlflow


class TrackingError(RuntimeError):
    """The MLflow tracking store could not be opened or written."""


class BackgroundRun:
    """An MLflow run opened on a helper thread, for jobs whose start-up is worth overlapping.

    Importing MLflow and opening its store take about 2 s on a small machine; the render job
    spends the same time starting Ray Data's actors, so the two run side by side. The run gets
    the same system tags (user, source, git commit) as ``mlflow.start_run`` gives. Logging calls
    wait for the run to be open. If opening fails, the error is logged at once and raised by the
    first logging call (and by ``end``), so the job's own results, already written, are kept.
    Uses ``MlflowClient`` only: MLflow's fluent active run belongs to the thread that started it.
    Every method waits for the run before it imports anything of MLflow's: two threads importing
    MLflow at once deadlock on its circular imports ("deadlock detected by _ModuleLock").
    """

    def __init__(self, experiment: str, run_name: str | None, uri: str | None, params: dict[str, Any],
                 artifacts: str | None = None) -> None:
        self.uri = tracking_uri(uri)
        self.artifacts = artifacts
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlflow-open")
        self._opened = self._executor.submit(self._open_and_report, experiment, run_name, dict(params))
        self._executor.shutdown(wait=False)

    def _open_and_report(self, experiment: str, run_name: str | None, params: dict[str, Any]) -> tuple[Any, str]:
        try:
            return self._open(experiment, run_name, params)
        except Exception as error:
            logger.error("MLflow tracking store %s could not be opened: %s (the job goes on; it fails at its end)",
                         self.uri, error)
            raise

    def _open(self, experiment: str, run_name: str | None, params: dict[str, Any]) -> tuple[Any, str]:
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        client = MlflowClient(self.uri)
        run = client.create_run(experiment_id(client, experiment, self.artifacts), tags=resolve_tags({MLFLOW_RUN_NAME: run_name} if run_name else {}),
                                run_name=run_name)
        client.log_batch(run.info.run_id, params=[Param(key, _param(value)) for key, value in params.items()])
        return client, run.info.run_id

    def _run(self) -> tuple[Any, str]:
        try:
            return self._opened.result()
        except Exception as error:
            raise TrackingError(f"MLflow tracking store {self.uri} could not be opened: {error}") from error

    @property
    def run_id(self) -> str:
        return self._run()[1]

    def log_metrics(self, metrics: dict[str, float]) -> None:
        client, run_id = self._run()  # first: mlflow is imported only once the helper thread is done with it
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])

    def set_tag(self, key: str, value: Any) -> None:
        client, run_id = self._run()
        client.set_tag(run_id, key, str(value))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED (or FAILED, KILLED); raises ``TrackingError`` if it never opened."""
        client, run_id = self._run()
        client.set_terminated(run_id, status)


@contextlib.contextmanager
def mlflow_run_in_background(experiment: str, run_name: str | None, uri: str | None,
                             params: dict[str, Any], artifacts: str | None = None) -> Iterator[BackgroundRun]:
    """Like ``mlflow_run``, with the run opened while the block starts working; yields the
    ``BackgroundRun``. The run ends FINISHED, or FAILED if the block raises (that error wins)."""
    run = BackgroundRun(experiment, run_name, uri, params, artifacts)
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            run.end("KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED")
        raise
    run.end("FINISHED")


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_shards_input(data: str, context: str) -> None:
    """Record the orbit shards a run reads as an MLflow dataset input of the active run: one row per
    shard file (path, bytes, modification time), so the run says exactly which files it used."""
    import fsspec
    import mlflow
    import pandas as pd

    from pipeline.data import shards

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
