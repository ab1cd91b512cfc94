"""G learns: a small memorisation run through the real objective, optimiser, schedule and sampler,
scored against the untrained model and a flat image (the full experiment with held-out cameras
and camera controls is benchmarks/camera_control.py; docs/results.md)."""

from __future__ import annotations

import pytest

from pipeline.camera_control import CameraControlConfig, format_table, run_camera_control

SMALL = CameraControlConfig(
    objects=(("Duck.glb", "a yellow rubber duck"), ("monkey.glb", "a grey monkey head")),
    resolution=16, samples=2, train_elevations=(10.0, 25.0), cases=("training cameras",),
    controls=("untrained",), steps=700, sampling_steps=10, seed=0,
)


@pytest.fixture(scope="module")
def small_run() -> dict:
    result = run_camera_control(SMALL)
    print(format_table(result))
    return {row["setting"]: row for row in result["rows"]}


def test_generated_views_beat_the_untrained_model_and_a_flat_image(small_run):
    trained = small_run["camera model"]["psnr"]
    assert trained > small_run["untrained model"]["psnr"] + 6.0, small_run
    assert trained > small_run["flat background image"]["psnr"] + 2.0, small_run
    assert small_run["camera model"]["ssim"] > small_run["flat background image"]["ssim"] + 0.2, small_run


def test_the_experiment_rejects_unknown_cases():
    with pytest.raises(ValueError, match="unknown evaluation cases"):
        run_camera_control(CameraControlConfig(cases=("front view only",)))
