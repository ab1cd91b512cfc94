"""Gaussians, the renderer (PyTorch path; gsplat where CUDA exists), PLY files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import camera
from models.gaussians.rendering import render_gaussians
from models.gaussians.gaussians import Gaussians, matrix_to_quaternion, quaternion_to_matrix
from models.gaussians.ply import load_ply, save_ply


def one_gaussian(position=(0.0, 0.0, 0.0), sigma=0.05, opacity=0.5, colour=(1.0, 0.2, 0.1)) -> Gaussians:
    return Gaussians(means=torch.tensor([position]), quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
                     scales=torch.full((1, 3), sigma), opacities=torch.tensor([opacity]), colors=torch.tensor([colour]))


def cameras(azimuths=(0.0,), elevation=0.0, size=64, fov=39.6):
    c2w = torch.tensor(camera.orbit_c2w(elevation, list(azimuths)), dtype=torch.float32)
    K = torch.tensor(camera.intrinsics_from_fov(fov, size, size), dtype=torch.float32)
    return c2w, K


def test_single_gaussian_position_footprint_and_colour():
    position = (0.2, -0.1, 0.05)
    sigma = 0.04
    gaussians = one_gaussian(position, sigma=sigma, opacity=0.5)
    c2w, K = cameras(azimuths=(0.0, 90.0, 200.0), elevation=15.0, size=96)
    out = render_gaussians(gaussians, c2w, K, 96, 96, background=(0.0, 0.0, 0.0))
    assert out.colors.shape == (3, 96, 96, 3) and out.alphas.shape == (3, 96, 96, 1)
    pixels, depth = camera.project_points(np.array([position]), c2w.double().numpy(), K.double().numpy())
    ys, xs = torch.meshgrid(torch.arange(96) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    for view in range(3):
        weight = out.alphas[view, ..., 0].double()
        total = weight.sum()
        mean_x, mean_y = (weight * xs).sum() / total, (weight * ys).sum() / total
        assert mean_x.item() == pytest.approx(pixels[view, 0, 0], abs=0.05)
        assert mean_y.item() == pytest.approx(pixels[view, 0, 1], abs=0.05)
        # Footprint: the alpha image is the projected Gaussian; its variance is (f sigma / z)^2 plus
        # the 0.3 px^2 low-pass (alpha stays below the 0.999 clamp, tails cut at 1/255).
        variance = (weight * (xs - mean_x) ** 2).sum() / total
        expected = (K[0, 0].item() * sigma / depth[view, 0]) ** 2 + 0.3
        assert variance.item() == pytest.approx(expected, rel=0.08)
        peak = out.alphas[view, ..., 0].max().item()
        assert 0.45 < peak <= 0.5
    # Colour: over a background, a pixel shows alpha * colour + (1 - alpha) * background. The
    # Gaussian projects to (48, 48); pixel (48, 48) has its centre half a pixel away on each axis.
    opaque = render_gaussians(one_gaussian(opacity=0.99), c2w[:1], K, 96, 96, background=(0.0, 0.0, 1.0))
    variance = (K[0, 0].item() * 0.05 / 2.0) ** 2 + 0.3
    alpha = 0.99 * np.exp(-0.5 * (0.25 + 0.25) / variance)
    expected = alpha * torch.tensor([1.0, 0.2, 0.1]) + (1 - alpha) * torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(opaque.colors[0, 48, 48], expected.float(), atol=1e-4, rtol=0)


def test_compositing_is_front_to_back():
    c2w, K = cameras()
    red_front = Gaussians(
        means=torch.tensor([[0.0, 0.0, 0.3], [0.0, 0.0, -0.3]]), quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
        scales=torch.full((2, 3), 0.1), opacities=torch.tensor([0.9, 0.9]),
        colors=torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    out = render_gaussians(red_front, c2w, K, 64, 64, background=(0.0, 0.0, 0.0))
    r, _, b = out.colors[0, 32, 32].tolist()
    assert r == pytest.approx(0.9, abs=0.01) and b == pytest.approx(0.09, abs=0.01)
    assert out.alphas[0, 32, 32, 0].item() == pytest.approx(0.99, abs=0.01)
    # Seen from behind, blue is in front.
    back, _ = cameras(azimuths=(180.0,))
    out = render_gaussians(red_front, back, K, 64, 64, background=(0.0, 0.0, 0.0))
    r, _, b = out.colors[0, 32, 32].tolist()
    assert b == pytest.approx(0.9, abs=0.01) and r == pytest.approx(0.09, abs=0.01)


def random_scene(count: int, seed: int = 0, requires_grad: bool = False) -> Gaussians:
    generator = torch.Generator().manual_seed(seed)
    scene = Gaussians(
        means=(torch.rand(count, 3, generator=generator) - 0.5) * 0.8,
        quats=torch.nn.functional.normalize(torch.randn(count, 4, generator=generator), dim=-1),
        scales=torch.rand(count, 3, generator=generator) * 0.05 + 0.01,
        opacities=torch.rand(count, generator=generator) * 0.8 + 0.1,
        colors=torch.rand(count, 3, generator=generator),
    )
    if requires_grad:
        for tensor in (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors):
            tensor.requires_grad_(True)
    return scene


def test_gradients_reach_every_parameter():
    scene = random_scene(200, requires_grad=True)
    c2w, K = cameras(azimuths=(0.0, 120.0), elevation=20.0, size=32)
    out = render_gaussians(scene, c2w, K, 32, 32, background=(0.5, 0.5, 0.5))
    (out.colors.square().mean() + out.alphas.mean()).backward()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        gradient = getattr(scene, name).grad
        assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name


def brute_force_render(scene: Gaussians, c2w: torch.Tensor, K: torch.Tensor, size: int | tuple[int, int],
                       background: tuple[float, float, float], stop: bool = True, depth: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rasteriser's definition (gsplat 1.5's), evaluated the slow way: every pixel against every
    Gaussian whose box (per-axis radii, opacity-aware) touches the pixel's 16 px tile, as gsplat bins them,
    composited front to back by camera depth, one Gaussian at a time as gsplat's kernel does: a
    pixel stops at the Gaussian that would take its transmittance to 1e-4 or below, which is left
    out (``stop=False``: nothing stops). ``size`` is the side or (width, height). Returns colors
    [C, H, W, 3] (``depth``: [C, H, W, 4], the camera depth composited as a fourth channel over 0)
    and alphas [C, H, W, 1]."""
    from models.gaussians._torch_rasterizer import ALPHA_MAX, ALPHA_MIN, T_STOP, TILE, _project

    width, height = (size, size) if isinstance(size, int) else size
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
    colors, alphas = [], []
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pixels = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # [P, 2]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    for view in range(len(c2w)):
        means2d, depths, conics, radii = _project(scene, torch.linalg.inv(c2w[view] @ flip), K, width, height)
        order = torch.argsort(depths)
        means2d, conics, radii = means2d[order], conics[order], radii[order]
        opacities, rgb = scene.opacities[order], scene.colors[order]
        if depth:
            rgb = torch.cat([rgb, depths[order, None]], dim=-1)
        # gsplat 1.5's isect_tiles: the tiles [floor((m - r) / 16), ceil((m + r) / 16)) of the box, per axis.
        first = [torch.floor(means2d[:, axis, None] / TILE - radii[:, axis, None] / TILE).clamp(min=0)
                 for axis in (0, 1)]
        end = [torch.ceil(means2d[:, axis, None] / TILE + radii[:, axis, None] / TILE).clamp(0, (tiles_x, tiles_y)[axis])
               for axis in (0, 1)]
        tile_x, tile_y = (pixels[:, 0] // TILE)[None], (pixels[:, 1] // TILE)[None]
        binned = (radii > 0).all(dim=-1)[:, None] & (first[0] <= tile_x) & (tile_x < end[0]) & \
            (first[1] <= tile_y) & (tile_y < end[1])  # [N, P]
        delta = pixels[None] - means2d[:, None]  # [N, P, 2]
        power = -0.5 * (conics[:, None, 0] * delta[..., 0] ** 2 + conics[:, None, 2] * delta[..., 1] ** 2) \
            - conics[:, None, 1] * delta[..., 0] * delta[..., 1]
        alpha = (opacities[:, None] * torch.exp(power)).clamp(max=ALPHA_MAX)
        alpha = torch.where(binned & (power <= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        colour, transmittance = torch.zeros(len(pixels), rgb.shape[-1]), torch.ones(len(pixels))
        done = torch.zeros(len(pixels), dtype=torch.bool)
        for alpha_i, rgb_i in zip(alpha.unbind(0), rgb.unbind(0)):  # unbind: one backward node, not N copies
            if stop:  # this Gaussian would take the pixel to T_STOP or below: the pixel ends before it
                done = done | ((transmittance * (1 - alpha_i)).detach() <= T_STOP)
                alpha_i = torch.where(done, torch.zeros_like(alpha_i), alpha_i)
            colour = colour + (transmittance * alpha_i)[:, None] * rgb_i
            transmittance = transmittance * (1 - alpha_i)
        colour = colour + transmittance[:, None] * torch.tensor([*background, 0.0][: rgb.shape[-1]])
        colors.append(colour.reshape(height, width, rgb.shape[-1]))
        alphas.append((1 - transmittance).reshape(height, width, 1))
    return torch.stack(colors), torch.stack(alphas)


def off_centre_cameras(azimuths=(0.0, 135.0), elevation=20.0, width=48, height=40, fov=39.6):
    """Orbit cameras with a non-square image and a principal point off the centre (a crop)."""
    c2w = torch.tensor(camera.orbit_c2w(elevation, list(azimuths)), dtype=torch.float32)
    K = torch.tensor(camera.intrinsics_from_fov(fov, width, height), dtype=torch.float32)
    K[0, 2], K[1, 2] = 0.3 * width, 0.65 * height
    return c2w, K


def near_and_far_scene(seed: int = 3) -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
    """Cameras inside the scene's box (Gaussians behind them, across the near plane, and large ones
    spanning many tiles) and Gaussians a hundred units away (a few pixels wide)."""
    near = random_scene(1200, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    far = Gaussians(means=(torch.rand(300, 3, generator=generator) - 0.5) * 200.0,
                    quats=torch.nn.functional.normalize(torch.randn(300, 4, generator=generator), dim=-1),
                    scales=torch.rand(300, 3, generator=generator) * 2.0 + 0.5,
                    opacities=torch.rand(300, generator=generator) * 0.8 + 0.1, colors=torch.rand(300, 3, generator=generator))
    c2w = torch.tensor(camera.orbit_c2w(20.0, [0.0, 135.0], 0.35), dtype=torch.float32)
    # Ten Gaussians on each camera's axis at depths 0.002-0.02, across the near plane (0.01).
    depths = torch.linspace(0.002, 0.02, 10)
    across = Gaussians(means=torch.cat([c2w[view, :3, 3] - depths[:, None] * c2w[view, :3, 2] for view in range(2)]),
                       quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(20, 1), scales=torch.full((20, 3), 0.003),
                       opacities=torch.full((20,), 0.5), colors=torch.rand(20, 3, generator=generator))
    scene = Gaussians(**{name: torch.cat([getattr(near, name), getattr(far, name), getattr(across, name)])
                         for name in ("means", "quats", "scales", "opacities", "colors")})
    for tensor in (scene.means, scene.quats, scene.scales, scene.opacities, scene.colors):
        tensor.requires_grad_(True)
    K = torch.tensor(camera.intrinsics_from_fov(60.0, 48, 48), dtype=torch.float32)
    return scene, c2w, K


def reference_render(scene: Gaussians, c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     background: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensor compositing (the device-independent path, ``_render_torch``), with the depth channel."""
    from models.gaussians._torch_rasterizer import _render_torch

    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
    outputs = [_render_torch(scene, torch.linalg.inv(c2w[view] @ flip), K, width, height,
                             torch.tensor(background), with_depth=True) for view in range(len(c2w))]
    return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])


@pytest.mark.parametrize("case", ["centred", "off-centre", "near-and-far"])
@pytest.mark.parametrize("compositor", ["compiled", "tensor"])
def test_the_rasteriser_equals_the_brute_force_definition_with_its_gradients(case, compositor):
    """Colours, alphas, the accumulated depth and the gradients of every parameter within 1e-5 of
    ``brute_force_render`` (gsplat's definition, one Gaussian at a time), on scenes dense enough
    that pixels stop (where leaving the stopping Gaussian in would differ): centred square and
    off-centre non-square intrinsics, and cameras inside the scene (Gaussians behind them, across
    the near plane, spanning tile edges) with Gaussians far away. ``compiled`` is what CPU tensors
    use (``render_gaussians(backend="torch")``), ``tensor`` the compositing other devices use."""
    background = (0.5, 0.5, 0.5)
    if case == "centred":
        (c2w, K), width, height = cameras(azimuths=(0.0, 135.0), elevation=20.0, size=48), 48, 48
    elif case == "off-centre":
        (c2w, K), width, height = off_centre_cameras(), 48, 40
    if case == "near-and-far":
        scenes = [near_and_far_scene()[0] for _ in range(2)]
        c2w, K, width, height = *near_and_far_scene()[1:], 48, 48
    else:
        scenes = [random_scene(1500, seed=3, requires_grad=True) for _ in range(2)]
    weights = torch.rand(2, height, width, 4, generator=torch.Generator().manual_seed(1))
    weights[..., 3] /= 100.0  # the depth channel (up to ~100 world units) weighs as much as a colour
    if compositor == "compiled":
        out = render_gaussians(scenes[0], c2w, K, width, height, background=background, backend="torch", depth=True)
        fast = torch.cat([out.colors, out.depths * out.alphas], dim=-1), out.alphas
    else:
        fast = reference_render(scenes[0], c2w, K, width, height, background)
    slow = brute_force_render(scenes[1], c2w, K, (width, height), background, depth=True)
    # Colours and alphas within 1e-5; the accumulated depth within 1e-5 of its largest value.
    torch.testing.assert_close(fast[0][..., :3], slow[0][..., :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[1], slow[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[0][..., 3], slow[0][..., 3], atol=1e-5 * slow[0][..., 3].abs().max().item(), rtol=0)
    with torch.no_grad():  # the stop rule matters here: without it some pixels differ
        unstopped, _ = brute_force_render(scenes[1], c2w, K, (width, height), background, stop=False)
    assert (unstopped - slow[0][..., :3]).abs().max() > 1e-4
    if case == "near-and-far":  # Gaussians behind the cameras and past the near plane are in the scene
        flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
        z = (scenes[1].means.detach() @ torch.linalg.inv(c2w[0] @ flip)[:3, :3].T)[:, 2] + \
            torch.linalg.inv(c2w[0] @ flip)[2, 3]
        assert (z < 0).sum() > 100 and ((z > 0) & (z < 0.01)).sum() >= 4 and (z > 50).sum() > 5
    for (fast_output, slow_output) in zip(fast, slow):
        (fast_output * weights[..., : fast_output.shape[-1]]).sum().backward(retain_graph=True)
        (slow_output * weights[..., : slow_output.shape[-1]]).sum().backward(retain_graph=True)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        fast_grad, slow_grad = getattr(scenes[0], name).grad, getattr(scenes[1], name).grad
        scale = slow_grad.abs().max().clamp(min=1.0)
        torch.testing.assert_close(fast_grad / scale, slow_grad / scale, atol=1e-5, rtol=0, msg=name)


def test_threads_may_render_at_once():
    """A Serve replica or a thread pool may render from several threads: the compiled kernels'
    thread pool takes one call at a time, and every thread gets its own images and gradients."""
    from concurrent.futures import ThreadPoolExecutor

    c2w, K = cameras(azimuths=(0.0, 90.0, 180.0), elevation=10.0, size=32)

    def render_and_backward(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = random_scene(400, seed=seed, requires_grad=True)
        out = render_gaussians(scene, c2w, K, 32, 32, backend="torch")
        out.colors.sum().backward()
        return out.colors.detach(), scene.means.grad

    expected = [render_and_backward(seed) for seed in range(6)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(render_and_backward, range(6)))
    for (colors, grad), (expected_colors, expected_grad) in zip(got, expected):
        assert torch.equal(colors, expected_colors) and torch.equal(grad, expected_grad)


def test_the_kernels_keep_out_of_torchs_openmp():
    """numba's OpenMP layer, beside torch's own OpenMP runtime, left torch's kernels in the same
    process five times slower (the reconstructor's training step); the kernels run on numba's
    workqueue layer."""
    import numba

    c2w, K = cameras(azimuths=(0.0,), elevation=10.0, size=16)
    render_gaussians(random_scene(50, seed=0), c2w, K, 16, 16, backend="torch")
    assert numba.threading_layer() == "workqueue"


def test_a_pixel_stops_before_the_gaussian_that_would_take_it_below_the_threshold():
    """Two wide Gaussians in line (flat across the pixel): the front one leaves 0.08 of the light,
    the one behind (alpha 0.999)
    would take it to 8e-5 <= 1e-4, so gsplat leaves it out and the pixel keeps the front one's
    colour over 0.08 of the background (drawing it would put 0.08 of its colour there instead)."""
    c2w, K = cameras(size=16)
    scene = Gaussians(means=torch.tensor([[0.0, 0.0, 0.2], [0.0, 0.0, -0.2]]),
                      quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 2), scales=torch.full((2, 3), 3.0),
                      opacities=torch.tensor([0.92, 1.0]), colors=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    out = render_gaussians(scene, c2w, K, 16, 16, background=(0.0, 0.0, 1.0), backend="torch")
    centre = out.colors[0, 8, 8]
    torch.testing.assert_close(centre, torch.tensor([0.92, 0.0, 0.08]), atol=2e-3, rtol=0)
    slow, _ = brute_force_render(scene, c2w, K, 16, (0.0, 0.0, 1.0))
    torch.testing.assert_close(out.colors, slow, atol=1e-5, rtol=0)


def test_a_gaussian_reaches_every_pixel_where_its_alpha_reaches_1_255_as_in_gsplat_1_5():
    """gsplat 1.5 lists a Gaussian in the tiles of its opacity-aware box (per axis,
    ``ceil(min(3.33, sqrt(2 ln(255 o))) sqrt(cov_xx))``: the whole ellipse where alpha >= 1/255),
    not of a 3-sigma circle. An opaque Gaussian 12 px wide along x, 38.5 px from the centre of the
    first pixel of a 16 px tile (3.2 sigma: beyond 3 sigma, inside the 1/255 ellipse), colours that
    pixel with alpha 0.99 exp(-q/2) = 0.0058, as gsplat draws it."""
    from models.gaussians._torch_rasterizer import _project

    c2w, K = cameras(size=80)
    fx = K[0, 0].item()
    scene = Gaussians(means=torch.tensor([[(26.0 - 40.0) * 2.0 / fx, 0.0, 0.0]]),
                      quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]), scales=torch.tensor([[12.0 * 2.0 / fx, 4.0 / fx, 4.0 / fx]]),
                      opacities=torch.tensor([0.99]), colors=torch.tensor([[1.0, 1.0, 1.0]]))
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
    means2d, _, conics, _ = _project(scene, torch.linalg.inv(c2w[0] @ flip), K, 80, 80)
    assert means2d[0].tolist() == pytest.approx([26.0, 40.0], abs=1e-3)
    dx, dy = 64.5 - means2d[0, 0], 40.5 - means2d[0, 1]
    expected = 0.99 * torch.exp(-0.5 * (conics[0, 0] * dx * dx + conics[0, 2] * dy * dy) - conics[0, 1] * dx * dy)
    assert 1 / 255 < expected < 0.01
    out = render_gaussians(scene, c2w, K, 80, 80, background=(0.0, 0.0, 0.0), backend="torch")
    torch.testing.assert_close(out.alphas[0, 40, 64, 0], expected, atol=1e-6, rtol=0)
    slow_colors, slow_alphas = brute_force_render(scene, c2w, K, 80, (0.0, 0.0, 0.0))
    torch.testing.assert_close(out.alphas, slow_alphas, atol=1e-6, rtol=0)


def test_the_opacity_cull_keeps_every_pair_that_changes_a_pixel():
    """The 4 px cells list a Gaussian only where its alpha can reach 1/255: on a sparse scene of
    nearly opaque Gaussians (whose 1/255 ellipse reaches past 3 sigma, so the cull is tightest
    there) the image is the brute-force one (no early stop: nothing saturates), and the cells
    hold fewer pairs than 16 px lists would."""
    from models.gaussians._torch_rasterizer import CELL, _project, bin_tiles

    scene = random_scene(60, seed=5)
    scene.opacities = torch.full_like(scene.opacities, 0.999)
    c2w, K = cameras(azimuths=(0.0, 70.0, 200.0), elevation=10.0, size=40)
    fast = render_gaussians(scene, c2w, K, 40, 40, background=(0.5, 0.5, 0.5), backend="torch")
    slow_colors, slow_alphas = brute_force_render(scene, c2w, K, 40, (0.5, 0.5, 0.5))
    assert slow_alphas.max() > 0.99 and slow_alphas.amax(dim=(1, 2, 3)).min() > 0.5  # every view sees the scene
    torch.testing.assert_close(fast.colors, slow_colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.alphas, slow_alphas, atol=1e-5, rtol=0)
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
    means2d, depths, conics, radii = _project(scene, torch.linalg.inv(c2w[0] @ flip), K, 40, 40)
    tiles = bin_tiles(means2d, depths, radii, 40, 40)[0]
    cells = bin_tiles(means2d, depths, radii, 40, 40, scene.opacities, conics, CELL)[0]
    assert len(cells) * CELL**2 < 0.6 * len(tiles) * 16**2  # pixel-Gaussian pairs evaluated


def test_scene_transform_leaves_images_unchanged():
    """A similarity applied to the scene and to the cameras renders the same images."""
    from models.reconstructor.rays import apply_normalisation, normalisation_transform

    scene = random_scene(300)
    c2w, K = cameras(azimuths=(30.0, 150.0), elevation=25.0, size=32)
    transform = normalisation_transform(c2w[0], radius=1.5).float()
    original = render_gaussians(scene, c2w, K, 32, 32)
    moved = render_gaussians(scene.transformed(transform), apply_normalisation(transform, c2w), K, 32, 32)
    torch.testing.assert_close(moved.colors, original.colors, atol=2e-4, rtol=0)


def test_dollied_cameras_see_the_look_at_plane_alike():
    """LGM's camera setting: views at fov 39.6 read as views at 49.1 from farther away (and the
    scene scaled) render a flat scene through the look-at point alike, up to a pixel."""
    from models.reconstructor.model import LGM
    from models.reconstructor.options import PRESETS

    lgm = LGM.__new__(LGM)
    lgm.options = PRESETS["big"]
    c2w, K = cameras(azimuths=(0.0,), elevation=0.0, size=64)
    flat = Gaussians(means=torch.tensor([[x, y, 0.0] for x in (-0.3, 0.0, 0.3) for y in (-0.2, 0.25)]),
                     quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(6, 1), scales=torch.full((6, 3), 0.03),
                     opacities=torch.full((6,), 0.9),
                     colors=torch.rand(6, 3, generator=torch.Generator().manual_seed(0)))
    transform = lgm.normalisation(c2w[0].double()).float()
    moved_cameras = lgm.normalise_cameras(transform[None], c2w[None])[0]
    K_lgm = torch.tensor(camera.intrinsics_from_fov(lgm.options.fov, 64, 64), dtype=torch.float32)
    original = render_gaussians(flat, c2w, K, 64, 64)
    moved = render_gaussians(flat.transformed(transform), moved_cameras, K_lgm, 64, 64)
    assert (moved.colors - original.colors).abs().mean() < 0.002  # without the dolly: 0.012
    assert moved_cameras[0, :3, 3].norm().item() == pytest.approx(1.5)


def test_quaternion_matrix_round_trip():
    q = torch.nn.functional.normalize(torch.randn(50, 4, dtype=torch.float64), dim=-1)
    q = q * torch.sign(q[:, :1])
    for quaternion, matrix in zip(q, quaternion_to_matrix(q)):
        back = matrix_to_quaternion(matrix)
        torch.testing.assert_close(back * torch.sign(back[0]), quaternion)


def test_container_validates_shapes():
    with pytest.raises(ValueError, match="opacities must have shape"):
        Gaussians(means=torch.zeros(3, 3), quats=torch.zeros(3, 4), scales=torch.zeros(3, 3),
                  opacities=torch.zeros(3, 1), colors=torch.zeros(3, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat needs CUDA")
def test_gsplat_and_torch_backends_agree():
    scene = random_scene(2000).to("cuda")
    c2w, K = cameras(azimuths=(0.0, 90.0, 225.0), elevation=20.0, size=64)
    fast = render_gaussians(scene, c2w.cuda(), K.cuda(), 64, 64, backend="gsplat")
    reference = render_gaussians(scene, c2w.cuda(), K.cuda(), 64, 64, backend="torch")
    torch.testing.assert_close(fast.colors, reference.colors, atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.alphas, reference.alphas, atol=2e-3, rtol=0)


def test_auto_falls_back_to_torch_with_one_warning_when_gsplat_fails(monkeypatch, caplog):
    """On a GPU machine whose gsplat cannot import or build its kernels, "auto" still renders."""
    import models.gaussians.rendering as renderer

    calls = []

    def broken_gsplat(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Error building extension 'gsplat_cuda': nvcc not found")

    monkeypatch.setattr(renderer, "_gsplat_failed", None)
    monkeypatch.setattr(renderer, "_rasterize_gsplat", broken_gsplat)
    # Stand in for "these are CUDA tensors": the decision the renderer makes for a cuda device.
    monkeypatch.setattr(renderer, "_prefers_gsplat", lambda device: renderer._gsplat_failed is None)
    scene = random_scene(300)
    c2w, K = cameras(azimuths=(0.0, 120.0), elevation=10.0, size=32)
    with caplog.at_level("WARNING", logger="models.gaussians.rendering"):
        first = render_gaussians(scene, c2w, K, 32, 32, backend="auto")
        second = render_gaussians(scene, c2w, K, 32, 32, backend="auto")
    reference = render_gaussians(scene, c2w, K, 32, 32, backend="torch")
    torch.testing.assert_close(first.colors, reference.colors)
    torch.testing.assert_close(second.colors, reference.colors)
    assert len(calls) == 1, "after one failure gsplat is not tried again"
    warnings = [r.getMessage() for r in caplog.records if r.name == "models.gaussians.rendering"]
    assert len(warnings) == 1 and "nvcc not found" in warnings[0] and "PyTorch rasteriser" in warnings[0]
    with pytest.raises(RuntimeError, match="nvcc"):  # asked for by name, gsplat's error is the answer
        render_gaussians(scene, c2w, K, 32, 32, backend="gsplat")


def test_out_of_memory_in_gsplat_is_the_calls_error_and_gsplat_stays_in_use(monkeypatch, caplog):
    """One scene too large for the GPU raises out-of-memory, as any CUDA op does: it is not taken
    for "gsplat unusable" (a Serve replica would render with PyTorch for the rest of its life)."""
    import models.gaussians.rendering as renderer

    calls = []

    def out_of_memory(*args, **kwargs):
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    monkeypatch.setattr(renderer, "_gsplat_failed", None)
    monkeypatch.setattr(renderer, "_rasterize_gsplat", out_of_memory)
    monkeypatch.setattr(renderer, "_prefers_gsplat", lambda device: renderer._gsplat_failed is None)
    scene = random_scene(50)
    c2w, K = cameras(azimuths=(0.0,), elevation=10.0, size=16)
    with caplog.at_level("WARNING", logger="models.gaussians.rendering"):
        for _ in range(2):
            with pytest.raises(torch.cuda.OutOfMemoryError):
                render_gaussians(scene, c2w, K, 16, 16, backend="auto")
    assert len(calls) == 2 and renderer._gsplat_failed is None, "gsplat is tried again for the next scene"
    assert not caplog.records


def test_ply_round_trip_and_pruning(tmp_path):
    scene = random_scene(500)
    scene.opacities[:10] = 0.001  # below the pruning threshold
    path = tmp_path / "scene.ply"
    written = save_ply(scene, str(path))
    assert written == 490
    header = path.read_bytes().split(b"end_header\n", 1)[0].decode("ascii")
    assert "element vertex 490" in header and "property float f_dc_0" in header and "property float rot_3" in header
    # The reference 3DGS loader's layout at its default SH degree 3: 45 f_rest_* between f_dc and opacity.
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert names[6:9] == ["f_dc_0", "f_dc_1", "f_dc_2"] and names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    loaded = load_ply(str(path))
    kept = scene.select(scene.opacities >= 0.005)
    torch.testing.assert_close(loaded.means, kept.means)
    torch.testing.assert_close(loaded.colors, kept.colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded.opacities, kept.opacities, atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded.scales, kept.scales, rtol=1e-5, atol=0)
    torch.testing.assert_close(loaded.quats, kept.quats, atol=1e-6, rtol=0)
    # The stored values follow the 3DGS conventions.
    raw = np.frombuffer(path.read_bytes().split(b"end_header\n", 1)[1], dtype="<f4").reshape(490, 62)
    np.testing.assert_allclose(raw[:, 6:9], (kept.colors.numpy() - 0.5) / 0.28209479177387814, atol=1e-5)
    assert (raw[:, 9:54] == 0).all()  # view-independent colour: no higher SH degrees
    np.testing.assert_allclose(raw[:, 55:58], np.log(kept.scales.numpy()), atol=1e-5)


def test_ply_colours_are_clamped_at_zero_as_gsplat_does(tmp_path):
    scene = random_scene(4)
    path = tmp_path / "scene.ply"
    save_ply(scene, str(path))
    data = bytearray(path.read_bytes())
    start = data.index(b"end_header\n") + len(b"end_header\n")
    raw = np.frombuffer(bytes(data[start:]), dtype="<f4").reshape(4, 62).copy()
    raw[0, 6] = -5.0  # an SH DC below the representable black
    path.write_bytes(bytes(data[:start]) + raw.tobytes())
    assert float(load_ply(str(path)).colors[0, 0]) == 0.0


def test_splat_files_hold_32_bytes_per_gaussian_in_the_viewers_layout(tmp_path):
    from models.gaussians.ply import save_splat

    scene = random_scene(300)
    scene.opacities[:5] = 0.001  # pruned, as in the PLY
    path = tmp_path / "scene.splat"
    assert save_splat(scene, str(path)) == 295 and path.stat().st_size == 295 * 32
    record = np.frombuffer(path.read_bytes(), dtype=[("position", "<f4", 3), ("scale", "<f4", 3),
                                                     ("rgba", "u1", 4), ("rotation", "u1", 4)])
    kept = scene.select(scene.opacities >= 0.005)
    importance = (kept.scales.prod(-1) * kept.opacities).numpy()
    order = np.argsort(-importance)
    np.testing.assert_allclose(record["position"], kept.means.numpy()[order], atol=1e-6)
    np.testing.assert_allclose(record["scale"], kept.scales.numpy()[order], rtol=1e-6)
    np.testing.assert_allclose(record["rgba"][:, 3] / 255, kept.opacities.numpy()[order], atol=0.5 / 255 + 1e-6)
    quats = (record["rotation"].astype(np.float64) - 128) / 128
    np.testing.assert_allclose(quats, kept.quats.numpy()[order], atol=1 / 128)


def test_bad_ply_files_are_rejected(tmp_path):
    not_ply = tmp_path / "a.ply"
    not_ply.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        load_ply(str(not_ply))
    scene_path = tmp_path / "b.ply"
    save_ply(random_scene(20), str(scene_path))
    truncated = tmp_path / "c.ply"
    truncated.write_bytes(scene_path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_ply(str(truncated))
    mesh = tmp_path / "mesh.ply"
    mesh.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + b"\0" * 12)
    with pytest.raises(ValueError, match="not a 3D Gaussian PLY"):
        load_ply(str(mesh))


def test_nothing_on_screen_still_backpropagates():
    scene = random_scene(10, requires_grad=True)
    behind, K = cameras(azimuths=(0.0,), size=32)
    behind = behind.clone()
    behind[0, :3, 3] = torch.tensor([0.0, 0.0, -5.0])  # looking away from the scene (along -z)
    out = render_gaussians(scene, behind, K, 32, 32, background=(0.2, 0.3, 0.4))
    torch.testing.assert_close(out.colors[0, 0, 0], torch.tensor([0.2, 0.3, 0.4]))
    assert out.alphas.abs().max() == 0
    out.colors.mean().backward()
    assert scene.means.grad is not None and scene.means.grad.abs().max() == 0


def sphere_of_gaussians(radius: float = 0.5, count: int = 6000, sigma: float = 0.02, seed: int = 0) -> Gaussians:
    """Small opaque Gaussians spread evenly over a sphere centred at the origin (a Fibonacci lattice)."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    polar = torch.arccos(1 - 2 * index / count)
    azimuth = math.pi * (1 + 5**0.5) * index
    points = radius * torch.stack([torch.sin(polar) * torch.cos(azimuth), torch.cos(polar),
                                   torch.sin(polar) * torch.sin(azimuth)], dim=-1)
    return Gaussians(means=points.float(), quats=torch.tensor([[1.0, 0, 0, 0]]).expand(count, 4).clone(),
                     scales=torch.full((count, 3), sigma), opacities=torch.full((count,), 0.95),
                     colors=torch.full((count, 3), 0.5))


def ray_sphere_depth(c2w: np.ndarray, K: np.ndarray, size: int, radius: float) -> np.ndarray:
    """The camera z of the first hit of each pixel's ray with the sphere (NaN where it misses)."""
    ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    # OpenCV pixel rays -> OpenGL camera axes (x right, y up, looking along -z).
    directions = np.stack([(xs - K[0, 2]) / K[0, 0], -(ys - K[1, 2]) / K[1, 1], -np.ones_like(xs)], axis=-1)
    world = directions @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    a = (world * world).sum(-1)
    b = 2 * world @ origin
    c = origin @ origin - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.where(disc > 0, disc, np.nan))) / (2 * a)
    return t  # the ray direction has camera z = -1, so t is the depth along the viewing axis


def test_expected_depth_of_a_sphere_matches_ray_casting():
    """Depth rendered beside colour: the camera z of the surface, as a ray-sphere intersection gives it."""
    radius, size = 0.5, 64
    c2w, K = cameras(azimuths=(0.0, 130.0), elevation=25.0, size=size)
    out = render_gaussians(sphere_of_gaussians(radius), c2w, K, size, size, depth=True, backend="torch")
    assert out.depths.shape == (2, size, size, 1)
    for view in range(2):
        truth = ray_sphere_depth(c2w[view].double().numpy(), K.double().numpy(), size, radius)
        covered = (out.alphas[view, ..., 0].numpy() > 0.9) & np.isfinite(truth)
        error = out.depths[view, ..., 0].numpy() - truth
        # Splatting biases depth towards the camera by about a footprint (~0.02 here) times the
        # surface's slope: small where the surface faces the camera, larger towards the rim.
        facing = covered & (np.nan_to_num(truth, nan=9) < camera.DEFAULT_DISTANCE - radius + 0.1)
        assert facing.sum() > 500
        assert np.abs(error[facing]).mean() < 0.02 and np.abs(error[facing]).max() < 0.04, error[facing]
        assert np.abs(error[covered]).mean() < 0.05
        assert abs(error[32, 32]) < 0.005  # the surface point nearest the camera
    missed = ~np.isfinite(ray_sphere_depth(c2w[0].double().numpy(), K.double().numpy(), size, radius * 1.2))
    assert float(out.alphas[0, ..., 0].numpy()[missed].max()) < 0.01  # no depth where there is nothing


def test_expected_depth_is_the_front_surface_and_leaves_colour_unchanged():
    """Two opaque sheets, one behind the other: the depth is the front one's; colours and alphas are
    those of a render without depth."""
    c2w, K = cameras(azimuths=(0.0,), elevation=0.0, size=32)
    grid = torch.stack(torch.meshgrid(torch.linspace(-0.4, 0.4, 40), torch.linspace(-0.4, 0.4, 40),
                                      indexing="ij"), dim=-1).reshape(-1, 2)
    eye = c2w[0, :3, 3]
    forward = -c2w[0, :3, 2]  # OpenGL cameras look along -z
    right, up = c2w[0, :3, 0], c2w[0, :3, 1]
    front = grid[:, :1] * right + grid[:, 1:] * up + eye + 1.5 * forward
    back = grid[:, :1] * right + grid[:, 1:] * up + eye + 2.5 * forward
    n = len(grid)
    scene = Gaussians(means=torch.cat([back, front]), quats=torch.tensor([[1.0, 0, 0, 0]]).expand(2 * n, 4).clone(),
                      scales=torch.full((2 * n, 3), 0.015), opacities=torch.full((2 * n,), 0.99),
                      colors=torch.cat([torch.zeros(n, 3), torch.ones(n, 3)]))
    with_depth = render_gaussians(scene, c2w, K, 32, 32, depth=True, backend="torch")
    plain = render_gaussians(scene, c2w, K, 32, 32, backend="torch")
    torch.testing.assert_close(with_depth.colors, plain.colors)
    torch.testing.assert_close(with_depth.alphas, plain.alphas)
    assert plain.depths is None
    centre = with_depth.depths[0, 8:24, 8:24, 0]
    torch.testing.assert_close(centre, torch.full_like(centre, 1.5), atol=0.01, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat needs CUDA")
def test_gsplat_and_torch_backends_agree_on_depth():
    scene = sphere_of_gaussians().to("cuda")
    c2w, K = cameras(azimuths=(0.0, 90.0, 225.0), elevation=20.0, size=64)
    fast = render_gaussians(scene, c2w.cuda(), K.cuda(), 64, 64, backend="gsplat", depth=True)
    reference = render_gaussians(scene, c2w.cuda(), K.cuda(), 64, 64, backend="torch", depth=True)
    covered = reference.alphas > 0.5
    torch.testing.assert_close(fast.depths[covered], reference.depths[covered], atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.colors, reference.colors, atol=2e-3, rtol=0)


def test_the_projection_clamps_the_jacobian_around_the_principal_point_as_gsplat_does():
    """gsplat evaluates the EWA Jacobian at x/z clamped to [-(cx/fx + 0.3 tan), (W - cx)/fx + 0.3 tan]
    (``_persp_proj`` in gsplat/cuda/_torch_impl.py, gsplat 1.5.3; likewise y): with the principal
    point off the centre the two sides differ. Gaussians beyond both sides of an off-centre camera
    get gsplat's 2D covariance (a clamp symmetric about the centre gives another)."""
    from models.gaussians._torch_rasterizer import EPS_2D, _project

    width, height = 48, 40
    K = torch.tensor(camera.intrinsics_from_fov(39.6, width, height), dtype=torch.float32)
    K[0, 2], K[1, 2] = 0.3 * width, 0.65 * height
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    depth = 2.0
    # x/z from far left to far right of the image (and y likewise), through both clamp limits
    xs = torch.linspace(-1.2, 1.2, 25)
    means = torch.stack([xs * depth, -xs.flip(0) * depth, torch.full_like(xs, depth)], dim=-1)
    generator = torch.Generator().manual_seed(0)
    scene = Gaussians(means=means, quats=torch.nn.functional.normalize(torch.randn(25, 4, generator=generator), dim=-1),
                      scales=torch.rand(25, 3, generator=generator) * 0.05 + 0.01, opacities=torch.full((25,), 0.5),
                      colors=torch.rand(25, 3, generator=generator))
    _, _, conics, _ = _project(scene, torch.eye(4), K, width, height)  # camera frame = world frame

    rotation = quaternion_to_matrix(scene.quats)
    scaled = rotation * scene.scales[:, None, :]
    covariance = scaled @ scaled.transpose(-1, -2)
    tx, ty, tz = means.unbind(-1)
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = tz * torch.clamp(tx / tz, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    ty = tz * torch.clamp(ty / tz, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zeros = torch.zeros_like(tz)
    jacobian = torch.stack([fx / tz, zeros, -fx * tx / tz**2, zeros, fy / tz, -fy * ty / tz**2], dim=-1).reshape(-1, 2, 3)
    cov2d = jacobian @ covariance @ jacobian.transpose(-1, -2) + EPS_2D * torch.eye(2)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    determinant = a * c - b * b
    expected = torch.stack([c / determinant, -b / determinant, a / determinant], dim=-1)
    torch.testing.assert_close(conics, expected, rtol=1e-5, atol=1e-6)


def test_the_projection_equals_gsplats_own_reference():
    """Means, depths and conics of ``_project`` against gsplat's own PyTorch reference
    (``gsplat.cuda._torch_impl._fully_fused_projection``, which runs on a CPU), with an off-centre
    non-square camera inside the scene: Gaussians behind it, across the near plane, beyond the
    image's sides (where the Jacobian is clamped) and far away. Radii are those of gsplat's CUDA
    kernel (opacity-aware; its PyTorch reference has no opacities): its closed form on gsplat's 2D
    covariance, equal but where float rounding meets a ceiling."""
    reference = pytest.importorskip("gsplat.cuda._torch_impl")
    from models.gaussians._torch_rasterizer import EPS_2D, NEAR_PLANE, _project

    scene, c2w, _ = near_and_far_scene()
    c2w, K = c2w, off_centre_cameras()[1]
    flip = torch.as_tensor(camera.OPENGL_TO_OPENCV, dtype=c2w.dtype)
    viewmats = torch.linalg.inv(c2w @ flip)
    with torch.no_grad():
        covars, _ = reference._quat_scale_to_covar_preci(scene.quats, scene.scales, compute_preci=False, triu=False)
        radii, means2d, depths, conics, _ = reference._fully_fused_projection(
            scene.means, covars, viewmats, K.expand(len(viewmats), 3, 3), 48, 40, eps2d=EPS_2D, near_plane=NEAR_PLANE)
        for view in range(len(viewmats)):
            ours = _project(scene, viewmats[view], K, 48, 40)
            drawn = radii[view].amax(dim=-1) > 0
            assert drawn.sum() > 200 and (~drawn).sum() > 100
            torch.testing.assert_close(ours[0][drawn], means2d[view][drawn], rtol=1e-5, atol=1e-4)
            # Depths sum products of coordinates up to 100 units: within a few float32 steps of those
            # (the summation order follows torch's thread count: 5.6e-6 apart on one thread).
            rounding = 4 * torch.finfo(torch.float32).eps * scene.means.detach().abs().max()
            torch.testing.assert_close(ours[1], depths[view], rtol=1e-6, atol=rounding.item())
            torch.testing.assert_close(ours[2][drawn], conics[view][drawn], rtol=1e-4, atol=1e-6)
            # Radii: gsplat's CUDA kernel's closed form on gsplat's own 2D covariance (the conic's inverse).
            a, b, c = conics[view].unbind(-1)
            determinant = a * c - b * b
            extend = torch.sqrt(2 * torch.log(scene.opacities * 255.0)).clamp(max=3.33)
            box = torch.ceil(extend[:, None] * torch.sqrt(torch.stack([c, a], dim=-1) / determinant[:, None]))
            centre = means2d[view]
            on_image = drawn & (centre[:, 0] + box[:, 0] > 0) & (centre[:, 0] - box[:, 0] < 48) & \
                (centre[:, 1] + box[:, 1] > 0) & (centre[:, 1] - box[:, 1] < 40)  # the kernel's test, on its box
            expected = torch.where(on_image[:, None], box, torch.zeros_like(box))
            matches = (ours[3] == expected).all(dim=-1)
            assert matches.float().mean() > 0.99 and (ours[3] - expected).abs().max() <= 1
