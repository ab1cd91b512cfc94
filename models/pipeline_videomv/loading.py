"""Reading a model directory of G: a diffusers video pipeline directory plus the camera embedding.

Two variants:
- ``t2v``: ModelScope T2V (``text-to-video-ms-1.7b`` layout): unet/ (``UNet3DConditionModel``),
  vae/, text_encoder/, tokenizer/, scheduler/.
- ``i2v``: I2VGen-XL (``i2vgen-xl`` layout): the same plus image_encoder/ and feature_extractor/,
  unet/ is an ``I2VGenXLUNet``; the prompt is empty and the input image conditions the views.

A fine-tuned model adds camera_embedding/ (config + safetensors). Loading a published checkpoint
that has none creates a fresh, zero-initialised one. ``save_pretrained`` writes the diffusers layout
(``model_index.json`` and one folder per component), so the directory loads again through exactly
the same code. ``load_components`` is what ``VideoMVPipeline.from_pretrained`` builds the pipeline from.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL
from diffusers.schedulers import DDIMScheduler, SchedulerMixin
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

import camera
from models.generator.camera_embedding import CameraEmbedding
from models.locations import ModelLocationError, fetch
from models.precision import cast
from models.variants import VARIANTS

CAMERA_FOLDER = "camera_embedding"
I2VGEN_XL_FPS = 16  # I2VGen-XL's own frame-rate condition: a model that records no other (CameraEmbedding.config.fps)
# Frames the VAE encodes or decodes per call (diffusers' video pipelines' ``decode_chunk_size``): at
# 256 px one frame's decoder activations are ~0.3 GB in fp16, so a batch of 4 orbits (96 frames) in
# one call would need ~30 GB; 8 at a time keeps it near 2.5 GB at no cost in speed on a GPU.
VAE_CHUNK_FRAMES = 8


EMA_FOLDER = "ema"  # the fine-tuning's moving average: unet/ and camera_embedding/ as save_trainable writes them
# diffusers' pipelines report each loaded component on this logger; its tools (and its pipeline
# tests) read the lines there, so ours are written where theirs are.
pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")


class ModelDirectoryError(FileNotFoundError, ValueError):
    """A model directory is missing, incomplete or not a recognised pipeline; the message says what.
    Also a ValueError, as diffusers' pipelines raise for a weight variant a directory does not have."""


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


KNOWN_CLASSES = {"VideoMVPipeline": None, "I2VGenXLPipeline": "i2v", "I2VGenXLUNet": "i2v",
                 "TextToVideoSDPipeline": "t2v", "UNet3DConditionModel": "t2v", "VideoToVideoSDPipeline": "t2v"}


def read_config(path: str) -> dict[str, Any]:
    """A JSON config of a model directory; ``ModelDirectoryError`` naming the file when it is not one."""
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelDirectoryError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ModelDirectoryError(f"{path} must hold a JSON object")
    return config


def detect_variant(model_dir: str) -> str:
    """"t2v" or "i2v" from model_index.json (or the unet's config); a class name that is not one of
    the pipelines this project loads is refused, naming the file."""
    for candidate in ("model_index.json", os.path.join("unet", "config.json")):
        path = os.path.join(model_dir, candidate)
        if os.path.exists(path):
            name = read_config(path).get("_class_name", "")
            if isinstance(name, list):  # [module, class]: a pipeline class saved beside the weights
                name = name[-1]
            if name not in KNOWN_CLASSES:
                raise ModelDirectoryError(f"{path} names {str(name)[:80]!r}, not a ModelScope T2V, I2VGen-XL or "
                                          f"VideoMV model (one of {', '.join(KNOWN_CLASSES)})")
            if KNOWN_CLASSES[name] is not None:
                return KNOWN_CLASSES[name]
            # VideoMVPipeline: the unet's class tells the variant
    raise ModelDirectoryError(
        f"{model_dir}: no model_index.json or unet/config.json naming a ModelScope T2V or I2VGen-XL model")


