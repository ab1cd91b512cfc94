"""Orbit reordering for training: every tensor of a batch gets the same roll and direction, and an
orbit stays an orbit."""

from __future__ import annotations

import torch

from models.generator.objective import reorder_orbits


def test_reordering_keeps_views_and_cameras_together():
    frames = 24
    index = torch.arange(frames, dtype=torch.float32)
    views = index.view(1, frames, 1, 1, 1).expand(64, frames, 3, 2, 2).clone()  # frame i holds i
    cameras = index.view(1, frames, 1, 1).expand(64, frames, 4, 4).clone()
    rolled, posed = reorder_orbits([views, cameras], torch.Generator().manual_seed(0), roll=True, reverse=True)
    assert torch.equal(rolled[:, :, 0, 0, 0], posed[:, :, 0, 0])  # same permutation for both
    directions = set()
    for order in rolled[:, :, 0, 0, 0].long():
        step = int((order[1] - order[0]) % frames)
        assert step in (1, frames - 1), order  # one view per step, forwards or backwards
        assert torch.equal((order[1:] - order[:-1]) % frames, torch.full((frames - 1,), step)), order
        directions.add(step)
    assert directions == {1, frames - 1}
    starts = set(rolled[:, 0, 0, 0, 0].tolist())
    assert len(starts) > 10  # random starting views

    same, = reorder_orbits([views], torch.Generator().manual_seed(0), roll=False, reverse=False)
    assert torch.equal(same, views)
