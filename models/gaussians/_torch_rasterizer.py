"""The PyTorch rasteriser of 3D Gaussians (private: ``models.gaussians.rendering`` is the public
module; it takes gsplat on CUDA and the "torch" backend elsewhere, with the same conventions).

Here: the EWA projection (``_project``, used by every non-gsplat path), the binning into cells
(``cell_ranges``, ``bin_tiles``) and the tensor compositing (``_render_torch``) that runs on any
device: the reference the compiled CPU kernels (``_cpu_rasterizer``, what CPU tensors use) are
tested against, and the path for CUDA tensors where gsplat is unusable.

The tensor compositing bins Gaussians into 4 x 4 px cells of gsplat's 16 px tiles: a Gaussian goes
only into the cells of its tiles where its alpha can reach 1/255 (an exact cull: the pixels are
those of the 16 px lists), each cell's list sorted by depth. Cells are composited in vectorised
chunks of similar list length (bounded memory), 64 Gaussians at a time (more when few cells
remain). Each pixel stops as gsplat's does: at the Gaussian that would take its transmittance to
``T_STOP`` (1e-4) or below, which is left out; a cell is dropped once all its pixels have stopped.
Its cost on 2 CPU cores is the baseline column of ``benchmarks/gaussians.py`` (``docs/costs.md``).
"""

from __future__ import annotations

import math

import torch

from models.gaussians.gaussians import Gaussians, quaternion_to_matrix

NEAR_PLANE = 0.01
EPS_2D = 0.3
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TILE = 16
CELL = 4  # the PyTorch path composites 4 x 4 px cells of the 16 px tiles (see ``bin_tiles``; 8 and 2 were slower)
_CHUNK_ELEMENTS = 1 << 23  # pixels x Gaussians evaluated at once by the PyTorch path
_BLOCK = 64  # Gaussians per tile composited at once, between checks for early termination ...
_STEP_ELEMENTS = 1 << 18  # ... or more, so that one step evaluates at least this many pixel-Gaussian pairs
EXTEND_MAX = 3.33  # gsplat 1.5's bound on a Gaussian's box, in standard deviations per axis
T_STOP = 1e-4  # a pixel stops at the Gaussian that would take its transmittance to this or below (gsplat's rule)


