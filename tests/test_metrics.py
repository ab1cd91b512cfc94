"""Evaluation metrics on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.metrics import psnr, ssim


def images(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_psnr_known_values():
    a = images()
    assert torch.isinf(psnr(a, a)).all()
    shifted = (a + 0.1).clamp(max=10)  # a constant offset of 0.1: MSE 0.01 -> 20 dB
    torch.testing.assert_close(psnr(shifted, a), torch.full((2,), 20.0))
    half = torch.full((1, 3, 8, 8), 0.5)
    assert psnr(torch.zeros_like(half), half).item() == pytest.approx(10 * math.log10(4), rel=1e-5)


def test_ssim_known_values():
    a = images()
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    # A constant offset keeps structure: only the luminance term drops, slightly.
    assert (ssim((a + 0.05), a) > 0.95).all()
    # Blur loses structure; stronger blur loses more; independent noise images share none.
    weak = F.avg_pool2d(F.pad(a, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    strong = F.avg_pool2d(F.pad(a, (3, 3, 3, 3), mode="reflect"), 7, stride=1)
    assert (ssim(strong, a) < ssim(weak, a)).all() and (ssim(weak, a) < 0.9).all()
    assert ssim(images(1), a).abs().max() < 0.1
    # Symmetric in its arguments.
    torch.testing.assert_close(ssim(weak, a), ssim(a, weak))


def test_view_accuracy_finds_each_views_camera():
    from pipeline.result_scores import view_accuracy

    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(24, 3, 8, 8, generator=generator)
    assert view_accuracy(truth, truth) == 1.0
    assert view_accuracy(truth.roll(1, dims=0), truth) == 1.0  # one azimuth step off: tolerated
    assert view_accuracy(truth.roll(5, dims=0), truth) == 0.0
    assert view_accuracy(truth.flip(0), truth) < 0.2  # a reversed orbit matches only near its ends
    flat = torch.full_like(truth, 0.5)
    assert view_accuracy(flat, truth) <= 3 / 24
