"""Diffusion identities on a diffusers scheduler (eps, v and x0 predictions).

Two parametrisations of the sample, by scheduler class:
- variance-preserving (DDIM, DDPM, PNDM, DPM-Solver, UniPC, DEIS): with a_t = alphas_cumprod[t],
  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps and v = sqrt(a_t) eps - sqrt(1 - a_t) x0;
- sigma-scaled (Euler, Euler ancestral, LMS, Heun, KDPM2, KDPM2 ancestral, DPM-Solver SDE): the
  sample is x = x0 + sigma eps and the model sees x / sqrt(sigma^2 + 1). sigma is read from the
  scheduler's own ``scale_model_input`` at its current step (Heun's and KDPM2's second stages use
  another sigma than the first), so it is the one the model was given; the identities are then the
  variance-preserving ones on x / sqrt(sigma^2 + 1) with a = 1 / (sigma^2 + 1).
Other schedulers (flow matching, EDM preconditioning, ...) are refused by name. Tensors are latents
[B, C, F, h, w]; t is [B] or a scalar (sigma-scaled schedulers: the current step's scalar).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

VARIANCE_PRESERVING = ("DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
                       "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler")
SIGMA_SCALED = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler",
                "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
                "DPMSolverSDEScheduler")


def parametrisation(scheduler: SchedulerMixin) -> str:
    """"variance-preserving" or "sigma-scaled"; ValueError naming any other scheduler."""
    name = type(scheduler).__name__
    if name in VARIANCE_PRESERVING:
        return "variance-preserving"
    if name in SIGMA_SCALED:
        return "sigma-scaled"
    raise ValueError(f"{name} is not supported where x0 is computed from the model's output (3D-aware sampling, "
                     f"one-step x0): use one of {', '.join(VARIANCE_PRESERVING + SIGMA_SCALED)}")


def _coefficients(scheduler, timesteps: torch.Tensor, like: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """(signal, noise, input scale): x_vp = input scale x = signal x0 + noise eps."""
    if parametrisation(scheduler) == "sigma-scaled":
        scale = scheduler.scale_model_input(torch.ones((), device=like.device), timesteps).to(like.dtype)
        return scale, (1 - scale**2).clamp(min=0).sqrt(), scale
    alphas = scheduler.alphas_cumprod.to(like.device)[torch.as_tensor(timesteps, device=like.device).long()]
    alphas = alphas.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)
    return alphas.sqrt(), (1 - alphas).sqrt(), 1.0


def predict_x0(scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latents implied by the model's output (eps- or v-prediction, per the scheduler)."""
    signal, noise, scale = _coefficients(scheduler, timesteps, sample)
    sample = sample * scale
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (sample - noise * model_output) / signal
    if kind == "v_prediction":
        return signal * sample - noise * model_output
    raise ValueError(f"unsupported prediction type {kind!r}")


def predict_epsilon(scheduler: SchedulerMixin, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The noise implied by the model's output (eps- or v-prediction, per the scheduler)."""
    signal, noise, scale = _coefficients(scheduler, timesteps, sample)
    return (sample * scale - signal * predict_x0(scheduler, sample, model_output, timesteps)) / noise


def output_from_x0(scheduler: SchedulerMixin, sample: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The model output (eps or v) that ``predict_x0`` maps to ``x0`` at ``sample``: used when x0 is
    replaced (3D-aware sampling) so that the scheduler's next step uses the new x0."""
    signal, noise, scale = _coefficients(scheduler, timesteps, sample)
    eps = (sample * scale - signal * x0) / noise
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return signal * eps - noise * x0
    raise ValueError(f"unsupported prediction type {kind!r}")


def scheduler_step_kwargs(scheduler: SchedulerMixin, eta: float) -> dict[str, float]:
    """``eta`` for schedulers whose ``step`` takes it (DDIM), nothing for the others (DPM-Solver,
    Euler, ...): the filtering diffusers' own pipelines do."""
    return {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
