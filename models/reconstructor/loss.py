"""The reconstructor's loss (LGM): MSE on RGB + MSE on alpha + LPIPS(VGG), all views supervised.

LPIPS needs pre-trained VGG16 and lpips "lin" weights, which are never downloaded here: give the
VGG16 file to include the term (weight 1.0); the lin weights default to torchmetrics' bundled copy.
Where the recipe requires it (the "big" and "small" presets, ``models.reconstructor.options.PRESET_TRAINING``)
a missing weight file is an error; elsewhere the term is left out (the training job's driver says
so once: ``pipeline.train.reconstructor.with_preset_recipe``).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from models.metrics.lpips import LPIPS, bundled_lin_weights

LPIPS_WEIGHT = 1.0
LPIPS_MAX_SIZE = 256  # LGM evaluates LPIPS at 256 px


class ReconstructionLoss(nn.Module):
    def __init__(self, lpips: LPIPS | None = None, lpips_weight: float = LPIPS_WEIGHT) -> None:
        super().__init__()
        self.lpips = lpips
        self.lpips_weight = lpips_weight

    @classmethod
    def from_paths(cls, vgg_path: str | None = None, lin_path: str | None = None,
                   lpips_weight: float = LPIPS_WEIGHT, required: bool = False) -> "ReconstructionLoss":
        """With both weight files (``lin_path`` defaults to ``bundled_lin_weights()``) the LPIPS term
        is included. Without them: ValueError when ``required``, else the term is left out."""
        lin_path = lin_path or bundled_lin_weights()
        if vgg_path and lin_path:
            return cls(LPIPS.from_files(vgg_path, lin_path), lpips_weight)
        if required:
            raise ValueError(f"the reconstruction loss of this preset includes LPIPS, but "
                             f"{missing_lpips(vgg_path, lin_path)} (the VGG16 and lpips 'lin' .pth weight files) "
                             "is not given")
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


def missing_lpips(vgg_path: str | None, lin_path: str | None) -> str:
    """The LPIPS weight flags not given, e.g. "--lpips-vgg" (the lin weights count as given when
    torchmetrics bundles them)."""
    lin_path = lin_path or bundled_lin_weights()
    return " and ".join(flag for flag, path in (("--lpips-vgg", vgg_path), ("--lpips-lin", lin_path)) if not path)
