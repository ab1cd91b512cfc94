"""Does G learn camera control? The experiment of issue 13, on the real miniature G.

Train the tiny UNet3D of ``models/toy/tiny.py`` with the real ``CameraEmbedding``, fine-tuning
objective, scheduler and sampler on Blender orbits of a few objects at many elevations, with the
lossless ``PixelShuffleVAE`` as the latent space; then generate at cameras never seen in training
(a held-out elevation, and a trained elevation with every azimuth shifted by half a step) and
score each generated view against Blender's render at that camera. Controls, same seeds:

- ``zero_cameras``: the trained model with its camera input zeroed;
- ``reversed_vs_forward``: the orbit given in reverse; its output scored against the forward truth
  (a model that ignores cameras would match it) while ``reversed`` scores it against the reversed
  truth (which a camera-controlled model must match);
- ``no_camera_model``: the same UNet trained with zero poses (frame order only);
- ``untrained``: the same architecture before training, and a flat background image.

Two oracle rows bound what a model that ignores the cameras could score: the truth at the nearest
training camera (a perfect memoriser that snaps to its training views) and the evaluated orbit's
mean view (the best single image per object in squared error).

``run_camera_control`` returns the table; ``benchmarks/camera_control.py`` prints it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

import camera
from models.variants import VARIANTS
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.toy.tiny import build_tiny, i2v_scheduler
from models.toy.train_views import Orbits, train_on_orbits
from pipeline.cluster import connect
from pipeline.cli import option
from pipeline.evaluation.ground_truth import render_views, scores
from pipeline.data.sources import BUNDLED_ASSETS
from render.process import BlenderProcess
from render.settings import RenderSettings

logger = logging.getLogger(__name__)
# The Duck and the monkey differ front to back and side to side; the teapot is nearly symmetric
# (its orbit-mean view scores 30 dB against its views at 16 px) and the box's faces repeat every 90 degrees.
BACKGROUND = VARIANTS["t2v"].background  # the experiment's models are the text model's
DEFAULT_OBJECTS = (("Duck.glb", "a yellow rubber duck"), ("monkey.glb", "a grey monkey head"))


@dataclass
class CameraControlConfig:
    """The experiment's settings (``benchmarks/camera_control.py`` makes them flags)."""

    objects: tuple[tuple[str, str], ...] = option(DEFAULT_OBJECTS, "(file under assets, caption)", cli=False)
    assets: str = option(BUNDLED_ASSETS, "folder of the objects")
    resolution: int = option(16, "render and model size in pixels")
    samples: int = option(4, "Cycles samples per pixel")
    train_elevations: tuple[float, ...] = option((0.0, 10.0, 15.0, 25.0, 30.0, 40.0),
                                                 "elevations of the training orbits")
    held_out_elevation: float = option(20.0, "elevation never trained, evaluated")
    shifted_elevation: float = option(15.0, "a trained elevation evaluated with azimuths shifted by half a step")
    steps: int = option(2800, "training steps per model (2,800: the most that fits 15 min here, in parallel)")
    parallel: bool = option(True, "train the camera model and the no-camera control at once, one core each (Ray)")
    batch_size: int = option(2, "orbits per step")
    lr: float = option(1e-3, "AdamW learning rate")
    cosine_decay: bool = option(True, "anneal the learning rate along a cosine")
    # With eps, x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) multiplies the error of an eps estimate by
    # up to 15 near t = T, so a briefly trained G samples noise (docs/results.md).
    prediction: str = option("v", "DDIM schedule: v (I2VGen-XL's, zero terminal SNR) or eps (ModelScope T2V's)",
                             choices=("v", "eps"))
    camera_lr_scale: float = option(1.0, "the camera embedding's learning rate, in multiples of lr")
    roll_orbits: bool = option(True, "train on orbits starting at random views (frame order stops telling the view)")
    reverse_orbits: bool = option(True, "run half the training orbits backwards (frame order stops telling "
                                        "the direction)")
    num_inference_steps: int = option(25, "DDIM steps", deprecated_alias="sampling_steps")
    guidance_scale: float | None = option(1.0, "classifier-free guidance (memorised captions need none)")
    seed: int = option(0, "seed of weights, data order and sampling noise")
    frames: int = option(camera.NUM_VIEWS, "views per orbit", cli=False)
    cases: tuple[str, ...] = option(("held-out elevation", "half-step azimuths"),
                                    "evaluation cases (also: training cameras)")
    controls: tuple[str, ...] = option(("untrained", "zero_cameras", "reversed", "no_camera_model"),
                                       "controls to run")
    keep_models: bool = option(False, "also return the trained models and each case's truth (in memory)", cli=False)


