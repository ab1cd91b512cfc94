"""The whole pipeline on one machine, on the embedded default (the bundled sample assets).

render -> tiny text-to-multi-view model (``--variant i2v``: image-to-multi-view), its VAE trained
as an autoencoder on the renders -> fine-tune G (Ray Train, 2 workers) -> train the tiny
reconstructor on its one-step predictions -> start the Serve endpoint -> send a prompt (a bundled
object's caption; i2v: a view of that object at an elevation no training orbit has) -> write the 24 views (grid
PNG, orbit GIF), the Gaussians (PLY) and their textured mesh (GLB) -> score them against Blender
renders of the prompted object at the generated cameras, and the mesh against the object's own
mesh. Every stage logs into one MLflow experiment.

At this toy scale G memorises the bundled objects from their captions (docs/results.md): the run
proves the recipe and the machinery, not generalisation, which needs the published weights, real
data and a GPU (README).
"""

from __future__ import annotations

import base64
import dataclasses
import glob
import json
import logging
import os
import socket
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

import camera
from models.gaussians.ply import load_ply
from models.variants import VARIANTS

from models.pipeline_videomv.loading import detect_variant, model_resolution, resolve_model_dir
from pipeline.cluster import connect
from pipeline.local_run_config import LocalRunConfig
from pipeline.serve.client import generate, write_result
from pipeline.train.finetune import run_finetune
from pipeline.render_stage import RenderJobConfig, run_render_job
from pipeline.evaluation.result_scores import score_generation, score_mesh
from pipeline.data.sources import captioned_assets, load_captions
from pipeline.train.config import TrainConfig
from pipeline.evaluation.reconstruction_schedule import measure_schedule
from pipeline.tracking import mlflow_run
from models.prompts import CAPTION_SUFFIX
from pipeline.train.reconstructor import ReconConfig, run_train_recon
from render.settings import RenderSettings

logger = logging.getLogger(__name__)
TINY_RECON_SIZE = 32  # the tiny reconstructor's input and render size
AUTOENCODER_REPORT = "autoencoder.json"  # in the tiny model's directory: its VAE's training figures


def _stage(number: int, text: str) -> float:
    logger.info("=== stage %d/6: %s", number, text)
    return time.perf_counter()


def _done(start: float, text: str) -> None:
    logger.info("=== done in %.0f s: %s", time.perf_counter() - start, text)


def result_record(config: LocalRunConfig, resolution: int) -> dict[str, Any]:
    """What was generated, and at which cameras: the fields of result.json (scores added later)."""
    return {"variant": config.variant, "prompt": config.prompt, "seed": config.seed, "steps": config.num_inference_steps,
            "guidance_scale": guidance_scale(config),
            "elevation": config.elevation, "azimuths": camera.orbit_azimuths().tolist(),
            "distance": camera.DEFAULT_DISTANCE, "fov": camera.DEFAULT_FOV_DEG, "resolution": resolution,
            "background": list(VARIANTS[config.variant].background), "score_resolution": config.render_resolution,
            "scored_against": prompted_asset(config)}


def guidance_scale(config: LocalRunConfig) -> float:
    """The guidance the result is generated with (``LocalRunConfig.guidance_scale``'s default rule)."""
    if config.guidance_scale is not None:
        return config.guidance_scale
    return 1.0 if config.model is None else VARIANTS[config.variant].guidance_scale


def prompted_asset(config: LocalRunConfig) -> str | None:
    """The bundled asset whose caption the prompt is (``assets/captions.csv``), if any."""
    if not config.captions or not os.path.isdir(config.assets):
        return None
    wanted = config.prompt.removesuffix(CAPTION_SUFFIX).strip().lower()
    names = [name for name, caption in load_captions(config.captions).items() if caption.strip().lower() == wanted]
    return next((name for name in names if os.path.isfile(os.path.join(config.assets, name))), None)


def record_target(config: LocalRunConfig) -> str:
    """The bundled asset the prompt names; ``ValueError`` for i2v without one (it needs its view)."""
    target = prompted_asset(config)
    if target is None:
        raise ValueError(f"--variant i2v generates from a view of the object the prompt names: {config.prompt!r} "
                         f"is no caption in {config.captions}")
    return target


def input_view(config: LocalRunConfig) -> bytes:
    """The i2v input: the prompted object rendered by Blender (RGBA PNG, as a user's cut-out photo)
    at azimuth 0 and ``input_elevation``, which no training orbit has."""
    from render.process import BlenderProcess

    target = record_target(config)
    settings = RenderSettings(resolution=config.input_resolution, samples=config.render_samples, seed=config.seed,
                              threads=2)
    c2w = camera.orbit_c2w(config.input_elevation, np.zeros(1))
    with BlenderProcess() as process:
        output = process.render(os.path.join(config.assets, target), c2w, settings)
        try:
            with open(output.views[0], "rb") as handle:
                return handle.read()
        finally:
            output.cleanup()


