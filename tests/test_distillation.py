"""Multi-view score distillation's mechanics on a tiny G (``models.distillation``, ``jobs/distill.py``):
the timestep annealing, both losses' gradients, resume, the job's outputs and its refusals. That the
guidance guides (a learned G's Duck against controls) is ``tests/test_camera_control.py``'s."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.distillation.config import PRESETS, DistillConfig, preset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_t2v(tmp_path_factory) -> str:
    from models.toy.tiny import make_tiny

    return make_tiny("t2v", str(tmp_path_factory.mktemp("distil") / "tiny-t2v"))


@pytest.fixture(scope="module")
def pipe(tiny_t2v):
    from models.pipeline_videomv.pipeline_videomv import load_pipeline

    return load_pipeline(tiny_t2v, device="cpu")


def small(**changes) -> DistillConfig:
    return preset("toy", **{"steps": 4, "num_gaussians": 256, "guidance_scale": 3.0, "loss": "x0", **changes})


def test_the_timestep_range_anneals_linearly_as_mvdream_does():
    config = DistillConfig()
    assert config.timestep_range(0) == pytest.approx((0.98, 0.98))
    assert config.timestep_range(4000) == pytest.approx((0.50, 0.74))
    assert config.timestep_range(8000) == pytest.approx((0.02, 0.50))
    assert config.timestep_range(9999) == pytest.approx((0.02, 0.50))


def test_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="loss must be one of"):
        DistillConfig(loss="vsd")
    with pytest.raises(ValueError, match="t_end must be"):
        DistillConfig(t_end=(0.6, 0.2))
    with pytest.raises(ValueError, match="unknown distillation preset 'huge'"):
        preset("huge")
    assert set(PRESETS) == {"mvdream", "toy"}


def draw(pipe, config: DistillConfig, step: int = 0):
    """The guidance's loss at random latents, and what it should pull them toward, from one seed."""
    from models.distillation.guidance import MultiViewGuidance

    guidance = MultiViewGuidance(pipe, config, prompt="a duck")
    shape = (1, pipe.vae.config.latent_channels, pipe.num_frames, pipe.unet.config.sample_size,
             pipe.unet.config.sample_size)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    cameras = pipe.orbit_cameras(15.0, 2.0, 1)
    result = guidance(latents, cameras, step, torch.Generator().manual_seed(9))
    result.loss.backward()
    return guidance, latents, cameras, result


def branches(pipe, noisy: torch.Tensor, timesteps: torch.Tensor, cameras: torch.Tensor):
    """G's unconditional and conditional predictions, each from its own condition (not the guidance's)."""
    from models.prompts import negative_prompt_of, with_suffix

    config = pipe.camera_embedding.config
    prompts = [with_suffix("a duck", config.get("prompt_suffix"))]
    negative = negative_prompt_of(config, None)
    with torch.no_grad():
        return [pipe.denoiser(noisy, timesteps, cameras=cameras,
                              **pipe.encode_condition([unconditional], prompts, None, negative))
                for unconditional in (True, False)]


def test_the_x0_loss_pulls_the_latents_to_the_rescaled_guided_x0(pipe):
    """gradient = (z - x0) / views, x0 the guided prediction with its std moved halfway to the
    unguided one's (MVDream's loss, normalised per view as MVDream's)."""
    from models.generator.schedule import predict_x0

    config = small(loss="x0", guidance_scale=5.0, std_rescale=0.5)
    guidance, latents, cameras, result = draw(pipe, config)
    # The same draw by hand: the generator gives t first, then the noise.
    generator = torch.Generator().manual_seed(9)
    t = guidance.timestep(0, generator)
    assert t == result.timestep == 980  # MVDream: int(1000 * 0.98) at the start
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.tensor([t])
    noisy = pipe.scheduler.add_noise(latents.detach(), noise, timesteps)
    unconditional, conditional = branches(pipe, noisy, timesteps, cameras)
    guided = predict_x0(pipe.scheduler, noisy, unconditional + 5.0 * (conditional - unconditional), timesteps)
    plain = predict_x0(pipe.scheduler, noisy, conditional, timesteps)
    x0 = 0.5 * guided * plain.std() / guided.std() + 0.5 * guided
    views = latents.shape[2]
    torch.testing.assert_close(latents.grad, (latents.detach() - x0) / views, atol=1e-5, rtol=1e-4)