def missing_components(model_dir: str, variant: str) -> list[str]:
    """Component folders absent or without their config/weights."""
    missing = []
    for name in VARIANTS[variant].components:
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
    the config names none); a name diffusers has no scheduler of is refused, naming the file."""
    path = os.path.join(model_dir, "scheduler", "scheduler_config.json")
    name = read_config(path).get("_class_name", "") if os.path.isfile(path) else ""
    if not name:
        return DDIMScheduler
    found = getattr(diffusers, str(name), None)
    if not (isinstance(found, type) and issubclass(found, SchedulerMixin)):
        raise ModelDirectoryError(f"{path} names {str(name)[:80]!r}, which is not a diffusers scheduler")
    return found


def _resolution(unet_config: dict, vae_config: dict) -> int:
    """Image size generated: the UNet's latent sample size times the VAE's downsampling factor."""
    return int(unet_config["sample_size"]) * 2 ** (len(vae_config["block_out_channels"]) - 1)


def model_resolution(model_dir: str) -> int:
    """``_resolution`` read from a model directory's configs, without loading weights."""
    return _resolution(read_config(os.path.join(model_dir, "unet", "config.json")),
                       read_config(os.path.join(model_dir, "vae", "config.json")))


def _weights_numel(folder: str, weights_variant: str | None) -> int | None:
    """Elements in ``folder``'s safetensors weights (diffusers' ``variant`` files when given), read
    from the files' headers alone; None when it has none (``.bin`` only)."""
    from safetensors import safe_open

    names = [name for name in sorted(os.listdir(folder)) if name.endswith(".safetensors")
             and (f".{weights_variant}." in name if weights_variant else name.count(".") == 1)]
    if not names:
        return None
    total = 0
    for name in names:
        with safe_open(os.path.join(folder, name), framework="pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                total += int(torch.Size(shape).numel())
    return total


def check_config_fits_weights(folder: str, model_class: type, weights_variant: str | None = None) -> None:
    """Refuse, before anything is allocated, a ``config.json`` that describes more parameters than
    its weights hold (a 65,536-channel config would otherwise allocate 150 GB before the first
    weight is read). The module is built on the meta device, which allocates nothing."""
    weights = _weights_numel(folder, weights_variant)
    if weights is None:
        return
    with torch.device("meta"):
        if hasattr(model_class, "config_class") and hasattr(model_class.config_class, "from_pretrained"):
            module = model_class(model_class.config_class.from_pretrained(folder))  # transformers
        else:
            module = model_class.from_config(model_class.load_config(folder))  # diffusers
    parameters = sum(parameter.numel() for parameter in module.parameters())
    if parameters > weights * 1.01 + 1024:
        raise ModelDirectoryError(f"{folder}/config.json describes {parameters:,} parameters but its weights hold "
                                  f"{weights:,} values: the config does not belong to these weights (nothing loaded)")


def check_weights(component: str, module: torch.nn.Module) -> None:
    """Every parameter of a loaded ``module`` is floating point and finite; else a named error."""
    for name, parameter in module.named_parameters():
        if not parameter.is_floating_point():
            raise ModelDirectoryError(f"{component}: parameter {name} is {parameter.dtype}, not a float")
        if not torch.isfinite(parameter).all():
            bad = int((~torch.isfinite(parameter)).sum())
            raise ModelDirectoryError(f"{component}: parameter {name} holds {bad} NaN or infinite value(s)")


def check_variant_present(model_dir: str, weights_variant: str) -> None:
    """A ``ModelDirectoryError`` (a ValueError, worded as diffusers words it) when no component of
    ``model_dir`` has ``weights_variant``'s weight files (``*.fp16.safetensors`` for "fp16")."""
    marker = f".{weights_variant}."
    for _, _, names in os.walk(model_dir):
        if any(marker in name for name in names):
            return
    raise ModelDirectoryError(f"You are trying to load the model files of the `variant={weights_variant}`, but no "
                              f"such modeling files are available in {model_dir}")


def _loaded(component: str, model_dir: str, load: Any, model_class: type | None = None,
            weights_variant: str | None = None) -> Any:
    """``load()``, its failure a ``ModelDirectoryError`` naming the component's folder and the problem
    (a truncated weights file, a broken config). With ``model_class``, the config is checked
    against the weights first (``check_config_fits_weights``) and the loaded weights after
    (``check_weights``)."""
    folder = os.path.join(model_dir, component)
    try:
        if model_class is not None:
            check_config_fits_weights(folder, model_class, weights_variant)
        loaded = load()
        if model_class is not None:
            check_weights(f"{folder}/", loaded)
        pipeline_logger.info("Loaded %s as %s from `%s` subfolder of %s.", component, type(loaded).__name__,
                             component, model_dir)
        return loaded
    except ModelDirectoryError:
        raise
    except Exception as error:  # diffusers, transformers and safetensors each raise their own types
        message = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelDirectoryError(f"{folder}/ could not be loaded: {message}") from None


def load_components(location: str, num_frames: int | None = None, torch_dtype: torch.dtype | None = None,
                    tracking_uri: str | None = None, variant: str | None = None) -> tuple[str, dict[str, Any]]:
    """(the local directory, G's components) from the diffusers-layout directory at ``location``
    (``resolve_model_dir``); errors name what is missing.

    ``num_frames``: None takes the saved camera embedding's (24 for a published video model);
    another number must match it. ``variant``: diffusers' weight-file variant ("fp16" reads
    ``*.fp16.safetensors``). A directory without camera_embedding/ (a published video model) gets
    a fresh, zero-initialised one: the start of fine-tuning."""
    model_dir = resolve_model_dir(location, tracking_uri)
    weights_variant, variant = variant, detect_variant(model_dir)  # diffusers' file variant; t2v or i2v
    missing = missing_components(model_dir, variant)
    if missing:
        raise ModelDirectoryError(f"{model_dir} ({variant}) is incomplete; missing: {', '.join(missing)}")
    dtype: dict[str, Any] = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    if weights_variant is not None:
        check_variant_present(model_dir, weights_variant)
        dtype["variant"] = weights_variant
    unet_class = getattr(diffusers, VARIANTS[variant].unet_class)
    unet = _loaded("unet", model_dir, lambda: unet_class.from_pretrained(model_dir, subfolder="unet", **dtype),
                   unet_class, weights_variant)
    camera_dir = os.path.join(model_dir, CAMERA_FOLDER)
    if os.path.isdir(camera_dir):
        camera_embedding = _loaded(CAMERA_FOLDER, model_dir, lambda: CameraEmbedding.from_pretrained(
            camera_dir, **({"variant": weights_variant} if weights_variant else {})), CameraEmbedding, weights_variant)
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
        "unet": unet,
        "camera_embedding": camera_embedding,
        "vae": _loaded("vae", model_dir, lambda: AutoencoderKL.from_pretrained(model_dir, subfolder="vae", **dtype),
                       AutoencoderKL, weights_variant),
        "text_encoder": _loaded("text_encoder", model_dir, lambda: CLIPTextModel.from_pretrained(
            model_dir, subfolder="text_encoder", **dtype), CLIPTextModel, weights_variant),
        "tokenizer": _loaded("tokenizer", model_dir, lambda: CLIPTokenizer.from_pretrained(model_dir,
                                                                                           subfolder="tokenizer")),
        "scheduler": _loaded("scheduler", model_dir, lambda: scheduler_class(model_dir).from_pretrained(
            model_dir, subfolder="scheduler")),
    }
    if VARIANTS[variant].takes_image:
        components["image_encoder"] = _loaded("image_encoder", model_dir, lambda: CLIPVisionModelWithProjection
                                              .from_pretrained(model_dir, subfolder="image_encoder", **dtype),
                                              CLIPVisionModelWithProjection, weights_variant)
        components["feature_extractor"] = _loaded("feature_extractor", model_dir, lambda: CLIPImageProcessor
                                                  .from_pretrained(model_dir, subfolder="feature_extractor"))
    return model_dir, components


def ema_directory(model_dir: str) -> str:
    """The fine-tuning's moving-average weights in ``model_dir`` (``ema/``); an error when there are none."""
    ema_dir = os.path.join(model_dir, EMA_FOLDER)
    if not os.path.isdir(ema_dir):
        raise ModelDirectoryError(f"{model_dir} has no {EMA_FOLDER}/ weights: it was fine-tuned without an "
                                  "EMA (--ema-decay)")
    return ema_dir
