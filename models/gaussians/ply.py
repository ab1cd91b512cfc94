"""3D Gaussian Splatting PLY files (the layout splat viewers read), export and import.

Binary little-endian vertices with float32 properties, in this order:
``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3``
where ``f_dc = (rgb - 0.5) / C0`` (degree-0 spherical harmonics, C0 = 0.28209479177387814),
``opacity`` is a logit, ``scale_*`` are log standard deviations and ``rot_*`` a w-first quaternion.
Normals are written as zeros, as by the reference 3DGS and LGM exporters. Positions are in the
``camera`` module's Y-up world; pass a ``transform`` to convert (splat viewers usually expect Y-up
too, or OpenCV's Y-down for scenes from COLMAP).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
import torch

from models.gaussians.gaussians import Gaussians

SH_C0 = 0.28209479177387814
PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
DEFAULT_MIN_OPACITY = 0.005


def save_ply(gaussians: Gaussians, path: str | BinaryIO, min_opacity: float = DEFAULT_MIN_OPACITY) -> int:
    """Write one scene (unbatched Gaussians) to a path or binary stream; Gaussians with opacity
    below ``min_opacity`` are pruned. Returns how many were written."""
    if gaussians.means.ndim != 2:
        raise ValueError("save_ply takes one scene: index a batch with gaussians[b]")
    g = gaussians.detach().to("cpu", torch.float64).select(gaussians.opacities.detach().cpu() >= min_opacity)
    opacity = g.opacities.clamp(1e-6, 1 - 1e-6)
    columns = [
        g.means, torch.zeros_like(g.means), (g.colors - 0.5) / SH_C0, torch.log(opacity / (1 - opacity))[:, None],
        torch.log(g.scales.clamp(min=1e-12)), torch.nn.functional.normalize(g.quats, dim=-1),
    ]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(data)}\n" + \
        "".join(f"property float {name}\n" for name in PROPERTIES) + "end_header\n"
    payload = header.encode("ascii") + data.tobytes()
    if isinstance(path, str):
        with open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write(payload)
    return len(data)


def load_ply(path: str) -> Gaussians:
    """Read a 3DGS PLY (binary little-endian, float properties; extra properties such as f_rest_*
    are ignored). Raises ValueError naming what is wrong for anything else."""
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
        missing = [name for name in PROPERTIES if name not in names and not name.startswith("n")]
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
        colors=stack("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
    )
