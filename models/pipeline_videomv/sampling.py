"""3D-aware denoising sampling of 24 views from G (paper 3.4), with Gaussians as a by-product.

DDIM (diffusers' scheduler), eta 0, classifier-free guidance (9.0 text / 6.0 image), orbit cameras
from the ``camera`` module (elevation 15 deg for text, 5 deg for image, at the renders' distance 2.0).
A fine-tuned model records its training cameras (``CameraEmbedding.config.training_cameras``): the
defaults are moved inside them, and an orbit outside them is logged as a warning (extrapolation).

At the configured steps the predicted x0 is decoded, views 0, 6, 12, 18 go through the
reconstructor, the Gaussians are rendered at all cameras on the model's background, re-encoded, and
REPLACE x0; the model output is recomputed from (x_t, new x0) and the DDIM step continues. Two forms:
- "two" (the authors' code): the conditional and the unconditional x0 are each reconstructed and
  guidance is applied to the two recomputed outputs (two reconstructions per step);
- "one": the guided x0 is reconstructed once.
When the views are done, the final Gaussians are reconstructed from them (in world coordinates).
A reconstructor that carries a renders-vs-x0 measurement (``models.reconstructor.renders_vs_x0``) is used only at
the steps where its renders were measured not worse than x0 (by more than 0.5 dB).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import camera
from models.generator.camera_embedding import camera_problems, inside
from models.gaussians.rendering import render_batch
from models.gaussians.gaussians import Gaussians
from models.reconstructor.model import LGM
from models.pipeline_videomv.loading import MultiViewModel
from models.prompts import negative_prompt_of
from models.generator.schedule import output_from_x0, parametrisation, predict_x0

# The authors sample the image model at distance 1.7, but it must see the cameras it was trained on:
# the render job's (``camera.DEFAULT_DISTANCE``) or the model's recorded training cameras.
DEFAULTS = {
    "t2v": {"guidance_scale": 9.0, "elevation": 15.0, "background": (0.5, 0.5, 0.5)},
    "i2v": {"guidance_scale": 6.0, "elevation": 5.0, "background": (1.0, 1.0, 1.0)},
}
logger = logging.getLogger(__name__)
AUTHORS_STEPS = (20, 30, 40)  # step indices of 50 where the official code reconstructs (t = 581, 381, 181)
MODES = ("two", "one")


def reconstruction_steps(steps: int, schedule: str = "authors", every: int = 10, skip: int = 20) -> tuple[int, ...]:
    """Step indices (0-based) at which x0 is reconstructed.

    "authors": 20, 30, 40 of 50, scaled to ``steps``; "every": every ``every`` steps after the first
    ``skip`` (the paper's description); "none": plain DDIM.
    """
    if schedule == "none":
        return ()
    if schedule == "authors":
        return tuple(sorted({min(steps - 1, round(index * steps / 50)) for index in AUTHORS_STEPS}))
    if schedule == "every":
        return tuple(range(skip, steps, every))
    raise ValueError(f"unknown reconstruction schedule {schedule!r}: use authors, every or none")


@dataclass
class SamplingConfig:
    steps: int = 50
    eta: float = 0.0
    guidance_scale: float | None = None  # None: the variant's default
    elevation: float | None = None
    distance: float | None = None
    seeds: tuple[int, ...] = (0,)  # one per sample (a single seed is used for every sample)
    reconstruct_at: tuple[int, ...] = field(default_factory=tuple)  # see ``reconstruction_steps``
    mode: str = "two"
    negative_prompt: str | None = None  # None: the model's recorded one, else the authors' (``models.prompts``)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1:
            raise ValueError("steps must be positive")

    def resolved(self, variant: str, training_cameras: dict[str, list[float]] | None = None) -> "SamplingConfig":
        """Every None filled: the variant's defaults, moved inside ``training_cameras`` when given."""
        defaults = DEFAULTS[variant]
        return SamplingConfig(
            steps=self.steps, eta=self.eta, seeds=tuple(self.seeds), reconstruct_at=tuple(self.reconstruct_at),
            mode=self.mode, negative_prompt=self.negative_prompt,
            guidance_scale=defaults["guidance_scale"] if self.guidance_scale is None else self.guidance_scale,
            elevation=inside(training_cameras, "elevation", defaults["elevation"]) if self.elevation is None
            else self.elevation,
            distance=inside(training_cameras, "distance", camera.DEFAULT_DISTANCE) if self.distance is None
            else self.distance,
        )


def training_cameras(model: MultiViewModel) -> dict[str, list[float]] | None:
    """The cameras G's camera embedding was fine-tuned on (None: not recorded)."""
    return model.unet.camera_embedding.config.get("training_cameras")


@dataclass
class SamplingResult:
    views: torch.Tensor | None  # [B, F, 3, H, W] in [0, 1]; None when only the latents were asked for
    cameras: torch.Tensor  # [B, F, 4, 4] OpenGL c2w, world frame
    gaussians: Gaussians | None  # [B, N, ...] world frame, reconstructed from the final views
    reconstructions: int  # reconstructor calls made during denoising (not counting the final one)
    latents: torch.Tensor | None = None  # [B, C, F, h, w] the final latents


def orbit_cameras(model: MultiViewModel, config: SamplingConfig, batch: int) -> torch.Tensor:
    """[B, F, 4, 4] orbit c2w for the model's frame count."""
    c2w = camera.orbit_c2w(config.elevation, camera.orbit_azimuths(model.unet.num_frames), config.distance)
    return torch.tensor(c2w, dtype=torch.float32, device=model.device)[None].expand(batch, -1, -1, -1)


def input_view_indices(frames: int, count: int = 4) -> tuple[int, ...]:
    """Views given to the reconstructor: evenly spaced azimuths (0, 6, 12, 18 of 24)."""
    return tuple(round(i * frames / count) for i in range(count))


def reconstruct_views(lgm: LGM, views: torch.Tensor, cameras: torch.Tensor, background: tuple[float, float, float],
                      size: int | None = None) -> tuple[torch.Tensor, Gaussians, torch.Tensor]:
    """Views [B, F, 3, H, W] in [0, 1] at ``cameras`` -> (the Gaussians rendered at every camera
    [B, F, 3, size, size], the Gaussians in the normalised frame, the normalising transforms [B, 4, 4])."""
    indices = list(input_view_indices(views.shape[1], lgm.options.num_input_views))
    return reconstruct_inputs(lgm, views[:, indices], cameras, background, size or views.shape[-1])


def reconstruct_inputs(lgm: LGM, inputs: torch.Tensor, cameras: torch.Tensor, background: tuple[float, float, float],
                       size: int) -> tuple[torch.Tensor, Gaussians, torch.Tensor]:
    """``reconstruct_views`` from the reconstructor's input views alone: ``inputs`` [B, V, 3, H, W]
    in [0, 1] are the views at ``input_view_indices(F, V)`` of ``cameras`` [B, F, 4, 4] (so that a
    3D-aware step decodes only those)."""
    indices = list(input_view_indices(cameras.shape[1], inputs.shape[1]))
    gaussians, transforms = lgm.reconstruct(inputs.float(), cameras[:, indices].float())
    rendered, _ = render_batch(gaussians, lgm.normalise_cameras(transforms, cameras.float()), lgm.options.fov,
                               size, background)
    return rendered.clamp(0, 1), gaussians, transforms


def to_world(gaussians: Gaussians, transforms: torch.Tensor) -> Gaussians:
    """Batched Gaussians from the reconstructor's normalised frames back to world coordinates."""
    scenes = [gaussians[b].transformed(torch.linalg.inv(transforms[b].double()).float()) for b in range(len(transforms))]
    return Gaussians(**{name: torch.stack([getattr(s, name) for s in scenes])
                        for name in ("means", "quats", "scales", "opacities", "colors")})


def measured_steps(reconstructor: LGM | None, steps: tuple[int, ...], timesteps: torch.Tensor) -> tuple[int, ...]:
    """``steps`` (indices into ``timesteps``) less those where the reconstructor's measurement says its
    renders are worse than x0 (all of them when it carries none)."""
    if reconstructor is None or reconstructor.renders_vs_x0 is None:
        return steps
    kept = tuple(i for i in steps if reconstructor.renders_vs_x0.helps(int(timesteps[i])))
    if kept != steps:
        left_out = [int(timesteps[i]) for i in steps if i not in kept]
        logger.info("3D-aware reconstruction left out at t = %s: the reconstructor's renders were measured worse "
                    "than x0 there", left_out)
    return kept


def conditioning(model: MultiViewModel, prompts: list[str] | None, images: torch.Tensor | None,
                 batch: int, negative_prompt: str | None = None, prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None) -> tuple[dict, dict]:
    """(conditional, unconditional) UNet inputs, the authors' pairs: the prompt vs the negative prompt
    (T2V); the image embedding and "" vs zeros and the negative prompt, with the same image latents
    (I2V). ``negative_prompt`` None: the model's recorded one, else the authors' (``negative_prompt_of``).
    ``prompt_embeds`` / ``negative_prompt_embeds`` [B, L, D]: text-encoder states given instead (T2V)."""
    negative = negative_prompt_of(model.unet.camera_embedding.config, negative_prompt)
    if model.variant == "t2v":
        if prompts is None and prompt_embeds is None:
            raise ValueError("the t2v model needs prompts")
        positive = prompt_embeds.to(model.device) if prompt_embeds is not None else model.encode_prompts(prompts)
        unconditional = (negative_prompt_embeds.to(model.device) if negative_prompt_embeds is not None
                         else model.encode_prompts([negative] * batch))
        return {"encoder_hidden_states": positive}, {"encoder_hidden_states": unconditional}
    if images is None:
        raise ValueError("the i2v model needs condition images")
    condition = model.image_condition(images, model.unet.num_frames)
    unconditional = {**condition, "image_embeddings": torch.zeros_like(condition["image_embeddings"])}
    return ({**condition, "encoder_hidden_states": model.encode_prompts([""] * batch)},
            {**unconditional, "encoder_hidden_states": model.encode_prompts([negative] * batch)})


def scheduler_step_kwargs(scheduler: Any, eta: float) -> dict[str, Any]:
    """``eta`` for schedulers whose ``step`` takes it (DDIM), nothing for the others (DPM-Solver,
    Euler, ...): the filtering diffusers' own pipelines do."""
    return {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}


def initial_latents(model: MultiViewModel, seeds: tuple[int, ...], batch: int) -> torch.Tensor:
    """Noise [B, C, F, h, w], each sample from its own seed (reproducible whatever the batch)."""
    unet = model.unet.unet
    size = unet.config.sample_size
    shape = (model.vae.config.latent_channels, model.unet.num_frames, size, size)
    seeds = seeds if len(seeds) == batch else tuple(seeds[0] for _ in range(batch))
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)), device="cpu") for seed in seeds]
    return torch.stack(noise).to(model.device) * model.scheduler.init_noise_sigma


