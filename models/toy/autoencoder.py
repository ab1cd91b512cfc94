"""Train a (tiny) ``AutoencoderKL`` on rendered views, then set its latent scale.

The published video models come with a trained VAE; a tiny model built here (``models/toy/tiny.py``)
does not, and G cannot learn pictures through a random decoder. This fits the VAE to the views
it will encode (reconstruction L1 + MSE, a small KL term as Stable Diffusion's VAE has), then sets
``config.scaling_factor`` to 1 / std of the posterior means, the convention diffusers' VAEs follow
so the UNet sees latents of unit scale.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from models.metrics.image import psnr

logger = logging.getLogger(__name__)


@dataclass
class AutoencoderReport:
    """What ``train_autoencoder`` measured.

    Attributes:
        psnr: mean reconstruction PSNR (dB) of the training views through encode (mean) -> decode.
        untrained_psnr: the same before training (a control: the random VAE).
        scaling_factor: the latent scale set on the VAE.
        losses: training loss per step.
        seconds: training time.
    """

    psnr: float
    untrained_psnr: float
    scaling_factor: float
    losses: list[float]
    seconds: float


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 32) -> float:
    """Mean PSNR (dB, images mapped to [0, 1]) of ``images`` [N, 3, H, W] in [-1, 1] through the
    VAE's posterior mean and decoder."""
    values = []
    for chunk in images.split(batch_size):
        decoded = vae.decode(vae.encode(chunk).latent_dist.mode()).sample
        values.append(psnr((decoded.clamp(-1, 1) + 1) / 2, (chunk + 1) / 2))
    return float(torch.cat(values).mean())


def train_autoencoder(vae: AutoencoderKL, images: torch.Tensor, steps: int, batch_size: int = 16, lr: float = 2e-3,
                      kl_weight: float = 1e-6, seed: int = 0, log_every: int = 100) -> AutoencoderReport:
    """AdamW on every VAE weight; sets ``vae.config.scaling_factor``; returns the report.

    Args:
        vae: the autoencoder, trained in place.
        images: [N, 3, H, W] in [-1, 1], H and W the VAE's input size.
        kl_weight: weight of KL(posterior || N(0, I)), per latent element.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    vae.eval()
    untrained = reconstruction_psnr(vae, images)
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.05)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    began = time.perf_counter()
    for step in range(1, steps + 1):
        batch = images[torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator,
                                     device=generator.device)]
        posterior = vae.encode(batch).latent_dist
        decoded = vae.decode(posterior.sample(generator)).sample
        loss = F.l1_loss(decoded, batch) + F.mse_loss(decoded, batch) + kl_weight * posterior.kl().mean() / (
            posterior.mean[0].numel())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            logger.info("autoencoder step %d/%d loss %.4f, %.2f s/step", step, steps, loss.item(),
                        (time.perf_counter() - began) / step)
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in images.split(32)])
    scaling_factor = float(1.0 / means.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scaling_factor)
    return AutoencoderReport(psnr=reconstruction_psnr(vae, images), untrained_psnr=untrained,
                             scaling_factor=scaling_factor, losses=losses, seconds=time.perf_counter() - began)
