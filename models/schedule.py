"""Diffusion identities on a diffusers scheduler's cumulative alphas (eps, v and x0 predictions).

With a_t = alphas_cumprod[t]: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps and
v = sqrt(a_t) eps - sqrt(1 - a_t) x0. Tensors are latents [B, C, F, h, w]; t is [B] or a scalar.
"""

from __future__ import annotations

import torch


def _coefficients(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alphas = scheduler.alphas_cumprod.to(like.device)[torch.as_tensor(timesteps, device=like.device).long()]
    alphas = alphas.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
    return alphas.sqrt(), (1 - alphas).sqrt()


def predict_x0(scheduler, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latents implied by the model's output (eps- or v-prediction, per the scheduler)."""
    signal, noise = _coefficients(scheduler, timesteps, sample)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (sample - noise * model_output) / signal
    if kind == "v_prediction":
        return signal * sample - noise * model_output
    raise ValueError(f"unsupported prediction type {kind!r}")


def output_from_x0(scheduler, sample: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The model output (eps or v) that ``predict_x0`` maps to ``x0`` at ``sample``: used when x0 is
    replaced (3D-aware sampling) so that the scheduler's next step uses the new x0."""
    signal, noise = _coefficients(scheduler, timesteps, sample)
    eps = (sample - signal * x0) / noise
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return signal * eps - noise * x0
    raise ValueError(f"unsupported prediction type {kind!r}")
