"""Model locations: fsspec URIs (memory:// here, s3:// in production) and MLflow model URIs, fetched
once into the cache, through the same loaders the jobs and the Serve app use."""

from __future__ import annotations

import os

import fsspec
import pytest
import torch
from safetensors.torch import save_file

from models import VideoMVPipeline
from models.reconstructor.model import LGM
from models.locations import ModelLocationError, fetch
from models.pipeline_videomv.loading import ModelDirectoryError
from models.toy.tiny import make_tiny
from pipeline.train.config import FINAL_MODEL, TrainConfig
from pipeline.train.worker import publish_final


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("VIDEOMV_CACHE", str(tmp_path / "cache"))
    return str(tmp_path / "cache")


@pytest.fixture(scope="module")
def tiny_t2v(tmp_path_factory) -> str:
    return make_tiny("t2v", str(tmp_path_factory.mktemp("locations") / "t2v"))


def upload(local: str, uri: str) -> None:
    filesystem, path = fsspec.core.url_to_fs(uri)
    filesystem.put(local.rstrip("/") + "/", path, recursive=True)


def test_memory_uri_round_trip_is_fetched_once(tiny_t2v, cache, tmp_path):
    VideoMVPipeline.from_pretrained(tiny_t2v).save_pretrained(str(tmp_path / "saved"))
    upload(str(tmp_path / "saved"), "memory://bucket/runs/g/final_model")
    pipe = VideoMVPipeline.from_pretrained("memory://bucket/runs/g/final_model")
    assert pipe.variant == "t2v"
    local = fetch("memory://bucket/runs/g/final_model")
    assert local.startswith(cache) and os.path.isfile(os.path.join(local, "model_index.json"))
    fsspec.filesystem("memory").rm("/bucket/runs/g", recursive=True)
    assert fetch("memory://bucket/runs/g/final_model") == local  # from the cache, not fetched again
    assert VideoMVPipeline.from_pretrained("memory://bucket/runs/g/final_model").variant == "t2v"


def test_a_single_file_uri_and_missing_locations(cache, tmp_path):
    torch.manual_seed(0)
    lgm = LGM("tiny")
    save_file(lgm.state_dict(), str(tmp_path / "model_fp16_fixrot.safetensors"))
    with fsspec.open("memory://weights/model_fp16_fixrot.safetensors", "wb") as handle:
        handle.write((tmp_path / "model_fp16_fixrot.safetensors").read_bytes())
    loaded = LGM.load("memory://weights/model_fp16_fixrot.safetensors", "tiny")
    for name, tensor in lgm.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    with pytest.raises(ModelLocationError, match="memory://nowhere/model does not exist"):
        fetch("memory://nowhere/model")
    with pytest.raises(ModelDirectoryError, match="is a file, not a diffusers model directory"):
        VideoMVPipeline.from_pretrained("memory://weights/model_fp16_fixrot.safetensors")
    assert not [name for name in os.listdir(os.path.join(cache, "models")) if name.startswith(".fetch-")]


@pytest.mark.parametrize("key", ["a/../../../../outside.txt", "/outside.txt", "a/../../outside.txt"])
def test_a_remote_model_folder_cannot_write_outside_the_cache(cache, tmp_path, monkeypatch, key):
    """Issue 40 F1: object keys are data. ``..`` and a leading ``/`` (a ``//`` in the key) are legal
    in S3; joined onto the cache folder unchecked one landed at an absolute path. Now the fetch
    fails naming the key, and nothing is written outside the cache (or left staged inside it)."""
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    filesystem = fsspec.filesystem("memory")
    filesystem.pipe(f"/hostile-{len(key)}/config.json", b"{}")
    filesystem.pipe(f"/hostile-{len(key)}/{key}", b"written by whoever can write to the bucket")
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(ModelLocationError, match=r"object key: '.*outside\.txt' (is absolute|resolves outside)"):
        fetch(f"memory://hostile-{len(key)}")
    written = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in written if p.name == "outside.txt"], written
    assert not [name for name in os.listdir(os.path.join(cache, "models")) if name.startswith(".fetch-")]


def test_mlflow_registry_and_run_uris(tiny_t2v, cache, tmp_path):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("locations")
    model = VideoMVPipeline.from_pretrained(tiny_t2v)
    config = TrainConfig(model="m", data="d", output=str(tmp_path / "out"), name="g", register_as="videomv-tiny")
    with mlflow.start_run() as run:
        target = publish_final(model.save_pretrained, config, mlflow)
        registered = mlflow.get_run(run.info.run_id).data.tags["registered_model"]
    assert os.path.isfile(os.path.join(target, "model_index.json"))
    assert registered == "models:/videomv-tiny/1"
    for uri in ("models:/videomv-tiny/latest", "models:/videomv-tiny/1", f"runs:/{run.info.run_id}/{FINAL_MODEL}"):
        pipe = VideoMVPipeline.from_pretrained(uri, tracking_uri=store)
        assert pipe.variant == "t2v", uri
    with pytest.raises(ModelLocationError, match="no versions of 'not-registered'"):
        fetch("models:/not-registered/latest", tracking_uri=store)
    with pytest.raises(ModelLocationError, match="cannot be read from the MLflow tracking store"):
        fetch("models:/videomv-tiny/7", tracking_uri=store)


def test_a_registered_model_is_read_from_the_store_given_in_a_fresh_process(tiny_t2v, tmp_path):
    """The next job of a chain (train_recon, evaluate, the Serve app) gets ``models:/NAME/latest``
    and ``--mlflow-uri`` only; MLflow resolves models:/ against its process-wide registry URI, which
    a fresh process has at the default ./mlflow.db of its current folder."""
    import subprocess
    import sys

    import mlflow

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("chain", artifact_location=f"file://{tmp_path / 'store'}/a"))
    client.log_artifacts(run.info.run_id, tiny_t2v, FINAL_MODEL)
    client.create_registered_model("chained")
    client.create_model_version("chained", f"file://{tmp_path / 'store'}/a/{run.info.run_id}/artifacts/{FINAL_MODEL}",
                                run_id=run.info.run_id)
    job_dir = tmp_path / "next-job"
    job_dir.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update(PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       VIDEOMV_CACHE=str(tmp_path / "cache"))
    code = ("from models import VideoMVPipeline; "
            f"print(VideoMVPipeline.from_pretrained('models:/chained/latest', tracking_uri={store!r}).variant)")
    done = subprocess.run([sys.executable, "-c", code], cwd=job_dir, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "t2v"
    assert os.listdir(job_dir) == [], "no ./mlflow.db made in the job's folder"


def test_training_runs_record_their_input_shards(tmp_path):
    import mlflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.tracking import log_shards_input

    data = tmp_path / "shards"
    data.mkdir()
    for name in ("shard-00000.parquet", "shard-00001.parquet"):
        pq.write_table(pa.table({"uid": [name]}), data / name)
    (data / ".shard-00002.parquet.tmp").write_bytes(b"partial")  # an unfinished write is not an input
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("inputs")
    with mlflow.start_run() as run:
        log_shards_input(str(data), context="training")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].tags[0].value == "training"
    dataset = inputs[0].dataset
    assert str(data) in dataset.source and dataset.name == "shards"
    assert '"num_rows": 2' in dataset.profile