def _project(gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int):
    """Means in pixels [N, 2], depths [N], conics [N, 3] (a, b, c of the inverse 2D covariance) and
    radii [N, 2] in pixels (x, y) as gsplat 1.5 projects them: ``ceil(min(3.33, sqrt(2 ln(255 o)))
    * sqrt(cov_xx))``, ... (the box of the ellipse where alpha can reach 1/255), 0 for a Gaussian
    behind the near plane, less opaque than 1/255 or off the image."""
    points = gaussians.means @ viewmat[:3, :3].T + viewmat[:3, 3]
    x, y, z = points.unbind(-1)
    z_safe = z.clamp(min=NEAR_PLANE)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # The Jacobian is evaluated with x/z, y/z clamped to 0.3 x the half field of view beyond the
    # image's edges, measured from the principal point (gsplat's form: symmetric only for a centred K).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = (x / z_safe).clamp(-(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x) * z_safe
    ty = (y / z_safe).clamp(-(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y) * z_safe
    zeros = torch.zeros_like(z_safe)
    jacobian = torch.stack([
        torch.stack([fx / z_safe, zeros, -fx * tx / z_safe**2], dim=-1),
        torch.stack([zeros, fy / z_safe, -fy * ty / z_safe**2], dim=-1),
    ], dim=-2)  # [N, 2, 3]
    rotation = quaternion_to_matrix(gaussians.quats)
    scaled = rotation * gaussians.scales[:, None, :]
    covariance = scaled @ scaled.transpose(-1, -2)  # R S S^T R^T
    world_to_camera = viewmat[:3, :3]
    covariance_camera = world_to_camera @ covariance @ world_to_camera.T
    cov2d = jacobian @ covariance_camera @ jacobian.transpose(-1, -2)
    a = cov2d[:, 0, 0] + EPS_2D
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + EPS_2D
    determinant = (a * c - b * b).clamp(min=1e-12)
    conics = torch.stack([c / determinant, -b / determinant, a / determinant], dim=-1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)
    with torch.no_grad():
        # gsplat 1.5's opacity-aware box, per axis: the whole ellipse where alpha can reach 1/255.
        opacities = gaussians.opacities.detach()
        extend = torch.sqrt(2.0 * torch.log((opacities / ALPHA_MIN).clamp(min=1.0))).clamp(max=EXTEND_MAX)
        radii = torch.ceil(extend[:, None] * torch.sqrt(torch.stack([a, c], dim=-1).detach().clamp(min=0)))
        visible = (z > NEAR_PLANE) & (a * c - b * b > 0) & (opacities >= ALPHA_MIN) & (radii > 0).any(dim=-1)
        visible &= (means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < width) & \
            (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < height)
        radii = torch.where(visible[:, None], radii, torch.zeros_like(radii))
    return means2d, z, conics, radii


def cell_ranges(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int,
                opacities: torch.Tensor | None = None, conics: torch.Tensor | None = None, cell: int = TILE
                ) -> torch.Tensor:
    """The ``cell``-px cells each Gaussian can reach: [N, 4] (x0, x1, y0, y1) inclusive cell
    indices, an empty range (x0 > x1) for a Gaussian listed nowhere.

    A Gaussian reaches the 16 px tiles its box (``radii`` [N, 2], per axis) touches, as gsplat's
    ``isect_tiles`` lists them: [floor((m - r) / 16), ceil((m + r) / 16)). With ``opacities`` [N]
    and ``conics`` [N, 3] it reaches only the cells (``cell`` divides 16) holding a pixel centre of
    those tiles where ``opacity * exp(-q/2)`` can reach ``ALPHA_MIN`` (the bounding box of that
    ellipse, with a margin for rounding): every pair left out has its alpha dropped anyway, so the
    rendered pixels are exactly those of the 16 px lists, for fewer pairs.
    """
    device = means2d.device
    if TILE % cell:
        raise ValueError(f"cell {cell} must divide the tile size {TILE}")
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    cells_x, cells_y = math.ceil(width / cell), math.ceil(height / cell)
    cull = opacities is not None and conics is not None
    with torch.no_grad():
        ranges = torch.zeros(len(means2d), 4, dtype=torch.long, device=device)
        ranges[:, 0] = 1  # empty: x0 = 1 > x1 = 0
        on_screen = (radii > 0).all(dim=-1)
        if cull:
            on_screen &= opacities >= ALPHA_MIN
        ids = torch.nonzero(on_screen).flatten()
        centre, radius = means2d[ids], radii[ids].to(means2d.dtype)
        # First and last pixel (x, y) of the 16 px tiles the box touches (gsplat's float form).
        limit = torch.tensor([tiles_x, tiles_y], device=device, dtype=centre.dtype)
        low = torch.floor(centre / TILE - radius / TILE).clamp(min=0)
        high = torch.minimum(torch.ceil(centre / TILE + radius / TILE).clamp(min=0), limit)
        low, high = low * TILE, high * TILE - 1
        if cull:
            # The ellipse q <= 2 log(255 o) has half-widths sqrt(2 log(255 o) * cov_xx), ... ; a pixel
            # centre i + 0.5 inside it has i in [centre - extent - 0.5, centre + extent - 0.5].
            conic = conics[ids]
            determinant = (conic[:, 0] * conic[:, 2] - conic[:, 1] ** 2).clamp(min=1e-30)
            variance = torch.stack([conic[:, 2], conic[:, 0]], dim=-1) / determinant[:, None]
            level = 2 * torch.log(opacities[ids].clamp(max=1.0) / ALPHA_MIN).clamp(min=0)
            extent = torch.sqrt(level[:, None] * variance) * (1 + 1e-3) + 1e-2
            low = torch.maximum(low, torch.floor(centre - extent - 0.5))
            high = torch.minimum(high, torch.floor(centre + extent - 0.5))
        reached = (low <= high).all(dim=-1)
        ids, low, high = ids[reached], low[reached], high[reached]
        x0, y0 = (low // cell).long().unbind(-1)
        x1, y1 = (high // cell).long().unbind(-1)
        ranges[ids] = torch.stack([x0, x1.clamp(max=cells_x - 1), y0, y1.clamp(max=cells_y - 1)], dim=-1)
    return ranges


def bin_tiles(means2d: torch.Tensor, depths: torch.Tensor, radii: torch.Tensor, width: int, height: int,
              opacities: torch.Tensor | None = None, conics: torch.Tensor | None = None, cell: int = TILE
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each Gaussian into the ``cell``-px cells it can reach (``cell_ranges``), each cell's list
    sorted front to back.

    Returns (pair_gaussian [M]: Gaussian ids, cell after cell; per_cell [cells]: list lengths;
    starts [cells]: where each cell's list begins in pair_gaussian), cells numbered row-major.
    """
    device = means2d.device
    cells_x, cells_y = math.ceil(width / cell), math.ceil(height / cell)
    with torch.no_grad():
        x0, x1, y0, y1 = cell_ranges(means2d, radii, width, height, opacities, conics, cell).unbind(-1)
        span_x, span_y = x1 - x0 + 1, y1 - y0 + 1
        counts = (span_x * span_y).clamp(min=0) * (span_x > 0) * (span_y > 0)
        ids = torch.arange(len(means2d), device=device)
        pair_gaussian = torch.repeat_interleave(ids, counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        local = torch.arange(len(pair_gaussian), device=device) - first
        owner = pair_gaussian
        pair_cell = (y0[owner] + local // span_x[owner]) * cells_x + x0[owner] + local % span_x[owner]
        # Sort by cell, then by depth (front to back).
        depth_rank = torch.empty_like(depths, dtype=torch.long)
        depth_rank[torch.argsort(depths)] = torch.arange(len(depths), device=device)
        order = torch.argsort(pair_cell * len(depths) + depth_rank[pair_gaussian])
        pair_gaussian, pair_cell = pair_gaussian[order], pair_cell[order]
        per_cell = torch.bincount(pair_cell, minlength=cells_x * cells_y)
        starts = torch.cumsum(per_cell, 0) - per_cell
    return pair_gaussian, per_cell, starts


def _block_length(tiles: int, pixels: int) -> int:
    """Gaussians per tile in one compositing step for ``tiles`` tiles of ``pixels`` pixels:
    ``_BLOCK``, longer when few tiles are left so that a step still amortises its per-operation
    overhead."""
    return max(_BLOCK, _STEP_ELEMENTS // (tiles * pixels))


def tile_buffers(num_tiles: int, background: torch.Tensor, tile: int = TILE
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiled outputs before compositing: colors [T, P, D] (the background [D]), alphas [T, P]
    (zeros), and the pixel centres of a tile relative to its corner [P, 2], P = tile x tile row-major."""
    device, dtype = background.device, background.dtype
    offsets = torch.arange(tile, device=device, dtype=dtype) + 0.5
    pixel_y, pixel_x = torch.meshgrid(offsets, offsets, indexing="ij")
    return (background.expand(num_tiles, tile * tile, background.shape[-1]).clone(),
            torch.zeros(num_tiles, tile * tile, device=device, dtype=dtype),
            torch.stack([pixel_x.flatten(), pixel_y.flatten()], dim=-1))


def _render_torch(gaussians: Gaussians, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
                  background: torch.Tensor, with_depth: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours [H, W, 3] (or, ``with_depth``, [H, W, 4]: the last channel the accumulated camera
    depth sum_i w_i z_i, over a background depth of 0, as gsplat's "RGB+D") and alphas [H, W, 1]."""
    device, dtype = gaussians.means.device, gaussians.means.dtype
    means2d, depths, conics, radii = _project(gaussians, viewmat, K, width, height)
    features = gaussians.colors
    if with_depth:
        features = torch.cat([features, depths[:, None]], dim=-1)
        background = torch.cat([background, background.new_zeros(1)])
    # The compositing units ("tiles" from here on) are the CELL-px cells of ``bin_tiles``.
    tiles_x, tiles_y = math.ceil(width / CELL), math.ceil(height / CELL)
    pair_gaussian, per_tile, starts = bin_tiles(means2d, depths, radii, width, height, gaussians.opacities.detach(),
                                                conics.detach(), CELL)
    colors, alphas, pixel_offsets = tile_buffers(tiles_x * tiles_y, background, CELL)
    pixel_count = CELL * CELL
    channels = features.shape[-1]

    def flush(tile_ids: list[int], depth: int) -> None:
        """Composite tiles ``tile_ids`` (at most ``depth`` Gaussians each), front to back in blocks
        (``_block_length``); a tile leaves the work once all its pixels have stopped (``T_STOP``)."""
        tiles = torch.tensor(tile_ids, device=device)
        origin = torch.stack([(tiles % tiles_x) * CELL, (tiles // tiles_x) * CELL], dim=-1).to(dtype)
        pixels = origin[:, None, :] + pixel_offsets[None]  # [T, P, 2]
        colour = torch.zeros(len(tile_ids), pixel_count, channels, device=device, dtype=dtype)
        transmittance = torch.ones(len(tile_ids), pixel_count, device=device, dtype=dtype)
        done = torch.zeros(len(tile_ids), pixel_count, device=device, dtype=torch.bool)  # pixels stopped
        active = torch.arange(len(tile_ids), device=device)  # rows of ``tiles`` still compositing
        begin, block = 0, _block_length(len(tile_ids), pixel_count)
        while begin < depth:
            slots = torch.arange(begin, min(depth, begin + block), device=device)
            index = starts[tiles[active], None] + slots[None, :]
            valid = slots[None, :] < per_tile[tiles[active], None]
            gaussian = pair_gaussian[index.clamp(max=len(pair_gaussian) - 1)]  # [A, K]
            centre = means2d[gaussian]  # [A, K, 2]
            dx = pixels[active][:, :, None, 0] - centre[:, None, :, 0]  # [A, P, K]
            dy = pixels[active][:, :, None, 1] - centre[:, None, :, 1]
            conic = conics[gaussian][:, None]  # [A, 1, K, 3]
            power = -0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) - conic[..., 1] * dx * dy
            alpha = (gaussians.opacities[gaussian][:, None] * torch.exp(power)).clamp(max=ALPHA_MAX)
            keep = valid[:, None, :] & (power <= 0) & (alpha >= ALPHA_MIN)
            alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
            entering = transmittance[active]
            # gsplat's stop: a pixel ends at the Gaussian that would take its transmittance to T_STOP
            # or below, which is left out (transmittance only falls, so the test is per Gaussian).
            reaching = entering.detach()[..., None] * torch.cumprod(1.0 - alpha.detach(), dim=-1)  # [A, P, K]
            drawn = (reaching > T_STOP) & ~done[active][..., None]
            alpha = torch.where(drawn, alpha, torch.zeros_like(alpha))
            through = torch.cumprod(1.0 - alpha, dim=-1)  # transmittance after each Gaussian of the block
            before = torch.cat([torch.ones_like(through[..., :1]), through[..., :-1]], dim=-1)
            weights = alpha * before * entering[..., None]  # [A, P, K]
            colour = colour.index_add(0, active, torch.einsum("apk,akc->apc", weights, features[gaussian]))
            leaving = entering * through[..., -1]
            transmittance = transmittance.index_copy(0, active, leaving)
            stopped = done[active] | (reaching[..., -1] <= T_STOP)
            done = done.index_copy(0, active, stopped)
            begin += len(slots)
            active = active[(~stopped).any(dim=1) & (per_tile[tiles[active]] > begin)]
            if len(active) == 0:
                break
            block = _block_length(len(active), pixel_count)
        colors[tiles] = colour + transmittance[..., None] * background
        alphas[tiles] = 1.0 - transmittance

    # Tiles in order of length, so that a chunk's tiles are padded to about their own length.
    busy = sorted(torch.nonzero(per_tile).flatten().tolist(), key=lambda tile: -int(per_tile[tile]))
    chunk: list[int] = []
    for tile in busy:
        if chunk and (len(chunk) + 1) * pixel_count * min(int(per_tile[chunk[0]]), _BLOCK) > _CHUNK_ELEMENTS:
            flush(chunk, int(per_tile[chunk[0]]))
            chunk = []
        chunk.append(tile)
    if chunk:
        flush(chunk, int(per_tile[chunk[0]]))

    if not busy and torch.is_grad_enabled():
        # Nothing on screen: keep the outputs attached to the parameters (zero gradients) so a loss
        # over such a view still backpropagates instead of failing.
        anchor = sum(getattr(gaussians, name).sum() for name in ("means", "quats", "scales", "opacities", "colors"))
        colors = colors + 0.0 * anchor
        alphas = alphas + 0.0 * anchor

    def to_image(tiled: torch.Tensor) -> torch.Tensor:
        channels = tiled.shape[-1]
        image = tiled.reshape(tiles_y, tiles_x, CELL, CELL, channels).permute(0, 2, 1, 3, 4)
        return image.reshape(tiles_y * CELL, tiles_x * CELL, channels)[:height, :width]

    return to_image(colors), to_image(alphas[..., None])
