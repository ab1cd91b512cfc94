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

This one object is G everywhere: fine-tuning trains ``pipe.denoiser`` (the UNet with the camera
embedding added per frame) through the same encoders (``encode_views``, ``encode_condition``) the
sampler uses; serving and evaluation call ``__call__``, which holds the whole inference story as
numbered steps, the 3D-aware replacement of x0 being a helper it calls (``models.pipeline_videomv.three_d_aware``).

Saving writes diffusers' layout: ``model_index.json`` lists every component (camera_embedding and
reconstructor included) and names this class through ``pipeline_videomv.py``, a two-line module
that imports it from ``models.pipeline_videomv``. So ``DiffusionPipeline.from_pretrained(directory,
trust_remote_code=True)`` loads this pipeline, and without ``trust_remote_code`` diffusers stops
with its message naming that file: it never loads the directory as a camera-less video model.
``from_pretrained`` also reads a published video-model directory (``text-to-video-ms-1.7b``,
``i2vgen-xl``) and adds a zero-initialised camera embedding: the start of fine-tuning.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, I2VGenXLUNet
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

import camera
from models.gaussians.gaussians import Gaussians
from camera.training_cameras import camera_problems, inside
from models.generator.camera_embedding import CameraEmbedding
from models.generator.ema import warn_if_stale
from models.generator.schedule import output_from_x0, parametrisation, predict_x0, scheduler_step_kwargs
from models.generator.unet import MultiViewUNet
from models.pipeline_videomv.three_d_aware import (
    MODES,
    input_view_indices,
    measured_steps,
    reconstruct_inputs,
    reconstruct_views,
    reconstruction_steps,
    to_world,
)
from models.pipeline_videomv.image_input import condition_images
from models.pipeline_videomv.loading import (
    CAMERA_FOLDER,
    I2VGEN_XL_FPS,
    VAE_CHUNK_FRAMES,
    ModelDirectoryError,
    _resolution,
    detect_variant,
    ema_directory,
    load_components,
    pipeline_logger,
    resolve_model_dir,
)
from models.precision import allow_tf32, cast, inference_dtype
from models.prompts import negative_prompt_of, with_suffix
from models.reconstructor.model import LGM
from models.variants import VARIANTS
from models import _legacy

PIPELINE_MODULE = "pipeline_videomv"  # the module file saved beside model_index.json
RECONSTRUCTOR_FOLDER = "reconstructor"
_MODULE_SOURCE = '''"""VideoMV's pipeline class, for diffusers' loader. The code is in the videomv-pipeline package:
install the project that wrote this directory (scripts/setup.sh, or pip install -e <checkout>)."""
from models.pipeline_videomv import VideoMVPipeline  # noqa: F401
'''
logger = logging.getLogger(__name__)
_legacy.register()  # directories saved before the concern folders name the old module paths


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


def sampling_defaults(variant: str, training_cameras: dict[str, list[float]] | None, guidance_scale: float | None,
                      elevation: float | None, distance: float | None) -> tuple[float, float, float]:
    """(guidance scale, elevation, distance) with every None filled: the variant's defaults
    (``models.variants``), elevation and distance moved inside the recorded ``training_cameras``."""
    defaults = VARIANTS[variant]
    return (defaults.guidance_scale if guidance_scale is None else guidance_scale,
            inside(training_cameras, "elevation", defaults.elevation) if elevation is None else elevation,
            inside(training_cameras, "distance", defaults.distance) if distance is None else distance)


