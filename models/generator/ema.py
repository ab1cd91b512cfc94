"""Exponential moving average of the trained weights, sharded over the ranks as the authors do.

After every optimizer step, ``ema = decay * ema + (1 - decay) * weight`` (alibaba/VideoMV
``tools/train/train_i2v_enterance.py``: ``v.copy_(p.lerp(v, ema_decay))``, decay 0.9999 for the image
model). Each of N ranks keeps the parameters whose index is its rank modulo N, in float32 on the
parameters' device: 1/N of a copy of the weights per GPU (5.65 GB / N for the full-size UNet).
``gathered`` assembles the whole average (a collective: every rank calls it), and ``swapped_in``
puts it into the module for saving.

After N steps the average still holds ``decay ** N`` of the weights it started from: 0.82 for the
authors' 0.9999 over a 2,000-step run. ``EMA_RECORD`` beside the averaged weights says so, and an
average that is still mostly its start (``STALE_SHARE``) is warned about when it is saved or served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Iterator

import torch
from torch import nn


logger = logging.getLogger(__name__)
EMA_RECORD = "ema.json"  # in the averaged weights' folder: decay, steps and the share of the start left
STALE_SHARE = 0.5  # an average holding more of its starting weights than this is mostly the model it began as


def start_share(decay: float, steps: int) -> float:
    """The share of the starting weights left in an EMA of ``decay`` after ``steps`` updates."""
    return decay ** steps


def _stale_message(decay: float, steps: int) -> str:
    return (f"the weights' moving average (decay {decay:g} over {steps} steps) still holds "
            f"{start_share(decay, steps):.0%} of the weights fine-tuning started from: it is mostly that model, "
            f"not the fine-tuned one (it needs about {int(0.693 / (1 - decay)):,} steps to be half fine-tuned); "
            "use the trained weights (no --use-ema), or a smaller --ema-decay")


def write_record(directory: str, decay: float, steps: int) -> None:
    """Record the average's decay and steps beside its weights; warns when it is stale."""
    share = start_share(decay, steps)
    with open(os.path.join(directory, EMA_RECORD), "w") as handle:
        json.dump({"decay": decay, "steps": steps, "start_share": share}, handle)
    if share > STALE_SHARE:
        logger.warning("%s", _stale_message(decay, steps))


def warn_if_stale(directory: str) -> None:
    """Warn when the average saved in ``directory`` (its ``EMA_RECORD``) is mostly its start."""
    path = os.path.join(directory, EMA_RECORD)
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        record = json.load(handle)
    if start_share(record["decay"], record["steps"]) > STALE_SHARE:
        logger.warning("%s", _stale_message(record["decay"], record["steps"]))


class ShardedEMA:
    """EMA of ``module``'s trainable parameters; this rank keeps parameters ``rank::world_size``."""

    def __init__(self, module: nn.Module, decay: float, rank: int = 0, world_size: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module, self.decay, self.rank, self.world_size = module, decay, rank, world_size
        self.names = [name for name, parameter in module.named_parameters() if parameter.requires_grad]
        parameters = dict(module.named_parameters())
        self.shadow = {name: parameters[name].detach().float().clone() for name in self.owned()}

    def owned(self) -> list[str]:
        """The parameter names this rank averages."""
        return self.names[self.rank::self.world_size]

    @torch.no_grad()
    def update(self) -> None:
        """One step towards the module's current weights (after the optimizer step)."""
        parameters = dict(self.module.named_parameters())
        averages = list(self.shadow.values())
        current = [parameters[name].detach().float() for name in self.shadow]
        torch._foreach_lerp_(averages, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "world_size": self.world_size, "rank": self.rank,
                "shadow": {name: tensor.cpu() for name, tensor in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """This rank's shard as ``state_dict`` wrote it; ValueError when it was written by another
        rank layout or for other parameters."""
        shadow = state["shadow"]
        if state.get("world_size") != self.world_size or state.get("rank") != self.rank or set(shadow) != set(self.shadow):
            raise ValueError(f"EMA shard of rank {state.get('rank')} of {state.get('world_size')} does not match rank "
                             f"{self.rank} of {self.world_size} (resume with as many workers as wrote it)")
        for name, tensor in shadow.items():
            self.shadow[name].copy_(tensor)

    @torch.no_grad()
    def gathered(self) -> dict[str, torch.Tensor] | None:
        """The whole average on rank 0 (CPU tensors), None on the other ranks; every rank must call it
        (one broadcast per parameter from the rank that owns it)."""
        if self.world_size == 1:
            return {name: tensor.cpu() for name, tensor in self.shadow.items()}
        import torch.distributed as dist

        parameters = dict(self.module.named_parameters())
        whole = {} if self.rank == 0 else None
        for index, name in enumerate(self.names):
            owner = index % self.world_size
            buffer = (self.shadow[name] if owner == self.rank
                      else torch.empty_like(parameters[name], dtype=torch.float32))
            dist.broadcast(buffer, src=owner)
            if whole is not None:
                whole[name] = buffer.cpu()
        return whole


@contextlib.contextmanager
def swapped_in(module: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``module`` with ``weights`` (name -> tensor) in place of its parameters, restored on exit."""
    parameters = dict(module.named_parameters())
    kept = {name: parameters[name].detach().cpu().clone() for name in weights}
    try:
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)
        yield module
    finally:
        with torch.no_grad():
            for name, tensor in kept.items():
                parameters[name].copy_(tensor)
