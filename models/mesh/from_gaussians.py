"""A textured mesh from 3D Gaussians and the generated views (the paper's section 3.4: its
Gaussians converted into a polygonal mesh), on any machine, with permissive libraries only:
scikit-image's marching cubes (BSD), trimesh (MIT), fast-simplification (MIT), xatlas (MIT).

    mesh = mesh_from_gaussians(gaussians, views, orbit_c2w)
    write_glb(mesh.textured, "mesh.glb")

Steps: (1) depth from the Gaussians at the orbit and extra cameras, fused into a TSDF and meshed
(``models.mesh.fusion``: watertight, the largest component), decimated for display; (2) a UV atlas and a
texture baked from the generated views with visibility (``models.mesh.texture``), vertex colours
where xatlas is missing; (3) glTF binary. glTF is Y-up with +Z towards the viewer, the project's
world frame (``camera``), so vertices are written as they are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch

import camera
from models.gaussians.gaussians import Gaussians
from models.mesh.fusion import MeshOptions, decimate, fusion_surface, opaque_gaussians
from models.mesh.texture import dilate, colours_at, texel_samples, unwrap

if TYPE_CHECKING:
    import trimesh

logger = logging.getLogger(__name__)


@dataclass
class GaussianMesh:
    """What ``mesh_from_gaussians`` makes: ``textured`` (a ``trimesh.Trimesh``, decimated to
    ``MeshOptions.max_faces``, with a texture or vertex colours; seams split vertices),
    ``watertight`` (the undecimated surface with shared vertices: closed, for volumes), and how
    long it took."""

    textured: Any
    watertight: Any
    seconds: float
    has_texture: bool


def mesh_from_gaussians(gaussians: Gaussians, views: torch.Tensor | np.ndarray, orbit_c2w: torch.Tensor | np.ndarray,
                        options: MeshOptions | None = None, fov: float = camera.DEFAULT_FOV_DEG) -> GaussianMesh:
    """Mesh one scene.

    Args:
        gaussians: one scene, unbatched, world frame (``models.gaussians``), on any device and in
            any float dtype: the depth maps are rendered where they are (gsplat on CUDA), in fp32;
            the fusion and the texture run on the CPU in NumPy.
        views: the generated views [V, 3, H, W] (or [V, H, W, 3]) in [0, 1], taken at ``orbit_c2w``.
        orbit_c2w: [V, 4, 4] OpenGL camera-to-world of the views.
        options: ``MeshOptions`` (grid, cameras, decimation, texture size).
        fov: vertical field of view of the views, degrees.
    Raises:
        ``models.mesh.fusion.MeshingError`` when no Gaussian is opaque or the fusion is empty.
    """
    import trimesh

    options = options or MeshOptions()
    start = time.perf_counter()
    orbit_c2w = torch.as_tensor(orbit_c2w).detach().cpu().double().numpy()  # a CUDA tensor too
    images = torch.as_tensor(views).detach().float().cpu()
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]) or len(images) != len(orbit_c2w):
        raise ValueError(f"views must be [V, 3, H, W] or [V, H, W, 3] at the {len(orbit_c2w)} cameras, "
                         f"got {tuple(images.shape)}")
    if images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.permute(0, 2, 3, 1)
    images = images.clamp(0, 1).numpy().astype(np.float64)

    kept = opaque_gaussians(gaussians, options.min_opacity)
    watertight, fused = fusion_surface(kept, orbit_c2w, options, fov)
    surface = decimate(watertight, options.max_faces)
    orbit = fused.first(len(orbit_c2w))  # the orbit cameras come first
    fallback = (kept.means.detach().cpu().double().numpy(), kept.colors.detach().cpu().double().clamp(0, 1).numpy())
    extent = float(np.ptp(surface.vertices, axis=0).max())
    tolerance = 0.02 * extent + 2 * extent / options.resolution

    atlas = unwrap(surface)
    if atlas is None:
        logger.warning("xatlas is not installed: the mesh gets vertex colours instead of a texture")
        colours = colours_at(np.asarray(surface.vertices), np.asarray(surface.vertex_normals), images, orbit,
                             tolerance, *fallback)
        textured = trimesh.Trimesh(vertices=surface.vertices, faces=surface.faces,
                                   vertex_colors=np.round(colours * 255).astype(np.uint8), process=False)
    else:
        textured = _textured(surface, atlas, images, orbit, tolerance, fallback, options.texture_size)
    seconds = time.perf_counter() - start
    logger.info("mesh: %d vertices, %d faces (%s) from %d Gaussians in %.1f s", len(textured.vertices),
                len(textured.faces), "textured" if atlas is not None else "vertex colours", kept.count, seconds)
    return GaussianMesh(textured=textured, watertight=watertight, seconds=seconds, has_texture=atlas is not None)


def _textured(surface, atlas, images, orbit, tolerance, fallback, size: int):
    import trimesh
    from PIL import Image

    vertex_map, faces, uvs = atlas
    vertices = np.asarray(surface.vertices)[vertex_map]
    rows, columns, face, weights = texel_samples(uvs, faces, size)
    points = (vertices[faces[face]] * weights[..., None]).sum(1)
    normals = np.asarray(surface.face_normals)
    # xatlas keeps the face order, so the atlas's face i is the surface's face i
    texel_colours = colours_at(points, normals[face], images, orbit, tolerance, *fallback)
    texture = np.zeros((size, size, 3))
    filled = np.zeros((size, size), dtype=bool)
    texture[rows, columns] = texel_colours
    filled[rows, columns] = True
    texture = dilate(texture, filled)
    image = Image.fromarray(np.round(texture * 255).astype(np.uint8), "RGB")
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


def glb_bytes(mesh: trimesh.Trimesh) -> bytes:
    """``mesh`` (a ``trimesh.Trimesh``) as glTF binary."""
    return mesh.export(file_type="glb")


def write_glb(mesh: trimesh.Trimesh, path: str | BinaryIO) -> int:
    """Write ``mesh`` as glTF binary to a path or a binary file; returns the bytes written."""
    data = glb_bytes(mesh)
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        with open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write(data)
    return len(data)
