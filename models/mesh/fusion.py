"""Gaussians -> a closed surface: depth rendered from many cameras, fused into a truncated signed
distance field (TSDF), marching cubes, the largest component kept.

Conventions (those of ``camera`` and ``models.gaussians``): world frame Y-up, objects normalised
into the unit cube, OpenGL camera-to-world poses, depth = camera z along the viewing axis.

Why these cameras: one generated orbit sees an object from one elevation, so its top and bottom
are never seen; the Gaussians are also rendered from rings above and below it. Only the orbit
cameras, whose views the Gaussians were fitted to, may carve: a pixel they see as background
marks its whole ray as free space. The extra rings add surface observations only (near their
depth), because Gaussians fitted to one ring can look thin from elsewhere, and carving there would
cut holes.

The field: each voxel averages ``clip((depth - z) / truncation, -1, 1)`` over the views that see
it no deeper than ``truncation`` behind the surface, plus +1 for each carving view that sees
background through it. A voxel nothing observes keeps -1 ("inside"): the interior is never seen,
and the carving views bound it from outside. (A blur of the field, ``smoothing_voxels``, closes
the small tunnels noisy Gaussians leave, and thins thin parts.) The grid's border is set to free
space, so marching cubes closes every surface: the result is watertight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

import camera
from models.gaussians.gaussians import Gaussians
from models.gaussians.rendering import render_gaussians

if TYPE_CHECKING:  # imported where used: half a second that only a mesh needs
    import trimesh

logger = logging.getLogger(__name__)


class MeshingError(ValueError):
    """The Gaussians give no surface (none is opaque, or the fusion is empty)."""


@dataclass
class MeshOptions:
    """How a mesh is made from Gaussians (``metadata["help"]`` is the command-line help)."""

    # About the views' resolution: 64 voxels scored closer to the truth than 96 from 64 px views
    # (benchmarks/mesh.py), a finer grid keeping the fitted Gaussians' noise as bumps and tunnels.
    resolution: int = field(default=64, metadata={"help": "voxels along the longest side of the fusion grid"})
    depth_size: int = field(default=128, metadata={"help": "pixels of the depth maps fused"})
    min_opacity: float = field(default=0.05, metadata={"help": "Gaussians less opaque than this are left out"})
    alpha_threshold: float = field(default=0.5, metadata={
        "help": "a pixel is surface where the Gaussians' accumulated alpha reaches this, background otherwise"})
    truncation_voxels: float = field(default=3.0, metadata={"help": "TSDF truncation, in voxels"})
    # Off by default: a blur of one voxel closed noise tunnels but thinned a teapot's spout and
    # handle away (Chamfer 0.046 -> 0.074; the Duck unchanged at 0.025; benchmarks/mesh.py).
    smoothing_voxels: float = field(default=0.0, metadata={
        "help": "Gaussian blur of the TSDF (sigma, voxels) before marching cubes: closes noise tunnels (0: off)"})
    extra_elevations: tuple[float, ...] = field(default=(-60.0, -30.0, 45.0, 75.0), metadata={
        "help": "elevations (degrees) of the extra camera rings that see what the orbit cannot"})
    extra_views_per_ring: int = field(default=8, metadata={"help": "cameras per extra ring"})
    max_faces: int = field(default=20000, metadata={"help": "decimate to at most this many triangles (0: keep all)"})
    texture_size: int = field(default=512, metadata={"help": "texture side in pixels (a UV unwrapper is needed)"})


@dataclass
class Views:
    """Posed images of one scene: c2w [V, 4, 4] (OpenGL), K [3, 3] pixels, colors [V, H, W, 3] in
    [0, 1], alphas and depths [V, H, W] (depth: camera z; meaningless where alpha is low)."""

    c2w: np.ndarray
    K: np.ndarray
    colors: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray

    def first(self, count: int) -> "Views":
        """The first ``count`` views."""
        return Views(c2w=self.c2w[:count], K=self.K, colors=self.colors[:count], alphas=self.alphas[:count],
                     depths=self.depths[:count])


def ring_cameras(elevations: tuple[float, ...], views_per_ring: int, distance: float = camera.DEFAULT_DISTANCE
                 ) -> np.ndarray:
    """[len(elevations) * views_per_ring, 4, 4] c2w on rings around the origin; each ring is
    turned by half a step against the one before, so that together they cover more azimuths."""
    poses = []
    for ring, elevation in enumerate(elevations):
        azimuths = (np.arange(views_per_ring) + 0.5 * (ring % 2)) * 360.0 / views_per_ring
        poses.append(camera.orbit_c2w(elevation, azimuths, distance))
    return np.concatenate(poses) if poses else np.zeros((0, 4, 4))


def opaque_gaussians(gaussians: Gaussians, min_opacity: float) -> Gaussians:
    """The Gaussians at least ``min_opacity`` opaque; ``MeshingError`` when none is."""
    if gaussians.means.ndim != 2:
        raise ValueError("a mesh is made from one scene: index a batch with gaussians[b]")
    keep = gaussians.opacities >= min_opacity
    if not bool(keep.any()):
        raise MeshingError(f"no Gaussian is at least {min_opacity} opaque (the most opaque is "
                           f"{float(gaussians.opacities.max()) if gaussians.count else 0:.3g}): nothing to mesh")
    return gaussians.select(keep)


def render_views(gaussians: Gaussians, c2w: np.ndarray, size: int, fov: float = camera.DEFAULT_FOV_DEG,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Views:
    """Colour, alpha and expected depth of ``gaussians`` at ``c2w`` [V, 4, 4], ``size`` px square."""
    K = camera.intrinsics_from_fov(fov, size, size)
    with torch.no_grad():
        out = render_gaussians(gaussians.detach().to(torch.float32), torch.as_tensor(c2w, dtype=torch.float32),
                               torch.as_tensor(K, dtype=torch.float32), size, size, background, depth=True)
    return Views(c2w=np.asarray(c2w, dtype=np.float64), K=K, colors=out.colors.cpu().numpy(),
                 alphas=out.alphas[..., 0].cpu().numpy(), depths=out.depths[..., 0].cpu().numpy())


@dataclass
class Grid:
    """A cube of voxels: centre ``origin + (index + 0.5) * voxel``, ``shape`` voxels per axis."""

    origin: np.ndarray
    voxel: float
    shape: tuple[int, int, int]

    def centres(self) -> np.ndarray:
        axes = [self.origin[i] + (np.arange(self.shape[i]) + 0.5) * self.voxel for i in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def grid_around(points: np.ndarray, resolution: int, margin: float = 0.1) -> Grid:
    """A grid around ``points`` [N, 3] (their 0.5-99.5 % extent, so a stray Gaussian does not
    stretch it), ``margin`` of the extent added on every side, ``resolution`` voxels on its longest side."""
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    extent = float((high - low).max())
    if not np.isfinite(extent) or extent <= 0:
        raise MeshingError(f"the Gaussians span no volume (extent {extent})")
    side = extent * (1 + 2 * margin)
    voxel = side / resolution
    centre = (low + high) / 2
    shape = tuple(int(np.ceil((high[i] - low[i]) * (1 + 2 * margin) / voxel)) + 2 for i in range(3))
    origin = centre - np.array(shape) * voxel / 2
    return Grid(origin=origin, voxel=voxel, shape=shape)  # type: ignore[arg-type]


def project_into(points: np.ndarray, c2w: np.ndarray, K: np.ndarray, size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``points`` [N, 3] one camera (c2w [4, 4], OpenGL) sees in its ``size`` x ``size`` image:
    their indices [M], pixel coordinates [M, 2] (x right, y down, ``camera.project_points``) and
    camera depths [M]."""
    with np.errstate(divide="ignore", invalid="ignore"):  # points at depth 0 project to inf: left out
        pixels, depth = camera.project_points(points, c2w[None], K)
    pixels, depth = pixels[0], depth[0]
    index = np.flatnonzero((depth > 1e-6) & (pixels >= 0).all(-1) & (pixels < size).all(-1))
    return index, pixels[index], depth[index]


