"""3D Gaussians as a small typed container (gsplat's conventions).

Shapes, for N Gaussians with optional leading batch dimensions ``...``:
    means      [..., N, 3]  centres, world frame of the ``camera`` module (Y-up)
    quats      [..., N, 4]  unit rotation quaternions, w first (w, x, y, z)
    scales     [..., N, 3]  standard deviations along the rotated axes (activated, > 0)
    opacities  [..., N]     in (0, 1) (activated)
    colors     [..., N, 3]  RGB in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class Gaussians:
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[:-1]
        expected = {"means": (*n, 3), "quats": (*n, 4), "scales": (*n, 3), "opacities": n, "colors": (*n, 3)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != tuple(shape):
                raise ValueError(f"Gaussians.{name} must have shape {tuple(shape)}, got {tuple(getattr(self, name).shape)}")

    @property
    def count(self) -> int:
        return int(self.means.shape[-2])

    def _map(self, function) -> "Gaussians":
        return Gaussians(**{f.name: function(getattr(self, f.name)) for f in fields(self)})

    def __getitem__(self, index) -> "Gaussians":
        """Index the leading batch dimension: ``gaussians[b]`` is one scene."""
        return self._map(lambda tensor: tensor[index])

    def as_batch(self) -> "Gaussians":
        """One unbatched scene as a batch of one (a leading dimension of size 1)."""
        return self._map(lambda tensor: tensor[None])

    def to(self, *args: Any, **kwargs: Any) -> "Gaussians":
        """``torch.Tensor.to`` on every field (a device, a dtype, or both)."""
        return self._map(lambda tensor: tensor.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        return self._map(lambda tensor: tensor.detach())

    def select(self, mask: torch.Tensor) -> "Gaussians":
        """Keep the Gaussians where ``mask`` [N] is true (unbatched)."""
        return self._map(lambda tensor: tensor[mask])

    def transformed(self, similarity: torch.Tensor) -> "Gaussians":
        """The same scene under ``x -> s R x + t`` (``similarity`` [4, 4], unbatched Gaussians)."""
        similarity = similarity.to(self.means)
        scale = similarity[:3, :3].norm(dim=0)[0]
        rotation = similarity[:3, :3] / scale
        return Gaussians(
            means=self.means @ similarity[:3, :3].T + similarity[:3, 3],
            quats=quaternion_multiply(matrix_to_quaternion(rotation).expand_as(self.quats), self.quats),
            scales=self.scales * scale,
            opacities=self.opacities,
            colors=self.colors,
        )


def quaternion_to_matrix(quats: torch.Tensor) -> torch.Tensor:
    """[..., 4] w-first quaternions (normalised here) -> [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """[3, 3] rotation -> [4] w-first unit quaternion (Shepperd's method, robust branch choice)."""
    m = matrix.double()
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = torch.stack([trace, m[0, 0], m[1, 1], m[2, 2]])
    i = int(torch.argmax(candidates))
    if i == 0:
        r = torch.sqrt(1 + trace) * 2
        q = torch.stack([0.25 * r, (m[2, 1] - m[1, 2]) / r, (m[0, 2] - m[2, 0]) / r, (m[1, 0] - m[0, 1]) / r])
    elif i == 1:
        r = torch.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = torch.stack([(m[2, 1] - m[1, 2]) / r, 0.25 * r, (m[0, 1] + m[1, 0]) / r, (m[0, 2] + m[2, 0]) / r])
    elif i == 2:
        r = torch.sqrt(1 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = torch.stack([(m[0, 2] - m[2, 0]) / r, (m[0, 1] + m[1, 0]) / r, 0.25 * r, (m[1, 2] + m[2, 1]) / r])
    else:
        r = torch.sqrt(1 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = torch.stack([(m[1, 0] - m[0, 1]) / r, (m[0, 2] + m[2, 0]) / r, (m[1, 2] + m[2, 1]) / r, 0.25 * r])
    return (q / q.norm()).to(matrix.dtype)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of w-first quaternions [..., 4] (rotation ``a`` after ``b``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)
