"""Colour for a mesh from posed views: a UV atlas (xatlas) with a texture baked from the views, or
vertex colours where no UV unwrapper is installed.

A surface point takes the views that see it: in front of the camera, inside the image, not hidden
(its camera z within ``tolerance`` of the Gaussians' depth at that pixel), weighted by how squarely
it faces the camera (cos^2 of the angle between its normal and the ray). A point no view sees takes
the colour of its nearest Gaussian. Texture coordinates follow glTF's reading through trimesh: u to
the right, v up from the image's bottom row.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from models.mesh.fusion import Views, project_into

if TYPE_CHECKING:
    import trimesh

logger = logging.getLogger(__name__)


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``image`` [H, W, C] at pixel coordinates (u right, v down; pixel centres at +0.5)."""
    height, width = image.shape[:2]
    x = np.clip(u - 0.5, 0, width - 1)
    y = np.clip(v - 0.5, 0, height - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x1] * fx * (1 - fy)
            + image[y1, x0] * (1 - fx) * fy + image[y1, x1] * fx * fy)


def colours_at(points: np.ndarray, normals: np.ndarray, images: np.ndarray, depth_views: Views,
               tolerance: float, fallback_points: np.ndarray, fallback_colours: np.ndarray) -> np.ndarray:
    """RGB [N, 3] in [0, 1] of surface ``points`` [N, 3] with unit ``normals`` [N, 3], from
    ``images`` [V, h, w, 3] taken at ``depth_views.c2w[:V]`` (its depths, at any resolution, give
    visibility). Unseen points take the colour of the nearest of ``fallback_points``."""
    from scipy.spatial import cKDTree

    total = np.zeros((len(points), 3))
    weight = np.zeros(len(points))
    image_size = images.shape[1]
    depth_size = depth_views.depths.shape[-1]
    for view in range(len(images)):
        c2w = depth_views.c2w[view]
        # pixel coordinates at the depth maps' size, scaled to the image's for the colour
        index, pixels, z = project_into(points, c2w, depth_views.K, depth_size)
        column, row = np.floor(pixels).astype(np.int64).T
        depth = depth_views.depths[view][row, column]
        alpha = depth_views.alphas[view][row, column]
        visible = (alpha > 0.5) & (z <= depth + tolerance)
        index, pixels = index[visible], pixels[visible]
        towards = c2w[:3, 3] - points[index]
        towards /= np.linalg.norm(towards, axis=1, keepdims=True)
        facing = np.clip((normals[index] * towards).sum(1), 0, 1) ** 2
        scale = image_size / depth_size
        colour = _bilinear(images[view], pixels[:, 0] * scale, pixels[:, 1] * scale)
        total[index] += facing[:, None] * colour
        weight[index] += facing
    seen = weight > 1e-3
    result = np.empty((len(points), 3))
    result[seen] = total[seen] / weight[seen, None]
    if (~seen).any():
        _, nearest = cKDTree(fallback_points).query(points[~seen])
        result[~seen] = fallback_colours[nearest]
    return np.clip(result, 0, 1)


def unwrap(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """xatlas's UV atlas of ``mesh``: (vertex_map [M] into mesh.vertices, faces [F, 3] into the M
    new vertices, uvs [M, 2] in [0, 1]); None where xatlas is not installed."""
    try:
        import xatlas
    except ImportError:
        return None
    vertex_map, faces, uvs = xatlas.parametrize(np.asarray(mesh.vertices, dtype=np.float32),
                                                np.asarray(mesh.faces, dtype=np.uint32))
    return vertex_map.astype(np.int64), faces.astype(np.int64), uvs.astype(np.float64)


def texel_samples(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texels whose centres lie in a UV triangle: (rows [T], columns [T], face [T], with the
    barycentric weights [T, 3]) for a ``size`` x ``size`` image (row 0 at the top, v = 1)."""
    corners = np.stack([uvs[faces][..., 0] * size - 0.5, (1 - uvs[faces][..., 1]) * size - 0.5], axis=-1)  # [F, 3, 2]
    low = np.clip(np.floor(corners.min(1)), 0, size - 1).astype(np.int64)
    high = np.clip(np.ceil(corners.max(1)), 0, size - 1).astype(np.int64)
    span = high - low + 1
    counts = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(faces)), counts)
    local = np.arange(len(face)) - np.repeat(np.cumsum(counts) - counts, counts)
    column = low[face, 0] + local % span[face, 0]
    row = low[face, 1] + local // span[face, 0]
    a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]
    p = np.stack([column, row], axis=-1).astype(np.float64)

    def cross(o, s, t):
        return (s[:, 0] - o[:, 0]) * (t[:, 1] - o[:, 1]) - (s[:, 1] - o[:, 1]) * (t[:, 0] - o[:, 0])

    area = cross(a, b, c)
    w0, w1, w2 = cross(b, c, p), cross(c, a, p), cross(a, b, p)
    safe = np.where(np.abs(area) > 1e-12, area, 1.0)
    weights = np.stack([w0, w1, w2], axis=-1) / safe[:, None]
    inside = (np.abs(area) > 1e-12) & (weights >= -1e-6).all(-1)
    return row[inside], column[inside], face[inside], weights[inside]


def dilate(texture: np.ndarray, filled: np.ndarray, passes: int = 4) -> np.ndarray:
    """Grow the filled texels into their empty neighbours, so that filtering at chart borders
    does not bleed in the empty colour."""
    texture, filled = texture.copy(), filled.copy()
    for _ in range(passes):
        total = np.zeros_like(texture)
        count = np.zeros(filled.shape)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            shifted = np.roll(filled, (dy, dx), axis=(0, 1))
            total += np.roll(texture * filled[..., None], (dy, dx), axis=(0, 1))
            count += shifted
        grow = ~filled & (count > 0)
        texture[grow] = total[grow] / count[grow, None]
        filled |= grow
    return texture
