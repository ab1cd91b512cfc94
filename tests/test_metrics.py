"""Evaluation metrics on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.metrics.image import psnr, ssim

# The CPU build of torch has no torchvision on PyPI; make test-reference runs these in a venv with one.
NO_TORCHVISION = "torchvision is not installed for this torch build (make test-reference has it)"


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


def degraded_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, target) pairs from slightly to very different, [1, 3, 48, 48] in [0, 1]."""
    a = images()[:1]
    blurred = F.avg_pool2d(F.pad(a, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    return [(blurred, a), (noisy, a), (a * 0.8 + 0.1, a), (images(1)[:1], a)]


def test_psnr_and_ssim_equal_the_reference_libraries():
    # (torchmetrics' SSIM is not compared: it scores the border region differently, 2e-3 apart here.)
    """Tolerances: 1e-4 dB for PSNR and 1e-4 for SSIM (float32 here, float64 in scikit-image)."""
    metrics = pytest.importorskip("skimage.metrics")
    from torchmetrics.functional.image import peak_signal_noise_ratio

    for prediction, target in degraded_pairs():
        ours_psnr, ours_ssim = psnr(prediction, target).item(), ssim(prediction, target).item()
        x, y = prediction[0].double().numpy(), target[0].double().numpy()
        assert ours_psnr == pytest.approx(metrics.peak_signal_noise_ratio(y, x, data_range=1.0), abs=1e-4)
        assert ours_psnr == pytest.approx(peak_signal_noise_ratio(prediction, target, data_range=1.0).item(), abs=1e-4)
        # Wang et al.'s SSIM: Gaussian window sigma 1.5 (11 x 11), population covariances, valid region.
        reference = metrics.structural_similarity(x, y, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                                  sigma=1.5, use_sample_covariance=False)
        assert ours_ssim == pytest.approx(reference, abs=1e-4)


def test_lpips_equals_the_reference_implementation_on_the_same_weights(tmp_path):
    """Our LPIPS against torchmetrics' (the lpips package's network) with the same VGG16 and lin
    weights. torchmetrics builds its VGG16 from torchvision, which only installs beside a matching
    torch build (scripts/setup.sh: GPU machines, and CPU machines that reach PyTorch's CPU index)."""
    pytest.importorskip("torchvision", reason=NO_TORCHVISION)
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    from models.metrics.lpips import LPIPS, bundled_lin_weights

    reference = _NoTrainLpips(net="vgg", pretrained=True, pnet_rand=True).eval()  # random VGG, bundled lin
    torch.save({f"features.{k}": v for k, v in _vgg_features(reference).items()}, tmp_path / "vgg16.pth")
    ours = LPIPS.from_files(str(tmp_path / "vgg16.pth"))
    assert bundled_lin_weights() is not None
    for prediction, target in degraded_pairs():
        expected = reference(prediction * 2 - 1, target * 2 - 1).flatten()
        torch.testing.assert_close(ours(prediction, target), expected, atol=1e-5, rtol=1e-4)


def _vgg_features(reference: torch.nn.Module) -> dict[str, torch.Tensor]:
    """torchvision-VGG16 ``features`` keys of the reference network's five slices."""
    state = {}
    for slice_index in range(1, 6):
        for key, value in getattr(reference.net, f"slice{slice_index}").state_dict().items():
            state[key] = value
    return state


def test_raft_equals_torchvisions_raft_large_on_its_checkpoint(tmp_path):
    """Our RAFT loads a torchvision ``raft_large`` checkpoint and gives torchvision's flow.

    The weights are torchvision's random initialisation with random batch-norm statistics (the
    published checkpoints are downloads), saved the way torchvision publishes them (a plain state
    dict). torchvision's RAFT takes images in [-1, 1] with sides divisible by 8; ours takes [0, 1].
    Tolerance: 1e-4 px, float32 on the same operations."""
    pytest.importorskip("torchvision", reason=NO_TORCHVISION)
    from torchvision.models.optical_flow import raft_large

    from models.metrics.raft import RAFT

    torch.manual_seed(0)
    reference = raft_large(weights=None, progress=False).eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    torch.save(reference.state_dict(), tmp_path / "raft_large_C_T_SKHT_V2-ff5fadd5.pth")
    ours = RAFT.from_file(str(tmp_path / "raft_large_C_T_SKHT_V2-ff5fadd5.pth"))
    first = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    second = torch.roll(first, shifts=(3, -5), dims=(2, 3))
    with torch.no_grad():
        expected = reference(first * 2 - 1, second * 2 - 1, num_flow_updates=4)[-1]
    assert expected.abs().max() > 0.5  # a flow worth comparing, not zeros
    torch.testing.assert_close(ours(first, second, iterations=4), expected, atol=1e-4, rtol=1e-4)


def test_view_accuracy_finds_each_views_camera():
    from pipeline.evaluation.result_scores import view_accuracy

    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(24, 3, 8, 8, generator=generator)
    assert view_accuracy(truth, truth) == 1.0
    assert view_accuracy(truth.roll(1, dims=0), truth) == 1.0  # one azimuth step off: tolerated
    assert view_accuracy(truth.roll(5, dims=0), truth) == 0.0
    assert view_accuracy(truth.flip(0), truth) < 0.2  # a reversed orbit matches only near its ends
    flat = torch.full_like(truth, 0.5)
    assert view_accuracy(flat, truth) <= 3 / 24
