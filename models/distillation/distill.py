"""``Distillation``: 3D Gaussians optimised so that their renders along G's orbit are what G, frozen,
would denoise them to (multi-view score distillation, paper 5.2).

Each step: draw an elevation in G's training range, render the Gaussians at G's orbit there (its
F views, on the variant's background), encode the renders with G's VAE (posterior mean, with
gradients), and step AdamW on ``MultiViewGuidance``'s loss. Everything a run needs to continue is in
``state_dict`` (the Gaussians, AdamW's moments, the step, the random generator), so a resumed run
takes the same steps as one that was never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from typing import Any

import numpy as np

import torch
import torch.nn.functional as F

import camera
from camera.training_cameras import inside
from models.distillation.config import DistillConfig
from models.distillation.guidance import GuidanceStep, MultiViewGuidance
from models.gaussians.fit import random_gaussians
from models.gaussians.gaussians import Gaussians
from models.gaussians.rendering import render_gaussians
from models.pipeline_videomv.pipeline_videomv import sampling_defaults

PARAMETERS = ("means", "quats", "scales", "opacities", "colors")
DEFAULT_ELEVATIONS = (0.0, 30.0)  # MVDream's, where G records no training range


class Distillation:
    """One distillation run of ``pipe`` (a ``VideoMVPipeline``, frozen) toward ``prompt`` (text
    model) or ``image`` (image model). ``step()`` takes one optimisation step; ``gaussians()`` is the
    current scene (world frame, detached)."""

    def __init__(self, pipe: Any, config: DistillConfig, prompt: str | None = None, image: Any = None,
                 negative_prompt: str | None = None) -> None:
        self.pipe, self.config = pipe, config
        self.device = pipe.device
        self.subject = prompt if prompt is not None else "image sha256 " + hashlib.sha256(
            np.asarray(image).tobytes()).hexdigest()[:16]
        self.guidance = MultiViewGuidance(pipe, config, prompt=prompt, image=image, negative_prompt=negative_prompt)
        self.resolution = config.resolution or pipe.resolution
        recorded = pipe.training_cameras or {}
        self.elevations = tuple(config.elevations or recorded.get("elevation") or DEFAULT_ELEVATIONS)
        _, _, self.distance = sampling_defaults(pipe.variant, pipe.training_cameras, None, None, None)
        self.fov = inside(pipe.training_cameras, "fov", camera.DEFAULT_FOV_DEG)
        self.azimuths = camera.orbit_azimuths(pipe.num_frames)
        start = random_gaussians(config.num_gaussians, config.radius, config.seed)
        eps = 1e-4
        self.raw = {
            "means": start.means.clone(),
            "quats": start.quats.clone(),
            "scales": start.scales.clamp(min=eps).log(),
            "opacities": torch.logit(start.opacities.clamp(eps, 1 - eps)),
            "colors": torch.logit(start.colors.clamp(eps, 1 - eps)),
        }
        self.raw = {name: tensor.to(self.device).requires_grad_(True) for name, tensor in self.raw.items()}
        self.optimizer = torch.optim.AdamW(
            [{"params": [self.raw[name]], "lr": getattr(config, f"lr_{name}"), "name": name} for name in PARAMETERS],
            eps=1e-15, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_index = 0

    # -- the scene -------------------------------------------------------------------------------
    def activated(self) -> Gaussians:
        """The Gaussians from the optimised parameters (with their graph)."""
        raw = self.raw
        return Gaussians(means=raw["means"], quats=F.normalize(raw["quats"], dim=-1), scales=raw["scales"].exp(),
                         opacities=torch.sigmoid(raw["opacities"]), colors=torch.sigmoid(raw["colors"]))

    def gaussians(self) -> Gaussians:
        """The current scene, detached, in G's world frame."""
        return self.activated().detach()

    def orbit(self, elevation: float) -> torch.Tensor:
        """[F, 4, 4] OpenGL c2w of G's orbit at ``elevation`` (its distance and azimuths)."""
        return self.pipe.orbit_cameras(elevation, self.distance, 1)[0]

    def render(self, gaussians: Gaussians, c2w: torch.Tensor) -> torch.Tensor:
        """Views [F, 3, H, W] in [0, 1] on G's background (differentiable)."""
        K = torch.tensor(camera.intrinsics_from_fov(self.fov, self.resolution, self.resolution), dtype=torch.float32)
        colors = render_gaussians(gaussians, c2w, K, self.resolution, self.resolution,
                                  background=self.pipe.background).colors
        return colors.permute(0, 3, 1, 2)

    # -- one step ----------------------------------------------------------------------------------
    def encode(self, views: torch.Tensor) -> torch.Tensor:
        """Views [F, 3, H, W] in [0, 1] -> latents [1, C, F, h, w] through G's VAE (posterior mean),
        keeping the graph; resized to G's resolution when rendered at another."""
        pipe = self.pipe
        if views.shape[-1] != pipe.resolution:
            views = F.interpolate(views, size=(pipe.resolution, pipe.resolution), mode="bilinear", align_corners=False,
                                  antialias=True)
        flat = (views * 2 - 1).to(pipe.vae.dtype)
        latents = torch.cat([pipe.vae.encode(part).latent_dist.mode() for part in flat.split(pipe.vae_chunk_size
                                                                                               or len(flat))])
        latents = latents * pipe.vae.config.scaling_factor
        return latents[None].permute(0, 2, 1, 3, 4)

    def _autocast(self) -> contextlib.AbstractContextManager:
        enabled = self.config.mixed_precision and self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.float16) if enabled else contextlib.nullcontext()

    def step(self) -> dict[str, float]:
        """One AdamW step; returns {"loss", "timestep", "elevation"}."""
        low, high = self.elevations
        elevation = low + (high - low) * float(torch.rand((), generator=self.generator, device=self.generator.device))
        c2w = self.orbit(elevation)
        views = self.render(self.activated(), c2w)
        with self._autocast():
            if self.config.loss == "x0_image":  # the loss is on the renders: no graph through the encoder
                with torch.no_grad():
                    latents = self.encode(views)
            else:
                latents = self.encode(views)
            result: GuidanceStep = self.guidance(latents, c2w[None], self.step_index, self.generator, views=views[None])
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        self.optimizer.step()
        self.step_index += 1
        return {"loss": float(result.loss.detach()), "timestep": float(result.timestep), "elevation": elevation}

    @property
    def finished(self) -> bool:
        return self.step_index >= self.config.steps

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that continues the run: parameters, AdamW, the step, the random generator, and
        what the run is (its prompt or image, its settings) so that another run cannot take it."""
        return {"step": self.step_index, "raw": {name: tensor.detach().cpu() for name, tensor in self.raw.items()},
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "subject": self.subject, "config": dataclasses.asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; ValueError naming what differs when it is another run's (another
        prompt or image, other settings; only ``steps`` may grow)."""
        missing = {"step", "raw", "optimizer", "generator", "subject", "config"} - set(state)
        if missing:
            raise ValueError(f"not a distillation checkpoint: it lacks {sorted(missing)}")
        if state["subject"] != self.subject:
            raise ValueError(f"the checkpoint distils {state['subject']!r}, this run {self.subject!r}: use another output")
        ours = dataclasses.asdict(self.config)
        differ = sorted(name for name in ours if name != "steps" and _plain(state["config"].get(name)) != _plain(ours[name]))
        if differ:
            raise ValueError("the checkpoint was made with other settings (" + ", ".join(
                f"{name} {state['config'].get(name)!r} there, {ours[name]!r} here" for name in differ)
                + "): use another output, or the same settings")
        with torch.no_grad():
            for name in PARAMETERS:
                self.raw[name].copy_(state["raw"][name].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step_index = int(state["step"])

    def orbit_views(self, elevation: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The current scene rendered at G's orbit (default: the middle of the elevation range):
        views [F, 3, H, W] in [0, 1] and their c2w [F, 4, 4]."""
        elevation = sum(self.elevations) / 2 if elevation is None else elevation
        c2w = self.orbit(elevation)
        with torch.no_grad():
            return self.render(self.gaussians(), c2w).clamp(0, 1), c2w


def _plain(value: Any) -> Any:
    """A setting as compared across a checkpoint (tuples and lists alike)."""
    return list(value) if isinstance(value, (tuple, list)) else value


def seconds_left(done: int, total: int, elapsed: float) -> float:
    """The ETA of a run at ``done`` of ``total`` steps after ``elapsed`` seconds (inf before the first)."""
    return math.inf if done == 0 else elapsed / done * (total - done)
