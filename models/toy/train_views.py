"""Train G in-process on a few orbits: the fine-tuning objective and optimiser without Ray.

The distributed jobs (``pipeline/train/finetune.py``) run the same ``diffusion_loss`` on Ray Train; this
loop is for small experiments and tests that must show G learning (memorising a handful of
objects, camera control) in minutes on a CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.generator.objective import MultiViewBatch, diffusion_loss, reorder_orbits

logger = logging.getLogger(__name__)


@dataclass
class Orbits:
    """Training data: N orbits.

    Attributes:
        views: [N, F, 3, H, W] in [-1, 1], background composited.
        cameras: [N, F, 4, 4] OpenGL c2w (``camera`` module convention).
        prompts: N captions.
    """

    views: torch.Tensor
    cameras: torch.Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


def train_on_orbits(model: VideoMVPipeline, orbits: Orbits, steps: int, batch_size: int = 2, lr: float = 1e-3,
                    seed: int = 0, zero_cameras: bool = False, log_every: int = 50,
                    camera_lr_scale: float = 1.0, roll_orbits: bool = False, reverse_orbits: bool = False,
                    cosine_decay: bool = False) -> list[float]:
    """AdamW on the UNet and camera embedding with the fine-tuning loss; returns the loss per step.

    Args:
        zero_cameras: feed all-zero poses instead of the cameras (the "no camera embedding" control:
            the embedding then adds the same vector to every frame, so frames differ only by order).
        camera_lr_scale: the camera embedding's learning rate is ``lr`` times this (it starts from
            zero while the UNet has learnt already).
        roll_orbits: start each training orbit at a random view (views and cameras rolled
            together, still one consistent orbit), so frame order no longer tells which view a
            frame is and only the cameras do (the UNet's temporal convolutions see frame order).
        reverse_orbits: run half of the training orbits backwards (views and cameras together), so
            frame order no longer tells the direction either.
        cosine_decay: anneal the learning rate to 5% of ``lr`` along a cosine over ``steps``.
    """
    model.freeze_encoders()
    model.denoiser.train()
    camera_parameters = list(model.camera_embedding.parameters())
    camera_ids = {id(p) for p in camera_parameters}
    others = [p for module in model.trainable_modules() for p in module.parameters()
              if p.requires_grad and id(p) not in camera_ids]
    optimizer = torch.optim.AdamW([{"params": others, "lr": lr},
                                   {"params": camera_parameters, "lr": lr * camera_lr_scale}], weight_decay=0.0,
                                  fused=True)  # one kernel for all parameters: the step 3x faster than the loop
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=0.05 * lr)
                if cosine_decay else None)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    began = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(orbits), (batch_size,), generator=generator, device=generator.device)
        views, cameras = orbits.views[index], orbits.cameras[index]
        views, cameras = reorder_orbits([views, cameras], generator, roll_orbits, reverse_orbits)
        batch = MultiViewBatch(views=views, prompts=[orbits.prompts[i] for i in index.tolist()],
                               cameras=torch.zeros_like(cameras) if zero_cameras else cameras)
        loss = diffusion_loss(model, batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            logger.info("step %d/%d loss %.4f (mean of the last %d: %.4f), %.2f s/step", step, steps, losses[-1],
                        log_every, sum(losses[-log_every:]) / log_every, (time.perf_counter() - began) / step)
    model.denoiser.eval()
    return losses
