"""Paths in a job submitted with `ray job submit`: it runs in a temporary copy of the working dir, so
relative outputs and tracking stores are refused at once with the fix (pipeline.submission)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from pipeline.cli import add_config_arguments, config_from_args
from pipeline.render_config import RenderJobConfig
from pipeline.submission import JOB_CONFIG_VARIABLE, SubmittedPathError, absolute_locations, check_location
from pipeline.tracking import tracking_uri
from pipeline.train.config import ReconConfig, TrainConfig


def parse(config_cls: type, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, config_cls)
    return config_from_args(config_cls, parser.parse_args(argv))


@pytest.fixture
def submitted(monkeypatch):
    monkeypatch.setenv(JOB_CONFIG_VARIABLE, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_outside_a_submitted_job_relative_paths_mean_the_current_folder(monkeypatch):
    monkeypatch.delenv(JOB_CONFIG_VARIABLE, raising=False)
    config = parse(RenderJobConfig, ["--input", "assets", "--output", "out/shards"])
    assert config.output == "out/shards"


def test_processes_working_elsewhere_get_the_relative_paths_made_absolute(monkeypatch, tmp_path):
    """Ray Train's workers run in their run's folder: a fit hands them ``absolute_locations(config)``
    and the tracking store as ``tracking_uri`` gives it, relative ones resolved in the job's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for folder in ("out/tiny-t2v", "out/shards", "lgm"):  # inputs that exist here
        (tmp_path / folder).mkdir(parents=True)
    config = TrainConfig(model="out/tiny-t2v", output="out/train", name="demo", data="./out/shards",
                         captions="file://captions.csv", image_data="s3://bucket/images.parquet",
                         mlflow_uri="sqlite:///mlflow.db", mlflow_artifacts="mlruns")
    resolved = absolute_locations(config)
    assert (resolved.model, resolved.output, resolved.data, resolved.mlflow_artifacts) == (
        str(tmp_path / "out/tiny-t2v"), str(tmp_path / "out/train"), str(tmp_path / "out/shards"), str(tmp_path / "mlruns"))
    assert resolved.mlflow_uri == f"sqlite:///{tmp_path}/mlflow.db" and resolved.mlflow_uri.startswith("sqlite:////")
    assert (resolved.image_data, resolved.captions, resolved.latents, resolved.name) == (
        "s3://bucket/images.parquet", "file://captions.csv", None, "demo")  # URIs, unset fields, names as they are
    assert absolute_locations(resolved) == resolved and absolute_locations(None) is None
    assert absolute_locations(ReconConfig(reconstructor="lgm")).reconstructor == str(tmp_path / "lgm")
    # An input that is not here is left to its reader: a Hugging Face repo id in the local cache.
    repo_id = "ali-vilab/text-to-video-ms-1.7b"
    assert absolute_locations(dataclasses.replace(config, model=repo_id)).model == repo_id
    assert tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"  # the default store, in the job's folder
    for uri in ("http://mlflow:5000", f"sqlite:///{tmp_path}/other.db", "databricks"):  # "databricks": not a path
        assert tracking_uri(uri) == uri
    assert tracking_uri("mlruns") == str(tmp_path / "mlruns")  # a file store, a folder like any output


