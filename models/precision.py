"""Inference precision: the dtype names the jobs take, and what "auto" means on each device.

fp16 on CUDA is the published models' own precision (ModelScope T2V and I2VGen-XL ship fp16
weights; LGM's official file is ``model_fp16_fixrot.safetensors``); on a CPU fp32 is the default,
since half-precision CPU kernels are slow or missing. bf16 works on both (recent CPUs and Ampere or
newer GPUs). The scheduler's arithmetic, latents and Gaussian rasterisation stay in float32 whatever
the weights' dtype (``pipeline.experiments.sampling``, ``models.gaussians.rendering``).
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
