"""DDIM sampling of 24 views from G, with classifier-free guidance (paper 3.4 without the 3D step).

``sample_views`` draws views for text prompts (T2V) or condition images (I2VGen-XL) at the orbit
cameras of the ``camera`` module. Defaults follow the authors: 50 DDIM steps, eta 0, guidance 9.0
(text) / 6.0 (image), elevation 15 deg at distance 2.0 (text) / 5 deg at 1.7 (image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import camera
from models.multiview_model import MultiViewModel

DEFAULTS = {
    "t2v": {"guidance_scale": 9.0, "elevation": 15.0, "distance": 2.0},
    "i2v": {"guidance_scale": 6.0, "elevation": 5.0, "distance": 1.7},
}


@dataclass
class SamplingConfig:
    steps: int = 50
    eta: float = 0.0
    guidance_scale: float | None = None  # None: the variant's default
    elevation: float | None = None
    distance: float | None = None
    seed: int = 0

    def resolved(self, variant: str) -> "SamplingConfig":
        defaults = DEFAULTS[variant]
        return SamplingConfig(
            steps=self.steps, eta=self.eta, seed=self.seed,
            guidance_scale=defaults["guidance_scale"] if self.guidance_scale is None else self.guidance_scale,
            elevation=defaults["elevation"] if self.elevation is None else self.elevation,
            distance=defaults["distance"] if self.distance is None else self.distance,
        )


def orbit_cameras(model: MultiViewModel, config: SamplingConfig, batch: int) -> torch.Tensor:
    """[B, F, 4, 4] orbit c2w for the model's frame count."""
    c2w = camera.orbit_c2w(config.elevation, camera.orbit_azimuths(model.unet.num_frames), config.distance)
    return torch.tensor(c2w, dtype=torch.float32, device=model.device)[None].expand(batch, -1, -1, -1)


def latent_shape(model: MultiViewModel, batch: int) -> tuple[int, ...]:
    unet = model.unet.unet
    size = unet.config.sample_size
    return (batch, model.vae.config.latent_channels, model.unet.num_frames, size, size)


def conditioning(model: MultiViewModel, prompts: list[str] | None, images: torch.Tensor | None,
                 batch: int) -> tuple[dict, dict]:
    """(conditional, unconditional) UNet inputs: prompt vs "" (T2V); image embedding vs zeros (I2V)."""
    if model.variant == "t2v":
        if prompts is None:
            raise ValueError("the t2v model needs prompts")
        return ({"encoder_hidden_states": model.encode_prompts(prompts)},
                {"encoder_hidden_states": model.encode_prompts([""] * batch)})
    if images is None:
        raise ValueError("the i2v model needs condition images")
    condition = model.image_condition(images, model.unet.num_frames)
    empty = model.encode_prompts([""] * batch)
    unconditional = {**condition, "image_embeddings": torch.zeros_like(condition["image_embeddings"])}
    return {**condition, "encoder_hidden_states": empty}, {**unconditional, "encoder_hidden_states": empty}


@torch.no_grad()
def sample_views(model: MultiViewModel, prompts: list[str] | None = None, images: torch.Tensor | None = None,
                 config: SamplingConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample views.

    Args:
        prompts: B prompts (T2V). images: [B, 3, H, W] in [-1, 1] (I2VGen-XL).
    Returns:
        views [B, F, 3, H, W] in [0, 1] and their cameras [B, F, 4, 4] (OpenGL c2w).
    """
    batch = len(prompts) if prompts is not None else images.shape[0]
    config = (config or SamplingConfig()).resolved(model.variant)
    cameras = orbit_cameras(model, config, batch)
    conditional, unconditional = conditioning(model, prompts, images, batch)
    scheduler = model.scheduler
    scheduler.set_timesteps(config.steps, device=model.device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    latents = torch.randn(latent_shape(model, batch), generator=generator).to(model.device) * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, timestep).to(model.unet.dtype)
        prediction = model.unet(model_input, timestep, cameras=cameras, **conditional)
        if config.guidance_scale != 1.0:
            baseline = model.unet(model_input, timestep, cameras=cameras, **unconditional)
            prediction = baseline + config.guidance_scale * (prediction - baseline)
        latents = scheduler.step(prediction, timestep, latents, eta=config.eta, generator=generator).prev_sample
    views = (model.decode_latents(latents) / 2 + 0.5).clamp(0, 1)
    return views.float(), cameras
