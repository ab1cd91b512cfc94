"""Result media: the orbit as an MP4 that decodes back to the 24 views."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import torch

from pipeline.serve.media import orbit_mp4


def orbit(height: int, width: int) -> torch.Tensor:
    """24 smooth views [24, 3, H, W] in [0, 1]: a bright disc moving around the image."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    frames = []
    for index in range(24):
        angle = 2 * torch.pi * index / 24
        disc = ((xs - 0.5 * torch.cos(torch.tensor(angle))) ** 2 + (ys - 0.5 * torch.sin(torch.tensor(angle))) ** 2)
        frames.append(torch.stack([torch.exp(-disc * 6), 0.5 * torch.ones_like(xs), torch.exp(-disc * 3)]))
    return torch.stack(frames)


def test_orbit_mp4_decodes_to_the_views(tmp_path):
    views = orbit(64, 64)
    data = orbit_mp4(views)
    assert data[4:8] == b"ftyp"  # an ISO media file
    path = tmp_path / "orbit.mp4"
    path.write_bytes(data)
    decoded = np.stack(list(iio.imiter(path)))  # imageio's ffmpeg plugin
    assert decoded.shape == (24, 64, 64, 3)
    expected = (views.permute(0, 2, 3, 1).numpy() * 255).round()
    assert np.abs(decoded.astype(np.float64) - expected).mean() < 6  # H.264 is lossy; 6 of 255 on average


def test_odd_sizes_are_padded_for_h264(tmp_path):
    path = tmp_path / "odd.mp4"
    path.write_bytes(orbit_mp4(orbit(33, 31)))
    assert np.stack(list(iio.imiter(path))).shape == (24, 34, 32, 3)

