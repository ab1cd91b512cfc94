"""The tiny model's VAE learns to reconstruct the views it will encode, and is saved and re-loaded
through the published-model code path with its latent scale."""

from __future__ import annotations

import pytest
import torch

from models.toy.autoencoder import reconstruction_psnr, train_autoencoder
from models.pipeline_videomv.loading import model_resolution
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.toy.tiny import build_tiny, save_tiny


def _blobs(count: int, size: int) -> torch.Tensor:
    """[N, 3, size, size] in [-1, 1]: coloured discs at different places on grey."""
    generator = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(count, 3, size, size)
    for index in range(count):
        centre = torch.rand(2, generator=generator) * size * 0.6 + size * 0.2
        disc = ((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) < (size * 0.2) ** 2
        colour = torch.rand(3, generator=generator) * 2 - 1
        images[index] = torch.where(disc, colour.view(3, 1, 1), torch.zeros(3, 1, 1))
    return images


@pytest.mark.slow
def test_the_autoencoder_learns_and_sets_its_latent_scale(tmp_path):
    model = build_tiny("t2v", resolution=32, latent_downsample=8, latent_channels=8, prediction="v")
    images = _blobs(8, 32)
    report = train_autoencoder(model.vae, images, steps=150, batch_size=8, seed=0)
    assert report.psnr > report.untrained_psnr + 8.0, report
    assert report.psnr == pytest.approx(reconstruction_psnr(model.vae, images), abs=1e-4)
    assert model.vae.config.scaling_factor == pytest.approx(report.scaling_factor)
    latents = model.encode_views(images[None], sample=False)
    assert latents.shape == (1, 8, 8, 4, 4)
    assert latents.std().item() == pytest.approx(1.0, rel=0.05)  # unit scale for the UNet

    save_tiny(model, str(tmp_path / "tiny"))
    loaded = VideoMVPipeline.from_pretrained(str(tmp_path / "tiny"))
    assert model_resolution(str(tmp_path / "tiny")) == 32
    assert loaded.vae.config.scaling_factor == pytest.approx(report.scaling_factor)
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    assert reconstruction_psnr(loaded.vae, images) == pytest.approx(report.psnr, abs=1e-3)


def test_bad_inputs_are_named():
    vae = build_tiny("t2v").vae
    with pytest.raises(ValueError, match=r"images must be \[N, 3, H, W\]"):
        train_autoencoder(vae, torch.zeros(2, 32, 32), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_autoencoder(vae, torch.zeros(2, 3, 32, 32), steps=0)
    with pytest.raises(ValueError, match="latent_downsample"):
        build_tiny("t2v", latent_downsample=3)
    with pytest.raises(ValueError, match="prediction"):
        build_tiny("t2v", prediction="x0")
