"""Meshes from Gaussians (models/mesh/) and the geometry metrics (models/metrics/geometry.py)."""

from __future__ import annotations

import io
import math
import sys

import numpy as np
import pytest
import torch

import camera
from models.gaussians.gaussians import Gaussians
from models.gaussians.rendering import render_gaussians
from models.mesh.from_gaussians import glb_bytes, mesh_from_gaussians, write_glb
from models.mesh.fusion import MeshingError, MeshOptions
from models.metrics.geometry import (chamfer_and_fscore, geometry_scores, normalise_to_unit_box, occupancy,
                                     volume_iou)

trimesh = pytest.importorskip("trimesh")
RED, BLUE = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
SIGMA = 0.02


def gaussians_on(points: np.ndarray, colours: torch.Tensor, sigma: float = SIGMA) -> Gaussians:
    count = len(points)
    return Gaussians(means=torch.as_tensor(points, dtype=torch.float32),
                     quats=torch.tensor([[1.0, 0, 0, 0]]).expand(count, 4).clone(),
                     scales=torch.full((count, 3), sigma), opacities=torch.full((count,), 0.95), colors=colours)


def two_colour_sphere(radius: float = 0.4, count: int = 6000) -> Gaussians:
    """Gaussians evenly on a sphere (a Fibonacci lattice), red where x > 0, blue elsewhere."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = math.pi * (1 + 5**0.5) * index
    points = radius * np.stack([np.sin(polar) * np.cos(azimuth), np.cos(polar), np.sin(polar) * np.sin(azimuth)], -1)
    colours = torch.where(torch.as_tensor(points[:, :1] > 0), RED, BLUE)
    return gaussians_on(points, colours)


def orbit_views(gaussians: Gaussians, elevation: float = 15.0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    c2w = torch.tensor(camera.orbit_c2w(elevation), dtype=torch.float32)
    K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32)
    views = render_gaussians(gaussians, c2w, K, size, size, background=(0.5, 0.5, 0.5)).colors
    return views.permute(0, 3, 1, 2), c2w


@pytest.fixture(scope="module")
def sphere_mesh():
    gaussians = two_colour_sphere()
    views, c2w = orbit_views(gaussians)
    return gaussians, views, c2w, mesh_from_gaussians(gaussians, views, c2w)


@pytest.mark.slow
def test_a_sphere_of_gaussians_meshes_to_a_closed_sphere(sphere_mesh):
    _, _, _, mesh = sphere_mesh
    surface = mesh.watertight
    assert surface.is_watertight and surface.is_winding_consistent and surface.volume > 0
    assert mesh.has_texture and len(mesh.textured.faces) <= MeshOptions().max_faces
    radius = np.linalg.norm(surface.vertices, axis=1)
    # The Gaussians' own size puts the surface about one sigma out (where their alpha reaches 0.5).
    assert 0.4 < radius.mean() < 0.4 + 2 * SIGMA and radius.std() < 0.01, (radius.mean(), radius.std())
    scores = geometry_scores(surface, trimesh.creation.icosphere(subdivisions=4, radius=0.4))
    assert scores["chamfer"] < 0.015 and scores["fscore"] > 0.99 and scores["volume_iou"] > 0.9, scores


@pytest.mark.slow
def test_a_box_of_gaussians_meshes_to_the_box_and_the_top_and_bottom_are_closed():
    """One orbit at 15 degrees never sees the bottom: the extra camera rings close it."""
    box = trimesh.creation.box(extents=(0.7, 0.4, 0.5))
    points, _ = trimesh.sample.sample_surface_even(box, 6000, seed=0)
    gaussians = gaussians_on(points, torch.full((len(points), 3), 0.8), sigma=0.015)
    views, c2w = orbit_views(gaussians)
    mesh = mesh_from_gaussians(gaussians, views, c2w)
    assert mesh.watertight.is_watertight
    scores = geometry_scores(mesh.watertight, box)
    assert scores["chamfer"] < 0.02 and scores["volume_iou"] > 0.85, scores
    low, high = mesh.watertight.bounds
    np.testing.assert_allclose(high - low, np.array([0.7, 0.4, 0.5]) + 2 * 0.015, atol=0.03)


def test_the_glb_loads_with_its_texture_and_the_colours_where_they_were(sphere_mesh, tmp_path):
    _, _, _, mesh = sphere_mesh
    path = tmp_path / "mesh.glb"
    assert write_glb(mesh.textured, str(path)) == path.stat().st_size > 1000
    loaded = trimesh.load(str(path), force="mesh")
    texture = loaded.visual.material.baseColorTexture
    assert texture is not None and texture.size == (512, 512)
    # glTF is Y-up like the project's world: the vertices come back where they were written.
    np.testing.assert_allclose(loaded.bounds, mesh.textured.bounds, atol=1e-5)
    colours = loaded.visual.to_color().vertex_colors[:, :3].astype(float) / 255  # texture looked up at the UVs
    x = loaded.vertices[:, 0]
    red_side, blue_side = colours[x > 0.05].mean(0), colours[x < -0.05].mean(0)
    assert red_side[0] > 0.7 and red_side[2] < 0.3, red_side
    assert blue_side[2] > 0.7 and blue_side[0] < 0.3, blue_side
    assert glb_bytes(mesh.textured)[:4] == b"glTF"


def test_vertex_colours_where_no_uv_unwrapper_is_installed(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "xatlas", None)  # import xatlas raises ImportError
    gaussians = two_colour_sphere(count=3000)
    views, c2w = orbit_views(gaussians, size=32)
    with caplog.at_level("WARNING", logger="models.mesh.from_gaussians"):
        mesh = mesh_from_gaussians(gaussians, views, c2w, MeshOptions(resolution=40, depth_size=64))
    assert not mesh.has_texture and "xatlas is not installed" in caplog.text
    colours = mesh.textured.visual.vertex_colors[:, :3].astype(float) / 255
    x = mesh.textured.vertices[:, 0]
    assert colours[x > 0.05, 0].mean() > 0.7 and colours[x < -0.05, 2].mean() > 0.7
    loaded = trimesh.load(io.BytesIO(glb_bytes(mesh.textured)), file_type="glb", force="mesh")
    assert len(loaded.faces) == len(mesh.textured.faces)


def test_bad_gaussians_get_a_clear_error():
    gaussians = two_colour_sphere(count=500)
    views, c2w = orbit_views(gaussians, size=32)
    faint = Gaussians(gaussians.means, gaussians.quats, gaussians.scales, torch.full((500,), 0.01), gaussians.colors)
    with pytest.raises(MeshingError, match="no Gaussian is at least 0.05 opaque"):
        mesh_from_gaussians(faint, views, c2w)
    lone = Gaussians(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.002),
                     torch.tensor([0.3]), torch.ones(1, 3))
    with pytest.raises(MeshingError):  # nothing reaches the alpha of a surface: an empty fusion
        mesh_from_gaussians(lone, views, c2w)
    with pytest.raises(ValueError, match="views must be"):
        mesh_from_gaussians(gaussians, views[:5], c2w)


def test_chamfer_and_fscore_by_hand():
    generated = np.array([[0.0, 0.0, 0.0]])
    reference = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0]])
    chamfer, fscore = chamfer_and_fscore(generated, reference, threshold=0.15)
    # generated -> reference: 0.1; reference -> generated: (0.1 + 0.2) / 2; halved sum 0.125.
    assert chamfer == pytest.approx(0.125)
    # precision 1 (the one point is within 0.15), recall 1/2: F = 2 * 1 * 0.5 / 1.5
    assert fscore == pytest.approx(2 / 3)


def test_volume_iou_and_normalisation_by_hand():
    cube = trimesh.creation.box(extents=(1, 1, 1))
    slab = trimesh.creation.box(extents=(1, 0.5, 0.5))
    assert volume_iou(slab, cube) == pytest.approx(0.25)  # its volume over the cube's
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    assert occupancy(sphere).mean() == pytest.approx(math.pi / 6, abs=0.005)
    moved = cube.copy()
    moved.apply_scale(3.0)
    moved.apply_translation([5.0, -2.0, 1.0])
    np.testing.assert_allclose(normalise_to_unit_box(moved).bounds, [[-0.5] * 3, [0.5] * 3], atol=1e-9)
    same = geometry_scores(moved, cube)
    assert same["volume_iou"] == 1.0 and same["fscore"] == 1.0 and same["chamfer"] < 0.01  # the sampling's floor
    assert geometry_scores(sphere, cube)["chamfer"] > 5 * same["chamfer"]


def test_the_glb_renders_in_blender_like_the_gaussians_it_came_from(sphere_mesh, tmp_path):
    """The mesh, read by Blender's glTF importer and rendered by the render stage at the orbit
    cameras, looks like the views it was baked from (orientation and texture both right), and
    closer to them than to the same views turned by 90 degrees (the red and blue halves swap)."""
    from pipeline.data.rows import composite
    from pipeline.evaluation.ground_truth import render_rgba
    from models.metrics.image import psnr
    from render.process import BlenderProcess
    from render.settings import RenderSettings

    gaussians, _, c2w, mesh = sphere_mesh
    path = tmp_path / "sphere.glb"
    write_glb(mesh.textured, str(path))
    chosen = [0, 6, 12, 18]
    with BlenderProcess() as process:
        rendered = render_rgba(process, str(path), c2w[chosen].double().numpy(),
                               RenderSettings(resolution=64, samples=4, threads=2))
    rendered = composite(rendered, (0.5, 0.5, 0.5))
    # Blender normalises what it imports into the unit cube: the Gaussians are moved the same way.
    low, high = mesh.textured.bounds
    similarity = torch.eye(4, dtype=torch.float64)
    similarity[:3, :3] *= 1 / float((high - low).max())
    similarity[:3, 3] = torch.as_tensor(-(low + high) / 2) * similarity[0, 0]
    views, _ = orbit_views(gaussians.transformed(similarity.float()))
    own = float(psnr(rendered, views[chosen]).mean())
    turned = float(psnr(rendered, views[[6, 12, 18, 0]]).mean())
    assert own > 17 and own > turned + 5, (own, turned)  # measured 19.3 dB and 10.8 dB


def test_the_reference_mesh_from_blender_is_the_asset_in_the_world_frame():
    """Blender's export of a normalised asset (what the renders show) is the glTF file read by
    trimesh and normalised: glTF's Y-up is the project's world frame, no axis is swapped."""
    import os

    from render.process import BlenderProcess

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "Duck.glb")
    with BlenderProcess() as process:
        vertices, faces = process.world_mesh(path)
    from_blender = trimesh.Trimesh(vertices, faces)
    np.testing.assert_allclose(from_blender.bounds, normalise_to_unit_box(from_blender).bounds, atol=1e-6)
    from_file = normalise_to_unit_box(trimesh.load(path, force="mesh"))
    np.testing.assert_allclose(from_blender.extents, from_file.extents, atol=1e-4)  # 1, 0.93, 0.70: no swap
    assert geometry_scores(from_blender, from_file)["chamfer"] < 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_meshing_cuda_half_precision_gaussians_matches_the_cpu(sphere_mesh):
    """Gaussians as a GPU replica has them (CUDA, fp16 from the reconstructor): depth by gsplat,
    the same surface as on the CPU."""
    gaussians, views, c2w, on_cpu = sphere_mesh
    on_gpu = mesh_from_gaussians(gaussians.to("cuda", torch.float16), views.cuda(), c2w.cuda())
    assert on_gpu.watertight.is_watertight
    assert geometry_scores(on_gpu.watertight, on_cpu.watertight)["chamfer"] < 0.01
