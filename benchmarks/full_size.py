"""The full-size networks from their published configs, with random weights (nothing downloaded).

One home for the configs the benchmarks build: ModelScope T2V's UNet, VAE and text encoder
(``text-to-video-ms-1.7b``'s ``unet/``, ``vae/`` and ``text_encoder/config.json``), and LGM "big"
(``models.reconstructor.options.PRESETS``). ``build_full_size_model`` assembles them into the project's
``VideoMVPipeline``, so training steps and sampling run the production code at full size.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet3DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from models.generator.camera_embedding import CameraEmbedding
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.generator.unet import MultiViewUNet

# unet/config.json of text-to-video-ms-1.7b (ModelScope T2V).
MODELSCOPE_T2V_UNET = dict(
    act_fn="silu", attention_head_dim=64, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    downsample_padding=1, in_channels=4, out_channels=4, layers_per_block=2, norm_eps=1e-5, norm_num_groups=32,
    sample_size=32,
)
# vae/config.json of text-to-video-ms-1.7b (Stable Diffusion's AutoencoderKL).
MODELSCOPE_T2V_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512,
)
# text_encoder/config.json of text-to-video-ms-1.7b (OpenCLIP ViT-H/14's text tower, 23 layers used).
MODELSCOPE_T2V_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)
PROMPT_TOKENS = 77


def build_unet(dtype: torch.dtype = torch.float32) -> MultiViewUNet:
    """G's UNet and camera embedding. Parameters are created directly in ``dtype`` (under
    ``FakeTensorMode`` casting fake tensors afterwards is not possible)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = UNet3DConditionModel(**MODELSCOPE_T2V_UNET)
        camera_embedding = CameraEmbedding(embedding_dim=unet.time_embedding.linear_2.out_features)
    finally:
        torch.set_default_dtype(previous)
    return MultiViewUNet(unet, camera_embedding)


def build_full_size_model(device: torch.device | str, dtype: torch.dtype = torch.float32) -> VideoMVPipeline:
    """ModelScope T2V as ``VideoMVPipeline.from_pretrained`` would load it, with random weights, on
    ``device``. The tokenizer is the tiny character-level one padded to 77 tokens: every id it gives
    is a valid row of the full text encoder's embedding, so the encoder's cost is the real one."""
    from models.toy.tiny import _tiny_tokenizer, t2v_scheduler

    tokenizer = _tiny_tokenizer()
    tokenizer.model_max_length = PROMPT_TOKENS
    previous = torch.get_default_dtype()
    with torch.device(device):
        unet = build_unet(dtype)
        torch.set_default_dtype(dtype)  # created in dtype: fake parameters cannot be cast afterwards
        try:
            vae = AutoencoderKL(**MODELSCOPE_T2V_VAE)
            text_encoder = CLIPTextModel(CLIPTextConfig(**MODELSCOPE_T2V_TEXT_ENCODER))
        finally:
            torch.set_default_dtype(previous)
    model = VideoMVPipeline(unet=unet.unet, camera_embedding=unet.camera_embedding, vae=vae,
                            text_encoder=text_encoder, tokenizer=tokenizer, scheduler=t2v_scheduler())
    return in_eval_mode(model)


def in_eval_mode(model: VideoMVPipeline) -> VideoMVPipeline:
    """``model`` in eval mode, as ``from_pretrained`` returns it (built modules are in training
    mode: the UNet's temporal convolutions would sample with dropout); a training step sets
    ``model.denoiser.train()`` itself, as the workers do."""
    for module in (model.denoiser, model.vae, model.text_encoder):
        module.eval()
    return model


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
