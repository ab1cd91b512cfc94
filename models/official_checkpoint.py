"""The authors' released checkpoints (alibaba/VideoMV ``.pth``) into this project's modules.

The authors train VGen/ModelScope's original ``UNetSD`` plus a camera MLP (``camera_embedding.0/.2``:
Linear(16, E), SiLU, Linear(E, E)), and their inference checkpoints also carry the LGM "big"
reconstructor as ``lgm_big.*``. A checkpoint is ``{"state_dict": ..., "step": int}`` (or a raw
state dict); an EMA checkpoint is sharded by rank (``ema_XXXXXXXX_rankRRRR.pth``, each with the keys
``keys[rank::world]``) and its shards are merged here. Files are read with ``weights_only=True``.

Conversion is strict, unlike the authors' ``load_state_dict(strict=False)``: every source tensor is
used exactly once, every target tensor is filled, shapes are equal (the temporal transformers'
Conv1d(k=1) projections become diffusers' Linear ones, the only reshaping); anything else is an
error naming the keys.

- UNet (text model): the ModelScope layout, mapped onto diffusers' ``UNet3DConditionModel`` with the
  renaming of diffusers' ``scripts/convert_ms_text_to_video_to_diffusers.py`` (Apache-2.0),
  rewritten here as rules; the image model's UNet onto ``I2VGenXLUNet`` with the extra branches of
  diffusers' ``convert_i2vgen_to_diffusers.py`` and one exact fix: the authors add the image-latent
  branch twice, so ``conv_in``'s concat channels are doubled (``fix_image_branch``).
- Camera MLP: the authors' cameras are camera-to-world matrices (OpenGL camera axes) in a **Z-up**
  world, ours in a Y-up one: ``theirs = WORLD_FROM_OURS @ ours`` for every camera (a constant
  rotation, measured on the authors' inference cameras against ``camera.orbit_c2w``). Flattened
  row-major, ``vec(W M) = kron(W, I4) vec(M)``, so the change is folded exactly into the first
  layer: ``linear_1.weight = W1 @ kron(W, I4)``. The converted model takes this project's cameras.
- Reconstructor: ``lgm_big.X`` is LGM's own key ``X`` (VideoMV's ``core/unet.py`` is LGM's), loaded
  strictly into the "big" architecture with VideoMV's camera setting (fov 39.6 at the true
  distance, as the tiny preset: no dolly).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Iterable

import torch

import camera
from models.reconstructor.model import LGM
from models.reconstructor.options import PRESETS
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.prompts import AUTHORS_NEGATIVE_PROMPT
from models.variants import VARIANTS

logger = logging.getLogger(__name__)

# theirs = WORLD_FROM_OURS @ ours: our Y-up world's (x, y, z) is their (y, z, x).
WORLD_FROM_OURS = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                                [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
LGM_PREFIX = "lgm_big."
CAMERA_PREFIX = "camera_embedding."
I2V_MARKERS = ("local_image_embedding.", "context_embedding.", "fps_embedding.")


class CheckpointConversionError(ValueError):
    """A checkpoint that does not map exactly onto the target modules (the message names the keys)."""


def read_checkpoint(paths: str | Iterable[str]) -> dict[str, torch.Tensor]:
    """The state dict of one ``.pth`` (wrapped in ``{"state_dict", "step"}`` or raw), or of the rank
    shards of one EMA checkpoint merged (their keys must be disjoint). Read with ``weights_only=True``."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickled code, or not a torch file
            raise CheckpointConversionError(f"{path} is not a checkpoint readable without running code "
                                            f"(weights_only=True): {type(error).__name__}") from None
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointConversionError(f"{path} holds no state dict of tensors")
        overlap = sorted(set(state) & set(merged))
        if overlap:
            raise CheckpointConversionError(f"{path} repeats keys of the other shards: {overlap[:5]}")
        merged.update(state)
    return merged


def split_checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(UNet tensors, camera MLP tensors, ``lgm_big`` tensors) with their prefixes removed."""
    unet, cameras, lgm = {}, {}, {}
    for key, tensor in state.items():
        if key.startswith(LGM_PREFIX):
            lgm[key[len(LGM_PREFIX):]] = tensor
        elif key.startswith(CAMERA_PREFIX):
            cameras[key[len(CAMERA_PREFIX):]] = tensor
        else:
            unet[key] = tensor
    return unet, cameras, lgm


def checkpoint_variant(unet_state: dict[str, torch.Tensor]) -> str:
    """"i2v" when the UNet has the image model's branches, else "t2v"."""
    return "i2v" if any(key.startswith(I2V_MARKERS) for key in unet_state) else "t2v"


