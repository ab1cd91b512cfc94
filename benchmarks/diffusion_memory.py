"""GPU memory of a full-size fine-tuning step of G, computed without a GPU, for the real configuration.

Builds ModelScope T2V at full size from its published configs (``benchmarks.full_size``: the UNet
with the camera embedding in fp32 master weights, the fp32 VAE and text encoder) inside
``FakeTensorMode`` (shapes and dtypes only: no memory, no compute) and runs the training step the
workers run: ``models.generator.objective.diffusion_loss`` (VAE encode of 24 x micro-batch views at 256 px in
chunks, text encoder, the UNet under fp16 autocast with block-level gradient checkpointing),
backward, the fused AdamW step the workers take (``pipeline.train.worker.build_optimizer``), twice
(the second is the steady state). ``LiveBytes`` follows every tensor
the step creates and frees, so the peak is the allocator's peak less fragmentation; what lives
outside it is then added as the workers hold it:

- DDP: with ``gradient_as_bucket_view=True`` (``pipeline.train.worker.ddp_options``) the gradients
  are the all-reduce buckets; with False the buckets are a second copy of them (+4 bytes/parameter).
- ``--optimizer zero1`` on N workers keeps 1/N of AdamW's 8 bytes/parameter.
- Encoders off the GPU (precomputed latents, issue 27): the VAE and text encoder and their work go.
- The CUDA context and cuBLAS/cuDNN workspaces, outside PyTorch's allocator: ``CUDA_CONTEXT_GB``
  (measured on a GPU by ``benchmarks/gpu_check.py``'s training rows).

CPU autocast stands in for CUDA's (both run matrix products and convolutions in fp16 and keep the
reductions in fp32; the op lists differ in details). With ``--measure`` on a GPU the same step runs
for real and its ``torch.cuda.max_memory_allocated`` is printed beside the computed figure.

    python benchmarks/diffusion_memory.py [--micro-batches 1 2 4] [--workers 8] [--measure]
"""

from __future__ import annotations

import argparse
import os
import sys
import weakref
from typing import Any, Callable

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from benchmarks.full_size import build_full_size_model, parameter_count  # noqa: E402
from models.generator.objective import MultiViewBatch, diffusion_loss  # noqa: E402

