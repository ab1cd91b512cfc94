"""MLflow runs opened on a helper thread (pipeline.tracking.BackgroundRun)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import mlflow
import pytest

from conftest import REPO_ROOT

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


def _fresh_python(code: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (nothing of MLflow imported yet) in folder ``cwd``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_logging_at_once_while_the_run_opens_never_deadlocks_on_mlflow_imports(tmp_path):
    """A re-run render with nothing to render logs its metrics at once: the main thread used to import
    MLflow while the helper thread was still importing it ("deadlock detected by _ModuleLock")."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for attempt in range(3):
        done = _fresh_python(f"""
            from pipeline.tracking import mlflow_run_in_background
            with mlflow_run_in_background("tracking", "at-once", {store!r}, {{}}) as run:
                run.log_metrics({{"assets_rendered": 0}})
                run.set_tag("render_nodes", "")
            print("ok")
            """, tmp_path)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (attempt, done.stderr[-3000:])


def test_artifacts_go_beside_a_local_store_or_where_asked_never_into_the_current_folder(tmp_path):
    """MLflow's default for a SQLite store is ./mlruns of the current folder: under `ray job submit`
    a temporary copy of the working dir, so registered models would point into a deleted folder."""
    store_dir, job_dir = tmp_path / "store", tmp_path / "job-cwd"
    store_dir.mkdir()
    job_dir.mkdir()
    store = f"sqlite:///{store_dir / 'mlflow.db'}"
    elsewhere = tmp_path / "artifacts-here"
    done = _fresh_python(f"""
        import mlflow
        from pipeline.tracking import mlflow_run, mlflow_run_in_background
        with mlflow_run("beside", None, {store!r}, {{}}) as fluent:
            fluent.log_text("a", "note.txt")
            print(fluent.get_artifact_uri())
        with mlflow_run_in_background("background", None, {store!r}, {{}}) as run:
            run.log_metrics({{"x": 1}})
        print(mlflow.MlflowClient({store!r}).get_experiment_by_name("background").artifact_location)
        with mlflow_run("asked", None, {store!r}, {{}}, artifacts={str(elsewhere)!r}) as fluent:
            fluent.log_text("b", "note.txt")
            print(fluent.get_artifact_uri())
        """, job_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    beside, background, asked = done.stdout.split()
    assert beside.startswith(f"file://{store_dir / 'mlartifacts'}/") and background == f"file://{store_dir / 'mlartifacts'}"
    assert asked.startswith(f"file://{elsewhere}/")
    assert (store_dir / "mlartifacts").is_dir() and any(elsewhere.rglob("note.txt"))
    assert os.listdir(job_dir) == [], "nothing written into the job's current folder"


def test_a_training_run_is_running_until_its_job_ends(tmp_path):
    from pipeline.train.config import TrainConfig
    from pipeline.train.driver import mlflow_run_id

    shards_dir = tmp_path / "shards"
    shards_dir.mkdir()
    config = TrainConfig(model="m", data=str(shards_dir), output=str(tmp_path / "out"), name="running",
                         mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = mlflow_run_id(config, {"lr": 1})
    client = mlflow.MlflowClient(config.mlflow_uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    client.set_terminated(run_id, "FAILED")
    assert mlflow_run_id(config, {"lr": 1}) == run_id, "a re-submission reopens its run"
    assert client.get_run(run_id).info.status == "RUNNING"