_RESNET_RENAMES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
                   ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut"))


def _resnet(rest: str) -> str:
    for old, new in _RESNET_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def _block_part(prefix: str, layer: int, sub: int, rest: str, upsample_subs: set[int]) -> str:
    """The diffusers name of ``{block}.{sub}.{rest}`` of the ModelScope layout within a diffusers block."""
    if sub in upsample_subs:
        return f"{prefix}.upsamplers.0.{rest}"
    if sub == 0:
        if rest.startswith("temopral_conv."):  # sic: the authors' (and ModelScope's) spelling
            return f"{prefix}.temp_convs.{layer}.{rest[len('temopral_conv.'):]}"
        return f"{prefix}.resnets.{layer}.{_resnet(rest)}"
    return f"{prefix}.{('attentions', 'temp_attentions')[sub - 1]}.{layer}.{rest}"


# I2VGen-XL's image-latent temporal encoder (one attention + feed-forward layer); to_q/to_k/to_v are
# the thirds of the authors' fused to_qkv (``split_fused_qkv``).
_TEMPORAL_ENCODER = {
    "layers.0.0.norm.weight": "image_latents_temporal_encoder.norm1.weight",
    "layers.0.0.norm.bias": "image_latents_temporal_encoder.norm1.bias",
    "layers.0.0.fn.to_q.weight": "image_latents_temporal_encoder.attn1.to_q.weight",
    "layers.0.0.fn.to_k.weight": "image_latents_temporal_encoder.attn1.to_k.weight",
    "layers.0.0.fn.to_v.weight": "image_latents_temporal_encoder.attn1.to_v.weight",
    "layers.0.0.fn.to_out.0.weight": "image_latents_temporal_encoder.attn1.to_out.0.weight",
    "layers.0.0.fn.to_out.0.bias": "image_latents_temporal_encoder.attn1.to_out.0.bias",
    "layers.0.1.net.0.0.weight": "image_latents_temporal_encoder.ff.net.0.proj.weight",
    "layers.0.1.net.0.0.bias": "image_latents_temporal_encoder.ff.net.0.proj.bias",
    "layers.0.1.net.2.weight": "image_latents_temporal_encoder.ff.net.2.weight",
    "layers.0.1.net.2.bias": "image_latents_temporal_encoder.ff.net.2.bias",
}
FUSED_QKV = "local_temporal_encoder.layers.0.0.fn.to_qkv.weight"


