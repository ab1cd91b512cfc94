"""The fine-tuning objective of G (paper eq. 1), as one function the trainers call.

``diffusion_loss``: encode the views with the frozen VAE (times its scaling factor), draw t
uniformly, add noise with the scheduler, predict with the camera-conditioned UNet, and regress the
scheduler's target: the noise for eps-prediction (T2V), the velocity for v-prediction (I2VGen-XL).
Classifier-free guidance is learnt by dropping the condition with probability ``condition_dropout``
to what the sampler guides against: the prompt becomes the negative prompt (T2V), or the image
embedding becomes zeros and the (empty) prompt the negative prompt (I2VGen-XL, the authors'
unconditional branch). ``offset_noise`` adds the authors' per-frame constant offset to the noise
(``noise + s * n[b, c, f, 1, 1]``). The authors' choices per variant are in ``models.variants``. 2D images
mixed in as 1-frame videos go through the same function with ``cameras=None``.

Memory of a full-size fine-tuning step (ModelScope T2V's UNet, 1.413 B parameters with the camera
embedding; 24 views at 256x256; fp32 master weights, fp16 autocast, the block-level gradient
checkpointing of ``MultiViewUNet``, fused AdamW): 5.65 GB of weights, 5.65 GB of gradients, 11.3 GB
of AdamW state, and about 3.7 GB of activations per sample at the backward's peak; the whole step
peaks at 20.6 / 24.4 / 32.8 GB at micro-batch 1 / 2 / 4, plus 1.7 GB of fp32 encoders. Computed
without a GPU by ``benchmarks/diffusion_memory.py`` (the real step under ``FakeTensorMode``, every
tensor followed from creation to release); ``docs/costs.md`` has the table per configuration.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from models.variants import VARIANTS


class MultiViewModel(Protocol):
    """What the objective needs of G (``VideoMVPipeline`` is one): named here, so that the
    generator's parts do not import the pipeline that is built from them."""

    variant: str
    scheduler: Any

    @property
    def denoiser(self) -> torch.nn.Module: ...

    @property
    def device(self) -> torch.device: ...

    def encode_condition(self, unconditional: Any, prompts: Any = None, images: Any = None, *args: Any,
                         **kwargs: Any) -> dict[str, torch.Tensor]: ...

    def encode_views(self, views: torch.Tensor, generator: torch.Generator | None = None,
                     **kwargs: Any) -> torch.Tensor: ...

    def latents_from_posterior(self, parameters: torch.Tensor, generator: torch.Generator | None = None,
                               **kwargs: Any) -> torch.Tensor: ...


CONDITION_DROPOUT = VARIANTS["t2v"].condition_dropout


@dataclass
class MultiViewBatch:
    """One training batch.

    Attributes:
        views: [B, F, 3, H, W] in [-1, 1], background already composited; F = 24 or 1. None when the
            batch comes as precomputed latents (``posterior``).
        cameras: [B, F, 4, 4] c2w (``camera`` module convention), or None for 1-frame image batches.
        prompts: B captions (T2V; ignored by I2VGen-XL, whose prompt is always empty).
        condition_images: [B, 3, H, W] in [-1, 1] (I2VGen-XL only): usually views[:, 0].
        posterior: [B, F, 2C, h, w] the VAE posterior's parameters of the views
            (``VideoMVPipeline.encode_posterior``: precomputed latents, T2V), instead of ``views``.
        prompt_states: [B, L, D] the text encoder's states of ``prompts`` (precomputed), and
        negative_states: [L, D] those of the negative prompt, for the samples dropout drops.
    """

    views: torch.Tensor | None
    cameras: torch.Tensor | None
    prompts: list[str]
    condition_images: torch.Tensor | None = None
    posterior: torch.Tensor | None = None
    prompt_states: torch.Tensor | None = None
    negative_states: torch.Tensor | None = None


