"""Both training jobs on a local Ray instance with 2 CPU workers, tiny models and rendered shards."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
import sys

import mlflow
import pytest
import torch

from conftest import REPO_ROOT
from models.reconstructor.model import LGM
from models.reconstructor.options import PRESETS
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.generator.objective import MultiViewBatch, diffusion_loss
from models.prompts import AUTHORS_NEGATIVE_PROMPT
from models.reconstructor.loss import ReconstructionLoss
from models.reconstructor.training import reconstruction_step
from models.toy.tiny import make_tiny
from pipeline.data import shards
from pipeline.train.finetune import run_finetune
from pipeline.data.rows import row_to_tensors
from pipeline.render_stage import RenderJobConfig, run_render_job
from pipeline.train.config import TRAINING_STATE, TrainConfig
from models.variants import VARIANTS
from pipeline.train.reconstructor import ReconConfig, run_train_recon
from render.settings import RenderSettings

RESOLUTION = 32


@pytest.fixture(scope="module")
def workspace(ray_local, tmp_path_factory, sample_assets):
    root = tmp_path_factory.mktemp("training")
    assets = root / "assets"
    assets.mkdir()
    for name in ("Duck.glb", "monkey.glb", "teapot.stl", "BoxTextured.glb"):
        shutil.copy(sample_assets / name, assets / name)
    summary = run_render_job(RenderJobConfig(input=str(assets), output=str(root / "shards"),
                                             settings=RenderSettings(resolution=RESOLUTION, samples=2),
                                             mlflow_uri=f"sqlite:///{root}/mlflow.db"))
    assert summary.rendered == 4
    return {"root": root, "shards": str(root / "shards"), "model": make_tiny("t2v", str(root / "tiny-t2v")),
            "mlflow": f"sqlite:///{root}/mlflow.db"}


def train_config(workspace, name: str, **overrides) -> TrainConfig:
    values = dict(data=workspace["shards"], model=workspace["model"], output=str(workspace["root"] / "runs"),
                  name=name, steps=3, num_workers=2, cpus_per_worker=0.5, micro_batch=1, global_batch=2,
                  lr=1e-3, precision="no", checkpoint_every=2, log_every=1, resolution=RESOLUTION,
                  mlflow_uri=workspace["mlflow"], max_failures=0)
    values.update(overrides)
    return TrainConfig(**values)


def metric_steps(workspace, experiment: str, run_name: str, metric: str = "loss") -> list[int]:
    mlflow.set_tracking_uri(workspace["mlflow"])
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.ray_run_name = '{run_name}'",
                              output_format="list")
    assert len(runs) == 1, "one MLflow run per training name, reopened on resume"
    history = mlflow.tracking.MlflowClient().get_metric_history(runs[0].info.run_id, metric)
    return sorted(m.step for m in history)


def adam_steps(checkpoint_dir: str) -> int:
    state = torch.load(os.path.join(checkpoint_dir, TRAINING_STATE), weights_only=True)
    return int(next(iter(state["optimizer"]["state"].values()))["step"])


def image_parquet(path, count: int, row_group_size: int | None = None) -> str:
    """A Parquet of ``count`` PNG images with captions (``--image-data``)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rows = {"image": [], "caption": []}
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(index).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
        rows["image"].append(buffer.getvalue())
        rows["caption"].append(f"picture {index}")
    pq.write_table(pa.table(rows), path, row_group_size=row_group_size)
    return str(path)


def fixed_loss(model: VideoMVPipeline, workspace) -> float:
    """The diffusion loss on the rendered objects with fixed noise and timesteps."""
    rows = shards.read_rows(workspace["shards"])
    losses = []
    for index, row in enumerate(rows):
        data = row_to_tensors(row, VARIANTS["t2v"].background)
        views = torch.nn.functional.interpolate(data["views"], size=(RESOLUTION, RESOLUTION)) * 2 - 1
        batch = MultiViewBatch(views=views[None], cameras=data["c2w"][None], prompts=["3d asset"])
        with torch.no_grad():
            for seed in range(4):
                losses.append(diffusion_loss(model, batch, torch.Generator().manual_seed(100 * index + seed),
                                             condition_dropout=0.0).item())
    return sum(losses) / len(losses)


