"""Differentiable rendering of 3D Gaussians: gsplat on CUDA, the "torch" backend (compiled CPU kernels) elsewhere.

``render_gaussians`` is the one entry point. Both backends follow gsplat 1.5's "classic" mode:
EWA projection with the Jacobian's x/z, y/z clamped to 0.3 x the half field of view beyond the
image's edges (from the principal point), a 0.3 px^2 low-pass added to each 2D covariance, each
Gaussian listed in the 16 px tiles of its opacity-aware box (per axis ``ceil(min(3.33,
sqrt(2 ln(255 o))) sqrt(cov))``: every pixel where its alpha can reach 1/255), per-pixel
``alpha = min(0.999, o * exp(-q/2))`` dropped below 1/255, front-to-back compositing by camera
depth over a background, each pixel stopping at the Gaussian that would take its transmittance to
1e-4 or below (that Gaussian left out). The "torch" backend follows the same rules; against
gsplat's definition it differs by float rounding only: colours, alphas, accumulated depth and
gradients within 1e-5 of a brute-force transcription of gsplat's kernels (``tests/test_gaussians.py``,
with off-centre intrinsics, cameras inside the scene and Gaussians far away), the projection within
1e-5 of gsplat's own PyTorch reference. gsplat's reference rasteriser itself needs CUDA, so the
compositing is compared with the transcription, not with gsplat's code.

The "torch" backend projects in PyTorch (``models.gaussians._torch_rasterizer._project``) and
composites CPU tensors with gsplat's per-pixel kernels compiled by numba
(``models.gaussians._cpu_rasterizer``), other devices with the tensor compositing of
``models.gaussians._torch_rasterizer`` (the reference the compiled kernels are tested against).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

import camera
from models.gaussians._cpu_rasterizer import render_cpu
from models.gaussians._torch_rasterizer import EPS_2D, NEAR_PLANE, _render_torch
from models.gaussians.gaussians import Gaussians

logger = logging.getLogger(__name__)


@dataclass
class RenderOutput:
    colors: torch.Tensor  # [C, H, W, 3], composited over the background
    alphas: torch.Tensor  # [C, H, W, 1], accumulated opacity
    # [C, H, W, 1] expected camera depth sum_i w_i z_i / alpha (gsplat's "ED"; z along the camera's
    # viewing axis, in world units), only when asked for; meaningless where alpha is near 0.
    depths: torch.Tensor | None = None


def render_gaussians(
    gaussians: Gaussians,
    c2w: torch.Tensor,
    intrinsics: torch.Tensor,
    width: int,
    height: int,
    background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
    backend: str = "auto",
    depth: bool = False,
) -> RenderOutput:
    """Render one scene from C cameras.

    Args:
        gaussians: one scene, unbatched (means [N, 3], ...; see ``models.gaussians.gaussians``).
        c2w: [C, 4, 4] OpenGL camera-to-world (``camera`` module convention).
        intrinsics: [3, 3] or [C, 3, 3] pinhole K in pixels (OpenCV pixel convention).
        width, height: image size.
        background: RGB in [0, 1], [3] or [C, 3].
        backend: "gsplat" (CUDA tensors), "torch", or "auto" (gsplat on CUDA, torch otherwise; if
            gsplat cannot be imported or its kernels cannot be built, one warning and torch from then on).
        depth: also return the expected depth (gsplat's ``render_mode="RGB+ED"``; the PyTorch path
            composites the camera z as a fourth channel, the same sum).
    Returns:
        ``RenderOutput`` with colors [C, H, W, 3], alphas [C, H, W, 1] and, with ``depth``, depths
        [C, H, W, 1], in float32, differentiable with respect to every Gaussian parameter.

    Rasterisation always runs in float32 with autocast off: gsplat's kernels take float32 only
    (half-precision Gaussians from a reconstructor under autocast would fail there), and the
    projection's matrix products lose too much in fp16. Gradients flow back in the inputs' dtype.
    """
    if gaussians.means.ndim != 2:
        raise ValueError("render_gaussians takes one scene: index a batch with gaussians[b]")
    device = gaussians.means.device
    with torch.autocast(device.type, enabled=False):
        output = _render(gaussians.to(torch.float32), c2w, intrinsics, width, height, background, backend, depth)
    if depth:  # accumulated depth -> expected depth, as gsplat normalises it
        output.depths = output.depths / output.alphas.clamp(min=1e-10)
    return output


def _render(gaussians: Gaussians, c2w: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int,
            background: torch.Tensor | tuple[float, float, float], backend: str, depth: bool) -> RenderOutput:
    """Colours, alphas and (``depth``) the accumulated depth, not yet divided by alpha."""
    device, dtype = gaussians.means.device, gaussians.means.dtype
    c2w = c2w.to(device=device, dtype=dtype)
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, device=device, dtype=dtype)
    viewmats = torch.linalg.inv(c2w @ flip)  # world-to-camera, OpenCV axes (gsplat's viewmats)
    Ks = intrinsics.to(device=device, dtype=dtype).expand(len(c2w), 3, 3)
    backgrounds = torch.as_tensor(background, device=device, dtype=dtype).expand(len(c2w), 3)
    if backend == "auto" and _prefers_gsplat(device):
        try:
            return _rasterize_gsplat(gaussians, viewmats, Ks, width, height, backgrounds, depth)
        except torch.cuda.OutOfMemoryError:
            # Out of memory is this call's, not gsplat's: the PyTorch rasteriser needs more, and a
            # replica or worker must not slow down for the rest of its life because of one large scene.
            raise
        except (ImportError, RuntimeError, OSError) as error:  # no gsplat, or its CUDA kernels failed to build
            _fall_back_to_torch(error)
    elif backend == "gsplat":
        return _rasterize_gsplat(gaussians, viewmats, Ks, width, height, backgrounds, depth)
    elif backend not in ("torch", "auto"):
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'gsplat' or 'torch'")
    if device.type == "cpu":
        return _split(*render_cpu(gaussians, viewmats, Ks, width, height, backgrounds, depth), depth)
    outputs = [_render_torch(gaussians, viewmats[i], Ks[i], width, height, backgrounds[i], depth)
               for i in range(len(c2w))]
    return _split(torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs]), depth)


def _split(colors: torch.Tensor, alphas: torch.Tensor, depth: bool) -> RenderOutput:
    """A rasteriser's [C, H, W, 3 (+1 accumulated depth)] and alphas as a ``RenderOutput``."""
    if not depth:
        return RenderOutput(colors, alphas)
    return RenderOutput(colors[..., :3], alphas, colors[..., 3:])