def build_miniature(config: CameraControlConfig) -> VideoMVPipeline:
    """The tiny text-to-multi-view G on pixel-shuffle latents, with the configured schedule."""
    model = build_tiny("t2v", num_frames=config.frames, seed=config.seed, pixel_latents=True,
                       resolution=config.resolution)
    if config.prediction == "v":
        model.scheduler = i2v_scheduler()
    elif config.prediction != "eps":
        raise ValueError(f"prediction must be 'v' or 'eps', got {config.prediction!r}")
    return model


def _train_one(config: CameraControlConfig, orbits: Orbits, zero_cameras: bool,
               threads: int | None = None) -> tuple[dict[str, torch.Tensor], list[float], float]:
    """Train one miniature (the camera model, or with ``zero_cameras`` the control); returns its
    UNet's state dict, the losses and the seconds taken. Runs in a Ray task when trained in parallel."""
    if threads is not None:
        torch.set_num_threads(threads)
    began = time.perf_counter()
    model = build_miniature(config)
    losses = train_on_orbits(model, orbits, config.steps, config.batch_size, config.lr, config.seed,
                             zero_cameras=zero_cameras, camera_lr_scale=config.camera_lr_scale,
                             roll_orbits=config.roll_orbits, reverse_orbits=config.reverse_orbits,
                             cosine_decay=config.cosine_decay)
    return model.denoiser.state_dict(), losses, time.perf_counter() - began


