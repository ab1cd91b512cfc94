"""``VideoMVPipeline``: VideoMV as a diffusers pipeline (24 camera-controlled views, 3D-aware sampling).

Components: ``unet`` (ModelScope T2V's ``UNet3DConditionModel`` or I2VGen-XL's ``I2VGenXLUNet``),
``camera_embedding`` (``CameraEmbedding``), ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``;
for the image model also ``image_encoder`` and ``feature_extractor``; optionally ``reconstructor``
(``LGM``), which makes 3D-aware sampling possible and gives the Gaussians.

    pipe = VideoMVPipeline.from_pretrained("out/models/tiny-t2v")       # or s3://..., models:/name/1
    out = pipe(prompt="a yellow rubber duck, 3d asset", num_inference_steps=25,
               generator=torch.Generator().manual_seed(0))
    out.frames[0]     # [24, H, W, 3] float in [0, 1] (output_type="np"), the orbit's views
    out.gaussians     # Gaussians [B, N, ...] in world coordinates when there is a reconstructor

Saving writes diffusers' layout: ``model_index.json`` lists every component (camera_embedding and
reconstructor included) and names this class through ``pipeline_videomv.py``, a two-line module
that imports it from this package. So ``DiffusionPipeline.from_pretrained(directory,
trust_remote_code=True)`` loads this pipeline, and without ``trust_remote_code`` diffusers stops
with its message naming that file: it never loads the directory as a camera-less video model.
``from_pretrained`` also reads a published video-model directory (``text-to-video-ms-1.7b``,
``i2vgen-xl``) and adds a zero-initialised camera embedding: the start of fine-tuning.

Sampling is ``models.pipeline_videomv.sampling.sample_views`` (one code path: serving, evaluation and the
benchmarks call this pipeline); the model it runs on is ``self.model``, a ``MultiViewModel`` over
the same modules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, I2VGenXLUNet
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from models.generator.camera_embedding import CameraEmbedding
from models.gaussians.gaussians import Gaussians
from models.reconstructor.model import LGM
from models.pipeline_videomv.loading import MultiViewModel, resolve_model_dir
from models.generator.unet import MultiViewUNet
from models.precision import allow_tf32, cast, inference_dtype
from models.prompts import with_suffix
from models.pipeline_videomv.sampling import SamplingConfig, reconstruction_steps, sample_views
from models.generator.schedule import parametrisation

PIPELINE_MODULE = "pipeline_videomv"  # the module file saved beside model_index.json
RECONSTRUCTOR_FOLDER = "reconstructor"
_MODULE_SOURCE = '''"""VideoMV's pipeline class, for diffusers' loader. The code is in the videomv-pipeline package:
install the project that wrote this directory (scripts/setup.sh, or pip install -e <checkout>)."""
from models.pipeline_videomv import VideoMVPipeline  # noqa: F401
'''


@dataclass
class VideoMVPipelineOutput(BaseOutput):
    """frames: "np" [B, F, H, W, 3] float in [0, 1]; "pt" [B, F, 3, H, W] in [0, 1]; "latent" [B, C, F, h, w]; "pil" B lists of
    F images. cameras: [B, F, 4, 4] OpenGL c2w of the views (``camera`` module convention).
    gaussians: [B, N, ...] world-frame Gaussians from the final views (None without a reconstructor).
    reconstructions: reconstructor calls made while denoising (3D-aware steps)."""

    frames: Any
    cameras: np.ndarray
    gaussians: Gaussians | None
    reconstructions: int


def condition_image(image: PIL.Image.Image, size: int) -> torch.Tensor:
    """A PIL image -> the image model's condition [3, size, size] in [-1, 1]: transparency composited
    on white (the image model's background), centre-cropped to a square, resized (bicubic)."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), PIL.Image.BICUBIC)
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return array.permute(2, 0, 1).float() / 127.5 - 1.0


class VideoMVPipeline(DiffusionPipeline):
    """Text (ModelScope T2V) or image (I2VGen-XL) to 24 orbit views, with optional 3D-aware
    denoising through the reconstructor. See the module docstring."""

    model_cpu_offload_seq = "text_encoder->image_encoder->camera_embedding->unet->vae->reconstructor"
    _optional_components = ["image_encoder", "feature_extractor", "reconstructor"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: torch.nn.Module, camera_embedding: CameraEmbedding, vae: Any, text_encoder: Any,
                 tokenizer: Any, scheduler: Any, image_encoder: Any = None, feature_extractor: Any = None,
                 reconstructor: LGM | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, camera_embedding=camera_embedding, vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, scheduler=scheduler, image_encoder=image_encoder,
                              feature_extractor=feature_extractor, reconstructor=reconstructor)
        self._multiview_unet: MultiViewUNet | None = None

    # -- the model the sampler runs ----------------------------------------------------------------
    @property
    def variant(self) -> str:
        """"i2v" (I2VGen-XL's UNet) or "t2v"."""
        return "i2v" if isinstance(self.unet, I2VGenXLUNet) else "t2v"

    @property
    def model(self) -> MultiViewModel:
        """The components as a ``MultiViewModel`` (same modules; follows a replaced scheduler)."""
        wrapper = self._multiview_unet
        if wrapper is None or wrapper.unet is not self.unet or wrapper.camera_embedding is not self.camera_embedding:
            wrapper = self._multiview_unet = MultiViewUNet(self.unet, self.camera_embedding)
        return MultiViewModel(variant=self.variant, unet=wrapper, vae=self.vae, text_encoder=self.text_encoder,
                              tokenizer=self.tokenizer, scheduler=self.scheduler, image_encoder=self.image_encoder,
                              feature_extractor=self.feature_extractor, execution_device=self._execution_device)

    @classmethod
    def from_model(cls, model: MultiViewModel, reconstructor: LGM | None = None) -> "VideoMVPipeline":
        """A pipeline over an existing ``MultiViewModel``'s modules (no copies)."""
        pipe = cls(unet=model.unet.unet, camera_embedding=model.unet.camera_embedding, vae=model.vae,
                   text_encoder=model.text_encoder, tokenizer=model.tokenizer, scheduler=model.scheduler,
                   image_encoder=model.image_encoder, feature_extractor=model.feature_extractor,
                   reconstructor=reconstructor)
        pipe._multiview_unet = model.unet
        return pipe

    # -- loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, reconstructor: LGM | str | None = None,
                        torch_dtype: torch.dtype | None = None, num_frames: int | None = None,
                        tracking_uri: str | None = None, dtype: torch.dtype | None = None,
                        use_ema: bool = False, variant: str | None = None,
                        device_map: str | None = None) -> "VideoMVPipeline":
        """Load a saved VideoMV directory or a published video-model directory, at any location
        ``models.locations.fetch`` reads (a path, ``s3://``/``gs://``/``memory://``, ``models:/name/1``,
        ``runs:/id/path``, a cached Hub repo).

        Args:
            reconstructor: an ``LGM``, or its location (a saved directory or the official
                safetensors); default: the directory's own ``reconstructor/`` when it has one.
            tracking_uri: MLflow tracking store for ``models:/`` and ``runs:/`` locations.
            torch_dtype / dtype: the weights' dtype (diffusers' two names for it; give one), every
                component, the reconstructor included; None: as saved for the reconstructor, fp32 for G.
            use_ema: G's moving-average weights (``ema/``, written when fine-tuning kept an EMA).
            num_frames: None takes the saved model's (24 for a published video model).
            variant: diffusers' weight-file variant ("fp16": the ``*.fp16.safetensors`` a
                ``save_pretrained(..., variant="fp16")`` wrote), every component.
            device_map: as diffusers' pipelines take it: None, or one device for every component
                ("cpu", "cuda", "cuda:1"); a strategy that splits components ("balanced") is refused.
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree: give one")
        torch_dtype = torch_dtype if torch_dtype is not None else dtype
        device = None
        if device_map is not None:
            try:
                device = torch.device(device_map)
            except (RuntimeError, TypeError):
                raise ValueError(f"device_map={device_map!r} is not supported: give one device for every component "
                                 "(e.g. 'cuda'), or use enable_model_cpu_offload()") from None
        directory = resolve_model_dir(pretrained_model_name_or_path, tracking_uri)
        model = MultiViewModel.from_pretrained(directory, num_frames=num_frames, torch_dtype=torch_dtype, use_ema=use_ema,
                                               variant=variant)
        if isinstance(reconstructor, str):
            reconstructor = LGM.load(reconstructor, tracking_uri=tracking_uri)
        elif reconstructor is None and os.path.isdir(os.path.join(directory, RECONSTRUCTOR_FOLDER)):
            reconstructor = LGM.from_pretrained(os.path.join(directory, RECONSTRUCTOR_FOLDER), variant=variant)
        if reconstructor is not None and torch_dtype is not None:
            reconstructor = cast(reconstructor, torch_dtype)
        pipe = cls.from_model(model, reconstructor)
        return pipe.to(device) if device is not None else pipe

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """diffusers' layout (safetensors), every component listed in ``model_index.json``, plus
        ``pipeline_videomv.py`` so that diffusers' loader finds this class."""
        kwargs.setdefault("safe_serialization", True)
        super().save_pretrained(save_directory, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path) as handle:
            index = json.load(handle)
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        with open(index_path, "w") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        with open(os.path.join(save_directory, f"{PIPELINE_MODULE}.py"), "w") as handle:
            handle.write(_MODULE_SOURCE)

    # -- sampling ----------------------------------------------------------------------------------
    @property
    def guidance_scale(self) -> float | None:
        """The guidance scale of the current (or last) call."""
        return getattr(self, "_guidance_scale", None)

    @property
    def num_timesteps(self) -> int | None:
        """The denoising steps of the current (or last) call."""
        return getattr(self, "_num_timesteps", None)

    def _condition_images(self, image: Any) -> torch.Tensor:
        """PIL image(s), uint8/float arrays [H, W, 3] or tensors [B, 3, H, W] in [0, 1] -> [B, 3, S, S] in [-1, 1]."""
        size = self.model.resolution
        if isinstance(image, torch.Tensor):
            images = image[None] if image.ndim == 3 else image
            if images.shape[-1] != size or images.shape[-2] != size:
                images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic",
                                                         align_corners=False).clamp(0, 1)
            return images.float() * 2 - 1
        items = image if isinstance(image, (list, tuple)) else [image]
        tensors = []
        for item in items:
            if isinstance(item, np.ndarray):
                array = item if item.dtype == np.uint8 else (np.clip(item, 0, 1) * 255).round().astype(np.uint8)
                item = PIL.Image.fromarray(array)
            if not isinstance(item, PIL.Image.Image):
                raise TypeError(f"image must be PIL images, arrays [H, W, 3] or a tensor, got {type(item).__name__}")
            tensors.append(condition_image(item, size))
        return torch.stack(tensors)

    def _initial_latents(self, batch: int, generator: torch.Generator | list[torch.Generator] | None,
                         latents: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        shape = (model.vae.config.latent_channels, model.unet.num_frames, self.unet.config.sample_size,
                 self.unet.config.sample_size)
        if latents is not None:
            if tuple(latents.shape) != (batch, *shape):
                raise ValueError(f"latents must be {(batch, *shape)}, got {tuple(latents.shape)}")
            return latents.to(self._execution_device)
        generators = generator if isinstance(generator, list) else [generator] * batch
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generators for a batch of {batch}")
        # Each sample on its generator's device (a CUDA generator cannot draw CPU noise, nor the
        # reverse), then moved: diffusers' ``randn_tensor`` convention.
        noise = torch.stack([randn_tensor(shape, generator=g, device=self._execution_device, dtype=torch.float32)
                             for g in generators])
        return noise * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, image: Any = None, num_inference_steps: int = 50,
                 guidance_scale: float | None = None, num_videos_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
                 elevation: float | None = None, distance: float | None = None,
                 three_d_aware: bool | tuple[int, ...] = False, three_d_aware_mode: str = "two", eta: float = 0.0,
                 cameras: torch.Tensor | None = None, output_type: str = "np", return_dict: bool = True,
                 callback_on_step_end: Callable[..., dict] | None = None,
                 callback_on_step_end_tensor_inputs: list[str] | None = None,
                 decode_chunk_size: int | None = None, negative_prompt: str | None = None,
                 prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None
                 ) -> VideoMVPipelineOutput | tuple:
        """Generate the orbit.

        Args:
            prompt: text (the text model); image: the condition image (the image model): PIL,
                arrays [H, W, 3] or a tensor [B, 3, H, W] in [0, 1].
            guidance_scale, elevation, distance: None takes the variant's defaults
                (``models.pipeline_videomv.sampling.DEFAULTS``), moved inside the model's recorded training cameras.
            generator: one, or one per sample, for the initial noise; latents: that noise itself.
            three_d_aware: False (plain DDIM), True (reconstruct at the authors' steps, 20/30/40 of
                50, scaled), or step indices; steps where the reconstructor's renders were measured
                worse than x0 are left out. three_d_aware_mode: "two" (the authors' code) or "one".
            eta: DDIM eta, passed only to schedulers whose ``step`` takes it.
            cameras: [B, F, 4, 4] c2w for the camera embedding instead of the orbit (experiments).
            output_type: "np", "pt", "pil", or "latent" (the final latents [B, C, F, h, w] as frames,
                undecoded; no Gaussians).
            prompt_embeds, negative_prompt_embeds: [B, L, D] text-encoder states instead of
                ``prompt`` / ``negative_prompt`` (the text model; the suffix is then the caller's).
            decode_chunk_size: frames the VAE decodes (and re-encodes) per call, as in diffusers'
                video pipelines (default ``models.pipeline_videomv.loading.VAE_CHUNK_FRAMES``): the same frames,
                bounded memory.
            negative_prompt: what classifier-free guidance guides against (both variants); None: the
                one the model was fine-tuned with (recorded in its config), else the authors'
                (``models.prompts.AUTHORS_NEGATIVE_PROMPT``); "" for the empty prompt.
            callback_on_step_end: ``callback(pipe, step_index, timestep, callback_kwargs)`` after each
                step, with the tensors named in ``callback_on_step_end_tensor_inputs`` (``latents``);
                a returned ``latents`` replaces them.
        """
        text = prompt is not None or prompt_embeds is not None
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("give prompt or prompt_embeds, not both")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give negative_prompt or negative_prompt_embeds, not both")
        if text == (image is not None):
            raise ValueError("give a prompt (text model) or an image (image model), not both")
        if text and self.variant != "t2v":
            raise ValueError("this is an image-to-multi-view model: give image=, not prompt=")
        if image is not None and self.variant != "i2v":
            raise ValueError("this is a text-to-multi-view model: give prompt=, not image=")
        if output_type not in ("np", "pt", "pil", "latent"):
            raise ValueError(f"output_type must be np, pt, pil or latent, got {output_type!r}")
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not among "
                             f"{self._callback_tensor_inputs}")
        # The caption suffix the model was fine-tuned with, once (``models.prompts``).
        suffix = self.camera_embedding.config.get("prompt_suffix")
        prompts = None if prompt is None else [with_suffix(p, suffix) for p in
                                               ([prompt] if isinstance(prompt, str) else prompt)
                                               for _ in range(num_videos_per_prompt)]
        images = None if image is None else self._condition_images(image).repeat_interleave(num_videos_per_prompt, 0)
        embeds = [None if e is None else e.repeat_interleave(num_videos_per_prompt, 0)
                  for e in (prompt_embeds, negative_prompt_embeds)]
        batch = len(prompts) if prompts is not None else len(embeds[0]) if embeds[0] is not None else images.shape[0]
        if embeds[1] is not None and len(embeds[1]) != batch:
            raise ValueError(f"negative_prompt_embeds has {len(embeds[1])} rows for a batch of {batch}")
        steps = (reconstruction_steps(num_inference_steps, "authors") if three_d_aware is True
                 else () if three_d_aware is False else tuple(three_d_aware))
        if steps:
            parametrisation(self.scheduler)  # refuses, by name, a scheduler whose x0 cannot be computed
        config = SamplingConfig(steps=num_inference_steps, eta=eta, guidance_scale=guidance_scale,
                                elevation=elevation, distance=distance, reconstruct_at=steps, mode=three_d_aware_mode,
                                negative_prompt=negative_prompt)
        # What diffusers' pipelines expose to step callbacks (``pipe.guidance_scale``, ``pipe.num_timesteps``).
        self._guidance_scale = config.resolved(self.variant).guidance_scale
        self._num_timesteps = num_inference_steps
        model = self.model
        if decode_chunk_size is not None:
            if decode_chunk_size < 1:
                raise ValueError(f"decode_chunk_size must be positive, got {decode_chunk_size}")
            model.vae_chunk_size = decode_chunk_size
        noise = self._initial_latents(batch, generator, latents)

        with self.progress_bar(total=num_inference_steps) as bar:
            def step_end(index: int, timestep: torch.Tensor, state: dict[str, torch.Tensor]) -> dict | None:
                bar.update()
                if callback_on_step_end is None:
                    return None
                return callback_on_step_end(self, index, timestep, {k: state[k] for k in tensor_inputs})

            result = sample_views(model, prompts=prompts, images=None if images is None else images.to(model.device),
                                  config=config, reconstructor=self.reconstructor, cameras=cameras, latents=noise,
                                  on_step_end=step_end, prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1],
                                  output_latents=output_type == "latent")
        self.maybe_free_model_hooks()
        frames: Any = result.latents if output_type == "latent" else result.views.cpu()
        if output_type == "np":
            frames = frames.permute(0, 1, 3, 4, 2).numpy()
        elif output_type == "pil":
            frames = [[PIL.Image.fromarray(view) for view in sample]
                      for sample in (frames.permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()]
        output = VideoMVPipelineOutput(frames=frames, cameras=result.cameras.cpu().numpy(),
                                       gaussians=result.gaussians, reconstructions=result.reconstructions)
        return output if return_dict else (output.frames, output.gaussians)


def load_pipeline(location: str, reconstructor: LGM | str | None = None, device: str | torch.device | None = None,
                  tracking_uri: str | None = None, dtype: str | torch.dtype | None = None,
                  use_ema: bool = False) -> VideoMVPipeline:
    """The pipeline ready to sample: encoders frozen, eval mode, on ``device`` (default: CUDA when
    available, else CPU), its weights in ``dtype`` ("auto"/None: fp16 on CUDA, fp32 elsewhere;
    ``models.precision``), TF32 allowed on CUDA. Serving, evaluation and the benchmarks load G this way."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        allow_tf32()
    pipe = VideoMVPipeline.from_pretrained(location, reconstructor=reconstructor, tracking_uri=tracking_uri,
                                           torch_dtype=inference_dtype(dtype, device), use_ema=use_ema)
    pipe.to(device)
    pipe.model.freeze_encoders()
    for module in (pipe.unet, pipe.camera_embedding, pipe.reconstructor):
        if module is not None:
            module.eval()
    return pipe