_gsplat_failed: BaseException | None = None  # set once gsplat failed in this process: use torch


def _prefers_gsplat(device: torch.device) -> bool:
    """"auto" uses gsplat for CUDA tensors, unless it already failed in this process."""
    return device.type == "cuda" and _gsplat_failed is None


def backend_in_use(device: torch.device | str) -> dict[str, str | None]:
    """What ``backend="auto"`` renders with on ``device``: {"backend": "gsplat" or "torch",
    "fallback": why gsplat is not used where it would be (None when it is, or on a CPU)}."""
    device = torch.device(device)
    if _prefers_gsplat(device):
        return {"backend": "gsplat", "fallback": None}
    reason = None if device.type != "cuda" else f"{type(_gsplat_failed).__name__}: {_gsplat_failed}".splitlines()[0]
    return {"backend": "torch", "fallback": reason}


def warm_up(device: torch.device | str) -> dict[str, str | None]:
    """Render one tiny scene on ``device`` so that gsplat's CUDA kernels are compiled or loaded now
    (minutes on first use), not on the first request; returns ``backend_in_use``. A failure to
    build them is the one fallback warning, here."""
    device = torch.device(device)
    scene = Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.1),
                      opacities=torch.ones(1), colors=torch.full((1, 3), 0.5)).to(device)
    c2w = torch.as_tensor(camera.orbit_c2w(0.0, [0.0], camera.DEFAULT_DISTANCE), dtype=torch.float32)
    K = torch.as_tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, 16, 16), dtype=torch.float32)
    render_gaussians(scene, c2w, K, 16, 16)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return backend_in_use(device)


def _fall_back_to_torch(error: BaseException) -> None:
    global _gsplat_failed
    _gsplat_failed = error
    logger.warning("gsplat is unusable here (%s: %s); rendering Gaussians with the PyTorch rasteriser "
                   "(same conventions, slower). Install gsplat with a CUDA toolkit to use it.",
                   type(error).__name__, str(error).splitlines()[0] if str(error) else "")


def _rasterize_gsplat(gaussians: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                      backgrounds: torch.Tensor, depth: bool) -> RenderOutput:
    import gsplat  # its CUDA kernels are compiled (or loaded) on the first call

    # "RGB+D" (accumulated depth) rather than "RGB+ED": both backends divide by alpha in one place.
    colors, alphas, _ = gsplat.rasterization(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors,
        viewmats, Ks, width, height, near_plane=NEAR_PLANE, eps2d=EPS_2D, backgrounds=backgrounds,
        render_mode="RGB+D" if depth else "RGB",
    )
    return _split(colors, alphas, depth)


def render_batch(
    gaussians: Gaussians,
    c2w: torch.Tensor,
    fov: float,
    size: int,
    background: torch.Tensor | tuple[float, float, float],
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a batch of scenes, each from its own cameras.

    Args:
        gaussians: batched, means [B, N, 3] ...
        c2w: [B, V, 4, 4] OpenGL camera-to-world in the Gaussians' frame.
        fov: vertical field of view (degrees); size: square image size.
        background: RGB in [0, 1].
    Returns:
        colors [B, V, 3, H, W] and alphas [B, V, 1, H, W] (channels first, for losses).
    """
    K = torch.as_tensor(camera.intrinsics_from_fov(fov, size, size), dtype=torch.float32)
    colors, alphas = [], []
    for index in range(c2w.shape[0]):
        output = render_gaussians(gaussians[index], c2w[index], K, size, size, background, backend)
        colors.append(output.colors.permute(0, 3, 1, 2))
        alphas.append(output.alphas.permute(0, 3, 1, 2))
    return torch.stack(colors), torch.stack(alphas)
