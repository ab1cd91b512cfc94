"""G learns: a small memorisation run through the real objective, optimiser and sampler, scored
against the untrained model and a flat image, and a reversed-orbit camera check (the full
experiment with held-out cameras is benchmarks/camera_control.py)."""

from __future__ import annotations

import pytest

from pipeline.camera_control import CameraControlConfig, format_table, run_camera_control

SMALL = CameraControlConfig(
    objects=(("Duck.glb", "a yellow rubber duck"), ("monkey.glb", "a grey monkey head")),
    resolution=16, samples=2, train_elevations=(10.0, 25.0), cases=("training cameras",),
    controls=("untrained", "reversed"), steps=200, sampling_steps=10, seed=0,
)


@pytest.fixture(scope="module")
def small_run() -> dict:
    result = run_camera_control(SMALL)
    print(format_table(result))
    return {row["setting"]: row for row in result["rows"]}


def test_generated_views_beat_the_untrained_model_and_a_flat_image(small_run):
    trained = small_run["camera model"]["psnr"]
    assert trained > small_run["untrained model"]["psnr"] + 5.0, small_run
    assert trained > small_run["flat background image"]["psnr"] + 3.0, small_run


def test_a_reversed_orbit_gives_the_reversed_views(small_run):
    # Cameras given in reverse order: a camera-controlled G follows them (matches the reversed
    # truth); a G that ignored its cameras would reproduce the forward orbit instead.
    follows = small_run["orbit reversed, vs reversed truth"]["psnr"]
    ignores = small_run["(b) orbit reversed, vs forward truth"]["psnr"]
    assert follows > ignores + 1.5, small_run
