"""Tiny random-weight versions of every component, saved in the real diffusers layout.

Tests and the local demo build these offline (no hub access) and load them through
``VideoMVPipeline.from_pretrained``, exactly the code path of a published checkpoint. The
architectures are the real classes with small widths; the schedulers are the published ones'.
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, I2VGenXLUNet, UNet3DConditionModel
from diffusers.schedulers import DDIMScheduler
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

import camera
from models.generator.camera_embedding import CameraEmbedding
from models.variants import VARIANTS, variant_of
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.toy.pixel_vae import PixelShuffleVAE

TINY_RESOLUTION = 32  # pixels; the tiny VAE downsamples 2x to 16x16 latents
TOY_LATENT_CHANNELS = 8  # the main job's toy text model; a variant whose UNet fixes them uses its own
_WIDTH = 32
_VAE_WIDTHS = {2: (16, 32), 4: (16, 32, 64), 8: (16, 32, 64, 64)}  # spatial factor -> block widths


def t2v_scheduler() -> DDIMScheduler:
    """ModelScope T2V's schedule: eps-prediction, scaled-linear betas 0.00085-0.012, 1000 steps."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def i2v_scheduler() -> DDIMScheduler:
    """I2VGen-XL's schedule: v-prediction, cosine betas rescaled to zero terminal SNR."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                         rescale_betas_zero_snr=True, clip_sample=False, set_alpha_to_one=True, steps_offset=1,
                         timestep_spacing="leading")


def _tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer with no merges (one token per character)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def build_tiny(variant: str, num_frames: int = camera.NUM_VIEWS, seed: int = 0, pixel_latents: bool = False,
               resolution: int = TINY_RESOLUTION, latent_downsample: int = 2, latent_channels: int = 4,
               prediction: str | None = None) -> VideoMVPipeline:
    """Random tiny components of the given variant ("t2v" or "i2v"). The image model needs
    ``latent_channels=4``: diffusers' ``I2VGenXLUNet`` encodes the condition's latents with
    convolutions fixed at 4 input channels (the published VAE's).

    Args:
        pixel_latents: replace the VAE with the lossless ``PixelShuffleVAE`` (12-channel latents at
            half the resolution) for experiments on the UNet and camera embedding alone.
        resolution: image size in pixels.
        latent_downsample: the VAE's spatial factor (2, 4 or 8; the published VAEs use 8).
        latent_channels: the VAE's latent channels (the published VAEs use 4).
        prediction: None for the variant's published schedule, or "v" / "eps" to choose
            (``i2v_scheduler`` / ``t2v_scheduler``). A model trained from scratch at toy scale
            learns faster with "v": with eps, x0 = (x_t - sqrt(1 - a) eps) / sqrt(a) multiplies the
            error of a briefly trained eps estimate by up to 15 near t = T (docs/results.md).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    if latent_downsample not in _VAE_WIDTHS:
        raise ValueError(f"latent_downsample must be one of {sorted(_VAE_WIDTHS)}, got {latent_downsample}")
    if prediction not in (None, "v", "eps"):
        raise ValueError(f"prediction must be None, 'v' or 'eps', got {prediction!r}")
    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=_WIDTH, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=_WIDTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    if pixel_latents:
        vae = PixelShuffleVAE(factor=2)
    else:
        widths = _VAE_WIDTHS[latent_downsample]
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=widths,
            layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * len(widths),
            up_block_types=("UpDecoderBlock2D",) * len(widths), norm_num_groups=8, sample_size=resolution,
        )
    channels = vae.config.latent_channels
    unet_config = dict(
        sample_size=resolution // (2 if pixel_latents else latent_downsample), in_channels=channels,
        out_channels=channels, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=_WIDTH, norm_num_groups=8,
    )
    facts = variant_of(variant)
    if facts.latent_channels is not None and channels != facts.latent_channels:
        raise ValueError(f"the {variant} variant needs {facts.latent_channels} latent channels ({facts.unet_class} "
                         f"is built for them), got latent_channels={channels}")
    if facts.takes_prompt:
        unet = UNet3DConditionModel(attention_head_dim=8, **unet_config)
        extra = {}
        scheduler = t2v_scheduler()
    else:
        unet = I2VGenXLUNet(attention_head_dim=8, num_attention_heads=None, **unet_config)
        extra = {
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=_WIDTH, intermediate_size=64, projection_dim=_WIDTH, num_hidden_layers=2,
                num_attention_heads=4, image_size=TINY_RESOLUTION, patch_size=8,
            )),
            "feature_extractor": CLIPImageProcessor(
                size={"shortest_edge": TINY_RESOLUTION}, crop_size={"height": TINY_RESOLUTION, "width": TINY_RESOLUTION},
            ),
        }
        scheduler = i2v_scheduler()
    if prediction is not None:
        scheduler = i2v_scheduler() if prediction == "v" else t2v_scheduler()
    camera_embedding = CameraEmbedding(embedding_dim=unet.time_embedding.linear_2.out_features, num_frames=num_frames)
    return VideoMVPipeline(unet=unet, camera_embedding=camera_embedding, vae=vae, text_encoder=text_encoder,
                           tokenizer=tokenizer, scheduler=scheduler, **extra)


