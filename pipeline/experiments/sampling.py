"""Sampling from a ``SamplingConfig``: the pipeline's call as a config and a result in tensors,
for the experiments and their tests (production code calls the pipeline itself).

``sample_views(pipe, prompts=..., config=...)`` is ``pipe(...)`` with the config's steps, guidance,
cameras, seeds (one CPU generator per sample) and 3D-aware steps; the loop is ``VideoMVPipeline.__call__``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from models.gaussians.gaussians import Gaussians
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline, sampling_defaults
from models.pipeline_videomv.three_d_aware import MODES
from models.reconstructor.model import LGM


@dataclass
class SamplingConfig:
    num_inference_steps: int = 50
    eta: float = 0.0
    guidance_scale: float | None = None  # None: the variant's default
    elevation: float | None = None
    distance: float | None = None
    seeds: tuple[int, ...] = (0,)  # one per sample (a single seed is used for every sample)
    reconstruct_at: tuple[int, ...] = field(default_factory=tuple)  # see ``three_d_aware.reconstruction_steps``
    mode: str = "two"
    negative_prompt: str | None = None  # None: the model's recorded one, else the authors' (``models.prompts``)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be positive")

    def resolved(self, variant: str, training_cameras: dict[str, list[float]] | None = None) -> "SamplingConfig":
        """Every None filled: the variant's defaults, moved inside ``training_cameras`` when given
        (``pipeline_videomv.sampling_defaults``, what the pipeline's call does)."""
        guidance, elevation, distance = sampling_defaults(variant, training_cameras, self.guidance_scale,
                                                          self.elevation, self.distance)
        return SamplingConfig(num_inference_steps=self.num_inference_steps, eta=self.eta, seeds=tuple(self.seeds),
                              reconstruct_at=tuple(self.reconstruct_at), mode=self.mode,
                              negative_prompt=self.negative_prompt, guidance_scale=guidance, elevation=elevation,
                              distance=distance)


@dataclass
class SamplingResult:
    views: torch.Tensor  # [B, F, 3, H, W] in [0, 1]
    cameras: torch.Tensor  # [B, F, 4, 4] OpenGL c2w, world frame
    gaussians: Gaussians | None  # [B, N, ...] world frame, reconstructed from the final views
    reconstructions: int  # reconstructor calls made during denoising (not counting the final one)


@contextlib.contextmanager
def reconstructor_in(pipe: VideoMVPipeline, reconstructor: LGM | None) -> Iterator[VideoMVPipeline]:
    """``pipe`` with ``reconstructor`` in place of its own for the duration (its own when None)."""
    if reconstructor is None:
        yield pipe
        return
    own = pipe.reconstructor
    pipe.reconstructor = reconstructor
    try:
        yield pipe
    finally:
        pipe.reconstructor = own


@torch.no_grad()
def sample_views(pipe: VideoMVPipeline, prompts: list[str] | None = None, images: torch.Tensor | None = None,
                 config: SamplingConfig | None = None, reconstructor: LGM | None = None,
                 cameras: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                 on_step_end: Callable[[int, torch.Tensor, dict[str, torch.Tensor]], dict | None] | None = None,
                 prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None) -> SamplingResult:
    """Sample views (and Gaussians when there is a reconstructor) as ``config`` says: the pipeline's
    call, so prompts get the caption suffix the model recorded, as everywhere else.

    Args:
        prompts: B prompts (T2V). images: [B, 3, H, W] in [-1, 1] (I2VGen-XL).
        config: steps, guidance, cameras, seeds, 3D-aware steps (``reconstruct_at``) and form.
        reconstructor: LGM instead of the pipeline's own; needed when ``config.reconstruct_at`` is not empty.
        cameras: [B, F, 4, 4] c2w given to the camera embedding instead of the config's orbit.
        latents: the initial noise [B, C, F, h, w]; default: drawn from ``config.seeds``.
        on_step_end: ``on_step_end(step_index, timestep, {"latents": latents})`` after every step;
            a returned dict's ``latents`` replace the current ones.
        prompt_embeds, negative_prompt_embeds: [B, L, D] text-encoder states instead of ``prompts``
            and the negative prompt (T2V).
    """
    config = config or SamplingConfig()
    batch = (len(prompts) if prompts is not None else len(prompt_embeds) if prompt_embeds is not None
             else images.shape[0])
    seeds = config.seeds if len(config.seeds) == batch else tuple(config.seeds[0] for _ in range(batch))
    callback = None if on_step_end is None else (lambda _, index, timestep, state: on_step_end(index, timestep, state))
    with reconstructor_in(pipe, reconstructor):
        output = pipe(prompt=prompts, image=None if images is None else (images.float() + 1) / 2,
                      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds], latents=latents,
                      elevation=config.elevation, distance=config.distance,
                      three_d_aware=tuple(config.reconstruct_at), three_d_aware_mode=config.mode, eta=config.eta,
                      cameras=cameras, output_type="pt", callback_on_step_end=callback,
                      negative_prompt=config.negative_prompt, prompt_embeds=prompt_embeds,
                      negative_prompt_embeds=negative_prompt_embeds)
    return SamplingResult(output.frames, torch.as_tensor(output.cameras), output.gaussians, output.reconstructions)