def test_a_submitted_job_refuses_a_relative_output_naming_the_fix(submitted, tmp_path):
    with pytest.raises(SubmittedPathError, match=r"--output out/shards is a relative path: .*temporary copy of "
                                                 r"--working-dir.*absolute path that every node sees"):
        parse(RenderJobConfig, ["--input", "assets", "--output", "out/shards", "--mlflow-uri", "http://h:5000"])
    with pytest.raises(SubmittedPathError, match="--mlflow-uri is not given, and the default store"):
        parse(RenderJobConfig, ["--input", "assets", "--output", str(tmp_path / "shards")])
    with pytest.raises(SubmittedPathError, match="--mlflow-uri sqlite:///mlflow.db is relative"):
        parse(RenderJobConfig, ["--input", "assets", "--output", str(tmp_path), "--mlflow-uri", "sqlite:///mlflow.db"])
    with pytest.raises(SubmittedPathError, match="--mlflow-artifacts mlruns is a relative path"):
        parse(RenderJobConfig, ["--input", "assets", "--output", str(tmp_path), "--mlflow-uri", "http://h:5000",
                                "--mlflow-artifacts", "mlruns"])
    # What works: absolute paths, URIs, an absolute SQLite store, inputs inside the uploaded copy.
    config = parse(RenderJobConfig, ["--input", "assets", "--output", str(tmp_path / "shards"),
                                     "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert config.output == str(tmp_path / "shards")
    parse(RenderJobConfig, ["--input", "assets", "--output", "s3://bucket/shards", "--mlflow-uri", "http://h:5000"])
    # A store MLflow names without a scheme is not a relative path ("databricks": its default profile).
    parse(RenderJobConfig, ["--input", "assets", "--output", "s3://bucket/shards", "--mlflow-uri", "databricks"])


def test_a_submitted_job_names_a_relative_input_missing_from_its_working_dir(submitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the job's working directory, without out/ (a checkout after make run has one)
    with pytest.raises(SubmittedPathError, match=r"--data out/shards is a relative path that is not in the job's "
                                                 r"working directory.*git-ignored"):
        parse(TrainConfig, ["--model", "models:/g/latest", "--data", "out/shards", "--output", str(tmp_path),
                            "--name", "x", "--mlflow-uri", "http://h:5000"])


def test_the_default_store_may_come_from_the_jobs_environment(submitted, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    check_location(None, "--mlflow-uri", "tracking")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(SubmittedPathError, match="is relative"):
        check_location(None, "--mlflow-uri", "tracking")


def test_a_jobs_workers_get_its_cluster_address_and_log_settings(submitted, monkeypatch):
    from pipeline.cluster import worker_environment

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert worker_environment()["RAY_ADDRESS"] == "10.0.0.1:6379" and worker_environment()["TQDM_DISABLE"] == "1"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # a dashboard address is not the cluster's
    assert "RAY_ADDRESS" not in worker_environment()
    # A variable the submitted job's own runtime env sets is its own (Ray refuses a conflicting merge).
    monkeypatch.setenv(JOB_CONFIG_VARIABLE, json.dumps({"runtime_env": {"env_vars": {"TQDM_DISABLE": "0"}}}))
    assert "TQDM_DISABLE" not in worker_environment()


def test_ray_job_stop_ends_a_job_through_its_cleanup(tmp_path):
    """`ray job stop` sends SIGTERM: the job's finally blocks run (its MLflow run ends KILLED)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import os, signal, time\n"
            "from pipeline.cluster import stop_cleanly_on_sigterm\n"
            "stop_cleanly_on_sigterm()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "except KeyboardInterrupt:\n"
            "    print('cleaned up')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "cleaned up", done.stderr


@pytest.mark.ray
def test_a_local_jobs_workers_find_their_own_cluster_beside_another(ray_local, tmp_path):
    """A job that starts its own local cluster while another runs on the machine (here the suite's):
    inside its workers, Ray's "auto" lookups (Ray Train's placement-group cleaner polls the state API
    so) find the job's cluster, not "multiple active Ray instances" and a traceback in its log."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import os, ray\n"
            "from ray._private.services import canonicalize_bootstrap_address\n"
            "from pipeline.cluster import connect\n"
            "connect(num_cpus=1, include_dashboard=False)\n"
            "@ray.remote\n"
            "def lookup():\n"
            "    return canonicalize_bootstrap_address('auto')  # what the state API resolves\n"
            "assert ray.get(lookup.remote()) == ray.get_runtime_context().gcs_address\n"
            "print('own cluster')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "own cluster", done.stderr[-3000:]
    assert "Traceback" not in done.stderr
