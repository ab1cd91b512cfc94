"""The whole pipeline on one machine, on the embedded default (the bundled sample assets).

render -> tiny text-to-multi-view model -> fine-tune it (Ray Train, 2 workers) -> train the tiny
reconstructor on its predictions -> start the Serve endpoint -> send a prompt -> write the 24
views (grid PNG, orbit GIF) and the Gaussians (PLY). Every stage logs into one MLflow experiment.

Tiny random models trained for a few dozen steps give noise-like views: this run
shows the machinery end to end; real quality needs the published weights and real data (README).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from PIL import Image

import camera
from models.ply import load_ply
from models.sampler import DEFAULTS

from models.multiview_model import model_resolution, resolve_model_dir
from pipeline.cli import option
from pipeline.client import generate, write_result
from pipeline.finetune import run_finetune
from pipeline.render_stage import RenderJobConfig, run_render_job
from pipeline.result_scores import score_generation
from pipeline.sources import load_captions
from pipeline.train_common import TrainConfig
from pipeline.tracking import mlflow_run
from pipeline.train_data import CAPTION_SUFFIX
from pipeline.train_recon import ReconConfig, run_train_recon
from render.settings import RenderSettings

logger = logging.getLogger(__name__)
TINY_RECON_SIZE = 32  # the tiny reconstructor's input and render size


REPO_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


@dataclass
class LocalRunConfig:
    """Everything ``jobs/run_all.py`` exposes as flags (``pipeline.cli``)."""

    assets: str = option(REPO_ASSETS, "folder, manifest or objaverse: spec of the assets to render")
    captions: str | None = option(os.path.join(REPO_ASSETS, "captions.csv"),
                                  "CSV 'file name or uid,caption' of the assets (the prompts G learns)")
    out: str = option("out", "output folder")
    prompt: str = option("a yellow rubber duck, 3d asset", "prompt of the generated result")
    model: str | None = option(None, "diffusers directory to fine-tune (default: a tiny random model)")
    finetune_steps: int = option(30, "fine-tuning steps")
    recon_steps: int = option(30, "reconstructor training steps")
    sampling_steps: int = option(25, "DDIM steps of the generated result")
    render_resolution: int = option(64, "render size in pixels")
    render_samples: int = option(8, "Cycles samples per pixel")
    workers: int = option(2, "Ray Train workers")
    experiment: str = option("videomv-local", "MLflow experiment of every stage")
    seed: int = option(0, "seed of every stage")


def _stage(number: int, text: str) -> float:
    logger.info("=== stage %d/6: %s", number, text)
    return time.perf_counter()


def _done(start: float, text: str) -> None:
    logger.info("=== done in %.0f s: %s", time.perf_counter() - start, text)


def result_record(config: LocalRunConfig, resolution: int) -> dict[str, Any]:
    """What was generated, and at which cameras: the fields of result.json (scores added later)."""
    defaults = DEFAULTS["t2v"]
    return {"prompt": config.prompt, "seed": config.seed, "steps": config.sampling_steps,
            "elevation": defaults["elevation"], "azimuths": camera.orbit_azimuths().tolist(),
            "distance": defaults["distance"], "fov": camera.DEFAULT_FOV_DEG, "resolution": resolution,
            "background": list(defaults["background"]), "score_resolution": config.render_resolution,
            "scored_against": prompted_asset(config)}


def prompted_asset(config: LocalRunConfig) -> str | None:
    """The bundled asset whose caption the prompt is (``assets/captions.csv``), if any."""
    if not config.captions or not os.path.isdir(config.assets):
        return None
    wanted = config.prompt.removesuffix(CAPTION_SUFFIX).strip().lower()
    names = [name for name, caption in load_captions(config.captions).items() if caption.strip().lower() == wanted]
    return next((name for name in names if os.path.isfile(os.path.join(config.assets, name))), None)


def score_result(config: LocalRunConfig, result_dir: str, record: dict[str, Any]) -> dict[str, float]:
    """Scores of the generated views and Gaussians against the prompted object (``pipeline.result_scores``);
    empty, with a warning, when the prompt is no bundled object's caption."""
    target = record["scored_against"]
    if target is None:
        logger.warning("the prompt %r is no caption in %s: the result is not scored", config.prompt, config.captions)
        return {}
    views = torch.stack([torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
                         for path in sorted(glob.glob(os.path.join(result_dir, "views", "view_*.png")))])
    ply = os.path.join(result_dir, "gaussians.ply")
    assets = {name: os.path.join(config.assets, name) for name in load_captions(config.captions)
              if os.path.isfile(os.path.join(config.assets, name))}
    return score_generation(views.permute(0, 3, 1, 2), assets, target, record["elevation"],
                            np.asarray(record["azimuths"]), record["distance"], record["fov"],
                            config.render_resolution, record["background"][0],
                            gaussians=load_ply(ply) if os.path.isfile(ply) else None, samples=config.render_samples)