def make_tiny(variant: str, output_dir: str, seed: int = 0, **options: Any) -> str:
    """Build and save a tiny model directory (``options``: ``build_tiny``'s); returns ``output_dir``.

    Like a published video model it has no camera_embedding/: loading creates a fresh one.
    """
    save_tiny(build_tiny(variant, seed=seed, **options), output_dir)
    return output_dir


def save_tiny(model: VideoMVPipeline, output_dir: str) -> str:
    """Save ``model`` as a published video model directory (diffusers' own pipeline class, no
    camera_embedding/), as text-to-video-ms-1.7b and i2vgen-xl are published."""
    components = {"vae": model.vae, "text_encoder": model.text_encoder, "tokenizer": model.tokenizer,
                  "unet": model.unet, "scheduler": model.scheduler}
    published = getattr(diffusers, VARIANTS[model.variant].published_pipeline)
    if VARIANTS[model.variant].takes_image:
        components.update(image_encoder=model.image_encoder, feature_extractor=model.feature_extractor)
    pipeline = published(**components)
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    return output_dir


def make_tiny_evaluation_weights(output_dir: str, seed: int = 0) -> dict[str, str]:
    """Random-weight metric networks in their published file layouts, for tests and the demo:
    ``clip/`` (a Hugging Face CLIP directory), ``raft-things.pth`` (reference RAFT keys, with the
    ``module.`` prefix of the published file), ``lpips/vgg16.pth`` (torchvision VGG16 keys) and
    ``lpips/vgg.pth`` (lpips lin keys). Returns the paths by name (clip, raft, lpips_vgg, lpips_lin).

    Random weights make the scores meaningless as numbers; the files exercise the real loaders.
    """
    import os

    from transformers import CLIPConfig, CLIPModel

    from models.metrics.lpips import LPIPS
    from models.metrics.raft import RAFT

    torch.manual_seed(seed)
    paths = {"clip": os.path.join(output_dir, "clip"), "raft": os.path.join(output_dir, "raft-things.pth"),
             "lpips_vgg": os.path.join(output_dir, "lpips", "vgg16.pth"),
             "lpips_lin": os.path.join(output_dir, "lpips", "vgg.pth")}
    tokenizer = _tiny_tokenizer()
    clip = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": _WIDTH, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": tokenizer.model_max_length, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": _WIDTH, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": TINY_RESOLUTION, "patch_size": 8},
        projection_dim=_WIDTH,
    ))
    clip.save_pretrained(paths["clip"], safe_serialization=True)
    tokenizer.save_pretrained(paths["clip"])
    CLIPImageProcessor(size={"shortest_edge": TINY_RESOLUTION},
                       crop_size={"height": TINY_RESOLUTION, "width": TINY_RESOLUTION}).save_pretrained(paths["clip"])
    torch.save({f"module.{key}": value for key, value in RAFT().state_dict().items()}, paths["raft"])
    lpips = LPIPS()
    os.makedirs(os.path.dirname(paths["lpips_vgg"]), exist_ok=True)
    torch.save({f"features.{key}": value for key, value in lpips.features.state_dict().items()}, paths["lpips_vgg"])
    torch.save({key: torch.rand_like(value) for key, value in lpips.state_dict().items() if key.startswith("lin")},
               paths["lpips_lin"])
    return paths
