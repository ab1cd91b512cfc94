"""Does G learn camera control? The experiment of issue 13, on the real miniature G.

Train the tiny UNet3D of ``models/tiny.py`` with the real ``CameraEmbedding``, fine-tuning
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

``run_camera_control`` returns the table; ``benchmarks/camera_control.py`` prints it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

import camera
from models.sampler import DEFAULTS, SamplingConfig, sample_views
from models.tiny import build_tiny, i2v_scheduler
from models.train_views import Orbits, train_on_orbits
from pipeline.ground_truth import render_views, scores
from render.process import BlenderProcess
from render.settings import RenderSettings

logger = logging.getLogger(__name__)
REPO_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULT_OBJECTS = (("Duck.glb", "a yellow rubber duck"), ("monkey.glb", "a grey monkey head"),
                   ("BoxTextured.glb", "a textured box"))


@dataclass
class CameraControlConfig:
    objects: tuple[tuple[str, str], ...] = DEFAULT_OBJECTS  # (file under assets, caption)
    assets: str = REPO_ASSETS
    resolution: int = 16
    samples: int = 4
    train_elevations: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 25.0, 30.0, 35.0, 40.0)
    held_out_elevation: float = 20.0
    shifted_elevation: float = 15.0  # trained, but evaluated with azimuths shifted by half a step
    steps: int = 1500
    batch_size: int = 2
    lr: float = 1e-3
    # The project's two DDIM schedules: "v" (I2VGen-XL's v-prediction, zero terminal SNR) or "eps"
    # (ModelScope T2V's). With eps, x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) multiplies the error of
    # an eps estimate by up to 15 near t = T, so a briefly trained G samples noise (7 dB at 300
    # steps, against 14 dB with "v"; issue 13's notes).
    prediction: str = "v"
    camera_lr_scale: float = 1.0  # the camera embedding's learning rate, in multiples of lr
    roll_orbits: bool = False  # train on orbits starting at random views (frame order stops telling the view)
    sampling_steps: int = 25
    guidance_scale: float | None = 1.0  # memorising captions, no guidance needed; None: the sampler's 9.0
    seed: int = 0
    frames: int = camera.NUM_VIEWS
    cases: tuple[str, ...] = ("held-out elevation", "half-step azimuths")  # or "training cameras"
    controls: tuple[str, ...] = field(default=("untrained", "zero_cameras", "reversed", "no_camera_model"))


def build_miniature(config: CameraControlConfig):
    """The tiny text-to-multi-view G on pixel-shuffle latents, with the configured schedule."""
    model = build_tiny("t2v", seed=config.seed, pixel_latents=True, resolution=config.resolution)
    if config.prediction == "v":
        model.scheduler = i2v_scheduler()
    elif config.prediction != "eps":
        raise ValueError(f"prediction must be 'v' or 'eps', got {config.prediction!r}")
    return model


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
    train, cases = [], {case: [] for case in config.cases}
    with BlenderProcess(max_assets_per_process=1000) as process:
        for file, caption in config.objects:
            path = os.path.join(config.assets, file)
            for elevation in config.train_elevations:
                views, c2w = render_views(process, path, elevation, grid, settings)
                train.append((views, c2w, caption))
            for case in config.cases:
                elevation, azimuths = evaluation[case]
                cases[case].append((*render_views(process, path, elevation, azimuths, settings), caption))
    orbits = Orbits(torch.stack([v for v, _, _ in train]), torch.stack([c for _, c, _ in train]),
                    [p for _, _, p in train])
    seconds["render"] = time.perf_counter() - start
    logger.info("rendered %d training orbits and %d evaluation orbits in %.0f s", len(orbits),
                sum(len(c) for c in cases.values()), seconds["render"])

    models = {}
    for name, zero in (("camera_model", False), ("no_camera_model", True)):
        if name == "no_camera_model" and "no_camera_model" not in config.controls:
            continue
        began = time.perf_counter()
        model = build_miniature(config)
        losses = train_on_orbits(model, orbits, config.steps, config.batch_size, config.lr, config.seed,
                                 zero_cameras=zero, camera_lr_scale=config.camera_lr_scale,
                                 roll_orbits=config.roll_orbits)
        seconds[f"train_{name}"] = time.perf_counter() - began
        logger.info("%s: %d steps in %.0f s, final loss (mean of 50) %.4f", name, config.steps,
                    seconds[f"train_{name}"], float(np.mean(losses[-50:])))
        models[name] = model

    rows = []
    began = time.perf_counter()
    for case, items in cases.items():
        truth = torch.stack([views for views, _, _ in items]) / 2 + 0.5  # [N, F, 3, H, W] in [0, 1]
        cameras = torch.stack([c2w for _, c2w, _ in items])
        prompts = [caption for _, _, caption in items]

        def generate(model, cameras_in: torch.Tensor) -> torch.Tensor:
            sampling = SamplingConfig(steps=config.sampling_steps, guidance_scale=config.guidance_scale,
                                      seeds=tuple(config.seed + i for i in range(len(prompts))))
            return sample_views(model, prompts=prompts, config=sampling, cameras=cameras_in).views

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
        flat = torch.full_like(truth, DEFAULTS["t2v"]["background"][0])
        rows.append({"setting": "flat background image", "case": case, **scores(flat, truth)})
    seconds["generate"] = time.perf_counter() - began
    seconds["total"] = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "config": {k: v for k, v in vars(config).items()}}


def format_table(result: dict) -> str:
    """Markdown: one row per setting, PSNR / SSIM per evaluation case."""
    cases = list(dict.fromkeys(row["case"] for row in result["rows"]))
    settings = list(dict.fromkeys(row["setting"] for row in result["rows"]))
    lines = ["| setting | " + " | ".join(f"{case} PSNR / SSIM" for case in cases) + " |",
             "|---|" + "---|" * len(cases)]
    for setting in settings:
        cells = []
        for case in cases:
            row = next(r for r in result["rows"] if r["setting"] == setting and r["case"] == case)
            cells.append(f"{row['psnr']:.2f} dB / {row['ssim']:.3f}")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