def split_fused_qkv(unet_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image model's fused ``to_qkv`` as its three thirds (q, k, v), as diffusers keeps them."""
    if FUSED_QKV not in unet_state:
        return unet_state
    state = {k: v for k, v in unet_state.items() if k != FUSED_QKV}
    prefix = FUSED_QKV[: -len("to_qkv.weight")]
    for name, third in zip(("to_q", "to_k", "to_v"), torch.chunk(unet_state[FUSED_QKV], 3, dim=0)):
        state[f"{prefix}{name}.weight"] = third
    return state


def fix_image_branch(converted: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """The authors' I2VGen-XL adds its image-latent branch to the input twice (``unet_i2vgen.py:345-346``,
    "a bug, but it doesn't matter"), diffusers once: doubling the concat channels of ``conv_in``
    gives exactly the authors' network."""
    weight = converted["conv_in.weight"].clone()
    weight[:, in_channels:] *= 2
    return {**converted, "conv_in.weight": weight}


def modelscope_unet_names(keys: Iterable[str], layers_per_block: int) -> dict[str, str]:
    """ModelScope ``UNetSD`` key -> diffusers key, for every key: ``UNet3DConditionModel`` (text
    model) or, with the image branches (after ``split_fused_qkv``), ``I2VGenXLUNet``.

    ``input_blocks.0.0`` is conv_in and ``input_blocks.0.1`` the first temporal transformer; then
    each diffusers down block holds ``layers_per_block`` input blocks (ResBlock ``.0``, spatial
    transformer ``.1``, temporal transformer ``.2``) and a downsampler (``input_blocks.N.op``); the
    middle block is ResBlock, spatial, temporal, ResBlock; each up block holds
    ``layers_per_block + 1`` output blocks, the last with its upsampler's ``conv`` as the final sub-module.
    """
    keys = list(keys)
    per_up = layers_per_block + 1
    # Which sub-modules of an output block are its upsampler: the one holding only conv.weight/bias.
    subs: dict[int, dict[int, set[str]]] = {}
    for key in keys:
        match = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key)
        if match:
            subs.setdefault(int(match[1]), {}).setdefault(int(match[2]), set()).add(match[3])
    upsamplers = {block: {sub for sub, names in parts.items() if sub > 0 and names == {"conv.weight", "conv.bias"}}
                  for block, parts in subs.items()}
    names = {}
    for key in keys:
        fixed = {"time_embed.0.weight": "time_embedding.linear_1.weight", "time_embed.0.bias": "time_embedding.linear_1.bias",
                 "time_embed.2.weight": "time_embedding.linear_2.weight", "time_embed.2.bias": "time_embedding.linear_2.bias",
                 "input_blocks.0.0.weight": "conv_in.weight", "input_blocks.0.0.bias": "conv_in.bias",
                 "out.0.weight": "conv_norm_out.weight", "out.0.bias": "conv_norm_out.bias",
                 "out.2.weight": "conv_out.weight", "out.2.bias": "conv_out.bias"}
        if key in fixed:
            names[key] = fixed[key]
        elif key.startswith(("context_embedding.", "fps_embedding.")):  # I2VGen-XL: the same names
            names[key] = key
        elif key.startswith("local_image_concat."):
            names[key] = "image_latents_proj_in." + key[len("local_image_concat."):]
        elif key.startswith("local_image_embedding."):
            names[key] = "image_latents_context_embedding." + key[len("local_image_embedding."):]
        elif key.startswith("local_temporal_encoder."):
            names[key] = _TEMPORAL_ENCODER[key[len("local_temporal_encoder."):]]
        elif key.startswith("input_blocks.0.1."):
            names[key] = "transformer_in." + key[len("input_blocks.0.1."):]
        elif match := re.match(r"input_blocks\.(\d+)\.op\.(.+)", key):
            names[key] = f"down_blocks.{(int(match[1]) - 1) // (layers_per_block + 1)}.downsamplers.0.conv.{match[2]}"
        elif match := re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)", key):
            index = int(match[1]) - 1
            names[key] = _block_part(f"down_blocks.{index // (layers_per_block + 1)}", index % (layers_per_block + 1),
                                     int(match[2]), match[3], set())
        elif match := re.match(r"middle_block\.(\d+)\.(.+)", key):
            sub, rest = int(match[1]), match[2]
            if sub in (0, 3):
                names[key] = _block_part("mid_block", sub // 3, 0, rest, set())
            else:
                names[key] = _block_part("mid_block", 0, sub, rest, set())
        elif match := re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key):
            block = int(match[1])
            names[key] = _block_part(f"up_blocks.{block // per_up}", block % per_up, int(match[2]), match[3],
                                     upsamplers.get(block, set()))
        else:
            raise CheckpointConversionError(f"no rule for the UNet key {key!r}")
    return names


def _fit(source: torch.Tensor, target_shape: torch.Size, source_key: str, target_key: str) -> torch.Tensor:
    """``source`` for a target of ``target_shape``: equal shapes, or a Conv1d(k=1) weight [C, C, 1] for
    a Linear [C, C] (the temporal transformers' projections); anything else is an error."""
    if source.shape == target_shape:
        return source
    if source.ndim == 3 and source.shape[-1] == 1 and source.shape[:2] == target_shape:
        return source[:, :, 0]
    raise CheckpointConversionError(f"{source_key} {tuple(source.shape)} does not fit {target_key} {tuple(target_shape)}")


