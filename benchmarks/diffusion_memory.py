"""Memory of the full-size ModelScope T2V UNet per training sample, computed without a GPU.

Builds the published ``text-to-video-ms-1.7b`` UNet config inside ``FakeTensorMode`` (shapes and
dtypes only, no memory, no compute), runs one fp16 forward on 24 views at 256x256 (latents
4x24x32x32) and adds up the bytes of every tensor autograd saves for backward, with and without
the project's block-level gradient checkpointing. On a GPU, pass --measure to also measure the
real peak with torch.cuda.max_memory_allocated.

    python benchmarks/diffusion_memory.py [--frames 24] [--resolution 256] [--measure]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from diffusers import UNet3DConditionModel  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from models.camera_embedding import CameraEmbedding  # noqa: E402
from models.multiview_unet import MultiViewUNet  # noqa: E402

# unet/config.json of text-to-video-ms-1.7b (ModelScope T2V).
MODELSCOPE_T2V_UNET = dict(
    act_fn="silu", attention_head_dim=64, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    downsample_padding=1, in_channels=4, out_channels=4, layers_per_block=2, norm_eps=1e-5, norm_num_groups=32,
    sample_size=32,
)
GB = 1e9


def build(dtype: torch.dtype) -> MultiViewUNet:
    """Parameters are created directly in ``dtype`` (casting fake tensors afterwards is not possible)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        unet = UNet3DConditionModel(**MODELSCOPE_T2V_UNET)
        camera_embedding = CameraEmbedding(embedding_dim=unet.time_embedding.linear_2.out_features)
    finally:
        torch.set_default_dtype(previous)
    return MultiViewUNet(unet, camera_embedding)


def saved_activation_bytes(model: MultiViewUNet, inputs: dict, checkpointing: bool) -> tuple[int, int]:
    """(bytes of distinct storages autograd keeps for backward, the largest single block's share).

    Parameters are excluded. With checkpointing the block share is what one block's recomputation
    holds during backward, on top of the kept total.
    """
    parameter_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    kept: dict[int, int] = {}
    per_block: dict[int, dict[int, int]] = {}
    active: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameter_storages:
            kept[storage._cdata] = storage.nbytes()
            if active:
                per_block.setdefault(active[-1], {})[storage._cdata] = storage.nbytes()
        return tensor

    handles = []
    if not checkpointing:
        def leave(module, args, output) -> None:
            active.pop()

        for index, block in enumerate(model._blocks):
            handles.append(block.register_forward_pre_hook(lambda m, a, i=index: active.append(i)))
            handles.append(block.register_forward_hook(leave))
    if checkpointing:
        model.enable_gradient_checkpointing()

        def keep_block_inputs(module, args, kwargs):  # what non-reentrant checkpoint holds on to
            for value in [*args, *kwargs.values(), *(kwargs.get("res_hidden_states_tuple") or ())]:
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    pack(value)

        handles = [block.register_forward_pre_hook(keep_block_inputs, with_kwargs=True) for block in model._blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(**inputs)
    kept[output.untyped_storage()._cdata] = output.untyped_storage().nbytes()
    for handle in handles:
        handle.remove()
    model.disable_gradient_checkpointing()
    largest_block = max((sum(b.values()) for b in per_block.values()), default=0)
    return sum(kept.values()), largest_block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--measure", action="store_true", help="also measure the real peak on CUDA")
    args = parser.parse_args()
    latent = args.resolution // 8

    with torch.device("meta"):
        parameters = sum(p.numel() for p in build(torch.float16).parameters())
    print(f"ModelScope T2V UNet + camera embedding: {parameters / 1e9:.3f} B parameters")
    print(f"  weights fp16 {2 * parameters / GB:.1f} GB; fp32 master weights {4 * parameters / GB:.1f} GB; "
          f"fp32 gradients {4 * parameters / GB:.1f} GB; AdamW state {8 * parameters / GB:.1f} GB")

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build(torch.float16)
        model.train()
        inputs = {
            "sample": torch.randn(1, 4, args.frames, latent, latent, dtype=torch.float16, requires_grad=False),
            "timestep": torch.tensor([500]),
            "cameras": torch.randn(1, args.frames, 4, 4),
            "encoder_hidden_states": torch.randn(1, 77, 1024, dtype=torch.float16),
        }
        plain, largest_block = saved_activation_bytes(model, inputs, checkpointing=False)
        checkpointed, _ = saved_activation_bytes(model, inputs, checkpointing=True)
    print(f"activations per sample ({args.frames} x {args.resolution}^2, fp16), computed under FakeTensorMode:")
    print(f"  without gradient checkpointing: {plain / GB:.1f} GB")
    print(f"  with block-level checkpointing:  {checkpointed / GB:.1f} GB kept + {largest_block / GB:.1f} GB "
          f"while the largest block is recomputed = {(checkpointed + largest_block) / GB:.1f} GB peak")

    if args.measure:
        if not torch.cuda.is_available():
            print("--measure needs CUDA", file=sys.stderr)
            return 1
        model = build(torch.float16).cuda().train()
        real = {k: v.cuda() if v.device.type != "meta" else v for k, v in {
            "sample": torch.randn(1, 4, args.frames, latent, latent, dtype=torch.float16),
            "timestep": torch.tensor([500]),
            "cameras": torch.randn(1, args.frames, 4, 4),
            "encoder_hidden_states": torch.randn(1, 77, 1024, dtype=torch.float16),
        }.items()}
        for checkpointing in (False, True):
            (model.enable_gradient_checkpointing if checkpointing else model.disable_gradient_checkpointing)()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            model(**real).float().mean().backward()
            peak = torch.cuda.max_memory_allocated() - base
            model.zero_grad(set_to_none=True)
            print(f"  measured peak above weights, checkpointing={checkpointing}: {peak / GB:.1f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
