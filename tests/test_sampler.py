"""The 3D-aware sampler: shapes, seeds, where reconstructions happen, and camera conventions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import camera
from models.reconstructor.model import LGM
from models.reconstructor.training import psnr
from models.reconstructor.renders_vs_x0 import RendersVsX0
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from pipeline.experiments.sampling import SamplingConfig, sample_views
from models.pipeline_videomv.three_d_aware import (
    input_view_indices,
    measured_steps,
    reconstruct_views,
    reconstruction_steps,
)
from models.pipeline_videomv.one_step import AUTHORS_TIMESTEPS, measure_renders_vs_x0
from models.toy.tiny import make_tiny

STEPS = 6


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampler")
    torch.manual_seed(0)
    return {"t2v": VideoMVPipeline.from_pretrained(make_tiny("t2v", str(root / "t2v"))),
            "i2v": VideoMVPipeline.from_pretrained(make_tiny("i2v", str(root / "i2v"))),
            "lgm": LGM("tiny").eval()}


def test_schedules():
    assert reconstruction_steps(50) == (20, 30, 40)
    assert reconstruction_steps(10) == (4, 6, 8)
    assert reconstruction_steps(50, "every", every=10, skip=10) == (10, 20, 30, 40)
    assert reconstruction_steps(50, "none") == ()
    assert input_view_indices(24) == (0, 6, 12, 18)
    with pytest.raises(ValueError, match="unknown reconstruction schedule"):
        reconstruction_steps(50, "sometimes")


def test_shapes_seeds_and_gaussians(models):
    config = SamplingConfig(num_inference_steps=STEPS, seeds=(1, 2))
    result = sample_views(models["t2v"], prompts=["a chair", "a lamp"], config=config, reconstructor=models["lgm"])
    assert result.views.shape == (2, 24, 3, 32, 32) and result.cameras.shape == (2, 24, 4, 4)
    assert 0 <= result.views.min() and result.views.max() <= 1
    assert result.gaussians.means.shape == (2, 4 * 32 * 32, 3)
    # Defaults: elevation 15 at distance 2 (text); cameras are the camera module's orbit.
    torch.testing.assert_close(result.cameras[0], torch.tensor(camera.orbit_c2w(15.0, distance=2.0), dtype=torch.float32))
    same = sample_views(models["t2v"], prompts=["a lamp"], config=SamplingConfig(num_inference_steps=STEPS, seeds=(2,)))
    torch.testing.assert_close(same.views[0], result.views[1], atol=1e-4, rtol=0)  # per-sample seeds
    other = sample_views(models["t2v"], prompts=["a lamp"], config=SamplingConfig(num_inference_steps=STEPS, seeds=(3,)))
    assert (other.views - same.views).abs().max() > 1e-3
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    i2v = sample_views(models["i2v"], images=image, config=SamplingConfig(num_inference_steps=STEPS))
    assert i2v.views.shape == (1, 24, 3, 32, 32) and i2v.gaussians is None
    # A model that records no training cameras (a published or converted one) samples where the authors
    # sample the image model, e=5 at d=1.7; one fine-tuned here records its renders' distance and keeps it.
    torch.testing.assert_close(i2v.cameras[0], torch.tensor(camera.orbit_c2w(5.0, distance=1.7), dtype=torch.float32))
    from models.pipeline_videomv.pipeline_videomv import sampling_defaults

    assert sampling_defaults("i2v", {"distance": [2.0, 2.0]}, None, None, None)[2] == 2.0


def test_training_cameras_bound_the_defaults_and_warn_outside(models, caplog):
    recorded = {"elevation": [20.0, 30.0], "distance": [2.0, 2.0], "fov": [39.6, 39.6]}
    resolved = SamplingConfig().resolved("t2v", recorded)
    assert (resolved.elevation, resolved.distance) == (20.0, 2.0)  # 15 moved inside
    assert SamplingConfig(elevation=25.0).resolved("i2v", recorded).elevation == 25.0
    model = models["t2v"]
    embedding = model.camera_embedding
    embedding.register_to_config(training_cameras=recorded)
    try:
        with caplog.at_level("WARNING", logger="models.pipeline_videomv.pipeline_videomv"):
            sample_views(model, prompts=["a chair"], config=SamplingConfig(num_inference_steps=1))
            assert not caplog.records
            sample_views(model, prompts=["a chair"], config=SamplingConfig(num_inference_steps=1, elevation=45.0, distance=1.7))
        messages = [record.getMessage() for record in caplog.records]
        assert messages == [
            "elevation 45 is outside the model's training cameras (elevation 20 to 30): the views there are "
            "extrapolation",
            "distance 1.7 is outside the model's training cameras (distance 2): the views there are extrapolation"]
    finally:
        embedding.register_to_config(training_cameras=None)


@pytest.mark.parametrize("mode, schedule, expected", [
    ("two", "authors", 6), ("one", "authors", 3), ("two", "none", 0), ("one", "every", 2),
])
def test_reconstruction_happens_only_at_the_configured_steps(models, mode, schedule, expected):
    lgm = models["lgm"]
    calls: list[int] = []
    handle = lgm.register_forward_pre_hook(lambda module, args: calls.append(1))
    timesteps_seen: list[int] = []
    scheduler_step = models["t2v"].scheduler.step
    steps_at = reconstruction_steps(STEPS, schedule, every=3, skip=2)
    config = SamplingConfig(num_inference_steps=STEPS, reconstruct_at=steps_at, mode=mode)
    try:
        result = sample_views(models["t2v"], prompts=["a chair"], config=config, reconstructor=lgm)
    finally:
        handle.remove()
    assert result.reconstructions == expected
    assert len(calls) == expected + 1  # + the final reconstruction of the finished views
    assert scheduler_step == models["t2v"].scheduler.step and not timesteps_seen


def test_three_d_aware_steps_change_the_result(models):
    plain = sample_views(models["t2v"], prompts=["a chair"], config=SamplingConfig(num_inference_steps=STEPS))
    aware = sample_views(models["t2v"], prompts=["a chair"], reconstructor=models["lgm"],
                         config=SamplingConfig(num_inference_steps=STEPS, reconstruct_at=reconstruction_steps(STEPS)))
    assert (plain.views - aware.views).abs().max() > 1e-3
    with pytest.raises(ValueError, match="need a reconstructor"):
        sample_views(models["t2v"], prompts=["a chair"], config=SamplingConfig(num_inference_steps=STEPS, reconstruct_at=(2,)))


def test_reconstruction_reproduces_ground_truth_views_at_the_diffusion_cameras(overfit_duck):
    """The sampler's reconstruction path, fed ground-truth renders and the cameras the diffusion
    model uses, must give back those renders: the convention bug reported upstream fails this."""
    lgm, data, _ = overfit_duck
    views = F.interpolate(data["views"], size=(32, 32), mode="area")[None]
    cameras = data["c2w"][None]
    with torch.no_grad():
        rendered, _, _ = reconstruct_views(lgm, views, cameras, background=(1.0, 1.0, 1.0))
    correct = psnr(rendered, views)
    assert correct > 18.0, correct
    # Conventions that do not match give clearly worse re-renders: LGM's upward-negative elevation
    # taken literally, or OpenCV camera axes where OpenGL ones are expected. (A global rotation of
    # all cameras would not: the reconstructor normalises by the first input view.)
    distance = float(cameras[0, 0, :3, 3].norm())
    elevation = float(math.degrees(math.asin(cameras[0, 0, 1, 3] / distance)))
    flipped = torch.tensor(camera.orbit_c2w(-elevation, distance=distance), dtype=torch.float32)[None]
    opencv = torch.tensor(camera.opengl_to_opencv(cameras[0].double().numpy()), dtype=torch.float32)[None]
    for wrong, margin in ((flipped, 2.5), (opencv, 6.0)):
        with torch.no_grad():
            bad, _, _ = reconstruct_views(lgm, views, wrong, background=(1.0, 1.0, 1.0))
        assert psnr(bad, views) < correct - margin


def test_measured_schedule_leaves_out_the_steps_where_renders_lose(models, tmp_path, caplog):
    """A reconstructor carrying a renders-vs-x0 measurement is used only where its renders were not
    worse than x0 by more than 0.5 dB; the measurement travels with its weights."""
    lgm = models["lgm"]
    scheduler = models["t2v"].scheduler
    scheduler.set_timesteps(50)
    authors = reconstruction_steps(50)
    assert [int(scheduler.timesteps[i]) for i in authors] == list(AUTHORS_TIMESTEPS)
    lgm.renders_vs_x0 = RendersVsX0(t=[581, 381, 181], render_psnr=[20.0, 21.0, 22.0], x0_psnr=[18.0, 21.4, 23.0])
    try:
        lgm.save_pretrained(str(tmp_path / "lgm"))
        loaded = LGM.from_pretrained(str(tmp_path / "lgm"))
        assert loaded.renders_vs_x0 == lgm.renders_vs_x0
        with caplog.at_level("INFO", logger="models.pipeline_videomv.three_d_aware"):
            assert measured_steps(loaded, authors, scheduler.timesteps) == authors[:2]  # t=181: 1 dB worse
        assert "left out at t = [181]" in caplog.text
        # 6 steps: the authors' indices 2, 4, 5 are t = 499, 167, 1, nearest the measured 581, 181, 181.
        config = SamplingConfig(num_inference_steps=STEPS, reconstruct_at=reconstruction_steps(STEPS), mode="one")
        result = sample_views(models["t2v"], prompts=["a chair"], config=config, reconstructor=loaded)
        assert result.reconstructions == 1
    finally:
        lgm.renders_vs_x0 = None
    assert measured_steps(lgm, authors, scheduler.timesteps) == authors  # nothing measured: the authors' steps
    (tmp_path / "lgm" / "three_d_aware.json").write_text('{"t": [581]}')
    with pytest.raises(ValueError, match="three_d_aware.json is not a renders-vs-x0 measurement"):
        LGM.from_pretrained(str(tmp_path / "lgm"))


def test_renders_vs_x0_measurement_on_tiny_models(models):
    """The measurement runs through the real models and reports every score per timestep."""
    model = models["t2v"]
    truth = torch.rand(1, 24, 3, 32, 32)
    cameras = torch.tensor(camera.orbit_c2w(15.0), dtype=torch.float32)[None]
    measured = measure_renders_vs_x0(model, models["lgm"], truth, cameras, ["a chair"], timesteps=(581, 1))
    assert measured.t == [581, 1] and len(measured.render_psnr) == len(measured.x0_ssim) == 2
    assert measured.render_lpips is None  # no LPIPS weights given
    values = measured.render_psnr + measured.x0_psnr + measured.render_ssim + [measured.truth_render_psnr]
    assert all(math.isfinite(v) for v in values)


ACCEPTED_SCHEDULERS = ("EulerDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
                       "KDPM2DiscreteScheduler", "DDIMScheduler")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ACCEPTED_SCHEDULERS)
def test_x0_matches_the_schedulers_own_along_a_sampling_trajectory(name, prediction):
    """At every step of a real trajectory (the second stages of Heun and KDPM2 included) our x0
    equals the one the scheduler computes itself, and ``output_from_x0`` inverts it. (Read as
    variance-preserving, the sigma-scaled schedulers' x0 was off by up to hundreds.)"""
    import diffusers

    from models.generator.schedule import output_from_x0, predict_x0
    from models.toy.tiny import t2v_scheduler

    scheduler = getattr(diffusers, name).from_config({**t2v_scheduler().config, "prediction_type": prediction})
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 2, 4, 4, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps[:8]:
        scheduler.scale_model_input(sample, t)  # as the sampler does first at every step
        output = torch.randn(sample.shape, generator=generator)
        ours = predict_x0(scheduler, sample, output, t)
        assert torch.allclose(output_from_x0(scheduler, sample, ours, t), output, atol=1e-3)
        step = scheduler.step(output, t, sample)
        assert torch.allclose(ours, step.pred_original_sample, atol=1e-4, rtol=1e-4), f"t = {float(t)}"
        sample = step.prev_sample


def test_x0_of_a_variance_preserving_multistep_solver():
    """DPM-Solver does not return its x0: noise a known x0 with its own ``add_noise`` instead."""
    import diffusers

    from models.generator.schedule import predict_x0
    from models.toy.tiny import t2v_scheduler

    scheduler = diffusers.DPMSolverMultistepScheduler.from_config(t2v_scheduler().config)
    scheduler.set_timesteps(10)
    x0, eps = torch.randn(2, 1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps[:5]:
        sample = scheduler.add_noise(x0, eps, t.reshape(1))
        assert torch.allclose(predict_x0(scheduler, sample, eps, t), x0, atol=1e-4)
        scheduler.step(eps, t, sample)


def test_three_d_aware_sampling_with_a_sigma_scaled_scheduler_and_a_refused_one(tmp_path):
    import diffusers

    from models.reconstructor.model import LGM
    from models.toy.tiny import build_tiny

    torch.manual_seed(0)
    pipe = build_tiny("t2v").with_reconstructor(LGM("tiny"))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    out = pipe(prompt="a duck", num_inference_steps=3, three_d_aware=(1,), output_type="pt",
               generator=torch.Generator().manual_seed(0))
    assert out.reconstructions == 2 and torch.isfinite(out.frames).all()
    pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler is not supported"):
        pipe(prompt="a duck", num_inference_steps=3, three_d_aware=(1,), generator=torch.Generator().manual_seed(0))
