"""Measuring 3D-aware denoising: G's one-step x0 against its re-rendering through the reconstructor.

At a 3D-aware step the sampler replaces G's predicted x0 by render(LGM(x0 at views 0, 6, 12, 18)).
``measure_renders_vs_x0`` asks whether that is closer to the truth: ground-truth orbits are noised to
``t`` (the forward process), G predicts x0 in one step, and both x0 and the renders of the
reconstructed Gaussians are scored against the truth on the views that are not the reconstructor's
inputs. The result (``RendersVsX0``) decides where the sampler may use the renders.
"""

from __future__ import annotations

import contextlib

import torch

from models.metrics.scores import image_scores
from models.reconstructor.model import LGM
from models.metrics.lpips import LPIPS
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.reconstructor.renders_vs_x0 import RendersVsX0
from models.pipeline_videomv.three_d_aware import input_view_indices, reconstruct_views
from models.generator.schedule import parametrisation, predict_x0
from models.variants import VARIANTS

AUTHORS_TIMESTEPS = (581, 381, 181)  # steps 20, 30, 40 of the authors' 50-step DDIM


@torch.no_grad()
def one_step_x0(model: VideoMVPipeline, views: torch.Tensor, cameras: torch.Tensor, prompts: list[str],
                timesteps: torch.Tensor, generator: torch.Generator, frames: list[int] | torch.Tensor | None = None,
                autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """G's one-step prediction of clean views from the truth noised to ``timesteps``.

    Args:
        views: [B, F, 3, H, W] ground truth in [-1, 1]; cameras: [B, F, 4, 4] c2w.
        prompts: B prompts (T2V; the image model is conditioned on view 0 and an empty prompt).
        timesteps: [B] integer diffusion timesteps; generator: draws the VAE sample and the noise.
        frames: decode only these frames of the prediction (the reconstructor's input views: the
            VAE decode of 24 frames costs more than the UNet step); None: all.
        autocast_dtype: run the UNet under autocast in this dtype (as in training), None: as loaded.
    Returns:
        predicted views [B, F', 3, H, W] in [0, 1], F' = len(frames) or F.
    """
    return decode_x0(model, one_step_x0_latents(model, views, cameras, prompts, timesteps, generator, autocast_dtype),
                     frames)


def decode_x0(model: VideoMVPipeline, x0: torch.Tensor, frames: list[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Predicted latents [B, C, F, h, w] -> views [B, F', 3, H, W] in [0, 1], decoding only ``frames``."""
    if frames is not None:
        x0 = x0[:, :, torch.as_tensor(frames, device=x0.device)]
    return (model.decode_latents(x0) / 2 + 0.5).clamp(0, 1).float()


@torch.no_grad()
def one_step_x0_latents(model: VideoMVPipeline, views: torch.Tensor, cameras: torch.Tensor, prompts: list[str],
                        timesteps: torch.Tensor, generator: torch.Generator,
                        autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``one_step_x0`` before decoding: the predicted clean latents [B, C, F, h, w] (float32)."""
    scheduler = model.scheduler
    if parametrisation(scheduler) != "variance-preserving":
        raise ValueError(f"one-step x0 noises the truth to arbitrary timesteps, which {type(scheduler).__name__} "
                         "(sigma-scaled, step-indexed) cannot: give the model a variance-preserving scheduler (DDIM)")
    latents = model.encode_views(views, generator).float()
    timesteps = timesteps.to(latents.device)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    image = views[:, 0] if VARIANTS[model.variant].takes_image else None
    condition = model.encode_condition([False] * len(latents), prompts, image, num_frames=latents.shape[2],
                                       device=latents.device)
    precision = (torch.autocast(latents.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                 else contextlib.nullcontext())
    with precision:
        output = model.denoiser(noisy.to(model.denoiser.dtype), timesteps, cameras=cameras, **condition)
    return predict_x0(scheduler, noisy, output.float(), timesteps)


@torch.no_grad()
def measure_renders_vs_x0(model: VideoMVPipeline, reconstructor: LGM, views: torch.Tensor, cameras: torch.Tensor,
                          prompts: list[str], timesteps: tuple[int, ...] = AUTHORS_TIMESTEPS, seed: int = 0,
                          lpips: LPIPS | None = None) -> RendersVsX0:
    """Scores of x0 and of render(LGM(x0)) against the truth, per timestep.

    Args:
        views: [B, F, 3, H, W] ground-truth orbits in [0, 1] at G's resolution, on the variant's
            background; cameras: [B, F, 4, 4] their c2w (orbits G and the reconstructor did not train on).
        prompts: their captions (T2V).
        seed: the noise, the same for every timestep.
    Returns:
        mean PSNR/SSIM (and LPIPS when given) over the F - 4 views that are not the reconstructor's
        inputs, and the PSNR of the renders when the reconstructor is given the truth itself.
    """
    background = model.background
    inputs = input_view_indices(views.shape[1], reconstructor.options.num_input_views)
    others = [i for i in range(views.shape[1]) if i not in inputs]
    views, cameras = views.to(model.device).float(), cameras.to(model.device).float()
    truth = views[:, others].flatten(0, 1)
    measured: dict[str, list[float]] = {}
    for t in timesteps:
        generator = torch.Generator(device=model.device).manual_seed(seed)
        x0 = one_step_x0(model, views * 2 - 1, cameras, prompts, torch.full((len(views),), t), generator)
        rendered, _, _ = reconstruct_views(reconstructor, x0, cameras, background)
        for name, prediction in (("render", rendered), ("x0", x0)):
            for metric, value in image_scores(prediction[:, others].flatten(0, 1), truth, lpips).items():
                measured.setdefault(f"{name}_{metric}", []).append(value)
    rendered, _, _ = reconstruct_views(reconstructor, views, cameras, background)
    ceiling = image_scores(rendered[:, others].flatten(0, 1), truth, None)["psnr"]
    return RendersVsX0(t=list(timesteps), truth_render_psnr=ceiling, **measured)
