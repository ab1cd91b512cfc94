"""Geometry metrics of a generated mesh against a reference mesh (the paper's Table 3: Chamfer
distance and volume IoU, image-to-3D on GSO), with their conventions stated.

- Both meshes are first normalised, each on its own, into the unit bounding box: centred at the
  origin, longest side 1 (``normalise_to_unit_box``). Scores are in units of that box.
- **Chamfer distance**: ``SAMPLES`` points sampled uniformly on each surface (area-weighted, a
  fixed seed); the mean nearest-neighbour distance from each set to the other, the two means
  averaged (halved sum), unsquared. (SyncDreamer's ``eval_mesh.py`` takes its points from depth
  maps; surface samples also score the parts no camera sees.)
- **F-score** at ``FSCORE_THRESHOLD``: the harmonic mean of precision (the share of generated points
  within the threshold of the reference) and recall (the converse), from the same samples.
- **Volume IoU**: occupancy of the ``IOU_GRID``^3 cube [-0.5, 0.5]^3 of voxel centres, by ray parity
  along each of the three axes and a majority of the three (robust to a small hole in either mesh),
  intersection over union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import trimesh

SAMPLES = 20000
FSCORE_THRESHOLD = 0.05
IOU_GRID = 64


def normalise_to_unit_box(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy of ``mesh`` (``trimesh.Trimesh``) centred on its bounding box, longest side 1."""
    low, high = mesh.bounds
    extent = float((high - low).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"the mesh has no extent ({extent}): nothing to score")
    copy = mesh.copy()
    copy.apply_translation(-(low + high) / 2)
    copy.apply_scale(1.0 / extent)
    return copy


def surface_points(mesh: trimesh.Trimesh, count: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """[count, 3] points uniform on the surface of ``mesh`` (area-weighted), reproducible."""
    import trimesh

    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces: nothing to score")
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return np.asarray(points)


def chamfer_and_fscore(generated: np.ndarray, reference: np.ndarray, threshold: float = FSCORE_THRESHOLD
                       ) -> tuple[float, float]:
    """Chamfer distance and F-score between point sets [N, 3] and [M, 3] (module docstring)."""
    from scipy.spatial import cKDTree

    to_reference, _ = cKDTree(reference).query(generated)
    to_generated, _ = cKDTree(generated).query(reference)
    chamfer = 0.5 * (to_reference.mean() + to_generated.mean())
    precision = float((to_reference < threshold).mean())
    recall = float((to_generated < threshold).mean())
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(chamfer), fscore


def occupancy(mesh: trimesh.Trimesh, resolution: int = IOU_GRID) -> np.ndarray:
    """[R, R, R] bool: which voxel centres of the cube [-0.5, 0.5]^3 lie inside ``mesh``: ray parity
    along x, y and z (rays through the voxel centres), inside where at least two of the three agree."""
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    centres = -0.5 + (np.arange(resolution) + 0.5) / resolution
    votes = np.zeros((resolution,) * 3, dtype=np.int64)
    for axis in range(3):
        inside = _parity(triangles, axis, centres)  # indexed [along, a, b] with (a, b) the other axes
        votes += np.moveaxis(inside, 0, axis)
    return votes >= 2


def _parity(triangles: np.ndarray, axis: int, centres: np.ndarray) -> np.ndarray:
    """Inside-ness by counting crossings of rays along ``axis`` through the voxel centres of the
    other two axes: [R (along axis), R, R]."""
    resolution = len(centres)
    others = [i for i in range(3) if i != axis]
    planar = triangles[:, :, others]  # [F, 3, 2]
    depth = triangles[:, :, axis]  # [F, 3]
    step = 1.0 / resolution
    low = np.clip(np.ceil((planar.min(1) + 0.5) / step - 0.5), 0, resolution).astype(np.int64)
    high = np.clip(np.floor((planar.max(1) + 0.5) / step - 0.5), -1, resolution - 1).astype(np.int64)
    span = np.maximum(high - low + 1, 0)
    counts = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(triangles)), counts)
    local = np.arange(len(face)) - np.repeat(np.cumsum(counts) - counts, counts)
    ia = low[face, 0] + local % np.maximum(span[face, 0], 1)
    ib = low[face, 1] + local // np.maximum(span[face, 0], 1)
    # The rays are moved off the grid by a hair, so that none passes exactly through an edge or
    # vertex (a box's diagonal edges lie on voxel-centre lines) and counts a crossing twice.
    p = np.stack([centres[ia] + 1.3e-9, centres[ib] + 2.9e-9], axis=-1)
    a, b, c = planar[face, 0], planar[face, 1], planar[face, 2]

    def cross(o, s, t):
        return (s[:, 0] - o[:, 0]) * (t[:, 1] - o[:, 1]) - (s[:, 1] - o[:, 1]) * (t[:, 0] - o[:, 0])

    area = cross(a, b, c)
    w = np.stack([cross(b, c, p), cross(c, a, p), cross(a, b, p)], axis=-1)
    hit = (np.abs(area) > 1e-15) & (((w > 0).all(-1) & (area > 0)) | ((w < 0).all(-1) & (area < 0)))
    weights = w[hit] / area[hit, None]
    crossing = (depth[face[hit]] * weights).sum(-1)
    ia, ib = ia[hit], ib[hit]
    # Each voxel centre is inside when an odd number of crossings lie before it along the ray.
    position = np.clip(np.floor((crossing + 0.5) / step + 0.5).astype(np.int64), 0, resolution)  # first centre after it
    flips = np.zeros((resolution + 1, resolution, resolution), dtype=np.int64)
    np.add.at(flips, (position, ia, ib), 1)
    return (np.cumsum(flips, axis=0)[:resolution] % 2) == 1


def volume_iou(generated: trimesh.Trimesh, reference: trimesh.Trimesh, resolution: int = IOU_GRID) -> float:
    """Intersection over union of the two meshes' occupancy grids (``occupancy``); both should be
    normalised (``normalise_to_unit_box``)."""
    a, b = occupancy(generated, resolution), occupancy(reference, resolution)
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 0.0


def geometry_scores(generated: trimesh.Trimesh, reference: trimesh.Trimesh, samples: int = SAMPLES, seed: int = 0) -> dict[str, float]:
    """{"chamfer", "fscore", "volume_iou"} of ``generated`` against ``reference`` (two
    ``trimesh.Trimesh``, any frames and scales: each is normalised to the unit box first)."""
    generated, reference = normalise_to_unit_box(generated), normalise_to_unit_box(reference)
    chamfer, fscore = chamfer_and_fscore(surface_points(generated, samples, seed),
                                         surface_points(reference, samples, seed + 1))
    return {"chamfer": chamfer, "fscore": fscore, "volume_iou": volume_iou(generated, reference)}