def test_finetune_trains_checkpoints_resumes_and_logs(workspace, caplog):
    first = run_finetune(train_config(workspace, "ft", steps=3, register_as="ft-model"))
    run_dir = workspace["root"] / "runs" / "ft"
    checkpoints = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))
    assert len(checkpoints) == 2  # steps 2 and 3
    assert adam_steps(first.checkpoint) == 3
    # Checkpoints and the final model load through the model's own code.
    base = VideoMVPipeline.from_pretrained(workspace["model"])
    resumed_model = VideoMVPipeline.from_pretrained(workspace["model"])
    resumed_model.load_trainable(first.checkpoint)
    final = VideoMVPipeline.from_pretrained(first.final_model)
    for name, tensor in final.denoiser.state_dict().items():
        assert torch.equal(tensor, resumed_model.denoiser.state_dict()[name]), name
    assert metric_steps(workspace, "videomv-finetune", "ft") == [1, 2, 3]

    # Re-submitting with the same name continues at step 4 with the optimizer state of step 3.
    second = run_finetune(train_config(workspace, "ft", steps=6, register_as="ft-model"))
    assert second.final_metrics["step"] == 6
    assert adam_steps(second.checkpoint) == 6, "optimizer state restored, not restarted"
    assert metric_steps(workspace, "videomv-finetune", "ft") == [1, 2, 3, 4, 5, 6]
    mlflow.set_tracking_uri(workspace["mlflow"])
    client = mlflow.tracking.MlflowClient()
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'ft-model'")) == [1, 2]
    # The same job submitted once more, unchanged: no workers started, nothing trained, nothing new
    # registered; its result is the finished run's.
    with caplog.at_level("INFO", logger="pipeline.train.driver"):
        third = run_finetune(train_config(workspace, "ft", steps=6, register_as="ft-model"))
    assert "ft: the final model of step 6 is already published" in caplog.text
    assert "registered as models:/ft-model/2" in caplog.text
    assert (third.checkpoint, third.final_metrics) == (second.checkpoint, second.final_metrics)
    assert len(client.search_model_versions("name = 'ft-model'")) == 2
    assert metric_steps(workspace, "videomv-finetune", "ft") == [1, 2, 3, 4, 5, 6]
    run = mlflow.search_runs(experiment_names=["videomv-finetune"], output_format="list")[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["num_workers"] == "2"
    for metric in ("loss", "lr", "samples_per_second", "step_time", "memory_gb"):
        assert metric in run.data.metrics
    artifacts = [a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "final_model")]
    assert "final_model/camera_embedding" in artifacts and "final_model/unet" in artifacts
    # The model records the cameras it was trained on (elevation, distance, fov ranges of the shards).
    rows = shards.read_rows(workspace["shards"])
    elevations = [row["elevation"] for row in rows]
    assert final.camera_embedding.config["prompt_suffix"] == ", 3d asset"  # applied at inference too
    # The text model's recipe: dropout 0.1 to the authors' negative prompt, which the model records so
    # that guidance guides against it; no offset noise, no EMA.
    assert final.camera_embedding.config["negative_prompt"] == AUTHORS_NEGATIVE_PROMPT
    assert (run.data.params["condition_dropout"], run.data.params["offset_noise"], run.data.params["ema_decay"]) == (
        "0.1", "0.0", "0.0")
    assert not os.path.exists(os.path.join(first.final_model, "ema"))
    assert final.camera_embedding.config["training_cameras"] == {
        "elevation": [round(min(elevations), 4), round(max(elevations), 4)], "distance": [2.0, 2.0],
        "fov": [39.6, 39.6]}

    # The fine-tuned model fits the training objects better than the base model.
    trained = VideoMVPipeline.from_pretrained(second.final_model)
    assert fixed_loss(trained, workspace) < fixed_loss(base, workspace)