def fuse_tsdf(grid: Grid, surface_views: Views, carving: np.ndarray, options: MeshOptions) -> np.ndarray:
    """The TSDF [X, Y, Z] (positive outside) of the module docstring. ``carving`` [V] says which
    views may carve."""
    points = grid.centres()
    truncation = options.truncation_voxels * grid.voxel
    total = np.zeros(len(points))
    weight = np.zeros(len(points))
    size = surface_views.depths.shape[-1]
    for view in range(len(surface_views.c2w)):
        index, pixels, z = project_into(points, surface_views.c2w[view], surface_views.K, size)
        column, row = np.floor(pixels).astype(np.int64).T
        alpha = surface_views.alphas[view][row, column]
        depth = surface_views.depths[view][row, column]
        surface = alpha >= options.alpha_threshold
        distance = depth - z
        near = surface & (distance > -truncation)
        total[index[near]] += np.clip(distance[near] / truncation, -1.0, 1.0)
        weight[index[near]] += 1
        if carving[view]:
            free = index[~surface]
            total[free] += 1.0
            weight[free] += 1
    tsdf = np.where(weight > 0, total / np.maximum(weight, 1), -1.0).reshape(grid.shape)
    if options.smoothing_voxels > 0:
        from scipy.ndimage import gaussian_filter

        tsdf = gaussian_filter(tsdf, options.smoothing_voxels)
    tsdf[0, :, :] = tsdf[-1, :, :] = tsdf[:, 0, :] = tsdf[:, -1, :] = tsdf[:, :, 0] = tsdf[:, :, -1] = 1.0
    return tsdf