def diffusion_loss(
    model: MultiViewModel,
    batch: MultiViewBatch,
    generator: torch.Generator | None = None,
    condition_dropout: float = CONDITION_DROPOUT,
    autocast_dtype: torch.dtype | None = None,
    unet: torch.nn.Module | None = None,
    negative_prompt: str = "",
    offset_noise: float = 0.0,
) -> torch.Tensor:
    """Scalar MSE between the UNet's prediction and the scheduler's target (fp32).

    Args:
        model: G; only ``model.denoiser`` receives gradients.
        batch: see ``MultiViewBatch``.
        generator: makes noise, timesteps and dropout reproducible.
        condition_dropout: probability of training a sample unconditioned (for CFG).
        autocast_dtype: torch.float16 or torch.bfloat16 to run the UNet under autocast
            (fp16 needs a ``torch.amp.GradScaler`` in the trainer), None for full precision.
        unet: the module to call instead of ``model.denoiser`` (its DDP/FSDP wrapper in training).
        negative_prompt: the text a dropped sample is given (``models.prompts.AUTHORS_NEGATIVE_PROMPT``
            in fine-tuning): what the sampler guides against.
        offset_noise: strength of the per-frame offset added to the noise (the authors' 0.1 for
            I2VGen-XL; 0: plain Gaussian noise, nothing more drawn).
    """
    device = model.device  # looked up once, handed to the encoders (each lookup walks every submodule)
    if batch.posterior is not None:  # precomputed latents: the same draw the views would have given
        if VARIANTS[model.variant].takes_image or batch.prompt_states is None or batch.negative_states is None:
            raise ValueError("precomputed latents need the t2v variant, prompt_states and negative_states")
        batch_size, frames = batch.posterior.shape[:2]
        latents = model.latents_from_posterior(batch.posterior.float(), generator, device=device).float()
    else:
        batch_size, frames = batch.views.shape[:2]
        latents = model.encode_views(batch.views.to(device), generator, device=device).float()
    scheduler = model.scheduler
    noise = torch.randn(latents.shape, generator=generator, device=device)
    if offset_noise:
        noise = noise + offset_noise * torch.randn((*latents.shape[:3], 1, 1), generator=generator, device=device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator,
                              device=device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction type {scheduler.config.prediction_type!r}")

    if condition_dropout > 0:  # (nothing drawn without dropout: no host sync, and shapes-only runs work)
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator, device=device)))
        dropped = [rng.random() < condition_dropout for _ in range(batch_size)]
    else:
        dropped = [False] * batch_size
    if batch.prompt_states is None and VARIANTS[model.variant].takes_image and batch.condition_images is None:
        raise ValueError("the i2v variant needs batch.condition_images")
    states = [None if s is None else s.float() for s in (batch.prompt_states, batch.negative_states)]  # fp16 stored
    unet_inputs = model.encode_condition(dropped, batch.prompts, batch.condition_images, negative_prompt, *states,
                                         num_frames=frames, device=device)

    cameras = batch.cameras.to(device) if batch.cameras is not None else None
    precision = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                 else contextlib.nullcontext())
    with precision:
        prediction = (unet or model.denoiser)(noisy.to(model.denoiser.dtype), timesteps, cameras=cameras, **unet_inputs)
    return F.mse_loss(prediction.float(), target.float())


def reorder_orbits(tensors: list[torch.Tensor], generator: torch.Generator, roll: bool,
                   reverse: bool) -> list[torch.Tensor]:
    """The same random reordering of the frame axis (dim 1) of every tensor ([B, F, ...]: views,
    cameras, alphas): each orbit rolled to start at a random view (``roll``) and, with probability
    1/2, run backwards (``reverse``). An orbit stays an orbit; only frame order stops telling which
    view a frame is, so the model has to read it from the cameras."""
    batch, frames = tensors[0].shape[:2]
    if roll:
        shifts = torch.randint(0, frames, (batch,), generator=generator, device=generator.device).tolist()
        tensors = [torch.stack([t.roll(-k, dims=0) for t, k in zip(tensor, shifts)]) for tensor in tensors]
    if reverse:
        backwards = torch.rand(batch, generator=generator, device=generator.device) < 0.5
        tensors = [torch.where(backwards.view(-1, *[1] * (t.ndim - 1)).to(t.device), t.flip(1), t)
                   for t in tensors]
    return tensors
