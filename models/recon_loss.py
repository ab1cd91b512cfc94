"""The reconstructor's loss (LGM): MSE on RGB + MSE on alpha + LPIPS(VGG), all views supervised.

LPIPS needs pre-trained VGG16 and lpips "lin" weights, which are never downloaded here: give both
paths to include the term (weight 1.0), otherwise it is left out with a warning.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from models.lpips import LPIPS

LPIPS_WEIGHT = 1.0
LPIPS_MAX_SIZE = 256  # LGM evaluates LPIPS at 256 px


class ReconstructionLoss(nn.Module):
    def __init__(self, lpips: LPIPS | None = None, lpips_weight: float = LPIPS_WEIGHT) -> None:
        super().__init__()
        self.lpips = lpips
        self.lpips_weight = lpips_weight

    @classmethod
    def from_paths(cls, vgg_path: str | None = None, lin_path: str | None = None,
                   lpips_weight: float = LPIPS_WEIGHT) -> "ReconstructionLoss":
        """With both weight files the LPIPS term is included, otherwise left out (with a warning)."""
        if vgg_path and lin_path:
            return cls(LPIPS.from_files(vgg_path, lin_path), lpips_weight)
        warnings.warn(
            "LPIPS weights not given (VGG16 and lpips lin .pth files): the LPIPS term is left out of the "
            "reconstruction loss; only RGB and alpha MSE are used", stacklevel=2,
        )
        return cls(None, lpips_weight)

    def forward(self, rgb: torch.Tensor, alpha: torch.Tensor, target_rgb: torch.Tensor,
                target_alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions and targets [B, V, C, H, W] in [0, 1] -> {"loss", "mse_rgb", "mse_alpha", "lpips"}."""
        terms = {"mse_rgb": F.mse_loss(rgb, target_rgb), "mse_alpha": F.mse_loss(alpha, target_alpha)}
        loss = terms["mse_rgb"] + terms["mse_alpha"]
        if self.lpips is not None:
            prediction, target = rgb.flatten(0, 1), target_rgb.flatten(0, 1)
            if prediction.shape[-1] > LPIPS_MAX_SIZE:
                size = (LPIPS_MAX_SIZE, LPIPS_MAX_SIZE)
                prediction = F.interpolate(prediction, size, mode="bilinear", align_corners=False)
                target = F.interpolate(target, size, mode="bilinear", align_corners=False)
            terms["lpips"] = self.lpips(prediction, target).mean()
            loss = loss + self.lpips_weight * terms["lpips"]
        terms["loss"] = loss
        return terms
