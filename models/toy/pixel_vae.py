"""A lossless stand-in for the VAE: pixel (un)shuffle, so small experiments train G in pixel space.

``PixelShuffleVAE`` has the slice of ``AutoencoderKL``'s interface that ``VideoMVPipeline`` uses
(``encode(x).latent_dist.sample() / .mode()``, ``decode(z).sample``, ``config.latent_channels``,
``config.scaling_factor``, ``config.block_out_channels`` for the resolution): a [3, H, W] image in
[-1, 1] becomes [3 f^2, H / f, W / f] latents and back, exactly. It has no weights, so an
experiment measures the UNet, the camera embedding, the objective and the sampler alone, without
a VAE's reconstruction error (issue 13's camera-control experiment).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


@dataclass
class _Posterior:
    """A point mass at ``latents`` (``AutoencoderKL``'s ``latent_dist``, without the spread)."""

    latents: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latents

    def mode(self) -> torch.Tensor:
        return self.latents


@dataclass
class _Encoded:
    latent_dist: _Posterior


@dataclass
class _Decoded:
    sample: torch.Tensor


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """[N, 3, H, W] <-> [N, 3 f^2, H / f, W / f] by ``pixel_unshuffle`` / ``pixel_shuffle``.

    Args:
        factor: f, the spatial downsampling (a power of two).
        scaling_factor: latents are multiplied by it (1.0: images in [-1, 1] are already near unit scale).
    """

    @register_to_config
    def __init__(self, factor: int = 2, scaling_factor: float = 1.0, latent_channels: int | None = None,
                 block_out_channels: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"factor must be a power of two, got {factor}")
        # Derived entries, stored so configs read like AutoencoderKL's (resolution = sample_size *
        # 2 ** (len(block_out_channels) - 1)).
        self.register_to_config(latent_channels=3 * factor * factor,
                                block_out_channels=tuple([1] * (factor.bit_length())))
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def encode(self, images: torch.Tensor) -> _Encoded:
        return _Encoded(_Posterior(F.pixel_unshuffle(images, self.config.factor)))

    def decode(self, latents: torch.Tensor) -> _Decoded:
        return _Decoded(F.pixel_shuffle(latents, self.config.factor))
