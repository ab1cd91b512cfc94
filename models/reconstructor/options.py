"""Options of the LGM reconstructor (a small dataclass, as LGM's ``core/options.py``).

Presets: "big" (LGM's released ``model_fp16_fixrot.safetensors``: 128x128 splats per view, 65,536
Gaussians from 4 views), "small" (LGM's default: 64x64 splats) and "tiny" (tests, CPU demo).

Cameras: "big" and "small" keep LGM's own camera setting (fov 49.1 deg, view 0 at radius 1.5), the
one the official weights were trained with; our 39.6-deg renders at distance 2.0 are read through it
(``LGM.normalisation``). "tiny", trained here from scratch, follows VideoMV: the renders' own fov and
a rigid transform at the true distance. ``PRESET_TRAINING`` holds each preset's training recipe.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import camera


LGM_FOV_DEG = 49.1  # LGM's training renders (core/options.py ``fovy``)
LGM_CAM_RADIUS = 1.5  # LGM's camera radius after normalisation


@dataclass(frozen=True)
class LGMOptions:
    """Architecture and camera settings of one LGM model.

    Attributes:
        input_size: input views are input_size x input_size.
        down_channels / down_attention: encoder stages (attention = multi-view self-attention).
        mid_attention: attention in the bottleneck.
        up_channels / up_attention: decoder stages; fewer than the encoder (the asymmetry), so the
            output is input_size / 2^(len(down)-1) * 2^(len(up)-1) pixels: ``splat_size``.
        layers_per_block: ResNet blocks per encoder stage (decoder: one more).
        norm_groups: GroupNorm groups (LGM: 32; "tiny" uses fewer channels).
        attention_heads: heads of every attention layer.
        num_input_views: views given to the model (4: azimuths 0, 90, 180, 270 at inference).
        fov: vertical field of view in degrees the reconstructor's rays and renders use (views taken
            at another fov are read through a camera dolly: ``LGM.normalisation``).
        cam_radius: distance at which the first input camera is placed after normalisation (None:
            its true distance, a rigid transform).
        output_size: the largest resolution at which Gaussians are rendered for supervision (never
            above the targets' own: ``models.reconstructor.training``).
    """

    input_size: int = 256
    down_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)
    down_attention: tuple[bool, ...] = (False, False, False, True, True, True)
    mid_attention: bool = True
    up_channels: tuple[int, ...] = (1024, 1024, 512, 256)
    up_attention: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    norm_groups: int = 32
    attention_heads: int = 16
    num_input_views: int = 4
    fov: float = LGM_FOV_DEG
    cam_radius: float | None = LGM_CAM_RADIUS
    output_size: int = 256

    def __post_init__(self) -> None:
        for name in ("down_channels", "down_attention", "up_channels", "up_attention"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.down_channels) != len(self.down_attention) or len(self.up_channels) != len(self.up_attention):
            raise ValueError("channels and attention flags must have the same length")
        if len(self.up_channels) > len(self.down_channels):
            raise ValueError("the decoder cannot have more stages than the encoder")
        if self.input_size % 2 ** (len(self.down_channels) - 1):
            raise ValueError(f"input_size {self.input_size} must be divisible by 2^{len(self.down_channels) - 1}")

    @property
    def splat_size(self) -> int:
        """Gaussians per view along each side."""
        return self.input_size // 2 ** (len(self.down_channels) - 1) * 2 ** (len(self.up_channels) - 1)

    @property
    def num_gaussians(self) -> int:
        return self.num_input_views * self.splat_size**2

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LGMOptions":
        return cls(**json.loads(text))


PRESETS = {
    "big": LGMOptions(up_channels=(1024, 1024, 512, 256, 128), up_attention=(True, True, True, False, False),
                      output_size=512),
    "small": LGMOptions(),
    "tiny": LGMOptions(input_size=64, down_channels=(16, 32, 64), down_attention=(False, False, True),
                       up_channels=(64, 32), up_attention=(True, False), layers_per_block=1, norm_groups=8,
                       attention_heads=4, output_size=64, fov=camera.DEFAULT_FOV_DEG, cam_radius=None),
}


@dataclass(frozen=True)
class TrainingRecipe:
    """A preset's training defaults.

    Attributes:
        lr: AdamW learning rate. "big" fine-tunes the official weights at VideoMV's 3e-5; "small"
            trains from scratch at LGM's 4e-4; "tiny" (toy scale, few steps) at 2e-3.
        lpips_required: the LPIPS term (weight 1.0) is part of the recipe: training refuses to
            start without its weights. "tiny" may go without it (CPU tests have no VGG weights).
    """

    lr: float
    lpips_required: bool


PRESET_TRAINING = {
    "big": TrainingRecipe(lr=3e-5, lpips_required=True),
    "small": TrainingRecipe(lr=4e-4, lpips_required=True),
    "tiny": TrainingRecipe(lr=2e-3, lpips_required=False),
}
SKIP_SCALE = math.sqrt(0.5)
