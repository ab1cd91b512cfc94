"""The CPU rasteriser of 3D Gaussians: gsplat's per-pixel kernels, compiled with numba (private;
``models.gaussians.rendering`` is the public module and uses this for CPU tensors).

Projection stays in PyTorch (``_torch_rasterizer._project``, so its gradients come from autograd);
the rest runs as gsplat's CUDA kernels do, one pixel at a time:

- **binning**: the Gaussians of each view are sorted by depth once, then counted and placed into
  the 4 px cells of ``_torch_rasterizer.bin_tiles`` (same cull, same lists) in that order, so every
  cell's list is front to back without sorting the pairs;
- **forward**: each pixel walks its cell's list, ``alpha = min(0.999, o * exp(power))``, skipped when
  ``power > 0`` or ``alpha < 1/255``, stopping at the Gaussian that would take its transmittance to
  1e-4 or below (left out); it keeps its final transmittance and how far it went;
- **backward**: gsplat's ``rasterize_to_pixels_bwd``: each pixel walks back from the last drawn
  Gaussian, recovering each transmittance by division, and accumulates the gradients of the 2D
  means, the conics, the opacities and the features; views run in parallel, each into its own
  gradient buffers (no two threads write one Gaussian's gradient).

Everything is float32, as in gsplat's kernels. The PyTorch compositing of
``_torch_rasterizer._render_torch`` stays the device-independent reference it is tested against
(``tests/test_gaussians.py``); costs in ``docs/costs.md`` (``benchmarks/gaussians.py``).
"""

from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from models.gaussians._torch_rasterizer import ALPHA_MAX, ALPHA_MIN, CELL, T_STOP, _project, cell_ranges
from models.gaussians.gaussians import Gaussians

_F = np.float32
_HALF = _F(0.5)
_ONE = _F(1.0)
_ZERO = _F(0.0)
_ALPHA_MAX = _F(ALPHA_MAX)
_ALPHA_MIN = _F(ALPHA_MIN)
_T_STOP = _F(T_STOP)

# numba's OpenMP layer, a second OpenMP runtime beside torch's, left torch's own kernels in the same
# process five times slower (the local run's reconstructor step, VAE convolutions included: 2.2 s
# against 0.3 s); its workqueue layer keeps out of their way. The workqueue layer must not be
# entered from two threads at once (a Serve replica or a thread pool may render concurrently).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_KERNEL_LOCK = threading.Lock()


@njit(parallel=True, cache=True)
def _count_pairs(order, ranges, cells_x, cells):  # pragma: no cover - compiled
    """Pairs per (view, cell) [V * cells] from the cell ranges [V, N, 4] (x0, x1, y0, y1; empty when x0 > x1)."""
    views, count = order.shape
    per_cell = np.zeros(views * cells, dtype=np.int64)
    for view in prange(views):
        base = view * cells
        for gaussian in range(count):
            x0, x1, y0, y1 = ranges[view, gaussian, 0], ranges[view, gaussian, 1], ranges[view, gaussian, 2], \
                ranges[view, gaussian, 3]
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    per_cell[base + y * cells_x + x] += 1
    return per_cell


@njit(parallel=True, cache=True)
def _fill_pairs(order, ranges, cells_x, cells, starts, total):  # pragma: no cover - compiled
    """Gaussian ids of every cell's list, front to back (``order`` [V, N]: each view's ids by depth)."""
    views, count = order.shape
    pair_gaussian = np.empty(total, dtype=np.int32)
    for view in prange(views):
        cursor = starts[view * cells:(view + 1) * cells].copy()
        for rank in range(count):
            gaussian = order[view, rank]
            x0, x1, y0, y1 = ranges[view, gaussian, 0], ranges[view, gaussian, 1], ranges[view, gaussian, 2], \
                ranges[view, gaussian, 3]
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    cell = y * cells_x + x
                    pair_gaussian[cursor[cell]] = gaussian
                    cursor[cell] += 1
    return pair_gaussian


@njit(inline="always", cache=True)
def _at_pixel(x, y, means2d, conics, opacities, view, gaussian):  # pragma: no cover - compiled
    """One Gaussian at the pixel centre (x, y): (dx, dy, exp(power), opacity * exp(power)), the last
    0 where ``power > 0`` (gsplat skips those, as it skips alphas under 1/255)."""
    dx = x - means2d[view, gaussian, 0]
    dy = y - means2d[view, gaussian, 1]
    a, b, c = conics[view, gaussian, 0], conics[view, gaussian, 1], conics[view, gaussian, 2]
    power = -_HALF * (a * dx * dx + c * dy * dy) - b * dx * dy
    if power > _ZERO:
        return dx, dy, _ZERO, _ZERO
    visibility = np.exp(power)
    return dx, dy, visibility, opacities[gaussian] * visibility