def score_result(config: LocalRunConfig, result_dir: str, record: dict[str, Any]) -> dict[str, float]:
    """Scores of the generated views, Gaussians and mesh against the prompted object
    (``pipeline.evaluation.result_scores``); empty, with a warning, when the prompt is no bundled object's caption."""
    target = record["scored_against"]
    if target is None:
        logger.warning("the prompt %r is no caption in %s: the result is not scored", config.prompt, config.captions)
        return {}
    views = torch.stack([torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
                         for path in sorted(glob.glob(os.path.join(result_dir, "views", "view_*.png")))])
    ply = os.path.join(result_dir, "gaussians.ply")
    assets = {name: path for name, (path, _) in captioned_assets(config.assets, config.captions).items()}
    scores = score_generation(views.permute(0, 3, 1, 2), assets, target, record["elevation"],
                              np.asarray(record["azimuths"]), record["distance"], record["fov"],
                              config.render_resolution, tuple(record["background"]),
                              gaussians=load_ply(ply) if os.path.isfile(ply) else None, samples=config.render_samples)
    glb = os.path.join(result_dir, "mesh.glb")
    if os.path.isfile(glb):
        import trimesh

        scores.update(score_mesh(trimesh.load(glb, force="mesh"), assets, target))
    return scores


def build_tiny_model(config: LocalRunConfig, shards: str, path: str, mlflow_uri: str) -> dict[str, float]:
    """The tiny T2V model at the render resolution, its VAE trained as an autoencoder on the
    rendered views (logged as the MLflow run "autoencoder"), saved as a published video model
    directory at ``path`` (written beside it, then renamed: an interrupted run leaves no half model).
    Returns the autoencoder's figures (reconstruction PSNR trained and untrained, latent scale).

    Its VAE downsamples 8x to 8 channels (the published ones: 8x to 4; the image model's 4, which
    diffusers' I2VGenXLUNet requires) and its schedule is v-prediction: a model trained from
    scratch in minutes samples noise with eps (docs/results.md).
    """
    import shutil

    from models.toy.autoencoder import train_autoencoder
    from models.toy.tiny import TOY_LATENT_CHANNELS, build_tiny, save_tiny
    from pipeline.data.rows import shard_views

    latent_channels = VARIANTS[config.variant].latent_channels or TOY_LATENT_CHANNELS
    model = build_tiny(config.variant, seed=config.seed, resolution=config.render_resolution, latent_downsample=8,
                       latent_channels=latent_channels, prediction="v")
    views = shard_views(shards, config.render_resolution, VARIANTS[config.variant].background)
    report = train_autoencoder(model.vae, views, config.autoencoder_steps, seed=config.seed)
    logger.info("autoencoder: reconstruction PSNR %.2f dB on %d rendered views (untrained %.2f dB), %d steps "
                "in %.0f s, latent scale %.3f", report.psnr, len(views), report.untrained_psnr,
                config.autoencoder_steps, report.seconds, report.scaling_factor)
    figures = {"reconstruction_psnr": report.psnr, "untrained_reconstruction_psnr": report.untrained_psnr,
               "scaling_factor": report.scaling_factor}
    with mlflow_run(config.experiment, "autoencoder", mlflow_uri,
                    {"steps": config.autoencoder_steps, "views": len(views), "resolution": config.render_resolution,
                     "latent_downsample": 8, "latent_channels": latent_channels}) as mlflow:
        mlflow.log_metrics({**figures, "final_loss": report.losses[-1], "seconds": report.seconds})
    partial = path + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_tiny(model, partial)
    with open(os.path.join(partial, AUTOENCODER_REPORT), "w") as handle:
        json.dump(figures, handle, indent=2)
    os.replace(partial, path)
    return figures


def run_ids(mlflow: Any, experiment: str) -> dict[str, str]:
    """Run name -> id of the newest run of each stage in ``experiment``."""
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time ASC"], output_format="list")
    return {run.info.run_name: run.info.run_id for run in runs}


