"""Per-frame camera embedding of VideoMV (paper 3.2, supp. 7.1).

Each frame's camera-to-world matrix (OpenGL camera axes, Y-up world: the ``camera`` module's
convention), flattened row-major to 16 numbers, goes through Linear(16, E) -> SiLU -> Linear(E, E).
The last layer starts at zero, so a fresh embedding adds nothing and the fine-tune starts exactly as
the video model. E is the UNet's time-embedding width (1280 for ModelScope T2V and I2VGen-XL).

The config also records the cameras the embedding was trained on (``training_cameras``: elevation,
distance and fov ranges of the fine-tuning orbits), so that samplers can stay inside them
(``camera.training_cameras``); a published video model's zero embedding has none.
"""

from __future__ import annotations


import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

POSE_DIM = 16
# How far outside a recorded range a camera may be before it counts as unseen.


class CameraEmbedding(ModelMixin, ConfigMixin):
    """Camera pose -> time-embedding residual.

    Args:
        embedding_dim: E, the width of the UNet's time embedding.
        num_frames: frames (views) per sample the model is trained for (24).
        training_cameras: {"elevation": [lo, hi], "distance": [lo, hi], "fov": [lo, hi]} of the
            fine-tuning orbits (degrees, world units, degrees), or None when unknown.
        prompt_suffix: what fine-tuning appended to every caption (", 3d asset"), which the
            pipeline appends to prompts (``models.prompts``); None: nothing recorded.
        negative_prompt: the text that fine-tuning's dropped samples got, which guidance guides
            against (``models.prompts.negative_prompt_of``); None: nothing recorded.
        fps: the frame-rate condition the image model was fine-tuned with, which sampling gives it
            too (the authors': 8); None: I2VGen-XL's own, 16.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, embedding_dim: int, num_frames: int = 24,
                 training_cameras: dict[str, list[float]] | None = None, prompt_suffix: str | None = None,
                 negative_prompt: str | None = None, fps: int | None = None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(POSE_DIM, embedding_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embedding_dim, embedding_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, cameras: torch.Tensor) -> torch.Tensor:
        """cameras: [B, F, 4, 4] or [B, F, 16] c2w -> [B * F, E] (batch-major, frame-minor)."""
        if cameras.shape[-2:] == (4, 4):
            cameras = cameras.flatten(-2)
        if cameras.ndim != 3 or cameras.shape[-1] != POSE_DIM:
            raise ValueError(f"cameras must be [B, F, 4, 4] or [B, F, 16], got {tuple(cameras.shape)}")
        poses = cameras.reshape(-1, POSE_DIM).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(poses)))