def test_the_sds_loss_gives_the_weighted_noise_residual(pipe):
    """gradient = (1 - alpha_t) (eps_guided - eps) / views."""
    from models.generator.schedule import predict_epsilon

    config = small(loss="sds", guidance_scale=5.0)
    guidance, latents, cameras, result = draw(pipe, config)
    generator = torch.Generator().manual_seed(9)
    t = guidance.timestep(0, generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.tensor([t])
    noisy = pipe.scheduler.add_noise(latents.detach(), noise, timesteps)
    unconditional, conditional = branches(pipe, noisy, timesteps, cameras)
    eps = predict_epsilon(pipe.scheduler, noisy, unconditional + 5.0 * (conditional - unconditional), timesteps)
    weight = 1 - pipe.scheduler.alphas_cumprod[t]
    torch.testing.assert_close(latents.grad, weight * (eps - noise) / latents.shape[2], atol=1e-5, rtol=1e-4)


def test_the_image_space_x0_loss_pulls_the_renders_to_the_decoded_x0(pipe):
    """x0_image: the same x0 as the latent loss, decoded; gradient on the renders = (views - decoded) / views."""
    from models.distillation.guidance import MultiViewGuidance
    from models.generator.schedule import predict_x0

    config = small(loss="x0_image", guidance_scale=1.0)
    guidance = MultiViewGuidance(pipe, config, prompt="a duck")
    frames, size = pipe.num_frames, pipe.resolution
    views = torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    latents = pipe.encode_views(views.detach() * 2 - 1, sample=False)
    cameras = pipe.orbit_cameras(15.0, 2.0, 1)
    result = guidance(latents, cameras, 0, torch.Generator().manual_seed(9), views=views)
    result.loss.backward()
    generator = torch.Generator().manual_seed(9)
    t = guidance.timestep(0, generator)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.tensor([t])
    noisy = pipe.scheduler.add_noise(latents, noise, timesteps)
    _, conditional = branches(pipe, noisy, timesteps, cameras)
    decoded = (pipe.decode_latents(predict_x0(pipe.scheduler, noisy, conditional, timesteps)) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(views.grad, (views.detach() - decoded) / frames, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="the x0_image loss compares the renders: pass views"):
        guidance(latents, cameras, 0, torch.Generator().manual_seed(9))


def test_zeroed_cameras_reach_g_as_zeros(pipe, monkeypatch):
    seen = []
    original = type(pipe.denoiser).forward

    def spy(self, *args, cameras=None, **kwargs):
        seen.append(cameras.clone())
        return original(self, *args, cameras=cameras, **kwargs)

    monkeypatch.setattr(type(pipe.denoiser), "forward", spy)
    draw(pipe, small(zero_cameras=True))
    draw(pipe, small())
    assert seen[0].abs().max() == 0 and seen[1].abs().max() > 0


@pytest.mark.slow
def test_a_resumed_run_takes_the_same_steps_as_one_never_stopped(pipe, tmp_path):
    from models.distillation.distill import Distillation

    config = small(steps=3)
    straight = Distillation(pipe, config, prompt="a duck")
    for _ in range(3):
        straight.step()
    first = Distillation(pipe, config, prompt="a duck")
    for _ in range(2):
        first.step()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = Distillation(pipe, config, prompt="a duck")
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    while not second.finished:
        second.step()
    assert second.step_index == 3
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(second.gaussians(), name), getattr(straight.gaussians(), name),
                                   atol=0, rtol=0)
    # Another run's checkpoint is refused, naming what differs.
    with pytest.raises(ValueError, match="distils 'a duck', this run 'a goose'"):
        Distillation(pipe, config, prompt="a goose").load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="lr_colors 0.01 there, 0.1 here, num_gaussians 256 there, 512 here"):
        Distillation(pipe, small(steps=3, num_gaussians=512, lr_colors=0.1), prompt="a duck").load_state_dict(
            first.state_dict())
    longer = Distillation(pipe, small(steps=10), prompt="a duck")  # more steps: the same run, continued
    longer.load_state_dict(first.state_dict())
    assert longer.step_index == 2


def test_the_text_model_needs_a_prompt_and_a_sigma_scaled_scheduler_is_refused(pipe):
    from diffusers import EulerDiscreteScheduler

    from models.distillation.guidance import MultiViewGuidance

    with pytest.raises(ValueError, match="the text model distils a prompt"):
        MultiViewGuidance(pipe, small())
    scheduler = pipe.scheduler
    try:
        pipe.scheduler = EulerDiscreteScheduler.from_config(scheduler.config)
        with pytest.raises(ValueError, match="EulerDiscreteScheduler is sigma-scaled"):
            MultiViewGuidance(pipe, small(), prompt="a duck")
    finally:
        pipe.scheduler = scheduler