def run_local(config: LocalRunConfig) -> dict[str, Any]:
    """Run every stage; returns the paths it wrote."""
    out = os.path.abspath(config.out)
    os.makedirs(out, exist_ok=True)
    mlflow_uri = f"sqlite:///{os.path.join(out, 'mlflow.db')}"
    connect(include_dashboard=False)
    began = time.perf_counter()

    start = _stage(1, f"render {config.assets} into 24-view orbit shards (Blender Cycles, CPU)")
    shards = os.path.join(out, "shards")
    summary = run_render_job(RenderJobConfig(
        input=config.assets, output=shards, captions=config.captions, mlflow_uri=mlflow_uri,
        experiment=config.experiment, run_name="render",
        settings=RenderSettings(resolution=config.render_resolution, samples=config.render_samples, seed=config.seed,
                                elevation_range=(config.elevation, config.elevation))))
    _done(start, f"{summary.rendered} rendered, {summary.skipped} already there, {summary.failed} failed")

    start = _stage(2, f"the {VARIANTS[config.variant].input_name}-to-multi-view model to start from")
    model = config.model or os.path.join(out, "models", f"tiny-{config.variant}")
    if config.model is None and not os.path.isdir(model):
        logger.info("building a tiny %s-layout model; training its VAE on the renders",
                    VARIANTS[config.variant].base_model)
        build_tiny_model(config, shards, model, mlflow_uri)
    autoencoder = None
    if os.path.isfile(os.path.join(model, AUTOENCODER_REPORT)):
        with open(os.path.join(model, AUTOENCODER_REPORT)) as handle:
            autoencoder = json.load(handle)
    _done(start, model)

    resolution = model_resolution(resolve_model_dir(model))
    if detect_variant(resolve_model_dir(model)) != config.variant:
        raise ValueError(f"{model} is a {detect_variant(resolve_model_dir(model))} model; the run asks for "
                         f"--variant {config.variant}")
    runs = os.path.join(out, "runs")
    # A few orbits: decode them once (materialize_data), or every two-step pass decodes again. Four
    # orbits in one shard, two per worker: shuffling has no categories to mix here, and it measured
    # lower memorisation scores (docs/results.md), so the local run keeps the stream's order.
    base = TrainConfig(data=shards, model=model, output=runs, name="finetune", steps=config.finetune_steps,
                       num_workers=config.workers, cpus_per_worker=0.5, micro_batch=1, global_batch=config.workers,
                       lr=config.finetune_lr, precision="no", gradient_checkpointing=False, materialize_data=True,
                       shuffle_buffer=0,
                       checkpoint_every=max(10, config.finetune_steps // 4),
                       log_every=max(5, config.finetune_steps // 24), resolution=resolution, mlflow_uri=mlflow_uri,
                       experiment=config.experiment, seed=config.seed, max_failures=1,
                       sample_every=config.finetune_steps, sample_num_inference_steps=10)
    start = _stage(3, f"fine-tune it on the shards: Ray Train, {config.workers} workers, {config.finetune_steps} steps")
    finetuned = run_finetune(base)
    _done(start, f"loss {finetuned.final_metrics.get('loss', float('nan')):.4f}, model at {finetuned.final_model}")

    start = _stage(4, f"train the reconstructor on its one-step predictions ({config.recon_steps} steps)")
    recon = run_train_recon(
        dataclasses.replace(base, name="reconstructor", model=finetuned.final_model, steps=config.recon_steps,
                            lr=None, lr_schedule="cosine", sample_every=0,
                            checkpoint_every=max(10, config.recon_steps // 2), log_every=max(5, config.recon_steps // 10)),
        ReconConfig(lgm_preset="tiny", lgm_size=TINY_RECON_SIZE, supervised_views=4))
    measured = None
    if config.captions and os.path.isdir(config.assets):
        # Where render(LGM(x0)) beats x0 decides where 3D-aware sampling uses it (docs/results.md).
        measured = measure_schedule(finetuned.final_model, recon.final_model,
                                    captioned_assets(config.assets, config.captions), config.elevation,
                                    config.render_samples)
    _done(start, f"loss {recon.final_metrics.get('loss', float('nan')):.4f}, model at {recon.final_model}")

    start = _stage(5, "start the Serve endpoint")
    from ray import serve

    from pipeline.serve.app import build_app, start_http

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host, port = start_http("127.0.0.1", port)  # a Serve instance already running keeps its address
    serve.run(build_app(finetuned.final_model, reconstructor=recon.final_model, num_gpus=0), name="videomv", route_prefix="/")
    url = f"http://{host}:{port}"
    _done(start, f"listening on {url}")

    what = (repr(config.prompt) if VARIANTS[config.variant].takes_prompt
            else f"from a view of {record_target(config)} at elevation {config.input_elevation:g}")
    start = _stage(6, f"generate {what} (3D-aware sampling, {config.num_inference_steps} steps)")
    view = input_view(config) if VARIANTS[config.variant].takes_image else None
    condition = {"prompt": config.prompt} if view is None else {"image": base64.b64encode(view).decode()}
    body = generate(url, {**condition, "seed": config.seed, "steps": config.num_inference_steps,
                          "elevation": config.elevation, "guidance_scale": guidance_scale(config),
                          "outputs": ["views", "grid", "gif", "mp4", "ply", "glb", "gaussians_mp4"]})
    for name, reason in body.get("unavailable", {}).items():
        logger.warning("the endpoint gave no %s: %s", name, reason)
    result_dir = os.path.join(out, "result")
    written = write_result(body, result_dir)
    if view is not None:
        with open(os.path.join(result_dir, "input_view.png"), "wb") as handle:
            handle.write(view)  # the view as sent (input.png: as the model saw it)
        written.append(os.path.join(result_dir, "input_view.png"))
    serve.shutdown()
    record = result_record(config, model_resolution(finetuned.final_model))
    record["autoencoder"] = autoencoder
    if measured is not None:
        record["renders_vs_x0"] = {"t": measured.t, "render_psnr": measured.render_psnr,
                                   "x0_psnr": measured.x0_psnr, "truth_render_psnr": measured.truth_render_psnr,
                                   "used": [measured.helps(t) for t in measured.t]}
    record["scores"] = score_result(config, result_dir, record)
    with mlflow_run(config.experiment, "generate", mlflow_uri,
                    {"prompt": config.prompt, "steps": config.num_inference_steps, "seed": config.seed}) as mlflow:
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