@pytest.mark.timeout(600)  # before the fix this deadlocked around the first read's end
def test_finetune_mixing_images_on_two_workers_crosses_reads_with_a_sharded_optimizer_and_resumes(workspace):
    """--image-data on 2 workers, one pass per read (--data-passes 1: the most read boundaries): 4
    orbits and 2 images give each rank 2 orbit batches and 1 image batch per read; 6 steps with the
    image draws of seed 0 take 3 image reads (two boundaries crossed) and 3 orbit batches (one).
    CPUs are left to the default, which must leave Ray Data its
    share (2 workers x 0.25 + 2 datasets x 0.75 on 2 cores). The optimizer is zero1: each rank
    checkpoints its shard, and the resumed run loads them. An EMA (decay 0.5) is kept too, sharded
    the same way, and saved beside the final weights."""
    import random

    draws = random.Random(0).random
    chosen = [draws() < 0.5 for _ in range(6)]
    assert sum(chosen) >= 3, "the test needs at least two image read boundaries"
    images = image_parquet(workspace["root"] / "images.parquet", 2)
    config = train_config(workspace, "ft-images", steps=6, checkpoint_every=3, image_data=images, image_ratio=0.5,
                          cpus_per_worker=None, optimizer="zero1", ema_decay=0.5, data_passes=1)
    first = run_finetune(config)
    assert first.final_metrics["step"] == 6
    shards = sorted(name for name in os.listdir(first.checkpoint) if name.startswith("optimizer_shard_"))
    assert shards == ["optimizer_shard_0.pt", "optimizer_shard_1.pt"]
    state = torch.load(os.path.join(first.checkpoint, TRAINING_STATE), weights_only=True)
    assert state["optimizer_shards"] == 2 and "optimizer" not in state
    assert state["ema_shards"] == 2
    ema_shards = [torch.load(os.path.join(first.checkpoint, f"ema_shard_{rank}.pt"), weights_only=True)["shadow"]
                  for rank in (0, 1)]
    trained = VideoMVPipeline.from_pretrained(first.final_model)
    names = [name for name, parameter in trained.denoiser.named_parameters()]
    assert sorted([*ema_shards[0], *ema_shards[1]]) == sorted(names), "every weight averaged by one rank"
    steps_in_shards = [int(next(iter(torch.load(os.path.join(first.checkpoint, name), weights_only=True)
                                    ["state"].values()))["step"]) for name in shards]
    assert steps_in_shards == [6, 6]

    second = run_finetune(dataclasses.replace(config, steps=7))
    assert second.final_metrics["step"] == 7
    steps_in_shards = [int(next(iter(torch.load(os.path.join(second.checkpoint, name), weights_only=True)
                                    ["state"].values()))["step"]) for name in shards]
    assert steps_in_shards == [7, 7], "each rank resumed its own optimizer shard"
    # The final model carries the average of the resumed shards beside the last weights.
    last = dict(VideoMVPipeline.from_pretrained(second.final_model).denoiser.named_parameters())
    averaged = dict(VideoMVPipeline.from_pretrained(second.final_model, use_ema=True).denoiser.named_parameters())
    start = dict(VideoMVPipeline.from_pretrained(workspace["model"]).denoiser.named_parameters())
    moved = [name for name in last if not torch.equal(last[name], start[name])]
    assert moved and all(not torch.equal(averaged[name], last[name]) for name in moved)
    name = moved[0]  # 0.5-decay average after 7 steps: part way from the start to the last weights
    assert (averaged[name] - last[name]).norm() < (start[name] - last[name]).norm()
    with pytest.raises(FileNotFoundError, match="fine-tuned without an EMA"):
        VideoMVPipeline.from_pretrained(workspace["model"], use_ema=True)


def test_a_job_whose_workers_take_every_cpu_fails_at_once_saying_what_to_change(workspace):
    with pytest.raises(ValueError, match=r"2 workers x 1 CPUs leave 0 of the cluster's 2 CPUs to Ray Data.*"
                                         r"lower --cpus-per-worker"):
        run_finetune(train_config(workspace, "ft-no-room", cpus_per_worker=1.0))


def test_worker_cpus_leave_ray_data_its_share():
    from pipeline.train.driver import worker_cpus

    config = TrainConfig(data="shards", model="model", output="runs", name="cpus", num_workers=2)
    assert worker_cpus(config, {"CPU": 2.0}, 1) == pytest.approx(0.625)  # (2 - 0.75) / 2
    assert worker_cpus(config, {"CPU": 96.0, "GPU": 8.0}, 1) == 1.0
    gpu = dataclasses.replace(config, use_gpu=True, num_workers=8)
    with pytest.raises(ValueError, match="8 GPU workers on a cluster with 0 GPUs"):
        worker_cpus(gpu, {"CPU": 96.0}, 1)
    # An autoscaling cluster may grow: a warning, and the default of 1 CPU per worker.
    assert worker_cpus(dataclasses.replace(gpu, wait_for_nodes=True), {"CPU": 0.0}, 1) == 1.0


def test_a_job_on_a_gpu_cluster_uses_its_gpus_unless_told_not_to_and_says_so(caplog):
    from pipeline.train.driver import use_gpus

    config = TrainConfig(data="shards", model="model", output="runs", name="gpus", num_workers=2)
    with caplog.at_level("INFO", logger="pipeline.train.driver"):
        assert use_gpus(config, 8.0) is True and "training on 2 of them" in caplog.text
        assert use_gpus(config, 0.0) is False
        caplog.clear()
        assert use_gpus(config, 1.0) is False and "fewer than the 2 workers" in caplog.text
        caplog.clear()
        assert use_gpus(dataclasses.replace(config, use_gpu=False), 8.0) is False
        assert "training on CPUs while the cluster has 8 GPUs" in caplog.text
        assert use_gpus(dataclasses.replace(config, use_gpu=True), 0.0) is True  # worker_cpus then says it cannot