def convert_state(source: dict[str, torch.Tensor], names: dict[str, str], target: dict[str, torch.Tensor],
                  what: str) -> dict[str, torch.Tensor]:
    """``source`` renamed by ``names`` into ``target``'s keys and shapes (float32), strictly: every
    source key used once, every target key filled."""
    converted: dict[str, torch.Tensor] = {}
    unknown = sorted(set(names.values()) - set(target))
    if unknown:
        raise CheckpointConversionError(f"{what}: {len(unknown)} checkpoint tensors have no place in the target, "
                                        f"e.g. {unknown[:5]}")
    for key, new in names.items():
        if new in converted:
            raise CheckpointConversionError(f"{what}: two checkpoint tensors map onto {new}")
        converted[new] = _fit(source[key], target[new].shape, key, new).float()
    missing = sorted(set(target) - set(converted))
    if missing:
        raise CheckpointConversionError(f"{what}: {len(missing)} target tensors are not in the checkpoint, "
                                        f"e.g. {missing[:5]}")
    return converted


def camera_state(mlp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' camera MLP as ``CameraEmbedding`` weights for this project's cameras (Y-up world):
    the world change folded into the first layer (``linear_1.weight = W1 @ kron(W, I4)``)."""
    expected = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if set(mlp) != expected:
        raise CheckpointConversionError(f"camera_embedding.* holds {sorted(mlp)}, expected {sorted(expected)}")
    fold = torch.kron(WORLD_FROM_OURS, torch.eye(4, dtype=torch.float64))
    return {"linear_1.weight": (mlp["0.weight"].double() @ fold).float(), "linear_1.bias": mlp["0.bias"].float(),
            "linear_2.weight": mlp["2.weight"].float(), "linear_2.bias": mlp["2.bias"].float()}


def convert_official(checkpoint: str | Iterable[str], base: str, tracking_uri: str | None = None) -> VideoMVPipeline:
    """The authors' checkpoint (one ``.pth``, or the rank shards of an EMA one) as a
    ``VideoMVPipeline``: its UNet and camera MLP in diffusers' modules, ``lgm_big.*`` as the
    reconstructor when present, and from ``base`` (the published ModelScope T2V or I2VGen-XL
    directory, whose ``unet/config.json`` is the target UNet's) the VAE, encoders, tokenizer and
    scheduler.

    A checkpoint without a camera MLP (ModelScope's original UNet) converts too: the camera
    embedding stays zero, the video model as published. The model records the authors' caption
    suffix and negative prompt (``models.prompts``), which their inference uses.
    """
    unet_state, camera_mlp, lgm_state = split_checkpoint(read_checkpoint(checkpoint))
    variant = checkpoint_variant(unet_state)
    model = VideoMVPipeline.from_pretrained(base, tracking_uri=tracking_uri)
    if model.variant != variant:
        raise CheckpointConversionError(f"--base {base} is an {model.variant} model; the checkpoint is the {variant} "
                                        f"one: give the published {VARIANTS[variant].base_model} directory")
    unet = model.unet
    unet_state = split_fused_qkv(unet_state)
    names = modelscope_unet_names(unet_state, unet.config.layers_per_block)
    converted = convert_state(unet_state, names, unet.state_dict(), "UNet")
    if VARIANTS[variant].takes_image:
        converted = fix_image_branch(converted, unet.config.in_channels)
    unet.load_state_dict(converted, strict=True)
    embedding = model.camera_embedding
    if camera_mlp:
        embedding.load_state_dict(camera_state(camera_mlp), strict=True)
    else:
        logger.warning("the checkpoint has no camera MLP (ModelScope's original UNet?): the camera embedding stays "
                       "zero, so the views will not follow the cameras")
    embedding.register_to_config(prompt_suffix=VARIANTS[variant].caption_suffix,
                                 negative_prompt=AUTHORS_NEGATIVE_PROMPT, fps=VARIANTS[variant].fps)
    reconstructor = None
    if lgm_state:
        # VideoMV fine-tuned LGM big in its own camera setting: fov 39.6 at the true camera distance
        # (alibaba/VideoMV core/options.py:26 and tools/datasets/video_dataset.py:103-121), not LGM's 49.1 at 1.5.
        reconstructor = LGM(dataclasses.replace(PRESETS["big"], fov=camera.DEFAULT_FOV_DEG, cam_radius=None))
        target = reconstructor.state_dict()
        reconstructor.load_state_dict(convert_state(lgm_state, {k: k for k in lgm_state}, target, "lgm_big"),
                                      strict=True)
    return model.with_reconstructor(reconstructor)