GB = 1e9
CUDA_CONTEXT_GB = 0.6  # CUDA context + cuBLAS/cuDNN workspaces on an A100/H100 (outside the allocator)
GPUS = {"A100 40 GB": 40.0, "A100 80 GB / H100 80 GB": 80.0}
HEADROOM = 0.9  # of the GPU's memory planned for: the allocator's fragmentation and cached blocks take the rest


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors created inside it that are alive now, and the peak. Works under
    ``FakeTensorMode`` (a fake tensor's storage has its real size) and on real devices."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [live tensors on it, bytes]

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        output = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(output)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                entry = self._storages.get(storage._cdata)
                if entry is None:
                    entry = self._storages[storage._cdata] = [0, storage.nbytes()]
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                entry[0] += 1
                weakref.finalize(tensor, self._release, storage._cdata)
        return output

    def _release(self, key: int) -> None:
        entry = self._storages[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._storages[key]


def training_step(model: Any, optimizer: torch.optim.Optimizer, micro_batch: int, frames: int, resolution: int,
                  device: str, generator: torch.Generator | None, autocast: torch.dtype) -> None:
    views = torch.rand(micro_batch, frames, 3, resolution, resolution, device=device) * 2 - 1
    cameras = torch.eye(4, device=device).expand(micro_batch, frames, 4, 4)
    batch = MultiViewBatch(views=views, cameras=cameras, prompts=["a wooden chair, 3d asset"] * micro_batch)
    loss = diffusion_loss(model, batch, generator, condition_dropout=0.0, autocast_dtype=autocast)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def computed_peaks(micro_batches: list[int], frames: int, resolution: int) -> dict[str, Any]:
    """Under FakeTensorMode: parameter counts and, per micro-batch, the steady-state peak of the step
    (activations, transients, gradients and AdamW's state; weights apart)."""
    result: dict[str, Any] = {"peaks": {}}
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build_full_size_model("cpu", torch.float32)
        model.freeze_encoders()
        model.denoiser.enable_gradient_checkpointing()
        model.denoiser.train()
        result["unet"] = parameter_count(model.denoiser)
        result["encoders"] = parameter_count(model.vae) + parameter_count(model.text_encoder)
        for micro_batch in micro_batches:
            tracker = LiveBytes()
            with tracker, torch.no_grad():
                views = torch.rand(micro_batch, frames, 3, resolution, resolution) * 2 - 1
                model.encode_views(views), model.encode_prompts([""] * micro_batch)
            result.setdefault("encode_peaks", {})[micro_batch] = tracker.peak
            optimizer = torch.optim.AdamW(model.denoiser.parameters(), lr=3e-5, weight_decay=0.0, fused=True)
            tracker = LiveBytes()
            with tracker:
                training_step(model, optimizer, micro_batch, frames, resolution, "cpu", None, torch.float16)
                tracker.reset_peak()  # the optimizer state now exists: measure the steady state
                training_step(model, optimizer, micro_batch, frames, resolution, "cpu", None, torch.float16)
            result["peaks"][micro_batch] = tracker.peak
            del optimizer
    return result


def budget(unet: int, encoders: int, step_peak: int, buckets_as_views: bool, optimizer_shards: int,
           encoders_on_gpu: bool) -> dict[str, float]:
    """GB by item for one worker. ``step_peak`` includes gradients and AdamW's full state; the
    encoders' own work peaks below it (``encode_peak``), so taking them off saves their weights."""
    items = {"unet weights (fp32)": 4 * unet / GB, "encoders (fp32)": 4 * encoders / GB if encoders_on_gpu else 0.0}
    adam = 8 * unet / GB
    items["step peak: activations, transients, gradients, AdamW"] = step_peak / GB - adam * (1 - 1 / optimizer_shards)
    items["DDP buckets (a copy of the gradients)"] = 0.0 if buckets_as_views else 4 * unet / GB
    items["CUDA context"] = CUDA_CONTEXT_GB
    items["total"] = sum(items.values())
    return items


def measured_peak(micro_batch: int, frames: int, resolution: int) -> float:
    """The same step for real on CUDA (1 process, no DDP): torch.cuda.max_memory_allocated, GB."""
    model = build_full_size_model("cuda", torch.float32)
    model.freeze_encoders()
    model.denoiser.enable_gradient_checkpointing()
    model.denoiser.train()
    optimizer = torch.optim.AdamW(model.denoiser.parameters(), lr=3e-5, weight_decay=0.0, fused=True)
    generator = torch.Generator(device="cuda").manual_seed(0)
    training_step(model, optimizer, micro_batch, frames, resolution, "cuda", generator, torch.float16)
    torch.cuda.reset_peak_memory_stats()
    training_step(model, optimizer, micro_batch, frames, resolution, "cuda", generator, torch.float16)
    peak = torch.cuda.max_memory_allocated() / GB
    del model, optimizer
    torch.cuda.empty_cache()
    return peak


def _print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    names = list(rows[0][1])
    print("| " + " | ".join(["GB per worker"] + [name for name, _ in rows]) + " |")
    print("|---|" + "---:|" * len(rows))
    for item in names:
        print(f"| {item} | " + " | ".join(f"{values[item]:.1f}" for _, values in rows) + " |")


def main(argv: list[str] | None = None, print_table: Callable[..., None] = _print_table) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8, help="GPUs the zero1 optimizer state is sharded over")
    parser.add_argument("--measure", action="store_true", help="also run the step on CUDA and print its real peak")
    args = parser.parse_args(argv)

    computed = computed_peaks(args.micro_batches, args.frames, args.resolution)
    unet, encoders = computed["unet"], computed["encoders"]
    print(f"ModelScope T2V UNet + camera embedding: {unet / 1e9:.3f} B parameters; VAE + text encoder "
          f"{encoders / 1e9:.3f} B (frozen)")
    print(f"per parameter: fp32 weights {4 * unet / GB:.2f} GB, fp32 gradients {4 * unet / GB:.2f} GB, "
          f"AdamW state {8 * unet / GB:.2f} GB ({8 * unet / GB / args.workers:.2f} GB with zero1 on {args.workers})")
    for micro_batch, peak in computed["peaks"].items():
        print(f"micro-batch {micro_batch}: steady-state step peak {peak / GB:.1f} GB; the VAE and text encoder's work "
              f"alone peaks at {computed['encode_peaks'][micro_batch] / GB:.1f} GB (computed under FakeTensorMode)")

    configurations = [
        ("DDP buckets as views, AdamW", dict(buckets_as_views=True, optimizer_shards=1, encoders_on_gpu=True)),
        ("DDP buckets apart, AdamW", dict(buckets_as_views=False, optimizer_shards=1, encoders_on_gpu=True)),
        (f"views, zero1 on {args.workers}", dict(buckets_as_views=True, optimizer_shards=args.workers,
                                                encoders_on_gpu=True)),
        (f"views, zero1 on {args.workers}, encoders off", dict(buckets_as_views=True, optimizer_shards=args.workers,
                                                              encoders_on_gpu=False)),
    ]
    for micro_batch, peak in computed["peaks"].items():
        rows = [(name, budget(unet, encoders, peak, **options)) for name, options in configurations]
        print_table(f"micro-batch {micro_batch} ({args.frames} views at {args.resolution} px, fp16 autocast, "
                    "gradient checkpointing):", rows)
        fits = {gpu: [name for name, values in rows if values["total"] <= HEADROOM * size] for gpu, size in GPUS.items()}
        for gpu, names in fits.items():
            print(f"  fits a {gpu} with {100 - HEADROOM * 100:.0f}% to spare: {'; '.join(names) if names else 'none'}")

    if args.measure:
        if not torch.cuda.is_available():
            print("--measure needs CUDA", file=sys.stderr)
            return 1
        for micro_batch, peak in computed["peaks"].items():
            real = measured_peak(micro_batch, args.frames, args.resolution)
            weights = 4 * (unet + encoders) / GB
            print(f"micro-batch {micro_batch}: measured peak {real:.1f} GB = weights {weights:.1f} + step {real - weights:.1f} "
                  f"(computed step {peak / GB:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
