"""The scores the paper's protocol is made of, plain PyTorch: image scores (PSNR / SSIM / LPIPS) of
views against views, flow-warping RMSE between frames 1 and 6 apart, and the metric networks they
need. The protocol for one sample (fitting Gaussians to the even views) is evaluation's:
``pipeline/evaluation/sample_scores.py``.

Metric networks are optional: a score whose network was not given is left out of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.metrics.clip_score import CLIPScorer
from models.metrics.lpips import LPIPS
from models.metrics.image import flow_warping_rmse, psnr, ssim
from models.metrics.raft import RAFT

FLOW_INTERVALS = (1, 6)
LPIPS_MIN_SIZE = 64  # VGG's five pooling stages need some room: smaller images are upsampled


@dataclass
class MetricNetworks:
    lpips: LPIPS | None = None
    clip: CLIPScorer | None = None
    raft: RAFT | None = None
    raft_iterations: int = 12

    @classmethod
    def from_paths(cls, lpips_vgg: str | None = None, lpips_lin: str | None = None, clip: str | None = None,
                   raft: str | None = None, raft_iterations: int = 12) -> "MetricNetworks":
        """Load each network whose weights are given (local paths only; missing files raise). LPIPS
        needs ``lpips_vgg``; its lin weights default to torchmetrics' bundled copy."""
        if lpips_lin is not None and lpips_vgg is None:
            raise ValueError("LPIPS needs the VGG16 backbone weights too (--lpips-vgg), not only the lin layers")
        return cls(lpips=LPIPS.from_files(lpips_vgg, lpips_lin) if lpips_vgg else None,
                   clip=CLIPScorer.from_pretrained(clip) if clip else None,
                   raft=RAFT.from_file(raft) if raft else None, raft_iterations=raft_iterations)

    def to(self, device: str | torch.device) -> "MetricNetworks":
        """Move the LPIPS and RAFT networks (CLIP stays on the CPU with its processor)."""
        for network in (self.lpips, self.raft):
            if network is not None:
                network.to(device)
        return self

    def flow(self, sources: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.raft(sources, targets, iterations=self.raft_iterations)

    def names(self) -> list[str]:
        """The metric networks available, for logging."""
        return [name for name in ("lpips", "clip", "raft") if getattr(self, name) is not None]


def image_scores(prediction: torch.Tensor, target: torch.Tensor, lpips: LPIPS | None) -> dict[str, float]:
    """Mean PSNR, SSIM (and LPIPS) of ``prediction`` against ``target``, both [N, 3, H, W] in [0, 1]."""
    scores = {"psnr": float(psnr(prediction, target).mean()), "ssim": float(ssim(prediction, target).mean())}
    if lpips is not None:
        device = next(lpips.parameters()).device
        a, b = prediction.float().to(device), target.float().to(device)
        if a.shape[-1] < LPIPS_MIN_SIZE:
            a = F.interpolate(a, size=LPIPS_MIN_SIZE, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=LPIPS_MIN_SIZE, mode="bilinear", align_corners=False)
        with torch.no_grad():
            scores["lpips"] = float(lpips(a, b).mean())
    return scores


def consistency_scores(views: torch.Tensor, networks: MetricNetworks) -> dict[str, float]:
    """Flow-warping RMSE at each of ``FLOW_INTERVALS`` (needs RAFT): views [F, 3, H, W]."""
    if networks.raft is None:
        return {}
    device = next(networks.raft.parameters()).device
    return {f"flow_rmse_{interval}": float(flow_warping_rmse(views.to(device), networks.flow, interval).mean())
            for interval in FLOW_INTERVALS if interval < len(views)}