@njit(parallel=True, cache=True, error_model="numpy")
def _forward(means2d, conics, opacities, features, pair_gaussian, starts, per_cell, cells_x, cells, cell, width,
             height):  # pragma: no cover - compiled
    """Accumulated features [V, H, W, D] (no background), final transmittance [V, H, W] and, per
    pixel, how many list entries it went through up to its last drawn Gaussian [V, H, W]."""
    views = means2d.shape[0]
    channels = features.shape[2]
    accumulated = np.zeros((views, height, width, channels), dtype=np.float32)
    transmittance = np.ones((views, height, width), dtype=np.float32)
    last = np.zeros((views, height, width), dtype=np.int32)
    for job in prange(views * cells):
        view, index = job // cells, job % cells
        length = per_cell[job]
        if length == 0:
            continue
        start = starts[job]
        left, top = (index % cells_x) * cell, (index // cells_x) * cell
        for py in range(top, min(top + cell, height)):
            for px in range(left, min(left + cell, width)):
                x, y = _F(px) + _HALF, _F(py) + _HALF
                t = _ONE
                went = 0
                for k in range(length):
                    gaussian = pair_gaussian[start + k]
                    _, _, _, unclamped = _at_pixel(x, y, means2d, conics, opacities, view, gaussian)
                    alpha = min(_ALPHA_MAX, unclamped)
                    if alpha < _ALPHA_MIN:
                        continue
                    next_t = t * (_ONE - alpha)
                    if next_t <= _T_STOP:
                        break
                    weight = alpha * t
                    for channel in range(channels):
                        accumulated[view, py, px, channel] += features[view, gaussian, channel] * weight
                    t = next_t
                    went = k + 1
                transmittance[view, py, px] = t
                last[view, py, px] = went
    return accumulated, transmittance, last


@njit(parallel=True, cache=True, error_model="numpy")
def _backward(means2d, conics, opacities, features, pair_gaussian, starts, per_cell, cells_x, cells, cell, width,
              height, transmittance, last, grad_accumulated, grad_transmittance):  # pragma: no cover - compiled
    """Gradients of the 2D means [V, N, 2], conics [V, N, 3], opacities [V, N] (per view) and
    features [V, N, D] from those of the forward's outputs (gsplat's backward, view by view)."""
    views, count = means2d.shape[0], means2d.shape[1]
    channels = features.shape[2]
    grad_means2d = np.zeros((views, count, 2), dtype=np.float32)
    grad_conics = np.zeros((views, count, 3), dtype=np.float32)
    grad_opacities = np.zeros((views, count), dtype=np.float32)
    grad_features = np.zeros((views, count, channels), dtype=np.float32)
    for view in prange(views):
        behind = np.zeros(channels, dtype=np.float32)  # sum of w_k f_k over the Gaussians behind
        for index in range(cells):
            job = view * cells + index
            if per_cell[job] == 0:
                continue
            start = starts[job]
            left, top = (index % cells_x) * cell, (index // cells_x) * cell
            for py in range(top, min(top + cell, height)):
                for px in range(left, min(left + cell, width)):
                    x, y = _F(px) + _HALF, _F(py) + _HALF
                    t_final = transmittance[view, py, px]
                    t = t_final
                    grad_t = grad_transmittance[view, py, px]
                    behind[:] = _ZERO
                    for k in range(last[view, py, px] - 1, -1, -1):
                        gaussian = pair_gaussian[start + k]
                        dx, dy, visibility, unclamped = _at_pixel(x, y, means2d, conics, opacities, view, gaussian)
                        alpha = min(_ALPHA_MAX, unclamped)
                        if alpha < _ALPHA_MIN:
                            continue
                        inverse = _ONE / (_ONE - alpha)
                        t = t * inverse  # the transmittance in front of this Gaussian
                        weight = alpha * t
                        grad_alpha = -t_final * inverse * grad_t
                        for channel in range(channels):
                            grad = grad_accumulated[view, py, px, channel]
                            feature = features[view, gaussian, channel]
                            grad_features[view, gaussian, channel] += weight * grad
                            grad_alpha += (feature * t - behind[channel] * inverse) * grad
                            behind[channel] += feature * weight
                        if unclamped <= _ALPHA_MAX:  # the clamp passes no gradient
                            grad_power = alpha * grad_alpha
                            grad_conics[view, gaussian, 0] += -_HALF * dx * dx * grad_power
                            grad_conics[view, gaussian, 1] += -dx * dy * grad_power
                            grad_conics[view, gaussian, 2] += -_HALF * dy * dy * grad_power
                            a, b, c = conics[view, gaussian, 0], conics[view, gaussian, 1], conics[view, gaussian, 2]
                            grad_means2d[view, gaussian, 0] += (a * dx + b * dy) * grad_power
                            grad_means2d[view, gaussian, 1] += (c * dy + b * dx) * grad_power
                            grad_opacities[view, gaussian] += visibility * grad_alpha
    return grad_means2d, grad_conics, grad_opacities, grad_features


def _threads() -> int:
    """numba's threads follow torch's (a Ray worker or a test may have limited them)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


class _Layout:
    """Every view's cell lists: numpy arrays for the kernels, built once per forward."""

    def __init__(self, means2d: torch.Tensor, depths: torch.Tensor, radii: torch.Tensor, conics: torch.Tensor,
                 opacities: torch.Tensor, width: int, height: int) -> None:
        self.width, self.height, self.cell = width, height, CELL
        self.cells_x = math.ceil(width / CELL)
        self.cells = self.cells_x * math.ceil(height / CELL)
        views, count = depths.shape
        ranges = cell_ranges(means2d.reshape(-1, 2), radii.reshape(-1, 2), width, height,
                             opacities.repeat(views), conics.reshape(-1, 3), CELL).reshape(views, count, 4)
        order = torch.argsort(depths, dim=-1)
        self.ranges = ranges.to(torch.int32).numpy()
        self.order = order.to(torch.int32).numpy()
        with _KERNEL_LOCK:
            numba.set_num_threads(_threads())
            self.per_cell = _count_pairs(self.order, self.ranges, self.cells_x, self.cells)
            self.starts = np.cumsum(self.per_cell) - self.per_cell
            self.pair_gaussian = _fill_pairs(self.order, self.ranges, self.cells_x, self.cells, self.starts,
                                             int(self.per_cell.sum()))

    def arguments(self) -> tuple:
        return (self.pair_gaussian, self.starts, self.per_cell, self.cells_x, self.cells, self.cell, self.width,
                self.height)


class _Composite(torch.autograd.Function):
    """(means2d [V, N, 2], conics [V, N, 3], opacities [N], features [V, N, D]) -> accumulated
    features [V, H, W, D] and final transmittance [V, H, W], differentiable in all four."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, layout: _Layout):
        inputs = [tensor.detach().contiguous() for tensor in (means2d, conics, opacities, features)]
        with _KERNEL_LOCK:
            numba.set_num_threads(_threads())
            accumulated, transmittance, last = _forward(*(t.numpy() for t in inputs), *layout.arguments())
        # Saved as tensors (autograd then notices an input changed in place before backward); the
        # transmittance copied, since the output shares its memory.
        ctx.save_for_backward(*inputs, torch.from_numpy(transmittance.copy()), torch.from_numpy(last))
        ctx.layout = layout
        return torch.from_numpy(accumulated), torch.from_numpy(transmittance)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_accumulated, grad_transmittance):
        *inputs, transmittance, last = (tensor.numpy() for tensor in ctx.saved_tensors)
        grad_accumulated = grad_accumulated.contiguous().numpy() if grad_accumulated is not None else \
            np.zeros((*transmittance.shape, inputs[3].shape[-1]), np.float32)
        grad_transmittance = grad_transmittance.contiguous().numpy() if grad_transmittance is not None else \
            np.zeros_like(transmittance)
        with _KERNEL_LOCK:
            numba.set_num_threads(_threads())
            grads = _backward(*inputs, *ctx.layout.arguments(), transmittance, last, grad_accumulated,
                              grad_transmittance)
        means2d, conics, opacities, features = (torch.from_numpy(grad) for grad in grads)
        return means2d, conics, opacities.sum(0), features, None


def render_cpu(gaussians: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
               backgrounds: torch.Tensor, with_depth: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours [C, H, W, 3] (or, ``with_depth``, [C, H, W, 4]: the last channel the accumulated
    camera depth over a background depth of 0, as gsplat's "RGB+D") and alphas [C, H, W, 1] of
    float32 CPU Gaussians from C cameras (``viewmats`` [C, 4, 4] world-to-camera in OpenCV axes,
    ``Ks`` [C, 3, 3], ``backgrounds`` [C, 3])."""
    projected = [_project(gaussians, viewmats[i], Ks[i], width, height) for i in range(len(viewmats))]
    means2d, depths, conics, radii = (torch.stack(parts) for parts in zip(*projected))
    views = len(viewmats)
    features = gaussians.colors.expand(views, *gaussians.colors.shape)
    if with_depth:
        features = torch.cat([features, depths[..., None]], dim=-1)
        backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(views, 1)], dim=-1)
    layout = _Layout(means2d.detach(), depths.detach(), radii, conics.detach(), gaussians.opacities.detach(),
                     width, height)
    accumulated, transmittance = _Composite.apply(means2d, conics, gaussians.opacities, features, layout)
    colors = accumulated + transmittance[..., None] * backgrounds[:, None, None, :]
    return colors, (1.0 - transmittance)[..., None]
