"""The flags of ``jobs/run_all.py`` (``LocalRunConfig``), apart from the run itself
(``pipeline.local_run``) so that ``--help`` loads no model library."""

from __future__ import annotations

import os
from dataclasses import dataclass

from models.variants import VARIANTS
from pipeline.cli import check_minimums, option
from pipeline.data.sources import BUNDLED_ASSETS


@dataclass
class LocalRunConfig:
    """Everything ``jobs/run_all.py`` exposes as flags (``pipeline.cli``)."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {"assets": "input", "captions": "input", "out": "output", "model": "input"}

    assets: str = option(BUNDLED_ASSETS, "folder, manifest or objaverse: spec of the assets to render")
    captions: str | None = option(os.path.join(BUNDLED_ASSETS, "captions.csv"),
                                  "CSV 'file name or uid,caption' of the assets (the prompts G learns)")
    out: str = option("out", "output folder")
    variant: str = option("t2v", "t2v: the text model, generating from the prompt; i2v: the image model, "
                                 "generating from one view of the prompted object that it was not trained on "
                                 "(rendered at --input-elevation)", choices=("t2v", "i2v"))
    prompt: str = option("a yellow rubber duck, 3d asset", "prompt of the generated result (i2v: names the object "
                                                           "whose view is the input)")
    input_elevation: float = option(35.0, "i2v: elevation (degrees) of the input view, away from the training orbits")
    input_resolution: int = option(256, "i2v: size of the input view in pixels (a user's image, preprocessed by "
                                        "the endpoint)", minimum=8)
    model: str | None = option(None, "diffusers directory to fine-tune (default: a tiny random model)")
    finetune_steps: int = option(1200, "fine-tuning steps of G", minimum=1)
    finetune_lr: float = option(1e-3, "fine-tuning learning rate (G is trained from scratch at toy scale)",
                                exclusive_minimum=0.0)
    recon_steps: int = option(500, "reconstructor training steps", minimum=1)
    num_inference_steps: int = option(25, "DDIM steps of the generated result", deprecated_alias="sampling_steps",
                                     minimum=1)
    guidance_scale: float | None = option(
        None, "classifier-free guidance of the generated result; default 1.0 for the tiny model (it memorises "
        "four captions, and guidance pushes away from their average into over-saturated views; docs/results.md), "
        "the variant's own (" + ", ".join(f"{v.name} {v.guidance_scale:g}" for v in VARIANTS.values()) +
        ") with --model")
    render_resolution: int = option(64, "render size in pixels", minimum=8)
    render_samples: int = option(8, "Cycles samples per pixel", minimum=1)
    elevation: float = option(
        VARIANTS["t2v"].elevation,
        "elevation (degrees) of every object's training orbit and of the generated result: a model trained on "
        "one orbit per object learns no other elevation")
    autoencoder_steps: int = option(500, "training steps of the tiny model's VAE (an autoencoder on the renders)",
                                   minimum=1)
    workers: int = option(2, "Ray Train workers", minimum=1)
    experiment: str = option("videomv-local", "MLflow experiment of every stage")
    seed: int = option(0, "seed of every stage")

    def __post_init__(self) -> None:
        check_minimums(self)