def _replace_text_states(condition: dict[str, torch.Tensor], states: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """``condition`` with a step callback's text states; when they are the conditional half alone
    (guidance ended), the other inputs keep their conditional half too ([unconditional; conditional])."""
    if len(states) not in (batch, 2 * batch):
        raise ValueError(f"a step callback returned prompt_embeds for {len(states)} samples; the batch is {batch} "
                         f"({2 * batch} with guidance)")
    halved = len(states) == batch and len(condition["encoder_hidden_states"]) == 2 * batch
    return {name: states if name == "encoder_hidden_states" else value[batch:] if halved else value
            for name, value in condition.items()}


COMPONENT_NAMES = ("unet", "camera_embedding", "vae", "text_encoder", "image_encoder", "reconstructor")


def _component_dtypes(dtypes: dict[str, Any]) -> dict[str, torch.dtype]:
    """A per-component ``torch_dtype`` dict, checked: known names and torch dtypes; "default"
    (float32 unless given) for the rest."""
    unknown = sorted(set(dtypes) - {*COMPONENT_NAMES, "default"})
    if unknown:
        raise ValueError(f"torch_dtype names unknown components {unknown}; known: {COMPONENT_NAMES} and 'default'")
    wrong = sorted(name for name, value in dtypes.items() if not isinstance(value, torch.dtype))
    if wrong:
        raise ValueError(f"torch_dtype[{wrong[0]!r}] must be a torch dtype, got {dtypes[wrong[0]]!r}")
    return {"default": torch.float32, **dtypes}


class VideoMVPipeline(DiffusionPipeline):
    """Text (ModelScope T2V) or image (I2VGen-XL) to 24 orbit views, with optional 3D-aware
    denoising through the reconstructor. See the module docstring."""

    model_cpu_offload_seq = "text_encoder->image_encoder->camera_embedding->unet->vae->reconstructor"
    _optional_components = ["image_encoder", "feature_extractor", "reconstructor"]
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, unet: torch.nn.Module, camera_embedding: CameraEmbedding, vae: Any, text_encoder: Any,
                 tokenizer: Any, scheduler: Any, image_encoder: Any = None, feature_extractor: Any = None,
                 reconstructor: LGM | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, camera_embedding=camera_embedding, vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, scheduler=scheduler, image_encoder=image_encoder,
                              feature_extractor=feature_extractor, reconstructor=reconstructor)
        self.vae_chunk_size: int | None = VAE_CHUNK_FRAMES  # frames per VAE call (decode_chunk_size); None: all
        # Built now, so that the camera hooks on the UNet's blocks come first, before any hook a user adds.
        self._denoiser = MultiViewUNet(unet, camera_embedding) if unet is not None and camera_embedding is not None \
            else None
        self._encoders_variant: str | None = None  # ``load_encoders``: no UNet to tell the variant

    # -- the model -------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        """"i2v" (I2VGen-XL's UNet) or "t2v"."""
        if self.unet is None:
            return self._encoders_variant or "t2v"
        return "i2v" if isinstance(self.unet, I2VGenXLUNet) else "t2v"

    @property
    def denoiser(self) -> MultiViewUNet:
        """The UNet conditioned per frame on cameras (``MultiViewUNet`` over ``unet`` and
        ``camera_embedding``, no copies): what fine-tuning trains and the sampler calls. Built once,
        again only when a component is replaced."""
        wrapper = self._denoiser
        if wrapper is None or wrapper.unet is not self.unet or wrapper.camera_embedding is not self.camera_embedding:
            wrapper = self._denoiser = MultiViewUNet(self.unet, self.camera_embedding)
        return wrapper

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes: with model offloading the hooks' execution device (the
        modules themselves wait on the CPU), else diffusers' ``device`` (an accelerator component's)."""
        for module in self.components.values():
            hook = getattr(module, "_hf_hook", None)
            if getattr(hook, "execution_device", None) is not None:
                return torch.device(hook.execution_device)
        return DiffusionPipeline.device.fget(self)

    @property
    def num_frames(self) -> int:
        """Views per orbit (the camera embedding's)."""
        return int(self.camera_embedding.config.num_frames)

    @property
    def resolution(self) -> int:
        """Image size generated: the UNet's latent size times the VAE's downsampling factor."""
        return _resolution(self.unet.config, self.vae.config)

    @property
    def background(self) -> tuple[float, float, float]:
        """The variant's background, RGB in [0, 1] (``models.variants``)."""
        return VARIANTS[self.variant].background

    @property
    def training_cameras(self) -> dict[str, list[float]] | None:
        """The cameras the camera embedding was fine-tuned on (None: not recorded)."""
        return self.camera_embedding.config.get("training_cameras")

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """What ``__call__`` uses where a call does not say: the variant's defaults (the authors'),
        elevation and distance inside the recorded training cameras, the recorded negative prompt,
        caption suffix and frame-rate condition (``/v1/health`` shows it)."""
        recorded = self.camera_embedding.config
        guidance, elevation, distance = sampling_defaults(self.variant, self.training_cameras, None, None, None)
        defaults = {"guidance_scale": guidance, "elevation": elevation, "distance": distance,
                    "num_inference_steps": VARIANTS[self.variant].num_inference_steps,
                    "negative_prompt": negative_prompt_of(recorded), "prompt_suffix": recorded.get("prompt_suffix")}
        if VARIANTS[self.variant].fps is not None:  # the image model's frame-rate condition
            defaults["fps"] = recorded.get("fps") or I2VGEN_XL_FPS
        return defaults

    def trainable_modules(self) -> list[torch.nn.Module]:
        """What fine-tuning updates: the UNet and the camera embedding (VAE and encoders stay frozen)."""
        return [self.denoiser]

    def freeze_encoders(self) -> None:
        for module in (self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.requires_grad_(False)
                module.eval()

    # -- loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, reconstructor: LGM | str | None = None,
                        torch_dtype: torch.dtype | None = None, num_frames: int | None = None,
                        tracking_uri: str | None = None, dtype: torch.dtype | None = None,
                        use_ema: bool = False, variant: str | None = None,
                        device_map: str | None = None, load_reconstructor: bool = True) -> "VideoMVPipeline":
        """Load a saved VideoMV directory or a published video-model directory, at any location
        ``models.locations.fetch`` reads (a path, ``s3://``/``gs://``/``memory://``, ``models:/name/1``,
        ``runs:/id/path``, a cached Hub repo).

        Args:
            reconstructor: an ``LGM``, or its location (a saved directory or the official
                safetensors); default: the directory's own ``reconstructor/`` when it has one (and
                ``load_reconstructor``: training G leaves it out).
            tracking_uri: MLflow tracking store for ``models:/`` and ``runs:/`` locations.
            torch_dtype / dtype: the weights' dtype (diffusers' two names for it; give one), every
                component, the reconstructor included; None: as saved for the reconstructor, fp32 for G.
                A dict gives it per component, as diffusers takes it: ``{"unet": torch.float16,
                "default": torch.float32}`` (components not named get "default", else fp32).
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
        per_component = None
        if isinstance(torch_dtype, dict):
            per_component, torch_dtype = _component_dtypes(torch_dtype), None
        device = None
        if device_map is not None:
            try:
                device = torch.device(device_map)
            except (RuntimeError, TypeError):
                raise ValueError(f"device_map={device_map!r} is not supported: give one device for every component "
                                 "(e.g. 'cuda'), or use enable_model_cpu_offload()") from None
        directory, components = load_components(pretrained_model_name_or_path, num_frames=num_frames,
                                                torch_dtype=torch_dtype, tracking_uri=tracking_uri, variant=variant)
        if isinstance(reconstructor, str):
            reconstructor = LGM.load(reconstructor, tracking_uri=tracking_uri)
        elif (reconstructor is None and load_reconstructor
              and os.path.isdir(os.path.join(directory, RECONSTRUCTOR_FOLDER))):
            reconstructor = LGM.from_pretrained(os.path.join(directory, RECONSTRUCTOR_FOLDER), variant=variant)
            pipeline_logger.info("Loaded %s as LGM from `%s` subfolder of %s.", RECONSTRUCTOR_FOLDER,
                                 RECONSTRUCTOR_FOLDER, directory)
        if reconstructor is not None and torch_dtype is not None:
            reconstructor = cast(reconstructor, torch_dtype)
        pipe = cls(**components, reconstructor=reconstructor)
        if use_ema:
            pipe.load_trainable(ema_directory(directory))
            warn_if_stale(ema_directory(directory))
        if per_component is not None:
            for name, module in pipe.components.items():
                if isinstance(module, torch.nn.Module):
                    setattr(pipe, name, cast(module, per_component.get(name, per_component["default"])))
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def load_encoders(cls, location: str, device: torch.device | str = "cpu",
                      tracking_uri: str | None = None) -> "VideoMVPipeline":
        """G's VAE, text encoder and tokenizer only (no UNet, camera embedding or scheduler), on
        ``device``, frozen: what encoding precomputed latents needs (``encode_posterior``, ``encode_prompts``)."""
        model_dir = resolve_model_dir(location, tracking_uri)
        pipe = cls(unet=None, camera_embedding=None, scheduler=None,  # type: ignore[arg-type]
                   vae=AutoencoderKL.from_pretrained(model_dir, subfolder="vae"),
                   text_encoder=CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder"),
                   tokenizer=CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"))
        pipe._encoders_variant = detect_variant(model_dir)
        pipe.to(device)
        pipe.freeze_encoders()
        return pipe

    def with_reconstructor(self, reconstructor: LGM | None) -> "VideoMVPipeline":
        """This pipeline with ``reconstructor`` registered as its component (saved with it, moved
        with it); returns ``self``."""
        self.register_modules(reconstructor=reconstructor)
        return self

    def encoders_fingerprint(self) -> str:
        """SHA-256 of the VAE's and the text encoder's weights (names, shapes and float32 values):
        latents encoded by other weights are not this model's latents."""
        digest = hashlib.sha256()
        for prefix, module in (("vae", self.vae), ("text_encoder", self.text_encoder)):
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(f"{prefix}.{name}{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

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

    def save_trainable(self, output_dir: str) -> None:
        """Only what fine-tuning changes (unet/, camera_embedding/): the checkpoint format."""
        self.unet.save_pretrained(os.path.join(output_dir, "unet"), safe_serialization=True)
        self.camera_embedding.save_pretrained(os.path.join(output_dir, CAMERA_FOLDER), safe_serialization=True)

    def load_trainable(self, checkpoint_dir: str) -> None:
        """Load unet/ and camera_embedding/ weights written by ``save_trainable`` (strict)."""
        for folder, module in (("unet", self.unet), (CAMERA_FOLDER, self.camera_embedding)):
            path = os.path.join(checkpoint_dir, folder, "diffusion_pytorch_model.safetensors")
            if not os.path.isfile(path):
                raise ModelDirectoryError(f"checkpoint {checkpoint_dir} has no {folder}/ weights")
            module.load_state_dict(load_file(path), strict=True)

    # -- encoding and decoding (training and sampling share these) ---------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """Prompts -> text encoder hidden states [B, L, D] (padded to the tokenizer's max length),
        computed on ``device`` (default: the execution device; the text encoder's own when it stays
        on the CPU while the UNet trains from precomputed latents)."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(device or self._execution_device))[0]

    @torch.no_grad()
    def image_condition(self, images: torch.Tensor, num_frames: int,
                        device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """I2VGen-XL inputs for condition images [B, 3, H, W] in [-1, 1], as its pipeline builds them.

        Returns ``image_latents`` [B, C, F, h, w] (the image's latent, then F - 1 frames of its
        position in the clip, (k + 1) / (F - 1)), ``image_embeddings`` [B, 1, D] (CLIP image
        embedding) and ``fps`` [B], on ``device`` (default: the execution device).
        """
        if not VARIANTS[self.variant].takes_image:
            raise ValueError("image conditioning needs the i2v variant")
        device = device or self._execution_device
        pixels = ((images.float().cpu() + 1.0) / 2.0).clamp(0, 1)
        clip_pixels = self.feature_extractor(images=list(pixels), do_rescale=False, return_tensors="pt").pixel_values
        embeddings = self.image_encoder(clip_pixels.to(device, self.image_encoder.dtype)).image_embeds[:, None]
        latents = self.vae.encode(images.to(device, self.vae.dtype)).latent_dist.sample()
        latents = latents[:, :, None] * self.vae.config.scaling_factor
        positions = [torch.full_like(latents, (index + 1) / (num_frames - 1)) for index in range(num_frames - 1)]
        fps = torch.full((images.shape[0],), self.camera_embedding.config.get("fps") or I2VGEN_XL_FPS, device=device)
        return {"image_latents": torch.cat([latents, *positions], dim=2), "image_embeddings": embeddings, "fps": fps}

    @torch.no_grad()
    def encode_condition(self, unconditional: Sequence[bool], prompts: list[str] | None = None,
                         images: torch.Tensor | None = None, negative_prompt: str = "",
                         prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                         num_frames: int | None = None, image_inputs: dict[str, torch.Tensor] | None = None,
                         device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """The UNet's condition inputs for B samples, sample k unconditioned where ``unconditional[k]``:
        the authors' pairs, the prompt vs ``negative_prompt`` (T2V); the image embedding and "" vs
        zeros and ``negative_prompt``, with the same image latents (I2V). Fine-tuning drops samples
        with it (one text-encoder call for the mixed batch); the sampler asks for the conditional and
        the unconditional batch, sharing ``image_inputs`` (``image_condition``'s, computed once).

        ``prompt_embeds`` [B, L, D] / ``negative_prompt_embeds`` [B, L, D] or [L, D]: text-encoder
        states given instead of the texts (T2V). ``num_frames``: of the image latents (default: the model's).
        ``device``: where they are computed (default: the execution device; a training step that
        already knows it passes it, as diffusers' pipelines pass theirs down: the lookup walks every
        submodule of every component for offloading hooks)."""
        device = device or self._execution_device
        count, kept = len(unconditional), [not u for u in unconditional]
        keep = torch.tensor(kept, device=device)
        if VARIANTS[self.variant].takes_prompt:
            if prompt_embeds is None and negative_prompt_embeds is None:  # texts: one text-encoder call
                if prompts is None:
                    raise ValueError("the t2v model needs prompts")
                texts = [negative_prompt if u else prompt for prompt, u in zip(prompts, unconditional)]
                return {"encoder_hidden_states": self.encode_prompts(texts, device=device)}
            def positive() -> torch.Tensor:
                if prompt_embeds is not None:
                    return prompt_embeds.to(device)
                if prompts is None:
                    raise ValueError("the t2v model needs prompts")
                return self.encode_prompts(prompts, device=device)

            def negative() -> torch.Tensor:
                if negative_prompt_embeds is None:
                    return self.encode_prompts([negative_prompt] * count, device=device)
                states = negative_prompt_embeds.to(device)
                return states.expand(count, -1, -1) if states.ndim == 2 else states

            states = (positive() if all(kept) else negative() if not any(kept)
                      else torch.where(keep.view(-1, 1, 1), positive(), negative()))
            return {"encoder_hidden_states": states}
        if images is None and image_inputs is None:
            raise ValueError("the i2v model needs condition images")
        condition = dict(image_inputs or self.image_condition(images, num_frames or self.num_frames, device=device))
        condition["image_embeddings"] = condition["image_embeddings"] * keep.view(-1, 1, 1).to(
            condition["image_embeddings"].dtype)
        texts = [negative_prompt if u else "" for u in unconditional]
        return {**condition, "encoder_hidden_states": self.encode_prompts(texts, device=device)}

    @torch.no_grad()
    def encode_views(self, views: torch.Tensor, generator: torch.Generator | None = None,
                     sample: bool = True, device: torch.device | None = None) -> torch.Tensor:
        """Views [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, C, F, h, w], computed on ``device``
        (default: the execution device).

        ``sample=False`` takes the posterior mean (deterministic; used when re-encoding renders).
        """
        batch, frames = views.shape[:2]
        device = device or self._execution_device
        flat = views.flatten(0, 1).to(device=device, dtype=self.vae.dtype)
        posteriors = [self.vae.encode(part).latent_dist for part in self._chunks(flat)]
        if all(isinstance(posterior, DiagonalGaussianDistribution) for posterior in posteriors):
            # The posterior's parameters chunk by chunk, then one draw: the same latents as one VAE call.
            parameters = torch.cat([p.parameters for p in posteriors])
            return self.latents_from_posterior(parameters.unflatten(0, (batch, frames)), generator, sample,
                                               device=device)
        # A deterministic encoder (the toy ``PixelShuffleVAE``): nothing drawn.
        latents = torch.cat([p.sample(generator) if sample else p.mode() for p in posteriors])
        latents = latents * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def encode_posterior(self, views: torch.Tensor) -> torch.Tensor:
        """Views [B, F, 3, H, W] in [-1, 1] -> the VAE posterior's parameters [B, F, 2C, h, w] (mean
        then log-variance, diffusers' ``DiagonalGaussianDistribution.parameters``): what precomputed
        latents store, so that every training step still draws its own sample."""
        batch, frames = views.shape[:2]
        flat = views.flatten(0, 1).to(device=self._execution_device, dtype=self.vae.dtype)
        posteriors = [self.vae.encode(part).latent_dist for part in self._chunks(flat)]
        if not all(isinstance(posterior, DiagonalGaussianDistribution) for posterior in posteriors):
            raise ValueError(f"{type(self.vae).__name__} has no Gaussian posterior to store: precomputed latents need "
                             "an AutoencoderKL")
        return torch.cat([p.parameters for p in posteriors]).unflatten(0, (batch, frames))

    def latents_from_posterior(self, parameters: torch.Tensor, generator: torch.Generator | None = None,
                               sample: bool = True, device: torch.device | None = None) -> torch.Tensor:
        """Posterior parameters [B, F, 2C, h, w] (``encode_posterior``) -> scaled latents [B, C, F, h, w]
        on ``device`` (default: the execution device): one draw from ``generator`` (``sample``) or the
        mean, as ``encode_views`` gives for the views."""
        batch, frames = parameters.shape[:2]
        posterior = DiagonalGaussianDistribution(parameters.flatten(0, 1).to(device or self._execution_device))
        latents = (posterior.sample(generator) if sample else posterior.mode()) * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)

    def _chunks(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flat.split(self.vae_chunk_size or len(flat))

    @torch.no_grad()
    def replace_x0(self, sample: torch.Tensor, output: torch.Tensor, timestep: torch.Tensor,
                   cameras: torch.Tensor) -> torch.Tensor:
        """The 3D-aware step (paper 3.4): the model ``output`` at ``sample`` (x_t) recomputed so that
        its x0 is the reconstructor's render of x0. Decode the reconstructor's input views of x0 only
        (as the authors do), reconstruct, render every camera on the variant's background, re-encode
        (posterior mean); the helpers are in ``three_d_aware``."""
        x0 = predict_x0(self.scheduler, sample, output.float(), timestep)
        indices = list(input_view_indices(cameras.shape[1], self.reconstructor.options.num_input_views))
        inputs = (self.decode_latents(x0[:, :, indices]) / 2 + 0.5).clamp(0, 1)
        rendered, _, _ = reconstruct_inputs(self.reconstructor, inputs, cameras, self.background, self.resolution)
        new_x0 = self.encode_views(rendered * 2 - 1, sample=False).float()
        return output_from_x0(self.scheduler, sample, new_x0, timestep)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, C, F, h, w] -> views [B, F, 3, H, W] in [-1, 1], ``vae_chunk_size`` frames per call."""
        batch, frames = latents.shape[0], latents.shape[2]
        flat = (latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.vae.config.scaling_factor).to(self.vae.dtype)
        decoded = torch.cat([self.vae.decode(part).sample for part in self._chunks(flat)])
        return decoded.unflatten(0, (batch, frames))

    def prepare_latents(self, batch: int, generator: torch.Generator | list[torch.Generator] | None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """The initial noise [B, C, F, h, w] (scaled by the scheduler's ``init_noise_sigma``), each
        sample from its own generator (reproducible whatever the batch), or ``latents`` checked."""
        shape = (self.vae.config.latent_channels, self.num_frames, self.unet.config.sample_size,
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

    def orbit_cameras(self, elevation: float, distance: float, batch: int) -> torch.Tensor:
        """[B, F, 4, 4] c2w of the orbit at ``elevation`` (degrees) and ``distance``, F = ``num_frames``
        (``camera.orbit_c2w``), on the execution device."""
        c2w = camera.orbit_c2w(elevation, camera.orbit_azimuths(self.num_frames), distance)
        return torch.tensor(c2w, dtype=torch.float32, device=self._execution_device)[None].expand(batch, -1, -1, -1)

    # -- sampling ----------------------------------------------------------------------------------
    @property
    def guidance_scale(self) -> float | None:
        """The guidance scale of the current (or last) call."""
        return getattr(self, "_guidance_scale", None)

    @property
    def num_timesteps(self) -> int | None:
        """The denoising steps of the current (or last) call."""
        return getattr(self, "_num_timesteps", None)

    def check_inputs(self, prompt: Any, image: Any, prompt_embeds: torch.Tensor | None, negative_prompt: str | None,
                     negative_prompt_embeds: torch.Tensor | None, output_type: str, three_d_aware_mode: str,
                     tensor_inputs: list[str], num_inference_steps: int, decode_chunk_size: int | None) -> None:
        """Every refusal of ``__call__``'s arguments, each naming the problem."""
        text = prompt is not None or prompt_embeds is not None
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("give prompt or prompt_embeds, not both")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give negative_prompt or negative_prompt_embeds, not both")
        if text == (image is not None):
            raise ValueError("give a prompt (text model) or an image (image model), not both")
        if text and not VARIANTS[self.variant].takes_prompt:
            raise ValueError("this is an image-to-multi-view model: give image=, not prompt=")
        if image is not None and not VARIANTS[self.variant].takes_image:
            raise ValueError("this is a text-to-multi-view model: give prompt=, not image=")
        if output_type not in ("np", "pt", "pil", "latent"):
            raise ValueError(f"output_type must be np, pt, pil or latent, got {output_type!r}")
        if three_d_aware_mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {three_d_aware_mode!r}")
        if num_inference_steps < 1:
            raise ValueError("steps must be positive")
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be positive, got {decode_chunk_size}")
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not among "
                             f"{self._callback_tensor_inputs}")

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
                 prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                 cross_attention_kwargs: dict[str, Any] | None = None) -> VideoMVPipelineOutput | tuple:
        """Generate the orbit.

        Args:
            prompt: text (the text model); image: the condition image (the image model): PIL,
                arrays [H, W, 3] or a tensor [B, 3, H, W] in [0, 1].
            guidance_scale, elevation, distance: None takes the variant's defaults
                (``models.variants``), moved inside the model's recorded training cameras.
            generator: one, or one per sample, for the initial noise; latents: that noise itself.
            three_d_aware: False (plain DDIM), True (reconstruct at the authors' steps, 20/30/40 of
                50, scaled), or step indices; steps where the reconstructor's renders were measured
                worse than x0 are left out. three_d_aware_mode: "two" (the authors' code) or "one".
            eta: DDIM eta, passed only to schedulers whose ``step`` takes it.
            cameras: [B, F, 4, 4] c2w for the camera embedding instead of the orbit (experiments:
                zeroed or reordered cameras); the Gaussians are reconstructed at these cameras.
            output_type: "np", "pt", "pil", or "latent" (the final latents [B, C, F, h, w] as frames,
                undecoded; no Gaussians).
            prompt_embeds, negative_prompt_embeds: [B, L, D] text-encoder states instead of
                ``prompt`` / ``negative_prompt`` (the text model; the suffix is then the caller's).
            decode_chunk_size: frames the VAE decodes (and re-encodes) per call, as in diffusers'
                video pipelines (default ``models.pipeline_videomv.loading.VAE_CHUNK_FRAMES``): the
                same frames, bounded memory.
            negative_prompt: what classifier-free guidance guides against (both variants); None: the
                one the model was fine-tuned with (recorded in its config), else the authors'
                (``models.prompts.AUTHORS_NEGATIVE_PROMPT``); "" for the empty prompt.
            callback_on_step_end: ``callback(pipe, step_index, timestep, callback_kwargs)`` after each
                step, with the tensors named in ``callback_on_step_end_tensor_inputs``: ``latents``,
                ``prompt_embeds`` (the UNet's text states, [unconditional; conditional] while guided,
                as diffusers' pipelines order them); what it returns replaces them, and
                ``pipe._guidance_scale`` is read at every step. So diffusers' callbacks work:
                ``SDCFGCutoffCallback`` keeps the conditional half and ends guidance from its step
                on (the image model's other inputs are cut with it). Raising stops the call.
            cross_attention_kwargs: passed to the UNet's attention processors (e.g. ``{"scale": ...}``
                for LoRA), as diffusers' pipelines do.
        """
        # 0. Check the inputs; the defaults of the variant, inside the recorded training cameras.
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unet_options = {"cross_attention_kwargs": cross_attention_kwargs} if cross_attention_kwargs else {}
        self.check_inputs(prompt, image, prompt_embeds, negative_prompt, negative_prompt_embeds, output_type,
                          three_d_aware_mode, tensor_inputs, num_inference_steps, decode_chunk_size)
        guidance_scale, elevation, distance = sampling_defaults(self.variant, self.training_cameras, guidance_scale,
                                                                elevation, distance)
        reconstruct_at = (reconstruction_steps(num_inference_steps, "authors") if three_d_aware is True
                          else () if three_d_aware is False else tuple(three_d_aware))
        if reconstruct_at and self.reconstructor is None:
            raise ValueError("3D-aware steps need a reconstructor")
        if reconstruct_at:
            parametrisation(self.scheduler)  # refuses, by name, a scheduler whose x0 cannot be computed
        # What diffusers' pipelines expose to step callbacks (``pipe.guidance_scale``, ``pipe.num_timesteps``).
        self._guidance_scale, self._num_timesteps = guidance_scale, num_inference_steps
        device = self._execution_device

        chunk_size, self.vae_chunk_size = self.vae_chunk_size, decode_chunk_size or self.vae_chunk_size
        try:  # the chunk size is this call's only, whatever happens in it
            # 1. The batch: the prompts with the caption suffix the model was fine-tuned with (once), or the images.
            suffix = self.camera_embedding.config.get("prompt_suffix")
            prompts = None if prompt is None else [with_suffix(p, suffix) for p in
                                                   ([prompt] if isinstance(prompt, str) else prompt)
                                                   for _ in range(num_videos_per_prompt)]
            images = (None if image is None else condition_images(image, self.resolution, self.background)
                      .repeat_interleave(num_videos_per_prompt, 0).to(device))
            prompt_embeds, negative_prompt_embeds = [None if e is None else e.repeat_interleave(num_videos_per_prompt, 0)
                                                     for e in (prompt_embeds, negative_prompt_embeds)]
            batch = len(prompts) if prompts is not None else len(prompt_embeds) if prompt_embeds is not None \
                else images.shape[0]
            if negative_prompt_embeds is not None and len(negative_prompt_embeds) != batch:
                raise ValueError(f"negative_prompt_embeds has {len(negative_prompt_embeds)} rows for a batch of {batch}")

            # 2. The initial noise (before the image condition's draw, which takes the global RNG).
            latents = self.prepare_latents(batch, generator, latents)

            # 3. The condition; with guidance the batch is doubled, [unconditional; conditional] (diffusers' order),
            #    one UNet call per step.
            guided = guidance_scale != 1.0
            negative = negative_prompt_of(self.camera_embedding.config, negative_prompt)
            image_inputs = None if images is None else self.image_condition(images, self.num_frames, device=device)
            condition = self.encode_condition([False] * batch, prompts, images, negative, prompt_embeds,
                                              negative_prompt_embeds, image_inputs=image_inputs, device=device)
            if guided:
                unconditional = self.encode_condition([True] * batch, prompts, images, negative, prompt_embeds,
                                                      negative_prompt_embeds, image_inputs=image_inputs, device=device)
                condition = {name: torch.cat([unconditional[name], condition[name]]) for name in condition}

            # 4. The cameras: the orbit (a warning where it leaves the training cameras), or those given.
            if cameras is None:
                for problem in camera_problems(self.training_cameras, elevation=elevation, distance=distance,
                                               fov=camera.DEFAULT_FOV_DEG):
                    logger.warning("%s: the views there are extrapolation", problem)
                cameras = self.orbit_cameras(elevation, distance, batch)
            else:
                cameras = cameras.to(device).float()

            # 5. The timesteps, and the 3D-aware steps the reconstructor's measurement allows.
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            reconstruct_at = measured_steps(self.reconstructor, reconstruct_at, timesteps)
            step_kwargs = scheduler_step_kwargs(self.scheduler, eta)

            # 6. The denoising loop; at a 3D-aware step x0 is replaced by the reconstructor's render of it.
            denoiser, reconstructions = self.denoiser, 0
            with self.progress_bar(total=num_inference_steps) as progress:
                for index, timestep in enumerate(timesteps):
                    # A step callback may end guidance (diffusers' SDCFGCutoffCallback): the condition
                    # then holds one half, and the scale is read anew at every step.
                    guided, guidance_scale = len(condition["encoder_hidden_states"]) == 2 * batch, self._guidance_scale
                    model_input = self.scheduler.scale_model_input(latents, timestep).to(self.unet.dtype)
                    model_input = torch.cat([model_input, model_input]) if guided else model_input
                    unet_cameras = torch.cat([cameras, cameras]) if guided else cameras
                    output = denoiser(model_input, timestep, cameras=unet_cameras, **condition, **unet_options).float()
                    baseline, output = output.chunk(2) if guided else (None, output)
                    if index in reconstruct_at:
                        if three_d_aware_mode == "two" and guided:  # the authors': both x0, then guidance
                            output = self.replace_x0(latents, output, timestep, cameras)
                            baseline = self.replace_x0(latents, baseline, timestep, cameras)
                            reconstructions += 2
                        else:  # "one": the guided x0, once
                            if guided:
                                output, baseline = baseline + guidance_scale * (output - baseline), None
                            output = self.replace_x0(latents, output, timestep, cameras)
                            reconstructions += 1
                    if baseline is not None:
                        output = baseline + guidance_scale * (output - baseline)
                    latents = self.scheduler.step(output, timestep, latents, **step_kwargs).prev_sample
                    if callback_on_step_end is not None:
                        offered = {"latents": latents, "prompt_embeds": condition["encoder_hidden_states"]}
                        changed = callback_on_step_end(self, index, timestep,
                                                       {name: offered[name] for name in tensor_inputs}) or {}
                        if changed.get("latents") is not None:
                            latents = changed["latents"]
                        if changed.get("prompt_embeds") is not None:
                            condition = _replace_text_states(condition, changed["prompt_embeds"], batch)
                    progress.update()

            # 7. Decode the views; the Gaussians reconstructed from them, in world coordinates.
            gaussians, frames = None, latents
            if output_type != "latent":
                frames = (self.decode_latents(latents) / 2 + 0.5).clamp(0, 1).float()
                if self.reconstructor is not None:
                    _, normalised, transforms = reconstruct_views(self.reconstructor, frames, cameras, self.background)
                    gaussians = to_world(normalised, transforms)
        finally:
            self.vae_chunk_size = chunk_size
        self.maybe_free_model_hooks()

        # 8. The output in the type asked for.
        if output_type == "np":
            frames = frames.cpu().permute(0, 1, 3, 4, 2).numpy()
        elif output_type == "pil":
            frames = [[PIL.Image.fromarray(view) for view in sample]
                      for sample in (frames.cpu().permute(0, 1, 3, 4, 2) * 255).round().to(torch.uint8).numpy()]
        elif output_type == "pt":
            frames = frames.cpu()
        output = VideoMVPipelineOutput(frames=frames, cameras=cameras.cpu().numpy(), gaussians=gaussians,
                                       reconstructions=reconstructions)
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
    pipe.freeze_encoders()
    for module in (pipe.unet, pipe.camera_embedding, pipe.reconstructor):
        if module is not None:
            module.eval()
    return pipe
