"""LPIPS (VGG) perceptual distance, plain PyTorch, loading weights from local files only.

Same network and parameter names as the ``lpips`` package's VGG variant: torchvision's VGG16
``features`` (checkpoint ``vgg16-397923af.pth``, keys ``features.N.weight``) cut after relu1_2,
relu2_2, relu3_3, relu4_3, relu5_3, channel-normalised, weighted by 1x1 "lin" layers (lpips'
``weights/v0.1/vgg.pth``, keys ``lin0.model.1.weight`` ...) and averaged over space.
Nothing is downloaded. The lin weights default to the copy torchmetrics ships
(``torchmetrics/functional/image/lpips_models/vgg.pth``, the same file as lpips'); the VGG16
backbone must be given (``vgg16-397923af.pth``, e.g. from torch's hub cache).
"""

from __future__ import annotations

import os

import torch
from torch import nn

# VGG16 "D" configuration: convolution widths, "M" = max-pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def bundled_lin_weights() -> str | None:
    """The lpips VGG "lin" weights shipped inside the torchmetrics package (None if absent)."""
    import importlib.util

    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "functional", "image", "lpips_models", "vgg.pth")
    return path if os.path.isfile(path) else None


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


class _Lin(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """``forward(a, b)`` with images [N, 3, H, W] in [0, 1] -> distances [N]. Frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        for index, channels in enumerate(_CHANNELS):
            self.add_module(f"lin{index}", _Lin(channels))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, vgg_path: str, lin_path: str | None = None) -> "LPIPS":
        """torchvision VGG16 weights + lpips linear weights (local ``.pth`` state dicts; the lin
        weights default to ``bundled_lin_weights()``)."""
        lin_path = lin_path or bundled_lin_weights()
        if lin_path is None:
            raise FileNotFoundError("no lpips lin weights given and torchmetrics (which bundles them) is not installed")
        for path in (vgg_path, lin_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"LPIPS weights not found: {path}")
        model = cls()
        vgg = torch.load(vgg_path, map_location="cpu", weights_only=True)
        lin = torch.load(lin_path, map_location="cpu", weights_only=True)
        try:
            model.features.load_state_dict(
                {k[len("features."):]: v for k, v in vgg.items() if k.startswith("features.")}, strict=True)
            for index in range(len(_CHANNELS)):
                prefix = f"lin{index}."
                getattr(model, f"lin{index}").load_state_dict(
                    {k[len(prefix):]: v for k, v in lin.items() if k.startswith(prefix)}, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"LPIPS weights {vgg_path} / {lin_path} do not match VGG16 + lpips lin layers: {error}") from error
        return model

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b]) * 2.0 - 1.0  # lpips expects [-1, 1]
        x = (x - self.shift) / self.scale
        distance = 0.0
        tap = 0
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == _TAPS[tap]:
                fa, fb = x.chunk(2)
                fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
                fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
                lin = getattr(self, f"lin{tap}").model
                distance = distance + lin((fa - fb) ** 2).mean(dim=(2, 3)).flatten()
                tap += 1
                if tap == len(_TAPS):
                    break
        return distance