def run_ids(mlflow: Any, experiment: str) -> dict[str, str]:
    """Run name -> id of the newest run of each stage in ``experiment``."""
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time ASC"], output_format="list")
    return {run.info.run_name: run.info.run_id for run in runs}


def run_local(config: LocalRunConfig) -> dict[str, Any]:
    """Run every stage; returns the paths it wrote."""
    from models.tiny import make_tiny

    out = os.path.abspath(config.out)
    os.makedirs(out, exist_ok=True)
    mlflow_uri = f"sqlite:///{os.path.join(out, 'mlflow.db')}"
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    began = time.perf_counter()

    start = _stage(1, f"render {config.assets} into 24-view orbit shards (Blender Cycles, CPU)")
    shards = os.path.join(out, "shards")
    summary = run_render_job(RenderJobConfig(
        input=config.assets, output=shards, captions=config.captions, mlflow_uri=mlflow_uri,
        experiment=config.experiment, run_name="render",
        settings=RenderSettings(resolution=config.render_resolution, samples=config.render_samples, seed=config.seed)))
    _done(start, f"{summary.rendered} rendered, {summary.skipped} already there, {summary.failed} failed")

    start = _stage(2, "the text-to-multi-view model to start from")
    model = config.model or os.path.join(out, "models", "tiny-t2v")
    if config.model is None and not os.path.isdir(model):
        make_tiny("t2v", model, seed=config.seed)
        logger.info("built a tiny random ModelScope-T2V-layout model at %s", model)
    _done(start, model)

    resolution = model_resolution(resolve_model_dir(model))
    runs = os.path.join(out, "runs")
    base = TrainConfig(data=shards, model=model, output=runs, name="finetune", steps=config.finetune_steps,
                       num_workers=config.workers, cpus_per_worker=0.5, micro_batch=1, global_batch=config.workers,
                       lr=1e-4, precision="no", checkpoint_every=10, log_every=5, resolution=resolution,
                       mlflow_uri=mlflow_uri, experiment=config.experiment, seed=config.seed, max_failures=1,
                       sample_every=config.finetune_steps, sample_steps=10)
    start = _stage(3, f"fine-tune it on the shards: Ray Train, {config.workers} workers, {config.finetune_steps} steps")
    finetuned = run_finetune(base)
    _done(start, f"loss {finetuned.final_metrics.get('loss', float('nan')):.4f}, model at {finetuned.final_model}")

    start = _stage(4, f"train the reconstructor on its one-step predictions ({config.recon_steps} steps)")
    recon = run_train_recon(
        dataclasses.replace(base, name="reconstructor", model=finetuned.final_model, steps=config.recon_steps,
                            lr=2e-3, sample_every=0),
        ReconConfig(lgm_preset="tiny", lgm_size=TINY_RECON_SIZE, supervised_views=4))
    _done(start, f"loss {recon.final_metrics.get('loss', float('nan')):.4f}, model at {recon.final_model}")

    start = _stage(5, "start the Serve endpoint")
    from ray import serve

    from pipeline.serving import build_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(finetuned.final_model, lgm=recon.final_model, num_gpus=0), name="videomv", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    _done(start, f"listening on {url}")

    start = _stage(6, f"generate: {config.prompt!r} (3D-aware sampling, {config.sampling_steps} steps)")
    body = generate(url, {"prompt": config.prompt, "seed": config.seed, "steps": config.sampling_steps,
                          "outputs": ["views", "grid", "gif", "ply"]})
    result_dir = os.path.join(out, "result")
    written = write_result(body, result_dir)
    serve.shutdown()
    record = result_record(config, model_resolution(finetuned.final_model))
    record["scores"] = score_result(config, result_dir, record)
    with mlflow_run(config.experiment, "generate", mlflow_uri,
                    {"prompt": config.prompt, "steps": config.sampling_steps, "seed": config.seed}) as mlflow:
        mlflow.log_metrics({"seconds": body["seconds"], "reconstructions": body["reconstructions"],
                            **{f"score/{name}": value for name, value in record["scores"].items()}})
        record["mlflow_run_ids"] = run_ids(mlflow, config.experiment)
        with open(os.path.join(result_dir, "result.json"), "w") as handle:
            json.dump(record, handle, indent=2)
        mlflow.log_artifacts(result_dir, artifact_path="result")
    written.append(os.path.join(result_dir, "result.json"))
    _done(start, f"{len(body['views'])} views, {body['reconstructions']} reconstructions, files in {result_dir}")
    if record["scores"]:
        logger.info("scores against %s rendered at the generated cameras (%d px): %s", record["scored_against"],
                    record["score_resolution"],
                    ", ".join(f"{name} {value:.3f}" for name, value in record["scores"].items()))
    logger.info("all stages in %.1f min; MLflow: mlflow ui --backend-store-uri %s (experiment %s)",
                (time.perf_counter() - began) / 60, mlflow_uri, config.experiment)
    return {"shards": shards, "model": finetuned.final_model, "reconstructor": recon.final_model,
            "result": result_dir, "files": written, "mlflow": mlflow_uri}