@pytest.mark.slow
def test_the_job_as_the_docs_give_it_writes_the_outputs_and_resumes(tiny_t2v, tmp_path):
    """``python jobs/distill.py`` (docs/distillation.md) at a tiny size: PLY, .splat, GLB and MP4,
    checkpoints, MLflow metrics and renders; run again with more steps it resumes."""
    import mlflow

    output, store = tmp_path / "duck", f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "jobs/distill.py", "--model", tiny_t2v, "--prompt", "a yellow rubber duck",
               "--preset", "toy", "--num-gaussians", "512", "--log-every", "2", "--checkpoint-every", "2",
               "--render-every", "2", "--output", str(output), "--mlflow-uri", store]
    done = subprocess.run([*command, "--steps", "4"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 4/4" in done.stderr and "ETA" in done.stderr
    files = {line.split(": ")[0]: line.split(": ")[1] for line in done.stdout.strip().splitlines()}
    assert set(files) == {"ply", "splat", "mp4", "glb"}
    assert all(os.path.getsize(path) > 0 for path in files.values())
    assert sorted(os.listdir(output / "checkpoints")) == ["step-0000002.pt", "step-0000004.pt"]
    again = subprocess.run([*command, "--steps", "6"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "(step 4 of 6)" in again.stderr and "step 6/6" in again.stderr
    assert "step 2/6" not in again.stderr
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("videomv-distill").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert len(runs) == 2 and all("loss" in run.data.metrics and "timestep" in run.data.metrics for run in runs)
    artifacts = [item.path for item in client.list_artifacts(runs[0].info.run_id, "renders")]
    assert artifacts == ["renders/step-0000002.png", "renders/step-0000004.png"]


def test_the_job_refuses_both_a_prompt_and_an_image(tiny_t2v, tmp_path):
    from jobs.distill import main

    assert main(["--model", tiny_t2v, "--prompt", "x", "--image", "x.png", "--output", str(tmp_path)]) == 2


@pytest.mark.slow
def test_the_image_model_distils_a_condition_image(tmp_path):
    """The image model takes the image (not a prompt) through the sampler's own image path."""
    from PIL import Image

    from models.distillation.distill import Distillation
    from models.pipeline_videomv.pipeline_videomv import load_pipeline
    from models.toy.tiny import make_tiny

    pipe = load_pipeline(make_tiny("i2v", str(tmp_path / "tiny-i2v")), device="cpu")
    image = Image.fromarray((np.random.default_rng(0).random((32, 32, 4)) * 255).astype(np.uint8), "RGBA")
    with pytest.raises(ValueError, match="the image model distils a condition image"):
        Distillation(pipe, small(), prompt="a duck")
    run = Distillation(pipe, small(steps=1), image=image)
    before = run.gaussians().colors.clone()
    assert torch.isfinite(torch.tensor(run.step()["loss"]))
    assert not torch.equal(run.gaussians().colors, before)


@pytest.mark.slow
def test_the_toy_experiment_scores_the_run_and_its_controls(tiny_t2v):
    """``benchmarks/distillation.py``'s code at a tiny size (2 steps of an untrained G: the figures
    mean nothing here; docs/results.md has the real run): every setting is distilled, rendered at
    the orbit, scored against the Blender truth and meshed."""
    from pipeline.experiments.distillation import DistillationExperimentConfig, format_table, run_distillation_experiment

    result = run_distillation_experiment(DistillationExperimentConfig(
        model=tiny_t2v, steps=2, samples=1, settings=("distilled", "camera input zeroed", "initial Gaussians")))
    assert [row["setting"] for row in result["rows"]] == ["distilled", "camera input zeroed", "initial Gaussians"]
    for row in result["rows"]:
        assert {"psnr", "view_accuracy", "margin_db"} <= set(row), row
    assert "| distilled |" in format_table(result)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("loss", ["x0", "sds", "x0_image"])
def test_distillation_steps_on_a_gpu_in_fp16(tiny_t2v, loss):
    """On CUDA, as the job runs it: G loaded in fp16 (``load_pipeline``'s default there) under
    autocast, the Gaussians, gsplat's renders and the loss in fp32; the CPU generator's draws move
    to the GPU; every loss steps and moves the Gaussians, which stay fp32 on the GPU."""
    from models.distillation.distill import Distillation
    from models.pipeline_videomv.pipeline_videomv import load_pipeline

    pipe = load_pipeline(tiny_t2v, device="cuda")
    assert next(pipe.unet.parameters()).dtype == torch.float16
    run = Distillation(pipe, small(steps=2, loss=loss), prompt="a duck")
    before = run.gaussians().means.clone()
    for _ in range(2):
        assert torch.isfinite(torch.tensor(run.step()["loss"]))
    after = run.gaussians()
    assert after.means.is_cuda and after.means.dtype == torch.float32 and not torch.equal(after.means, before)
