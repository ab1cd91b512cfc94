"""A multi-node Ray cluster on one machine: a head and a second raylet, each advertising the custom
resources "render" and "trainer" that stand in for the node types of cluster.yaml. The render job
and a 2-worker fine-tune must place work on both nodes, with shards and checkpoints on a shared path."""

from __future__ import annotations

import os
import shutil

import mlflow
import pytest

from models.toy.tiny import make_tiny
from pipeline.data import shards
from pipeline.train.finetune import run_finetune
from pipeline.render_stage import RenderJobConfig, run_render_job
from pipeline.train.config import FINAL_MODEL, TrainConfig
from render.settings import RenderSettings


def test_render_and_finetune_use_both_nodes(two_node_cluster, tmp_path, sample_assets, monkeypatch):
    import ray.data

    # Ray Data hands batches to the first render actor that is ready; at this size (8 renders of about
    # a second) the first can finish them all before the other node's actor has started when the
    # machine is busy (seen in CI under two test processes). Waiting for the pool's actors, Ray Data's
    # own setting, keeps what this test proves: one actor per node, and both get work.
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 300)
    shared = tmp_path / "shared"  # one path every node sees, as object storage would be on a cluster
    assets = tmp_path / "assets"
    assets.mkdir()
    for index in range(4):
        for name in ("teapot.stl", "BoxTextured.glb"):
            shutil.copy(sample_assets / name, assets / f"{index}-{name}")
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run_render_job(RenderJobConfig(
        input=str(assets), output=str(shared / "shards"), settings=RenderSettings(resolution=32, samples=2),
        resources_per_task={"render": 1}, objects_per_file=2, mlflow_uri=mlflow_uri))
    assert summary.rendered == 8 and summary.failed == 0
    # One render worker per node (each advertises render=1), and both rendered objects.
    assert set(summary.nodes) == two_node_cluster and sum(summary.nodes.values()) == 8
    rows = shards.read_rows(str(shared / "shards"), columns=["uid", "status", "render_node"])
    assert {row["render_node"] for row in rows} == two_node_cluster

    config = TrainConfig(data=str(shared / "shards"), model=make_tiny("t2v", str(tmp_path / "tiny-t2v")),
                         output=str(shared / "runs"), name="two-nodes", steps=2, num_workers=2, cpus_per_worker=0.5,
                         resources_per_worker={"trainer": 1}, global_batch=2, precision="no", checkpoint_every=1,
                         resolution=32, mlflow_uri=mlflow_uri, max_failures=0)
    result = run_finetune(config)
    assert result.checkpoint and result.checkpoint.startswith(str(shared / "runs"))
    assert os.path.isdir(os.path.join(str(shared / "runs"), "two-nodes", FINAL_MODEL))
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["videomv-finetune"], output_format="list")[0]
    worker_nodes = run.data.tags["worker_nodes"].split(",")
    assert len(worker_nodes) == 2 and set(worker_nodes) == two_node_cluster
    render_run = mlflow.search_runs(experiment_names=["videomv-render"], output_format="list")[0]
    assert render_run.data.metrics["render_nodes"] == 2


def test_custom_resource_flags():
    from pipeline.resources import parse_resources

    assert parse_resources(["render=1", "big_disk=0.5"]) == {"render": 1.0, "big_disk": 0.5}
    assert parse_resources(None) == {}
    for bad, message in (("render", "NAME=AMOUNT"), ("render=-1", "non-negative"), ("=2", "NAME=AMOUNT"),
                         ("render=lots", "NAME=AMOUNT"), ("GPU=1", "has its own flag")):
        with pytest.raises(ValueError, match=message):
            parse_resources([bad])
