"""RAFT optical flow (Teed & Deng 2020), plain PyTorch, loading weights from a local file only.

The architecture and parameter names are those of the reference implementation
(princeton-vl/RAFT ``core/``, the full model), so its published checkpoints (``raft-things.pth``,
``raft-sintel.pth``; saved from ``nn.DataParallel``, keys prefixed ``module.``) load strictly.
torchvision's ``raft_large`` checkpoints (``raft_large_C_T_SKHT_V2-ff5fadd5.pth`` and the others of
``Raft_Large_Weights``) load too: torchvision's RAFT is the same network under other names
(``feature_encoder.layer1.0.convnormrelu1.0.weight`` is our ``fnet.layer1.0.conv1.weight``), and
``tests/test_metrics.py`` checks that both give the same flow on the same weights. Nothing is
downloaded: the file must be given.

Conventions: images [N, 3, H, W] in [0, 1] (any H, W: edge-padded to multiples of 8, and to at least
128 px since the coarsest of the 4 correlation levels must be at least 2x2, then cropped back);
flow [N, 2, H, W] in pixels, channel 0 = x (right), channel 1 = y (down), mapping each pixel of the
first image to its position in the second.
"""

from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from models.metrics.warping import bilinear_sample, coordinate_grid

HIDDEN = 128
CONTEXT = 128
CORRELATION_LEVELS = 4
CORRELATION_RADIUS = 4
MIN_SIZE = 8 * 2**CORRELATION_LEVELS  # 128 px: the coarsest correlation level is 2x2 (1x1 divides by 0)

# torchvision's raft_large names -> the reference's, as (pattern, replacement) applied in order.
_TORCHVISION_NAMES = (
    (r"^feature_encoder\.", "fnet."),
    (r"^context_encoder\.", "cnet."),
    (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."),
    (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.convnormrelu([12])\.0\.", r".conv\1."),
    (r"\.convnormrelu([12])\.1\.", r".norm\1."),
    (r"^update_block\.motion_encoder\.conv(corr|flow)([12])\.0\.",
     lambda m: f"update_block.encoder.conv{m[1][0]}{m[2]}."),
    (r"^update_block\.motion_encoder\.conv\.0\.", "update_block.encoder.conv."),
    (r"^update_block\.recurrent_block\.convgru([12])\.conv([zrq])\.", r"update_block.gru.conv\2\1."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
    (r"^mask_predictor\.conv\.", "update_block.mask.2."),
)


def reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A RAFT state dict under the reference's names, from the reference's or torchvision's.

    ``module.`` prefixes (``nn.DataParallel``) are dropped. torchvision keeps a strided block's
    shortcut norm once (``downsample.1``); the reference registers it twice (``downsample.1`` and
    ``norm3``), so it is given under both names.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if not any(key.startswith("feature_encoder.") for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _TORCHVISION_NAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
        if ".downsample.1." in key:
            renamed[key.replace(".downsample.1.", ".norm3.")] = value
    return renamed


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


class ResidualBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1 = _norm(norm, planes)
        self.norm2 = _norm(norm, planes)
        self.downsample = None
        if stride != 1:
            # Registered twice, as in the reference, so both key names are in the state dict.
            self.norm3 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BasicEncoder(nn.Module):
    """Image [N, 3, H, W] in [-1, 1] -> features [N, output_dim, H/8, W/8]."""

    def __init__(self, output_dim: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 64)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, norm), ResidualBlock(64, 64, norm))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, norm, 2), ResidualBlock(96, 96, norm))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, norm, 2), ResidualBlock(128, 128, norm))
        self.conv2 = nn.Conv2d(128, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class MotionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        planes = CORRELATION_LEVELS * (2 * CORRELATION_RADIUS + 1) ** 2
        self.convc1 = nn.Conv2d(planes, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, correlation: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(correlation))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], 1))), flow], 1)