def test_image_data_takes_exactly_its_share_of_micro_batches():
    from pipeline.train.finetune import takes_images

    for ratio in (0.1, 0.25, 0.5, 1 / 3):
        drawn = [takes_images(k, ratio) for k in range(60)]
        for end in (10, 30, 60):  # every prefix of the run, not only on average
            assert abs(sum(drawn[:end]) - ratio * end) < 1.0, (ratio, end)
    assert not any(takes_images(k, 0.0) for k in range(100))


def test_a_training_state_that_would_run_code_is_refused(tmp_path):
    from pipeline.train.worker import load_training_state

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / TRAINING_STATE
    torch.save({"step": 1, "payload": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_training_state(str(path))
    torch.save({"step": 3, "optimizer": {"state": {}, "param_groups": []}}, path)
    assert load_training_state(str(path))["step"] == 3


def test_a_final_model_for_remote_storage_is_uploaded_once(tmp_path):
    """Remote output: the model goes there, and MLflow records where it is (tag, registered
    version's source) instead of a second upload to its artifact store."""
    import fsspec

    from pipeline.train.config import FINAL_MODEL
    from pipeline.train.worker import publish_final

    def save(directory: str) -> None:
        with open(os.path.join(directory, "weights.bin"), "wb") as handle:
            handle.write(b"0123")

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("final-once")
    config = TrainConfig(model="m", data="d", output="memory://bucket/train", name="once", register_as="once-model")
    with mlflow.start_run() as run:
        target = publish_final(save, config, mlflow)
    assert target == "memory://bucket/train/once/final_model"
    assert fsspec.filesystem("memory").cat("/bucket/train/once/final_model/weights.bin") == b"0123"
    client = mlflow.tracking.MlflowClient()
    assert client.list_artifacts(run.info.run_id, FINAL_MODEL) == []
    assert client.get_run(run.info.run_id).data.tags["final_model"] == target
    assert client.get_model_version("once-model", "1").source == target


def test_a_run_counts_as_published_only_with_its_steps_registration_and_files(tmp_path):
    """What lets a re-submitted job skip its workers (``already_published``): the run's final model
    of exactly ``--steps``, registered when ``--register-as`` asks, and still on storage."""
    from pipeline.train.config import FINAL_MODEL, FINAL_MODEL_STEP_TAG
    from pipeline.train.driver import already_published

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = TrainConfig(model="m", data="d", output=str(tmp_path / "runs"), name="done", steps=6, mlflow_uri=uri)
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("published")).info.run_id
    assert already_published(config, run_id) is None  # nothing published yet
    client.set_tag(run_id, FINAL_MODEL_STEP_TAG, "3")
    os.makedirs(tmp_path / "runs" / "done" / FINAL_MODEL)
    assert already_published(config, run_id) is None  # published at step 3: --steps 6 trains on
    client.set_tag(run_id, FINAL_MODEL_STEP_TAG, "6")
    assert already_published(dataclasses.replace(config, register_as="done-model"), run_id) is None  # not registered
    assert already_published(config, run_id) is None  # Ray Train's records of the run are missing: train again
    shutil.rmtree(tmp_path / "runs" / "done" / FINAL_MODEL)
    assert already_published(config, run_id) is None  # its files are gone


def test_finetune_from_relative_paths_with_materialized_reordered_data_survives_a_failing_step(workspace,
                                                                                           monkeypatch):
    """The local run's options (data decoded once into the object store, orbits rolled and
    reversed) through a failure: the step-3 fault restarts the workers from the step-2 checkpoint,
    on the same materialized data. Every path is relative, as docs/training.md's local commands give
    them (the workers, which run in their run's folder, read the model and log to the store of the
    job's folder). One fit carries the three claims (a fit costs ~20 s before training)."""
    monkeypatch.chdir(workspace["root"])
    summary = run_finetune(train_config(workspace, "fault", steps=4, fail_at_step=3, max_failures=1,
                                        materialize_data=True, roll_orbits=True, reverse_orbits=True, data="shards",
                                        model="tiny-t2v", output="runs", mlflow_uri="sqlite:///mlflow.db"))
    assert os.path.exists(workspace["root"] / "runs" / "fault" / ".failed_once_at_3")
    assert summary.final_metrics["step"] == 4 and torch.isfinite(torch.tensor(summary.final_metrics["loss"]))
    # Restarted from the step-2 checkpoint: the optimizer took exactly 4 steps in total.
    assert adam_steps(summary.checkpoint) == 4
    assert metric_steps(workspace, "videomv-finetune", "fault")[-1] == 4
    mlflow.set_tracking_uri(workspace["mlflow"])
    run = mlflow.search_runs(experiment_names=["videomv-finetune"], filter_string="tags.ray_run_name = 'fault'",
                             output_format="list")[0]
    assert run.data.params["roll_orbits"] == "True" and run.data.params["reverse_orbits"] == "True"
    assert run.data.params["materialize_data"] == "True"


def test_a_training_job_that_fails_ends_its_mlflow_run_failed(workspace):
    with pytest.raises(Exception, match="fault drill"):
        run_finetune(train_config(workspace, "fails", steps=3, fail_at_step=2, max_failures=0))
    mlflow.set_tracking_uri(workspace["mlflow"])
    (run,) = mlflow.search_runs(experiment_names=["videomv-finetune"], filter_string="tags.ray_run_name = 'fails'",
                                output_format="list")
    assert run.info.status == "FAILED"


def test_train_recon_end_to_end(workspace, monkeypatch):
    initial = workspace["root"] / "lgm-initial"
    torch.manual_seed(0)
    LGM(dataclasses.replace(PRESETS["tiny"], input_size=RESOLUTION, output_size=RESOLUTION)).save_pretrained(str(initial))
    # 16 steps: with G's one-step predictions as inputs and a random target background per step, 4
    # steps were too few to lower the loss reliably (a fresh clone's run measured it higher).
    config = train_config(workspace, "recon", steps=16, experiment="videomv-recon", lr=2e-3, lr_schedule="cosine",
                          checkpoint_every=8, output="runs")
    monkeypatch.chdir(workspace["root"])  # --output and --reconstructor relative (the workers run elsewhere)
    summary = run_train_recon(config, ReconConfig(reconstructor="lgm-initial", lgm_preset="tiny", supervised_views=4))
    assert summary.final_metrics["step"] == 16
    assert summary.final_metrics["lr"] == pytest.approx(0.05 * 2e-3)  # the cosine's end
    assert adam_steps(summary.checkpoint) == 16
    assert metric_steps(workspace, "videomv-recon", "recon") == list(range(1, 17))

    # The objective the job trains on (G's one-step predictions in, the ground truth on a random
    # background out), on the training orbits with fixed draws: lower after training.
    import pyarrow as pa

    from pipeline.data.datasets import DecodeOrbits, to_model_inputs
    from pipeline.train.reconstructor import reconstructor_batch

    generator_model = VideoMVPipeline.from_pretrained(workspace["model"])
    rows = pa.Table.from_pylist(shards.read_rows(workspace["shards"]))
    inputs = to_model_inputs(DecodeOrbits(VARIANTS["t2v"].background_uint8, RESOLUTION)(rows), torch.device("cpu"))
    batches = [reconstructor_batch(generator_model, inputs, torch.Generator().manual_seed(seed), RESOLUTION, 24)
               for seed in range(3)]

    def loss_of(model: LGM) -> float:
        with torch.no_grad():
            return sum(reconstruction_step(model, ReconstructionLoss(None), b.targets, b.alphas, b.cameras,
                                           b.input_views, b.supervised, b.background, input_images=b.inputs
                                           )[0]["loss"].item() for b in batches) / len(batches)

    assert loss_of(LGM.from_pretrained(summary.final_model)) < loss_of(LGM.from_pretrained(str(initial)))


def test_the_reconstructor_is_supervised_on_the_ground_truth_at_every_view_on_a_random_background(workspace):
    """Issue 27, item 1: LGM is given G's one-step predictions, but every supervised view (the 4
    input views included) is compared with the ground truth; and the background of the targets is
    a colour drawn per micro-step (the authors' LGM training), not the variant's grey."""
    import pyarrow as pa

    from models.toy.tiny import build_tiny
    from pipeline.data.datasets import DecodeOrbits, to_model_inputs
    from pipeline.train.reconstructor import reconstructor_batch

    rows = pa.Table.from_pylist(shards.read_rows(workspace["shards"])[:2])
    inputs = to_model_inputs(DecodeOrbits(VARIANTS["t2v"].background_uint8, RESOLUTION)(rows), torch.device("cpu"))
    generator_model = build_tiny("t2v", resolution=RESOLUTION // 2)  # G at 16 px, the truth at 32
    batch = reconstructor_batch(generator_model, inputs, torch.Generator().manual_seed(0), RESOLUTION // 2,
                                supervised_views=24, background="random")
    grey = 128 / 255
    colour = torch.tensor(batch.background).view(1, 1, 3, 1, 1)
    truth = (inputs["views"] / 2 + 0.5 + (colour - grey) * (1 - inputs["alphas"])).clamp(0, 1)
    assert batch.inputs.shape[-1] == RESOLUTION // 2 and batch.targets.shape[-1] == RESOLUTION
    assert max(abs(c - grey) for c in batch.background) > 0.05
    assert torch.allclose(batch.targets, truth, atol=1e-6)
    assert sorted(batch.supervised.tolist()) == list(range(24))  # the 4 input views among them
    lgm = LGM(dataclasses.replace(PRESETS["tiny"], input_size=RESOLUTION, output_size=RESOLUTION))
    terms, rendered, targets = reconstruction_step(
        lgm, ReconstructionLoss(None), batch.targets, batch.alphas, batch.cameras, batch.input_views, batch.supervised,
        batch.background, input_images=batch.inputs)
    assert torch.allclose(targets, truth[:, batch.supervised])
    assert terms["mse_rgb"].item() == pytest.approx(torch.nn.functional.mse_loss(rendered, targets).item())
    # What the trainer did before: the 4 input views supervised against G's predictions instead.
    mixed = truth.clone()
    mixed[:, batch.input_views] = torch.nn.functional.interpolate(
        batch.inputs.flatten(0, 1), size=RESOLUTION, mode="bilinear", antialias=True).unflatten(0, (2, 4))
    with torch.no_grad():
        before, _, _ = reconstruction_step(lgm, ReconstructionLoss(None), mixed, batch.alphas, batch.cameras,
                                           batch.input_views, batch.supervised, batch.background,
                                           input_images=batch.inputs)
    assert abs(before["mse_rgb"].item() - terms["mse_rgb"].item()) > 1e-5

    fixed = reconstructor_batch(generator_model, inputs, torch.Generator().manual_seed(0), RESOLUTION // 2, 4,
                                background="variant")
    assert fixed.background == pytest.approx((grey, grey, grey))
    assert torch.allclose(fixed.targets, inputs["views"] / 2 + 0.5)


def test_training_never_upsamples_the_renders(workspace):
    from pipeline.data.datasets import check_resolution

    assert check_resolution(workspace["shards"], RESOLUTION) == RESOLUTION
    with pytest.raises(ValueError, match=r"--target-resolution 64 is larger than the renders .* \(32 px\)"):
        check_resolution(workspace["shards"], 64, "--target-resolution")
    with pytest.raises(ValueError, match="--resolution 64"):
        run_finetune(train_config(workspace, "too-large", resolution=64))


def test_cosine_learning_rate():
    from pipeline.train.worker import cosine_lr

    assert cosine_lr(1e-3, 1, 100) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 100, 100) == pytest.approx(5e-5)
    assert cosine_lr(1e-3, 50, 99) == pytest.approx(0.525e-3)  # half way
    values = [cosine_lr(1.0, step, 10) for step in range(1, 11)]
    assert values == sorted(values, reverse=True)


def test_the_worker_config_unpickles_without_the_models(tmp_path):
    """Ray Train's controller unpickles the worker config of every fit (it is part of the run's
    context) but runs no training: what it holds must not make it import the models or diffusers
    (that cost each fit about 3 s before it asked for its workers)."""
    from pipeline.train.config import FinetuneSettings, WorkerConfig

    train = TrainConfig(model="m", data="d", output="o", name="n")
    blob = tmp_path / "configs.pkl"
    blob.write_bytes(pickle.dumps([WorkerConfig(train, "t2v", "run", "uri", job=job) for job in (
        FinetuneSettings({"elevation": [0.0, 30.0]}), ReconConfig())]))
    check = (f"import pickle, sys; configs = pickle.loads(open({str(blob)!r}, 'rb').read()); "
             "print(sorted(name for name in sys.modules if name.split('.')[0] in ('diffusers', 'transformers') "
             "or name.startswith(('models.pipeline_videomv', 'models.generator', 'pipeline.train.finetune', "
             "'pipeline.train.reconstructor'))))")
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_decoder_pool_scales_with_the_cpus_the_workers_leave(ray_local):
    from pipeline.train.driver import placed
    from pipeline.data.datasets import default_decoders

    assert default_decoders(2.0, 1.0) == 1  # 2 cores, 2 workers x 0.5: one read task and one decoder
    assert default_decoders(96.0, 64.0) == 63  # a p4d node with 8 workers x 8 CPUs
    assert default_decoders(1.0, 1.0) == 1  # never none
    config = TrainConfig(data="d", model="m", output="o", name="n", num_workers=2)
    resolved = placed(config, num_datasets=1)  # the suite's local Ray instance: 2 CPUs
    assert resolved.cpus_per_worker == pytest.approx(0.625) and resolved.max_decoders == 1
    assert placed(dataclasses.replace(config, max_decoders=6), 1).max_decoders == 6


def test_shuffling_gives_every_read_another_order_and_the_same_orders_for_the_same_seed(ray_local):
    import itertools

    import ray

    from pipeline.train.worker import cycle_batches
    from pipeline.data.datasets import shuffled

    def file_orders(seed: int | None, reads: int = 2) -> list[list[str]]:
        files = shuffled(ray.data.from_items([{"path": f"shard-{i}"} for i in range(8)], override_num_blocks=8), seed)
        return [[row["path"] for row in files.iter_rows()] for _ in range(reads)]

    first, second = file_orders(7)
    assert sorted(first) == sorted(second) == [f"shard-{i}" for i in range(8)]
    assert first != second, "another file order every read"
    assert file_orders(7) == [first, second], "the same orders for the same seed"
    assert file_orders(8)[0] != first
    assert file_orders(None)[0] == [f"shard-{i}" for i in range(8)], "no seed: the shards' order"

    def row_orders(seed: int, buffer: int = 8) -> list[list[int]]:
        rows = ray.data.from_items([{"id": i} for i in range(16)], override_num_blocks=1)
        batches = cycle_batches(rows.iterator(), 1, "rows", shuffle_buffer=buffer, seed=seed)
        ids = [int(batch["id"][0]) for batch in itertools.islice(batches, 32)]
        return [ids[:16], ids[16:]]

    read_one, read_two = row_orders(3)
    assert sorted(read_one) == sorted(read_two) == list(range(16))
    assert read_one != read_two and read_one != list(range(16))
    assert row_orders(3) == [read_one, read_two]
    assert row_orders(3, buffer=0) == [list(range(16))] * 2


def test_a_read_of_small_data_covers_several_passes_in_another_order_every_read(workspace, tmp_path):
    """Small data is read several passes at a time (a read, one Ray Data execution, takes seconds
    to start), no more than the run needs: every orbit (image) comes once per pass and the shuffled
    order changes every read; materialised data is decoded once and read the same way."""
    import pyarrow.parquet as pq

    import threading

    from pipeline.data.datasets import PIECES_PER_READ, Reads, image_dataset, orbit_dataset, plan_reads

    assert plan_reads(1, lambda: 4) == Reads(PIECES_PER_READ, 1), "a pass of 4 rows in 1-row blocks"
    assert plan_reads(2, lambda: 640) == Reads(PIECES_PER_READ // 2, 10)
    assert plan_reads(PIECES_PER_READ, lambda: 1 / 0) == Reads(1), "rows counted only for small data"
    assert plan_reads(4, lambda: 4, passes=3) == Reads(3, 1)
    assert plan_reads(1, lambda: 4, demand=6) == Reads(2, 1), "no pass beyond the run's need is read"
    assert plan_reads(1, lambda: 4, demand=3) == Reads(1)
    assert train_config(workspace, "n", steps=5, global_batch=4).samples() == 20
    with pytest.raises(ValueError, match="passes must be 0"):
        plan_reads(4, lambda: 4, passes=-1)
    with pytest.raises(ValueError, match="^data_passes must be at least 0, got -1$"):
        train_config(workspace, "n", data_passes=-1)

    table = pq.read_table(shards.list_shards(workspace["shards"])[0])
    single = tmp_path / "single"  # one orbit per file, so the order of files shows
    single.mkdir()
    for index in range(table.num_rows):
        pq.write_table(table.slice(index, 1), single / f"shard-{index}.parquet")
    names = [f"orbit {index}" for index in range(table.num_rows)]  # the orbits told apart by caption
    captions = tmp_path / "captions.csv"
    captions.write_text("".join(f"{uid},{name}\n" for uid, name in zip(table.column("uid").to_pylist(), names)))

    def reads(count: int = 2, data: str = str(single), **options) -> list[list[str]]:
        dataset = orbit_dataset(data, "t2v", RESOLUTION, str(captions), **options)
        return [[str(prompt).removesuffix(", 3d asset") for prompt in dataset.to_pandas()["prompt"]]
                for _ in range(count)]

    first, second = reads(shuffle_seed=5, passes=3)
    assert sorted(first) == sorted(second) == sorted(names * 3), "every orbit once per pass"
    assert first != second, "another order every read (the same seed's orders: the test above)"
    # Materialised: the one shard's decoded block, read as often as a 6-sample run needs.
    materialized = reads(1, data=workspace["shards"], materialize=True, shuffle_seed=5, demand=6)[0]
    assert sorted(materialized) == sorted(names * 2)

    # The local run's reading (materialised, unshuffled) split over 2 workers as Ray Train splits it:
    # the workers never draw the same orbit at the same step (a pass in one block would reach each
    # worker whole, the same rows in the same order).
    dataset = orbit_dataset(workspace["shards"], "t2v", RESOLUTION, str(captions), materialize=True, demand=16)
    drawn: dict[int, list[str]] = {}

    def draw(rank: int, split) -> None:
        drawn[rank] = [str(batch["prompt"][0]) for batch in split.iter_batches(batch_size=1, batch_format="numpy")]

    workers = [threading.Thread(target=draw, args=(rank, split))
               for rank, split in enumerate(dataset.streaming_split(2, equal=True))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(drawn[0]) == len(drawn[1]) == 8 and sorted(drawn[0] + drawn[1]) == sorted(
        f"{name}, 3d asset" for name in names * 4)
    assert all(first != second for first, second in zip(drawn[0], drawn[1])), drawn

    images = image_parquet(tmp_path / "images.parquet", 3, row_group_size=1)  # read by row group
    prompts = image_dataset(images, 16, shuffle_seed=1, demand=5).to_pandas()["prompt"].tolist()
    assert sorted(prompts) == sorted([f"picture {index}" for index in range(3)] * 2), "5 samples: 2 passes"
    with pytest.raises(ValueError, match="no image Parquet found"):
        image_dataset(str(tmp_path / "missing.parquet"), 16)


def test_precomputed_latents_give_the_pixel_paths_loss_and_train_g_without_its_encoders(workspace, tmp_path):
    """Issue 27, deliver 2: jobs/encode.py writes latent shards (the VAE posterior, not a sample;
    the caption's text-encoder states; the cameras); the loss from them equals the loss from the
    orbit's pixels at the same seed (fp16 storage aside); finetune --latents trains from them, and
    refuses latents another model's encoders wrote."""
    import pyarrow as pa

    from pipeline.encode_stage import EncodeConfig, run_encode
    from pipeline.data.datasets import DecodeLatents, DecodeOrbits, latent_inputs, to_model_inputs

    latents = str(tmp_path / "latents")
    summary = run_encode(EncodeConfig(data=workspace["shards"], model=workspace["model"], output=latents,
                                      resolution=RESOLUTION, batch_size=2))
    assert summary.orbits == 4 and summary.files >= 1
    rows = shards.read_rows(latents)
    assert {row["schema_version"] for row in rows} == {1} and {row["variant"] for row in rows} == {"t2v"}
    by_uid = {row["uid"]: row for row in rows}
    orbit_rows = shards.read_rows(workspace["shards"])
    model = VideoMVPipeline.from_pretrained(workspace["model"])
    pixels = to_model_inputs(DecodeOrbits(VARIANTS["t2v"].background_uint8, RESOLUTION)(pa.Table.from_pylist(orbit_rows)), "cpu")
    encoded = latent_inputs(DecodeLatents()(pa.Table.from_pylist([by_uid[row["uid"]] for row in orbit_rows])), "cpu")
    assert encoded["posterior"].dtype == torch.float16 and encoded["prompts"] == pixels["prompts"]
    assert torch.equal(encoded["cameras"], pixels["cameras"])
    negative = model.encode_prompts([AUTHORS_NEGATIVE_PROMPT])[0]
    for seed, dropout in ((0, 0.0), (1, 0.0), (2, 0.9)):
        with torch.no_grad():
            from_pixels = diffusion_loss(model, MultiViewBatch(pixels["views"], pixels["cameras"], pixels["prompts"]),
                                         torch.Generator().manual_seed(seed), dropout,
                                         negative_prompt=AUTHORS_NEGATIVE_PROMPT)
            from_latents = diffusion_loss(model, MultiViewBatch(
                None, encoded["cameras"], encoded["prompts"], posterior=encoded["posterior"],
                prompt_states=encoded["prompt_states"], negative_states=negative),
                torch.Generator().manual_seed(seed), dropout)
        assert from_latents.item() == pytest.approx(from_pixels.item(), rel=2e-3), seed

    trained = run_finetune(train_config(workspace, "ft-latents", data=None, latents=latents, steps=2,
                                        checkpoint_every=2))
    assert trained.final_metrics["step"] == 2 and torch.isfinite(torch.tensor(trained.final_metrics["loss"]))
    other = make_tiny("t2v", str(tmp_path / "other-tiny"), seed=1)
    with pytest.raises(ValueError, match="encoded by other encoders"):
        run_finetune(train_config(workspace, "ft-latents-other", data=None, latents=latents, model=other))
    with pytest.raises(ValueError, match="already holds latent shards"):
        run_encode(EncodeConfig(data=workspace["shards"], model=workspace["model"], output=latents,
                                resolution=RESOLUTION))
