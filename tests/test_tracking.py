"""MLflow runs opened on a helper thread (pipeline.tracking.BackgroundRun)."""

from __future__ import annotations

import logging

import mlflow
import pytest

from pipeline.tracking import TrackingError, mlflow_run, mlflow_run_in_background


def test_a_background_run_records_what_a_fluent_run_does(mlflow_uri):
    params = {"input": "assets", "render.resolution": 32}
    with mlflow_run("tracking", "fluent", mlflow_uri, params):
        pass
    with mlflow_run_in_background("tracking", "background", mlflow_uri, params) as run:
        run.log_metrics({"assets_rendered": 4, "job_seconds": 1.5})
        run.set_tag("render_nodes", "node:4")
    mlflow.set_tracking_uri(mlflow_uri)
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["tracking"], output_format="list")}
    fluent, background = runs["fluent"], runs["background"]
    assert background.info.run_id == run.run_id and background.info.status == "FINISHED"
    assert background.data.params == fluent.data.params == {"input": "assets", "render.resolution": "32"}
    assert background.data.metrics == {"assets_rendered": 4.0, "job_seconds": 1.5}
    assert background.data.tags["render_nodes"] == "node:4"
    # The system tags mlflow.start_run adds (user, source), so both kinds of run read alike in the UI.
    system = {key for key in fluent.data.tags if key.startswith("mlflow.") and key != "mlflow.runName"}
    assert system and system <= set(background.data.tags)


def test_a_block_that_raises_ends_the_run_failed_and_its_error_wins(mlflow_uri):
    with pytest.raises(ValueError, match="objects_per_file"):
        with mlflow_run_in_background("tracking", "broken", mlflow_uri, {}):
            raise ValueError("objects_per_file must be at least 1")
    mlflow.set_tracking_uri(mlflow_uri)
    (run,) = mlflow.search_runs(experiment_names=["tracking"], output_format="list")
    assert run.info.status == "FAILED"


def test_a_store_that_cannot_open_is_reported_at_once_and_fails_the_job_at_its_end(tmp_path, caplog):
    store = "nosuchscheme://tracking"
    finished = []
    with caplog.at_level(logging.ERROR, logger="pipeline.tracking"):
        with pytest.raises(TrackingError, match="nosuchscheme://tracking could not be opened"):
            with mlflow_run_in_background("tracking", None, store, {}) as run:
                (tmp_path / "result").write_text("kept")  # the job's own work still happens
                finished.append(True)
                run.log_metrics({"assets_rendered": 1})
    assert finished and (tmp_path / "result").read_text() == "kept"
    assert any("nosuchscheme://tracking could not be opened" in r.getMessage() for r in caplog.records)