class SepConvGRU(nn.Module):
    """A convolutional GRU applied twice: 1x5 (horizontal) then 5x1 (vertical) kernels."""

    def __init__(self, hidden: int = HIDDEN, inputs: int = 128 + CONTEXT) -> None:
        super().__init__()
        for suffix, kernel, padding in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in ("z", "r", "q"):
                self.add_module(f"conv{gate}{suffix}", nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for suffix in ("1", "2"):
            hx = torch.cat([h, x], 1)
            z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
            q = torch.tanh(getattr(self, f"convq{suffix}")(torch.cat([r * h, x], 1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(HIDDEN, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = MotionEncoder()
        self.gru = SepConvGRU()
        self.flow_head = FlowHead()
        self.mask = nn.Sequential(nn.Conv2d(HIDDEN, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 64 * 9, 1))

    def forward(self, net: torch.Tensor, context: torch.Tensor, correlation: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        motion = self.encoder(flow, correlation)
        net = self.gru(net, torch.cat([context, motion], 1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


class CorrelationPyramid:
    """All-pairs correlation of two feature maps, pooled to 4 levels, looked up in a radius-4 window."""

    def __init__(self, features1: torch.Tensor, features2: torch.Tensor) -> None:
        batch, dim, height, width = features1.shape
        correlation = features1.flatten(2).transpose(1, 2) @ features2.flatten(2) / dim**0.5
        correlation = correlation.reshape(batch * height * width, 1, height, width)
        self.levels = [correlation]
        for _ in range(CORRELATION_LEVELS - 1):
            correlation = F.avg_pool2d(correlation, 2, stride=2)
            self.levels.append(correlation)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        radius = CORRELATION_RADIUS
        batch, _, height, width = coords.shape
        offsets = torch.linspace(-radius, radius, 2 * radius + 1, device=coords.device)
        # The reference adds the first meshgrid axis to x: it fixes the order of the 81 channels.
        delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)[None]  # [1, 9, 9, 2]
        centres = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        windows = [bilinear_sample(level, centres / 2**index + delta).view(batch, height, width, -1)
                   for index, level in enumerate(self.levels)]
        return torch.cat(windows, dim=-1).permute(0, 3, 1, 2).contiguous()


class RAFT(nn.Module):
    """``forward(image1, image2, iterations)`` -> flow [N, 2, H, W] (see the module docstring). Frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.fnet = BasicEncoder(256, "instance")
        self.cnet = BasicEncoder(HIDDEN + CONTEXT, "batch")
        self.update_block = UpdateBlock()
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str) -> "RAFT":
        """A reference RAFT checkpoint (``raft-things.pth``; ``module.`` prefixes are optional) or a
        torchvision ``raft_large`` one (``raft_large_C_T_SKHT_V2-ff5fadd5.pth``)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"RAFT weights not found: {path}")
        state = reference_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model = cls()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{path} is not a RAFT (full model) checkpoint: {error}") from error
        return model

    @staticmethod
    def _upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Convex upsampling [N, 2, h, w] -> [N, 2, 8h, 8w] with the learned 3x3 weights."""
        n, _, h, w = flow.shape
        mask = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
        neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
        up = (mask * neighbours).sum(dim=2).permute(0, 1, 4, 2, 5, 3)
        return up.reshape(n, 2, 8 * h, 8 * w)

    @torch.no_grad()
    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iterations: int = 12) -> torch.Tensor:
        if iterations < 1:
            raise ValueError("RAFT needs at least one update iteration")
        height, width = image1.shape[-2:]
        pad_h, pad_w = max(MIN_SIZE - height, (-height) % 8), max(MIN_SIZE - width, (-width) % 8)
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        images = F.pad(torch.cat([image1, image2]).float() * 2 - 1, padding, mode="replicate")
        features1, features2 = self.fnet(images).chunk(2)
        correlation = CorrelationPyramid(features1, features2)
        net, context = self.cnet(images[: len(image1)]).split([HIDDEN, CONTEXT], dim=1)
        net, context = torch.tanh(net), torch.relu(context)
        coords0 = coordinate_grid(len(image1), images.shape[-2] // 8, images.shape[-1] // 8, images.device)
        coords1 = coords0.clone()
        for _ in range(iterations):
            net, mask, delta = self.update_block(net, context, correlation(coords1), coords1 - coords0)
            coords1 = coords1 + delta
        flow = self._upsample(coords1 - coords0, mask)
        return flow[..., padding[2]: padding[2] + height, padding[0]: padding[0] + width]
