"""A frozen G as the prior of score distillation: noise the rendered orbit's latents at one t,
run G once with its cameras (both guidance branches in one call), and give the loss whose gradient
pulls the latents toward what G predicts (MVDream's guidance, on G's own orbit structure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from models.distillation.config import DistillConfig
from models.generator.schedule import parametrisation, predict_epsilon, predict_x0
from models.prompts import negative_prompt_of, with_suffix
from models.variants import VARIANTS


@dataclass
class GuidanceStep:
    """What one guidance call gives: the loss (a scalar with the latents' graph) and its t."""

    loss: torch.Tensor
    timestep: int


class MultiViewGuidance:
    """G (a ``VideoMVPipeline``) frozen, with one prompt or one condition image encoded once.

    ``__call__(latents, cameras, step, generator)``: latents [1, C, F, h, w] (with the renders'
    graph) of views at ``cameras`` [1, F, 4, 4] (OpenGL c2w, G's convention) -> ``GuidanceStep``.
    """

    def __init__(self, pipe: Any, config: DistillConfig, prompt: str | None = None, image: Any = None,
                 negative_prompt: str | None = None) -> None:
        if parametrisation(pipe.scheduler) != "variance-preserving":
            raise ValueError(f"distillation noises latents as x_t = sqrt(a) x0 + sqrt(1 - a) eps: "
                             f"{type(pipe.scheduler).__name__} is sigma-scaled; use G's DDIM scheduler")
        variant = VARIANTS[pipe.variant]
        if variant.takes_prompt and not prompt:
            raise ValueError("the text model distils a prompt: give one")
        if variant.takes_image and image is None:
            raise ValueError("the image model distils a condition image: give one")
        self.pipe, self.config = pipe, config
        pipe.freeze_encoders()
        pipe.denoiser.requires_grad_(False)
        pipe.denoiser.eval()
        negative = negative_prompt_of(pipe.camera_embedding.config, negative_prompt)
        prompts = [with_suffix(prompt, pipe.camera_embedding.config.get("prompt_suffix"))] if prompt else None
        images = None
        if image is not None:
            from models.pipeline_videomv.image_input import condition_images

            images = condition_images(image, pipe.resolution, pipe.background).to(pipe.device)
        image_inputs = None if images is None else pipe.image_condition(images, pipe.num_frames)
        conditional = pipe.encode_condition([False], prompts, images, negative, image_inputs=image_inputs)
        self.guided = config.guidance_scale != 1.0
        if self.guided:  # [unconditional; conditional], one UNet call per step (as the sampler)
            unconditional = pipe.encode_condition([True], prompts, images, negative, image_inputs=image_inputs)
            self.condition = {name: torch.cat([unconditional[name], conditional[name]]) for name in conditional}
        else:
            self.condition = conditional
        self.train_timesteps = int(pipe.scheduler.config.num_train_timesteps)

    def timestep(self, step: int, generator: torch.Generator) -> int:
        """One t for the whole orbit, uniform in the annealed range (MVDream's)."""
        low, high = self.config.timestep_range(step)
        last = self.train_timesteps - 1
        low_t = min(last, int(self.train_timesteps * low))  # MVDream's int(T * percent)
        high_t = min(last, max(low_t, int(self.train_timesteps * high)))
        return int(torch.randint(low_t, high_t + 1, (1,), generator=generator, device=generator.device))

    def __call__(self, latents: torch.Tensor, cameras: torch.Tensor, step: int, generator: torch.Generator,
                 views: torch.Tensor | None = None) -> GuidanceStep:
        """``views`` [1, F, 3, H, W] in [0, 1] (with their graph): the renders, which the x0_image
        loss compares with the decoded x0 (``latents`` then need no graph)."""
        pipe, config = self.pipe, self.config
        t = self.timestep(step, generator)
        timesteps = torch.full((latents.shape[0],), t, device=latents.device, dtype=torch.long)
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device, latents.dtype)
        target = latents.detach().float()
        noisy = pipe.scheduler.add_noise(target, noise.float(), timesteps)
        if config.zero_cameras:
            cameras = torch.zeros_like(cameras)
        with torch.no_grad():
            model_input = pipe.scheduler.scale_model_input(noisy, t).to(pipe.unet.dtype)
            if self.guided:
                model_input, cameras = torch.cat([model_input, model_input]), torch.cat([cameras, cameras])
            output = pipe.denoiser(model_input, timesteps.repeat(2 if self.guided else 1), cameras=cameras,
                                   **self.condition).float()
            if self.guided:
                unconditional, conditional = output.chunk(2)
                guided = unconditional + config.guidance_scale * (conditional - unconditional)
            else:
                conditional = guided = output
            if config.loss in ("x0", "x0_image"):
                x0 = predict_x0(pipe.scheduler, noisy, guided, timesteps)
                if config.std_rescale > 0 and self.guided:
                    # MVDream: the guided x0's spread pulled toward the unguided one's (CFG 50 overshoots).
                    reference = predict_x0(pipe.scheduler, noisy, conditional, timesteps)
                    dims = tuple(range(1, x0.ndim))
                    factor = (reference.std(dims, keepdim=True) + 1e-8) / (x0.std(dims, keepdim=True) + 1e-8)
                    x0 = config.std_rescale * x0 * factor + (1 - config.std_rescale) * x0
                goal = x0
            else:  # SDS: w(t) (eps_hat - eps), w = 1 - alpha_t (DreamFusion's), as a target one step away
                alpha = pipe.scheduler.alphas_cumprod.to(latents.device)[t].float()
                gradient = (1 - alpha) * (predict_epsilon(pipe.scheduler, noisy, guided, timesteps) - noise.float())
                goal = target - torch.nan_to_num(gradient)
        count = latents.shape[0] * latents.shape[2]
        if config.loss == "x0_image":
            if views is None:
                raise ValueError("the x0_image loss compares the renders: pass views")
            with torch.no_grad():
                decoded = (pipe.decode_latents(goal.to(pipe.vae.dtype)).float() / 2 + 0.5).clamp(0, 1)
                if decoded.shape[-1] != views.shape[-1]:
                    decoded = torch.nn.functional.interpolate(decoded.flatten(0, 1), size=views.shape[-2:],
                                                              mode="bilinear", align_corners=False).unflatten(0, (1, -1))
            return GuidanceStep(loss=0.5 * (views.float() - decoded).square().sum() / count, timestep=t)
        # 0.5 ||z - sg(goal)||^2 summed, per view (MVDream's normalisation): its gradient with
        # respect to z is (z - goal) / views.
        loss = 0.5 * (latents.float() - goal).square().sum() / count
        return GuidanceStep(loss=loss, timestep=t)