def surface_from_tsdf(tsdf: np.ndarray, grid: Grid) -> trimesh.Trimesh:
    """Marching cubes at 0, the largest connected component, as a watertight ``trimesh.Trimesh``
    (world frame, faces wound outwards)."""
    import trimesh
    from skimage.measure import marching_cubes

    if tsdf.min() >= 0:
        raise MeshingError("the fusion is empty: every voxel is free space "
                           "(are the Gaussians inside the cameras' view?)")
    vertices, faces, _, _ = marching_cubes(tsdf, level=0.0, spacing=(grid.voxel,) * 3)
    vertices = vertices + grid.origin + grid.voxel / 2
    # skimage winds faces so that normals point towards increasing values: here, outwards.
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces[:, ::-1], process=True)
    components = mesh.split(only_watertight=False)
    if len(components) > 1:
        mesh = max(components, key=lambda part: part.area)
    if not mesh.is_winding_consistent or mesh.volume < 0:
        mesh.fix_normals()
    return mesh


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """At most ``max_faces`` triangles by quadric decimation (``fast_simplification``), for display.
    Its default aggression (7) can pinch a noisy surface into a few non-manifold edges; gentler
    ones are tried for a closed result, and the first is kept if none is (a viewer draws it the
    same; volumes are measured on the undecimated surface)."""
    if max_faces <= 0 or len(mesh.faces) <= max_faces:
        return mesh
    attempts = []
    for aggression in (7, 3, 1):
        simplified = mesh.simplify_quadric_decimation(face_count=max_faces, aggression=aggression)
        simplified.merge_vertices()
        if simplified.is_watertight:
            return simplified
        attempts.append(simplified)
    logger.debug("decimated to %d faces with a few open edges (the undecimated surface is closed)", max_faces)
    return attempts[0]


def fusion_surface(gaussians: Gaussians, orbit_c2w: np.ndarray, options: MeshOptions,
                   fov: float = camera.DEFAULT_FOV_DEG) -> tuple[trimesh.Trimesh, Views]:
    """The watertight surface of ``gaussians`` (see the module docstring; not decimated) and the
    views it was fused from (orbit first). ``orbit_c2w`` [V, 4, 4]: the cameras of the generated views."""
    gaussians = opaque_gaussians(gaussians, options.min_opacity)
    distance = float(np.linalg.norm(orbit_c2w[0, :3, 3]))
    extra = ring_cameras(options.extra_elevations, options.extra_views_per_ring, distance)
    all_c2w = np.concatenate([orbit_c2w, extra])
    views = render_views(gaussians, all_c2w, options.depth_size, fov)
    carving = np.arange(len(all_c2w)) < len(orbit_c2w)
    grid = grid_around(gaussians.means.detach().cpu().double().numpy(), options.resolution)
    tsdf = fuse_tsdf(grid, views, carving, options)
    return surface_from_tsdf(tsdf, grid), views