@torch.no_grad()
def sample_views(model: MultiViewModel, prompts: list[str] | None = None, images: torch.Tensor | None = None,
                 config: SamplingConfig | None = None, reconstructor: LGM | None = None,
                 cameras: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                 on_step_end: Callable[[int, torch.Tensor, dict[str, torch.Tensor]], dict | None] | None = None,
                 prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                 output_latents: bool = False) -> SamplingResult:
    """Sample views (and Gaussians when a reconstructor is given).

    Args:
        prompts: B prompts (T2V). images: [B, 3, H, W] in [-1, 1] (I2VGen-XL).
        config: steps, guidance, cameras, seeds, 3D-aware steps (``reconstruct_at``) and form.
        reconstructor: LGM; needed when ``config.reconstruct_at`` is not empty.
        cameras: [B, F, 4, 4] c2w given to the camera embedding instead of the config's orbit
            (experiments: zeroed or reordered cameras). Leave None with a reconstructor.
        latents: the initial noise [B, C, F, h, w] (already scaled by ``init_noise_sigma``);
            default: drawn from ``config.seeds``.
        on_step_end: called as ``on_step_end(step_index, timestep, {"latents": latents})`` after
            every denoising step (progress, stopping by raising); a returned dict's ``latents``
            replace the current ones.
        prompt_embeds, negative_prompt_embeds: [B, L, D] text-encoder states instead of ``prompts``
            and the negative prompt (T2V).
        output_latents: return the final latents only (no decoding, no final Gaussians).
    """
    batch = (len(prompts) if prompts is not None else len(prompt_embeds) if prompt_embeds is not None
             else images.shape[0])
    recorded = training_cameras(model)
    config = (config or SamplingConfig()).resolved(model.variant, recorded)
    if config.reconstruct_at and reconstructor is None:
        raise ValueError("3D-aware steps need a reconstructor")
    if config.reconstruct_at:
        parametrisation(model.scheduler)  # a scheduler whose x0 cannot be computed is refused by name
    if cameras is None:
        for problem in camera_problems(recorded, elevation=config.elevation, distance=config.distance,
                                       fov=camera.DEFAULT_FOV_DEG):
            logger.warning("%s: the views there are extrapolation", problem)
    background = DEFAULTS[model.variant]["background"]
    cameras = orbit_cameras(model, config, batch) if cameras is None else cameras.to(model.device).float()
    conditional, unconditional = conditioning(model, prompts, images, batch, config.negative_prompt, prompt_embeds,
                                              negative_prompt_embeds)
    scheduler = model.scheduler
    scheduler.set_timesteps(config.steps, device=model.device)
    latents = initial_latents(model, config.seeds, batch) if latents is None else latents.to(model.device)
    step_kwargs = scheduler_step_kwargs(scheduler, config.eta)
    reconstruct_at = measured_steps(reconstructor, config.reconstruct_at, scheduler.timesteps)
    guided = config.guidance_scale != 1.0
    reconstructions = 0
    input_indices = list(input_view_indices(cameras.shape[1], reconstructor.options.num_input_views)
                         if reconstructor is not None else ())

    def replace_x0(sample: torch.Tensor, output: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        nonlocal reconstructions
        x0 = predict_x0(scheduler, sample, output.float(), timestep)
        # Only the reconstructor's input views are decoded (as the authors do).
        inputs = (model.decode_latents(x0[:, :, input_indices]) / 2 + 0.5).clamp(0, 1)
        rendered, _, _ = reconstruct_inputs(reconstructor, inputs, cameras, background, model.resolution)
        reconstructions += 1
        new_x0 = model.encode_views(rendered * 2 - 1, sample=False).float()
        return output_from_x0(scheduler, sample, new_x0, timestep)

    # With guidance, one UNet call on the doubled batch [conditional; unconditional], as diffusers' pipelines do.
    paired = {name: torch.cat([conditional[name], unconditional[name]]) for name in conditional} if guided else None
    paired_cameras = torch.cat([cameras, cameras]) if guided else None
    for index, timestep in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, timestep).to(model.unet.dtype)
        if guided:
            output, baseline = model.unet(torch.cat([model_input, model_input]), timestep, cameras=paired_cameras,
                                          **paired).float().chunk(2)
        else:
            output, baseline = model.unet(model_input, timestep, cameras=cameras, **conditional).float(), None
        if index in reconstruct_at:
            if config.mode == "two" and guided:
                output, baseline = replace_x0(latents, output, timestep), replace_x0(latents, baseline, timestep)
            else:
                if guided:
                    output = baseline + config.guidance_scale * (output - baseline)
                    baseline = None
                output = replace_x0(latents, output, timestep)
        if baseline is not None:
            output = baseline + config.guidance_scale * (output - baseline)
        latents = scheduler.step(output, timestep, latents, **step_kwargs).prev_sample
        if on_step_end is not None:
            changed = on_step_end(index, timestep, {"latents": latents})
            if changed and changed.get("latents") is not None:
                latents = changed["latents"]
    if output_latents:
        return SamplingResult(None, cameras, None, reconstructions, latents)
    views = (model.decode_latents(latents) / 2 + 0.5).clamp(0, 1).float()
    gaussians = None
    if reconstructor is not None:
        _, normalised, transforms = reconstruct_views(reconstructor, views, cameras, background)
        gaussians = to_world(normalised, transforms)
    return SamplingResult(views, cameras, gaussians, reconstructions, latents)
