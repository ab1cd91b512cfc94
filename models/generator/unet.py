"""A diffusers video UNet plus the per-frame camera embedding, without touching diffusers' forward.

``UNet3DConditionModel`` (ModelScope T2V) and ``I2VGenXLUNet`` (I2VGen-XL) both compute the time
embedding ``emb`` [B, E], repeat it per frame to [B * F, E] and pass that same tensor as ``temb`` to
every down, mid and up block, its only consumers. Adding the camera embedding to ``temb`` at the
entrance of each block is therefore exactly "camera embedding added to each frame's time embedding
after the repeat", and it is done with forward pre-hooks instead of a copied forward.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from models.generator.camera_embedding import CameraEmbedding


class MultiViewUNet(nn.Module):
    """``unet`` conditioned per frame on ``cameras``.

    Args:
        unet: a ``UNet3DConditionModel`` or ``I2VGenXLUNet``.
        camera_embedding: its ``CameraEmbedding`` (E = the unet's time-embedding width).

    ``forward(sample, timestep, cameras=..., **unet_inputs)``:
        sample: [B, C, F, h, w] latents, F = ``num_frames`` views, or F = 1 for 2D image batches
            (then ``cameras`` may be None and nothing is added: the plain video model).
        cameras: [B, F, 4, 4] or [B, F, 16] camera-to-world (``camera`` module convention).
        unet_inputs: the wrapped unet's other arguments (``encoder_hidden_states``; for I2VGen-XL
            also ``fps``, ``image_latents``, ``image_embeddings``).
    Returns the unet's prediction as a tensor [B, C, F, h, w].
    """

    def __init__(self, unet: nn.Module, camera_embedding: CameraEmbedding) -> None:
        super().__init__()
        width = unet.time_embedding.linear_2.out_features
        if camera_embedding.config.embedding_dim != width:
            raise ValueError(
                f"camera embedding width {camera_embedding.config.embedding_dim} != unet time embedding {width}"
            )
        self.unet = unet
        self.camera_embedding = camera_embedding
        self._camera_temb: torch.Tensor | None = None
        self._blocks = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
        # A unet wrapped again (a pipeline rebuilt over the same modules) keeps one set of hooks.
        for handle in getattr(unet, "_camera_hook_handles", ()):
            handle.remove()
        unet._camera_hook_handles = [block.register_forward_pre_hook(self._add_camera_to_temb, with_kwargs=True)
                                     for block in self._blocks]

    @property
    def num_frames(self) -> int:
        return int(self.camera_embedding.config.num_frames)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def _add_camera_to_temb(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self._camera_temb is None:
            return args, kwargs
        if "temb" in kwargs:
            kwargs = {**kwargs, "temb": kwargs["temb"] + self._camera_temb.to(kwargs["temb"].dtype)}
        else:  # the mid block takes (hidden_states, temb, ...) positionally
            args = (args[0], args[1] + self._camera_temb.to(args[1].dtype), *args[2:])
        return args, kwargs

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, cameras: torch.Tensor | None = None,
                **unet_inputs: Any) -> torch.Tensor:
        if sample.ndim != 5:
            raise ValueError(f"sample must be [B, C, F, h, w], got {tuple(sample.shape)}")
        batch, frames = sample.shape[0], sample.shape[2]
        if frames not in (1, self.num_frames):
            raise ValueError(f"expected {self.num_frames} frames (or 1 for image batches), got {frames}")
        if cameras is None:
            if frames != 1:
                raise ValueError(f"cameras [B, {frames}, 4, 4] are required for multi-view samples")
        else:
            pose_shape = tuple(cameras.shape[2:])
            if tuple(cameras.shape[:2]) != (batch, frames) or pose_shape not in ((4, 4), (16,)):
                raise ValueError(
                    f"cameras must be [{batch}, {frames}, 4, 4] or [{batch}, {frames}, 16], got {tuple(cameras.shape)}"
                )
            self._camera_temb = self.camera_embedding(cameras)
        try:
            return self.unet(sample, timestep, return_dict=False, **unet_inputs)[0]
        finally:
            self._camera_temb = None

    @property
    def gradient_checkpointing(self) -> bool:
        return all("_plain_forward" in vars(block) for block in self._blocks)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each UNet block in the backward pass instead of keeping its activations.

        diffusers' 3D UNets do not support checkpointing themselves, so each block's forward is
        wrapped (non-reentrant ``torch.utils.checkpoint``). The camera pre-hook runs before the
        wrapper, so the recomputation sees the same ``temb``.
        """
        for block in self._blocks:
            if "_plain_forward" not in vars(block):
                block._plain_forward = block.forward
                block.forward = functools.partial(_checkpointed, block._plain_forward)

    def disable_gradient_checkpointing(self) -> None:
        for block in self._blocks:
            if "_plain_forward" in vars(block):
                block.forward = block._plain_forward
                del block._plain_forward


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)
