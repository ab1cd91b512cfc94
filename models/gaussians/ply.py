"""3D Gaussian Splatting files: PLY (the reference 3DGS layout), export and import, and the
compact ``.splat`` layout many web viewers read.

PLY: binary little-endian vertices with float32 properties, in this order:
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_44 opacity scale_0 scale_1 scale_2 rot_0
rot_1 rot_2 rot_3`` where ``f_dc = (rgb - 0.5) / C0`` (degree-0 spherical harmonics, C0 =
0.28209479177387814), ``f_rest_*`` the higher degrees (zeros: the Gaussians are view-independent;
written so that the reference 3DGS loader reads the file at its default SH degree 3), ``opacity``
is a logit, ``scale_*`` are log standard deviations and ``rot_*`` a w-first quaternion. Normals
are written as zeros, as by the reference 3DGS and LGM exporters. Positions are in the ``camera``
module's Y-up world.

``.splat`` (antimatter15's viewer format): 32 bytes per Gaussian, most visible first: position
3 x float32, scale 3 x float32 (standard deviations), RGBA 4 x uint8 (alpha = opacity), rotation
4 x uint8 (w, x, y, z of the unit quaternion, each ``round(q * 128 + 128)`` clamped to 0-255).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from models.gaussians.gaussians import Gaussians

SH_C0 = 0.28209479177387814
SH_REST = 45  # 3 * ((3 + 1) ** 2 - 1): the reference 3DGS loader's default degree 3, beyond f_dc
PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
              *[f"f_rest_{i}" for i in range(SH_REST)], "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
SPLAT_BYTES = 32
DEFAULT_MIN_OPACITY = 0.005


def save_ply(gaussians: Gaussians, path: str | BinaryIO, min_opacity: float = DEFAULT_MIN_OPACITY) -> int:
    """Write one scene (unbatched Gaussians) to a path or binary stream; Gaussians with opacity
    below ``min_opacity`` are pruned. Returns how many were written."""
    if gaussians.means.ndim != 2:
        raise ValueError("save_ply takes one scene: index a batch with gaussians[b]")
    g = gaussians.detach().to("cpu", torch.float64).select(gaussians.opacities.detach().cpu() >= min_opacity)
    opacity = g.opacities.clamp(1e-6, 1 - 1e-6)
    columns = [
        g.means, torch.zeros_like(g.means), (g.colors - 0.5) / SH_C0, torch.zeros(len(g.means), SH_REST),
        torch.log(opacity / (1 - opacity))[:, None],
        torch.log(g.scales.clamp(min=1e-12)), torch.nn.functional.normalize(g.quats, dim=-1),
    ]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(data)}\n" + \
        "".join(f"property float {name}\n" for name in PROPERTIES) + "end_header\n"
    _write(header.encode("ascii") + data.tobytes(), path)
    return len(data)


def _write(payload: bytes, path: str | BinaryIO) -> None:
    if isinstance(path, str):
        with open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write(payload)


def load_ply(path: str) -> Gaussians:
    """Read a 3DGS PLY (binary little-endian, float properties; f_rest_* and other extra properties
    are ignored, so colours are the view-independent degree 0, clamped at 0 as gsplat does). Raises
    ValueError naming what is wrong for anything else."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file")
        names, count, fmt = [], None, None
        while True:
            line = handle.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", errors="replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                if words[1] != "vertex" or count is not None:
                    raise ValueError(f"{path}: expected a single 'vertex' element, got {words[1]!r}")
                count = int(words[2])
            elif words[0] == "property":
                if words[1] not in ("float", "float32"):
                    raise ValueError(f"{path}: property {words[-1]} is {words[1]}, expected float")
                names.append(words[2])
            elif words[0] == "end_header":
                break
        if fmt != "binary_little_endian":
            raise ValueError(f"{path}: format {fmt!r} is not supported (binary_little_endian only)")
        missing = [name for name in PROPERTIES if name not in names and not name.startswith(("n", "f_rest"))]
        if count is None or missing:
            raise ValueError(f"{path}: not a 3D Gaussian PLY; missing properties {missing}")
        raw = handle.read()
    expected = count * len(names) * 4
    if len(raw) < expected:
        raise ValueError(f"{path}: truncated ({len(raw)} of {expected} data bytes)")
    table = np.frombuffer(raw[:expected], dtype="<f4").reshape(count, len(names))
    column = {name: torch.from_numpy(table[:, i].astype(np.float32)) for i, name in enumerate(names)}

    def stack(*keys: str) -> torch.Tensor:
        return torch.stack([column[key] for key in keys], dim=-1)

    return Gaussians(
        means=stack("x", "y", "z"),
        quats=torch.nn.functional.normalize(stack("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        scales=torch.exp(stack("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(column["opacity"]),
        colors=(stack("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5).clamp(min=0.0),
    )


def save_splat(gaussians: Gaussians, path: str | BinaryIO, min_opacity: float = DEFAULT_MIN_OPACITY) -> int:
    """Write one scene as ``.splat`` (the module docstring), largest and most opaque first, as the
    viewers that stream it expect; Gaussians below ``min_opacity`` are pruned. Returns how many."""
    if gaussians.means.ndim != 2:
        raise ValueError("save_splat takes one scene: index a batch with gaussians[b]")
    g = gaussians.detach().to("cpu", torch.float64).select(gaussians.opacities.detach().cpu() >= min_opacity)
    order = torch.argsort(-(g.scales.prod(dim=-1) * g.opacities))
    g = g.select(order)
    record = np.zeros(len(g.means), dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                                           ("rotation", "u1", 4)])
    record["position"] = g.means.numpy()
    record["scale"] = g.scales.numpy()
    rgba = torch.cat([g.colors.clamp(0, 1), g.opacities[:, None]], dim=-1)
    record["rgba"] = (rgba * 255).round().numpy()
    quats = torch.nn.functional.normalize(g.quats, dim=-1)
    record["rotation"] = (quats * 128 + 128).round().clamp(0, 255).numpy()
    assert record.itemsize == SPLAT_BYTES
    _write(record.tobytes(), path)
    return len(record)
