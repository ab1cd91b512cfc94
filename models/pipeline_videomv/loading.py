"""The multi-view generator G: a diffusers video pipeline directory plus the camera embedding.

Two variants:
- ``t2v``: ModelScope T2V (``text-to-video-ms-1.7b`` layout): unet/ (``UNet3DConditionModel``),
  vae/, text_encoder/, tokenizer/, scheduler/.
- ``i2v``: I2VGen-XL (``i2vgen-xl`` layout): the same plus image_encoder/ and feature_extractor/,
  unet/ is an ``I2VGenXLUNet``; the prompt is empty and the input image conditions the views.

A fine-tuned model adds camera_embedding/ (config + safetensors). Loading a published checkpoint
that has none creates a fresh, zero-initialised one. ``save_pretrained`` writes the diffusers layout
(``model_index.json`` and one folder per component), so the directory loads again through exactly
the same code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.schedulers import DDIMScheduler, SchedulerMixin
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

import camera
from models.generator.camera_embedding import CameraEmbedding
from models.locations import ModelLocationError, fetch
from models.generator.unet import MultiViewUNet
from models.precision import cast

VARIANTS = ("t2v", "i2v")
COMPONENTS = {
    "t2v": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "i2v": ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder", "feature_extractor"),
}
CAMERA_FOLDER = "camera_embedding"
I2V_FPS = 16  # I2VGen-XL's default frame-rate micro-condition
# Frames the VAE encodes or decodes per call (diffusers' video pipelines' ``decode_chunk_size``): at
# 256 px one frame's decoder activations are ~0.3 GB in fp16, so a batch of 4 orbits (96 frames) in
# one call would need ~30 GB; 8 at a time keeps it near 2.5 GB at no cost in speed on a GPU.
VAE_CHUNK_FRAMES = 8


EMA_FOLDER = "ema"  # the fine-tuning's moving average: unet/ and camera_embedding/ as save_trainable writes them


class ModelDirectoryError(FileNotFoundError):
    """A model directory is missing, incomplete or not a recognised pipeline; the message says what."""


def resolve_model_dir(location: str, tracking_uri: str | None = None) -> str:
    """A local directory for ``location``: a path, an fsspec or MLflow URI (fetched once into the
    cache) or a Hugging Face repo id already in the local HF cache (``models.locations``; never
    downloads from the Hub)."""
    try:
        path = fetch(location, tracking_uri)
    except ModelLocationError as error:
        raise ModelDirectoryError(str(error)) from error
    if not os.path.isdir(path):
        raise ModelDirectoryError(f"{location} is a file, not a diffusers model directory")
    return path


def detect_variant(model_dir: str) -> str:
    """"t2v" or "i2v" from model_index.json (or the unet's config)."""
    for candidate in ("model_index.json", os.path.join("unet", "config.json")):
        path = os.path.join(model_dir, candidate)
        if os.path.exists(path):
            with open(path) as handle:
                name = json.load(handle).get("_class_name", "")
            if isinstance(name, list):  # [module, class]: a pipeline class saved beside the weights
                name = name[-1]
            if name == "VideoMVPipeline":
                continue  # the unet's class tells the variant
            if name in ("I2VGenXLPipeline", "I2VGenXLUNet"):
                return "i2v"
            if name in ("TextToVideoSDPipeline", "UNet3DConditionModel", "VideoToVideoSDPipeline"):
                return "t2v"
    raise ModelDirectoryError(
        f"{model_dir}: no model_index.json or unet/config.json naming a ModelScope T2V or I2VGen-XL model")


def missing_components(model_dir: str, variant: str) -> list[str]:
    """Component folders absent or without their config/weights."""
    missing = []
    for name in COMPONENTS[variant]:
        folder = os.path.join(model_dir, name)
        if not os.path.isdir(folder) or not os.listdir(folder):
            missing.append(f"{name}/")
            continue
        if name in ("unet", "vae", "text_encoder", "image_encoder"):
            files = os.listdir(folder)
            if "config.json" not in files:
                missing.append(f"{name}/config.json")
            if not any(f.endswith((".safetensors", ".bin")) for f in files):
                missing.append(f"{name}/ weights (*.safetensors or *.bin)")
    return missing


def scheduler_class(model_dir: str) -> type:
    """The diffusers scheduler class saved in ``scheduler/`` (DDIM, the published models' own, when
    the config names none)."""
    path = os.path.join(model_dir, "scheduler", "scheduler_config.json")
    name = ""
    if os.path.isfile(path):
        with open(path) as handle:
            name = json.load(handle).get("_class_name", "")
    found = getattr(diffusers, name, None) if name else None
    return found if isinstance(found, type) and issubclass(found, SchedulerMixin) else DDIMScheduler


def _resolution(unet_config: dict, vae_config: dict) -> int:
    """Image size generated: the UNet's latent sample size times the VAE's downsampling factor."""
    return int(unet_config["sample_size"]) * 2 ** (len(vae_config["block_out_channels"]) - 1)


def model_resolution(model_dir: str) -> int:
    """``_resolution`` read from a model directory's configs, without loading weights."""
    with open(os.path.join(model_dir, "unet", "config.json")) as handle:
        unet_config = json.load(handle)
    with open(os.path.join(model_dir, "vae", "config.json")) as handle:
        vae_config = json.load(handle)
    return _resolution(unet_config, vae_config)


@dataclass
class MultiViewModel:
    """All components of G. ``unet`` is the camera-conditioned ``MultiViewUNet``."""

    variant: str
    unet: MultiViewUNet
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: Any
    image_encoder: CLIPVisionModelWithProjection | None = None
    feature_extractor: CLIPImageProcessor | None = None
    execution_device: torch.device | None = None  # where inputs go when modules are offloaded (pipelines)
    vae_chunk_size: int | None = VAE_CHUNK_FRAMES  # frames per VAE call; None: all at once

    # -- loading and saving --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, location: str, num_frames: int | None = None,
                        torch_dtype: torch.dtype | None = None, tracking_uri: str | None = None,
                        use_ema: bool = False, variant: str | None = None) -> "MultiViewModel":
        """Load a diffusers-layout directory at ``location`` (``resolve_model_dir``). Errors name what is missing.

        ``num_frames``: None takes the saved camera embedding's (24 for a published video model);
        another number must match it. ``variant``: diffusers' weight-file variant ("fp16" reads
        ``*.fp16.safetensors``). ``use_ema``: the fine-tuning's moving average of the UNet and camera
        embedding (``ema/``, written when fine-tuning kept one) instead of the last weights; an
        error when there is none."""
        model_dir = resolve_model_dir(location, tracking_uri)
        weights_variant, variant = variant, detect_variant(model_dir)  # diffusers' file variant; t2v or i2v
        missing = missing_components(model_dir, variant)
        if missing:
            raise ModelDirectoryError(f"{model_dir} ({variant}) is incomplete; missing: {', '.join(missing)}")
        dtype = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        if weights_variant is not None:
            dtype["variant"] = weights_variant
        unet_class = I2VGenXLUNet if variant == "i2v" else UNet3DConditionModel
        unet = unet_class.from_pretrained(model_dir, subfolder="unet", **dtype)
        camera_dir = os.path.join(model_dir, CAMERA_FOLDER)
        if os.path.isdir(camera_dir):
            camera_embedding = CameraEmbedding.from_pretrained(
                camera_dir, **({"variant": weights_variant} if weights_variant else {}))
            if torch_dtype is not None:
                camera_embedding = cast(camera_embedding, torch_dtype)
            if num_frames is not None and camera_embedding.config.num_frames != num_frames:
                raise ModelDirectoryError(
                    f"{camera_dir} was trained for {camera_embedding.config.num_frames} frames, not {num_frames}"
                )
        else:  # a published video model: start from a zero camera embedding
            width = unet.time_embedding.linear_2.out_features
            camera_embedding = CameraEmbedding(embedding_dim=width, num_frames=num_frames or camera.NUM_VIEWS)
            if unet.dtype != camera_embedding.dtype:
                camera_embedding = cast(camera_embedding, unet.dtype)
        components: dict[str, Any] = {
            "vae": AutoencoderKL.from_pretrained(model_dir, subfolder="vae", **dtype),
            "text_encoder": CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder", **dtype),
            "tokenizer": CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
            "scheduler": scheduler_class(model_dir).from_pretrained(model_dir, subfolder="scheduler"),
        }
        if variant == "i2v":
            components["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(
                model_dir, subfolder="image_encoder", **dtype)
            components["feature_extractor"] = CLIPImageProcessor.from_pretrained(
                model_dir, subfolder="feature_extractor")
        model = cls(variant=variant, unet=MultiViewUNet(unet, camera_embedding), **components)
        if use_ema:
            ema_dir = os.path.join(model_dir, EMA_FOLDER)
            if not os.path.isdir(ema_dir):
                raise ModelDirectoryError(f"{model_dir} has no {EMA_FOLDER}/ weights: it was fine-tuned without an "
                                          "EMA (--ema-decay)")
            model.load_trainable(ema_dir)
        return model

    @classmethod
    def load_encoders(cls, location: str, device: torch.device | str = "cpu",
                      tracking_uri: str | None = None) -> "MultiViewModel":
        """G's VAE, text encoder and tokenizer only (no UNet: ``unet`` is None), on ``device``, frozen:
        what encoding precomputed latents needs (``encode_posterior``, ``encode_prompts``)."""
        model_dir = resolve_model_dir(location, tracking_uri)
        model = cls(variant=detect_variant(model_dir), unet=None,  # type: ignore[arg-type]
                    vae=AutoencoderKL.from_pretrained(model_dir, subfolder="vae"),
                    text_encoder=CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder"),
                    tokenizer=CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
                    scheduler=None, execution_device=torch.device(device))
        for module in (model.vae, model.text_encoder):
            module.to(device)
        model.freeze_encoders()
        return model

    def encoders_fingerprint(self) -> str:
        """SHA-256 of the VAE's and the text encoder's weights (names, shapes and float32 values):
        latents encoded by other weights are not this model's latents."""
        import hashlib

        digest = hashlib.sha256()
        for prefix, module in (("vae", self.vae), ("text_encoder", self.text_encoder)):
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(f"{prefix}.{name}{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def save_pretrained(self, output_dir: str) -> None:
        """The ``VideoMVPipeline`` layout: diffusers' folders, camera_embedding/, model_index.json."""
        from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline

        VideoMVPipeline.from_model(self).save_pretrained(output_dir)

    def save_trainable(self, output_dir: str) -> None:
        """Only what fine-tuning changes (unet/, camera_embedding/): the checkpoint format."""
        self.unet.unet.save_pretrained(os.path.join(output_dir, "unet"), safe_serialization=True)
        self.unet.camera_embedding.save_pretrained(os.path.join(output_dir, CAMERA_FOLDER), safe_serialization=True)

    def load_trainable(self, checkpoint_dir: str) -> None:
        """Load unet/ and camera_embedding/ weights written by ``save_trainable`` (strict)."""
        from safetensors.torch import load_file

        for folder, module in (("unet", self.unet.unet), (CAMERA_FOLDER, self.unet.camera_embedding)):
            path = os.path.join(checkpoint_dir, folder, "diffusion_pytorch_model.safetensors")
            if not os.path.isfile(path):
                raise ModelDirectoryError(f"checkpoint {checkpoint_dir} has no {folder}/ weights")
            module.load_state_dict(load_file(path), strict=True)

    @property
    def resolution(self) -> int:
        return _resolution(self.unet.unet.config, self.vae.config)

    # -- conditioning ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs are put: the pipeline's execution device when offloading, else the UNet's."""
        return self.execution_device or self.unet.unet.device

    def trainable_modules(self) -> list[torch.nn.Module]:
        """What fine-tuning updates: the UNet and the camera embedding (VAE and encoders stay frozen)."""
        return [self.unet]

    def freeze_encoders(self) -> None:
        for module in (self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.requires_grad_(False)
                module.eval()

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "MultiViewModel":
        # diffusers warns about float32 modules whenever a dtype keyword is passed, even None.
        options = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
        for module in (self.unet, self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.to(**options)
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """Prompts -> text encoder hidden states [B, L, D] (padded to the tokenizer's max length),
        computed on ``device`` (default: ``self.device``; the text encoder's own when it stays on the
        CPU while the UNet trains from precomputed latents)."""
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(device or self.device))[0]

    @torch.no_grad()
    def encode_views(self, views: torch.Tensor, generator: torch.Generator | None = None,
                     sample: bool = True) -> torch.Tensor:
        """Views [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, C, F, h, w].

        ``sample=False`` takes the posterior mean (deterministic; used when re-encoding renders).
        """
        batch, frames = views.shape[:2]
        flat = views.flatten(0, 1).to(device=self.device, dtype=self.vae.dtype)
        posteriors = [self.vae.encode(part).latent_dist for part in self._chunks(flat)]
        if all(isinstance(posterior, DiagonalGaussianDistribution) for posterior in posteriors):
            # The posterior's parameters chunk by chunk, then one draw: the same latents as one VAE call.
            parameters = torch.cat([p.parameters for p in posteriors])
            return self.latents_from_posterior(parameters.unflatten(0, (batch, frames)), generator, sample)
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
        flat = views.flatten(0, 1).to(device=self.device, dtype=self.vae.dtype)
        posteriors = [self.vae.encode(part).latent_dist for part in self._chunks(flat)]
        if not all(isinstance(posterior, DiagonalGaussianDistribution) for posterior in posteriors):
            raise ValueError(f"{type(self.vae).__name__} has no Gaussian posterior to store: precomputed latents need "
                             "an AutoencoderKL")
        return torch.cat([p.parameters for p in posteriors]).unflatten(0, (batch, frames))

    def latents_from_posterior(self, parameters: torch.Tensor, generator: torch.Generator | None = None,
                               sample: bool = True) -> torch.Tensor:
        """Posterior parameters [B, F, 2C, h, w] (``encode_posterior``) -> scaled latents [B, C, F, h, w]:
        one draw from ``generator`` (``sample``) or the mean, as ``encode_views`` gives for the views."""
        batch, frames = parameters.shape[:2]
        posterior = DiagonalGaussianDistribution(parameters.flatten(0, 1).to(self.device))
        latents = (posterior.sample(generator) if sample else posterior.mode()) * self.vae.config.scaling_factor
        return latents.unflatten(0, (batch, frames)).permute(0, 2, 1, 3, 4)

    def _chunks(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flat.split(self.vae_chunk_size or len(flat))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B, C, F, h, w] -> views [B, F, 3, H, W] in [-1, 1]."""
        batch, frames = latents.shape[0], latents.shape[2]
        flat = (latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.vae.config.scaling_factor).to(self.vae.dtype)
        decoded = torch.cat([self.vae.decode(part).sample for part in self._chunks(flat)])
        return decoded.unflatten(0, (batch, frames))

    @torch.no_grad()
    def image_condition(self, images: torch.Tensor, num_frames: int) -> dict[str, torch.Tensor]:
        """I2VGen-XL inputs for condition images [B, 3, H, W] in [-1, 1], as its pipeline builds them.

        Returns ``image_latents`` [B, C, F, h, w] (the image's latent, then F - 1 frames of its
        position in the clip, (k + 1) / (F - 1)), ``image_embeddings`` [B, 1, D] (CLIP image
        embedding) and ``fps`` [B].
        """
        if self.variant != "i2v":
            raise ValueError("image conditioning needs the i2v variant")
        pixels = ((images.float().cpu() + 1.0) / 2.0).clamp(0, 1)
        clip_pixels = self.feature_extractor(images=list(pixels), do_rescale=False, return_tensors="pt").pixel_values
        embeddings = self.image_encoder(clip_pixels.to(self.device, self.image_encoder.dtype)).image_embeds[:, None]
        latents = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.sample()
        latents = latents[:, :, None] * self.vae.config.scaling_factor
        positions = [torch.full_like(latents, (index + 1) / (num_frames - 1)) for index in range(num_frames - 1)]
        fps = torch.full((images.shape[0],), I2V_FPS, device=self.device)
        return {"image_latents": torch.cat([latents, *positions], dim=2), "image_embeddings": embeddings, "fps": fps}
