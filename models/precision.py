"""Precision: the dtype names the jobs take, what "auto" means on each device for inference, and
what a training job's autocast runs in.

fp16 on CUDA is the published models' own precision (ModelScope T2V and I2VGen-XL ship fp16
weights; LGM's official file is ``model_fp16_fixrot.safetensors``); on a CPU fp32 is the default,
since half-precision CPU kernels are slow or missing. bf16 works on Ampere or newer GPUs and on CPUs
with AVX-512 or AMX; on an AVX2 CPU it runs, several times slower than fp32 (``cpu_has_fast_bf16``).
The scheduler's arithmetic, latents and Gaussian rasterisation stay in float32 whatever the
weights' dtype (``pipeline.experiments.sampling``, ``models.gaussians.rendering``).
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


def inference_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``name`` ("auto"/None, "fp32", "fp16", "bf16" or a torch dtype) for weights on ``device``:
    "auto" is fp16 on CUDA and fp32 elsewhere."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ValueError(f"unsupported dtype {name}; use one of {sorted(DTYPES)}")
        return name
    if name in (None, "auto"):
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {DTYPE_CHOICES}")
    return DTYPES[name]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions and matrix products in oneDNN (AVX-512 or AMX).
    Elsewhere (AVX2) PyTorch takes its reference loops: a tiny fine-tuning step 4.6x slower than in
    fp32 (``benchmarks/cpu_autocast.py``: 7.9 s against 1.7 s on an AVX2 EPYC, 2026-12-07)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None:  # the op is private: the CPU capability PyTorch dispatches on says as much
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
    return bool(torch.backends.mkldnn.is_available() and check())


TRAINING_PRECISIONS = ("fp16", "bf16", "no")


def training_autocast(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a training ``precision`` ("fp16", "bf16" or "no") on ``device``; None
    is fp32. fp16 is fp16 on CUDA; a CPU, whose fp16 kernels are slow or missing, runs bf16 for it
    where it has bf16 instructions and fp32 where it has not (``cpu_has_fast_bf16``). "bf16" is
    bf16 on every device, as asked."""
    if precision not in TRAINING_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {TRAINING_PRECISIONS}")
    if precision == "no":
        return None
    if precision == "bf16" or torch.device(device).type == "cuda":
        return DTYPES[precision]
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def common_autocast(choices: list[torch.dtype | None]) -> torch.dtype | None:
    """One autocast dtype for ranks whose ``training_autocast`` differed (CPUs of two kinds: bf16 on
    some, fp32 on others): fp32 on all, so that every rank computes the same arithmetic."""
    return choices[0] if len(set(choices)) == 1 else None


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def allow_tf32() -> None:
    """TF32 matrix products and convolutions on CUDA (Ampere and newer): fp32 modules (a VAE kept in
    fp32, the Gaussian fit) run several times faster at a precision diffusion does not notice."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` with its floating-point weights in ``dtype``. Through ``nn.Module.to``: diffusers'
    ``ModelMixin.to`` warns about float32-kept modules on every dtype cast, even for models that keep
    none (the camera embedding, LGM), which would put a false warning in every healthy log."""
    return torch.nn.Module.to(module, dtype)