def run_camera_control(config: CameraControlConfig) -> dict:
    """Render, train the camera model and the control model, generate, score. Returns
    {"rows": [{"setting", "case", "psnr", "ssim"}], "seconds": {...}, "config": ...}."""
    unknown = set(config.cases) - {"training cameras", "held-out elevation", "half-step azimuths"}
    if unknown:
        raise ValueError(f"unknown evaluation cases {sorted(unknown)}")
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    settings = RenderSettings(resolution=config.resolution, samples=config.samples, threads=2, timeout=600)
    grid = camera.orbit_azimuths(config.frames)
    half_step = 180.0 / config.frames
    # case -> (elevation, azimuths) of its evaluation orbit
    evaluation = {"training cameras": (config.train_elevations[0], grid),
                  "held-out elevation": (config.held_out_elevation, grid),
                  "half-step azimuths": (config.shifted_elevation, grid + half_step)}
    nearest_elevation = {case: min(config.train_elevations, key=lambda e: abs(e - evaluation[case][0]))
                         for case in evaluation}
    train, cases = [], {case: [] for case in config.cases}
    nearest: dict[str, list[torch.Tensor]] = {case: [] for case in config.cases}
    with BlenderProcess(max_assets_per_process=1000) as process:
        for file, caption in config.objects:
            path = os.path.join(config.assets, file)
            for elevation in config.train_elevations:
                views, c2w = render_views(process, path, elevation, grid, settings, BACKGROUND)
                train.append((views, c2w, caption))
                for case in config.cases:
                    if elevation == nearest_elevation[case]:
                        nearest[case].append(views)
            for case in config.cases:
                elevation, azimuths = evaluation[case]
                cases[case].append((*render_views(process, path, elevation, azimuths, settings, BACKGROUND), caption))
    orbits = Orbits(torch.stack([v for v, _, _ in train]), torch.stack([c for _, c, _ in train]),
                    [p for _, _, p in train])
    seconds["render"] = time.perf_counter() - start
    logger.info("rendered %d training orbits and %d evaluation orbits in %.0f s", len(orbits),
                sum(len(c) for c in cases.values()), seconds["render"])

    names = ["camera_model"] + (["no_camera_model"] if "no_camera_model" in config.controls else [])
    began = time.perf_counter()
    if config.parallel and len(names) > 1:
        # The tiny UNet on 16 px frames keeps two cores only partly busy: two single-threaded
        # trainings side by side give each about 1.3x the steps of one after the other.
        connect(include_dashboard=False)
        train_remote = ray.remote(num_cpus=1)(_train_one)
        trained = ray.get([train_remote.remote(config, orbits, name == "no_camera_model", threads=1)
                           for name in names])
    else:
        trained = [_train_one(config, orbits, name == "no_camera_model") for name in names]
    models = {}
    for name, (state, losses, train_seconds) in zip(names, trained):
        model = build_miniature(config)
        model.denoiser.load_state_dict(state)
        model.denoiser.eval()
        models[name] = model
        seconds[f"train_{name}"] = train_seconds
        logger.info("%s: %d steps in %.0f s, final loss (mean of 50) %.4f", name, config.steps, train_seconds,
                    float(np.mean(losses[-50:])))
    seconds["train"] = time.perf_counter() - began

    rows = []
    began = time.perf_counter()
    for case, items in cases.items():
        truth = torch.stack([views for views, _, _ in items]) / 2 + 0.5  # [N, F, 3, H, W] in [0, 1]
        cameras = torch.stack([c2w for _, c2w, _ in items])
        prompts = [caption for _, _, caption in items]

        def generate(model, cameras_in: torch.Tensor) -> torch.Tensor:
            pipe = model
            pipe.set_progress_bar_config(disable=True)
            return pipe(prompt=prompts, num_inference_steps=config.num_inference_steps,
                        guidance_scale=config.guidance_scale, cameras=cameras_in, output_type="pt",
                        generator=[torch.Generator().manual_seed(config.seed + i) for i in range(len(prompts))]).frames

        trained = generate(models["camera_model"], cameras)
        rows.append({"setting": "camera model", "case": case, **scores(trained, truth)})
        if "untrained" in config.controls:
            untrained = build_miniature(config)
            rows.append({"setting": "untrained model", "case": case, **scores(generate(untrained, cameras), truth)})
        if "zero_cameras" in config.controls:
            zeroed = generate(models["camera_model"], torch.zeros_like(cameras))
            rows.append({"setting": "(a) camera input zeroed", "case": case, **scores(zeroed, truth)})
        if "reversed" in config.controls:
            order = torch.arange(config.frames - 1, -1, -1)
            reversed_views = generate(models["camera_model"], cameras[:, order])
            rows.append({"setting": "orbit reversed, vs reversed truth", "case": case,
                         **scores(reversed_views, truth[:, order])})
            rows.append({"setting": "(b) orbit reversed, vs forward truth", "case": case,
                         **scores(reversed_views, truth)})
        if "no_camera_model" in models:
            blind = generate(models["no_camera_model"], torch.zeros_like(cameras))
            rows.append({"setting": "(c) trained without camera embedding", "case": case, **scores(blind, truth)})
        if case != "training cameras":
            snapped = torch.stack(nearest[case]) / 2 + 0.5
            rows.append({"setting": "oracle: truth at the nearest training camera", "case": case,
                         **scores(snapped, truth)})
        rows.append({"setting": "oracle: the orbit's mean view", "case": case,
                     **scores(truth.mean(1, keepdim=True).expand_as(truth), truth)})
        flat = torch.tensor(BACKGROUND).view(3, 1, 1).expand_as(truth)
        rows.append({"setting": "flat background image", "case": case, **scores(flat, truth)})
    seconds["generate"] = time.perf_counter() - began
    seconds["total"] = time.perf_counter() - start
    result = {"rows": rows, "seconds": seconds, "config": {k: v for k, v in vars(config).items()}}
    if config.keep_models:  # for what else a caller tests on the learned G (distillation)
        result["models"] = models
        result["truth"] = {case: (torch.stack([views for views, _, _ in items]) / 2 + 0.5,
                                  torch.stack([c2w for _, c2w, _ in items]), [caption for _, _, caption in items])
                           for case, items in cases.items()}
    return result


def format_table(result: dict) -> str:
    """Markdown: one row per setting, PSNR / SSIM per evaluation case."""
    cases = list(dict.fromkeys(row["case"] for row in result["rows"]))
    settings = list(dict.fromkeys(row["setting"] for row in result["rows"]))
    lines = ["| setting | " + " | ".join(f"{case} PSNR / SSIM" for case in cases) + " |",
             "|---|" + "---|" * len(cases)]
    for setting in settings:
        cells = []
        for case in cases:
            row = next((r for r in result["rows"] if r["setting"] == setting and r["case"] == case), None)
            cells.append("-" if row is None else f"{row['psnr']:.2f} dB / {row['ssim']:.3f}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
