"""The full-size paths' device, dtype and memory behaviour: CPU stand-ins where a CPU can show the
defect, and tests marked ``gpu`` where only CUDA can (run by ``benchmarks/gpu_check.py`` too)."""

from __future__ import annotations

import ast
import pathlib

import camera
import pytest
import torch

from models.gaussians.rendering import backend_in_use, render_batch, warm_up
from models.gaussians.gaussians import Gaussians
from models.generator.objective import MultiViewBatch, diffusion_loss
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline, load_pipeline
from models.reconstructor.loss import ReconstructionLoss
from models.reconstructor.training import reconstruction_step
from models.reconstructor.model import LGM
from pipeline.experiments.sampling import SamplingConfig
from models.pipeline_videomv.one_step import one_step_x0
from models.toy.tiny import build_tiny

REPO = pathlib.Path(__file__).resolve().parent.parent
RANDOM_DRAWS = {"randn", "rand", "randint", "randperm", "randn_like", "rand_like", "normal", "bernoulli", "multinomial"}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _orbit(variant: str) -> tuple[float, float]:
    config = SamplingConfig().resolved(variant)
    return config.elevation, config.distance


def test_every_seeded_random_draw_names_its_device():
    """A draw from a CUDA generator without ``device=`` fails on the GPU ("Expected a 'cpu' device
    type for generator"), and a CPU test cannot see it: every ``torch.<draw>(..., generator=...)``
    in the production code says where it draws."""
    offenders = []
    for path in sorted([*(REPO / "models").rglob("*.py"), *(REPO / "pipeline").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in RANDOM_DRAWS and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                continue
            keywords = {keyword.arg for keyword in node.keywords}
            if "generator" in keywords and "device" not in keywords:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} torch.{node.func.attr}")
    assert not offenders, "random draws with a generator but no device=: " + ", ".join(offenders)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("gpu-paths")
    build_tiny("t2v").save_pretrained(str(directory / "t2v"))
    torch.manual_seed(0)
    LGM("tiny").save_pretrained(str(directory / "lgm"))
    return str(directory)


# bf16 convolutions take PyTorch's reference loops on a CPU without AVX-512 (models.precision.
# cpu_has_fast_bf16): 67 s on an AVX2 EPYC (2026-12-07), a fifth of make check.
@pytest.mark.slow
def test_bf16_sampling_on_the_cpu(tiny_dir):
    """``dtype`` reaches every component; the latents, the scheduler and the views stay float32.
    Plain sampling in bf16 lands near fp32 from the same noise: well under a tenth of what another
    seed changes (the control). With the random tiny reconstructor the 3D-aware steps amplify the
    rounding, so those are checked for dtypes only."""
    views = {}
    for dtype, seed in (("fp32", 0), ("bf16", 0), ("fp32", 1)):
        pipe = load_pipeline(f"{tiny_dir}/t2v", f"{tiny_dir}/lgm", device="cpu", dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        expected = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        for module in (pipe.unet, pipe.camera_embedding, pipe.vae, pipe.text_encoder, pipe.reconstructor):
            assert module.dtype == expected, type(module).__name__
        views[dtype, seed] = pipe(prompt="a duck", num_inference_steps=3, output_type="pt",
                                  generator=torch.Generator().manual_seed(seed)).frames
        if dtype == "bf16":
            out = pipe(prompt="a duck", num_inference_steps=3, three_d_aware=(1,), output_type="pt",
                       generator=torch.Generator().manual_seed(0))
            assert out.frames.dtype == torch.float32 and out.reconstructions == 2
            assert out.gaussians.means.dtype == torch.float32 and torch.isfinite(out.frames).all()
    rounding = (views["bf16", 0] - views["fp32", 0]).abs().mean()
    another_seed = (views["fp32", 1] - views["fp32", 0]).abs().mean()
    assert rounding < 0.1 * another_seed


def test_training_autocast_is_fp16_on_cuda_and_bf16_only_on_a_cpu_that_runs_it_fast(monkeypatch):
    """The workers' autocast for ``--precision``: fp16 on CUDA; on a CPU bf16 where it has bf16
    instructions, fp32 where bf16 would take PyTorch's reference loops; an explicit bf16 is kept."""
    import platform

    from models import precision
    assert precision.training_autocast("no", "cuda") is None and precision.training_autocast("no", "cpu") is None
    assert precision.training_autocast("fp16", "cuda") == torch.float16
    assert precision.training_autocast("bf16", "cpu") == precision.training_autocast("bf16", "cuda") == torch.bfloat16
    for fast, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert precision.training_autocast("fp16", torch.device("cpu")) == expected
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        precision.training_autocast("fp8", "cpu")
    # Workers on CPUs of two kinds agree on fp32 (pipeline.train.worker gathers every rank's choice).
    assert precision.common_autocast([torch.bfloat16, torch.bfloat16]) == torch.bfloat16
    assert precision.common_autocast([torch.bfloat16, None, torch.bfloat16]) is None
    assert precision.common_autocast([torch.float16]) == torch.float16
    if platform.machine() == "x86_64":  # oneDNN's bf16 kernels need AVX-512 (or AMX) there
        assert precision.cpu_has_fast_bf16() == (torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX"))


def test_load_pipeline_defaults_to_fp32_on_the_cpu_and_takes_diffusers_dtype_names(tiny_dir):
    assert load_pipeline(f"{tiny_dir}/t2v", device="cpu").denoiser.dtype == torch.float32
    pipe = VideoMVPipeline.from_pretrained(f"{tiny_dir}/t2v", dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.camera_embedding.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="disagree"):
        VideoMVPipeline.from_pretrained(f"{tiny_dir}/t2v", dtype=torch.bfloat16, torch_dtype=torch.float16)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_pipeline(f"{tiny_dir}/t2v", device="cpu", dtype="fp8")


def test_the_chunked_vae_gives_the_frames_of_one_call():
    model = build_tiny("t2v")
    views = torch.rand(2, 24, 3, 32, 32) * 2 - 1
    model.vae_chunk_size = None
    latents_once = model.encode_views(views, torch.Generator().manual_seed(3))
    frames_once = model.decode_latents(latents_once)
    model.vae_chunk_size = 5  # 48 frames in chunks of 5: the last one short
    latents_chunked = model.encode_views(views, torch.Generator().manual_seed(3))
    frames_chunked = model.decode_latents(latents_once)
    assert torch.allclose(latents_chunked, latents_once, atol=1e-5)
    assert torch.allclose(frames_chunked, frames_once, atol=1e-5)


def test_guidance_runs_the_unet_once_per_step_on_the_doubled_batch(tiny_dir):
    pipe = load_pipeline(f"{tiny_dir}/t2v", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        pipe(prompt=["a duck", "a box"], num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert calls == [4, 4, 4], "one call per step on [conditional; unconditional]"
    # The doubled batch gives what two calls give.
    model = pipe
    config = SamplingConfig().resolved("t2v")
    cameras = model.orbit_cameras(config.elevation, config.distance, 1)
    sample = torch.randn(1, 4, 24, 16, 16, generator=torch.Generator().manual_seed(1))
    texts = [model.encode_prompts(["a duck"]), model.encode_prompts([""])]
    apart = [model.denoiser(sample, 500, cameras=cameras, encoder_hidden_states=t) for t in texts]
    together = model.denoiser(torch.cat([sample, sample]), 500, cameras=torch.cat([cameras, cameras]),
                          encoder_hidden_states=torch.cat(texts)).chunk(2)
    for one, other in zip(apart, together):
        assert torch.allclose(one, other, atol=1e-5)


def _scene(count: int = 64, dtype: torch.dtype = torch.float32) -> Gaussians:
    generator = torch.Generator().manual_seed(0)
    return Gaussians(means=(torch.rand(1, count, 3, generator=generator) - 0.5) * 0.6,
                     quats=torch.nn.functional.normalize(torch.randn(1, count, 4, generator=generator), dim=-1),
                     scales=torch.full((1, count, 3), 0.05), opacities=torch.full((1, count), 0.8),
                     colors=torch.rand(1, count, 3, generator=generator)).to(dtype)


def test_half_precision_gaussians_under_autocast_render_in_float32():
    """A reconstructor under autocast gives bf16/fp16 Gaussians; gsplat takes float32 only, so the
    renderer casts them and turns autocast off (on the CPU path the same code runs)."""
    c2w = torch.as_tensor(camera.orbit_c2w(15.0), dtype=torch.float32)[None, :4]
    half = _scene(dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        colors, alphas = render_batch(half, c2w, 39.6, 32, (0.5, 0.5, 0.5))
    assert colors.dtype == torch.float32 and alphas.dtype == torch.float32
    reference, _ = render_batch(half.to(torch.float32), c2w, 39.6, 32, (0.5, 0.5, 0.5))
    assert torch.equal(colors, reference)


def test_the_rasteriser_in_use_is_reported_with_the_reason_for_a_fallback(monkeypatch):
    import models.gaussians.rendering as renderer

    assert warm_up("cpu") == {"backend": "torch", "fallback": None}
    assert backend_in_use(torch.device("cuda")) == {"backend": "gsplat", "fallback": None}
    monkeypatch.setattr(renderer, "_gsplat_failed", RuntimeError("no nvcc on the PATH\nmore detail"))
    assert backend_in_use(torch.device("cuda")) == {"backend": "torch", "fallback": "RuntimeError: no nvcc on the PATH"}


def test_reconstructor_training_decodes_only_its_input_views():
    model = build_tiny("t2v")
    views = torch.rand(1, 24, 3, 32, 32) * 2 - 1
    cameras = model.orbit_cameras(*_orbit("t2v"), 1)
    frames = torch.tensor([0, 6, 12, 18])
    decoded = []
    original = model.vae.decode
    model.vae.decode = lambda latents: decoded.append(len(latents)) or original(latents)
    some = one_step_x0(model, views, cameras, ["a duck"], torch.tensor([300]), torch.Generator().manual_seed(0),
                       frames=frames)
    model.vae.decode = original
    assert sum(decoded) == 4 and some.shape == (1, 4, 3, 32, 32)
    every = one_step_x0(model, views, cameras, ["a duck"], torch.tensor([300]), torch.Generator().manual_seed(0))
    assert torch.allclose(some, every[:, frames], atol=1e-5)


def test_a_reconstructor_step_under_autocast_keeps_camera_geometry_in_float32():
    """Training runs the reconstructor under autocast (fp16 on CUDA, bf16 on CPUs): the ray maps
    and camera normalisation must not come out in half precision (a dtype error at step 1 before)."""
    torch.manual_seed(0)
    lgm = LGM("tiny")
    views = torch.rand(1, 24, 3, 32, 32)
    c2w = torch.as_tensor(camera.orbit_c2w(15.0), dtype=torch.float32)[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inputs, transforms = lgm.prepare_inputs(views[:, :4], c2w[:, :4])
        terms, rgb, _ = reconstruction_step(lgm, ReconstructionLoss(None), views, torch.ones_like(views[:, :, :1]),
                                            c2w, (0, 6, 12, 18), None, (0.5, 0.5, 0.5))
    plain_inputs, _ = lgm.prepare_inputs(views[:, :4], c2w[:, :4])
    assert transforms.dtype == torch.float32 and torch.equal(inputs, plain_inputs)
    assert rgb.dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in lgm.parameters() if p.grad is not None)


# -- CUDA only -------------------------------------------------------------------------------------
@pytest.mark.gpu
@cuda
def test_the_fine_tuning_loss_one_step_x0_and_sampling_take_a_cuda_generator(tiny_dir):
    model = build_tiny("t2v").to("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    views = torch.rand(2, 24, 3, 32, 32, device="cuda") * 2 - 1
    cameras = model.orbit_cameras(*_orbit("t2v"), 2)
    loss = diffusion_loss(model, MultiViewBatch(views=views, cameras=cameras, prompts=["a", "b"]), generator,
                          autocast_dtype=torch.float16)
    assert torch.isfinite(loss)
    x0 = one_step_x0(model, views, cameras, ["a", "b"], torch.tensor([300, 600]), generator, frames=[0, 6, 12, 18],
                     autocast_dtype=torch.float16)
    assert x0.shape == (2, 4, 3, 32, 32) and x0.is_cuda
    pipe = load_pipeline(f"{tiny_dir}/t2v", f"{tiny_dir}/lgm", device="cuda")
    assert pipe.unet.dtype == torch.float16
    out = pipe(prompt="a duck", num_inference_steps=3, three_d_aware=(1,), output_type="pt",
               generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.isfinite(out.frames).all()


@pytest.mark.gpu
@cuda
def test_gsplat_renders_half_precision_gaussians_under_autocast_and_matches_the_torch_rasteriser():
    c2w = torch.as_tensor(camera.orbit_c2w(15.0), dtype=torch.float32)[None].cuda()
    scene = _scene(4096).to("cuda")
    assert warm_up("cuda")["backend"] == "gsplat"
    with torch.autocast("cuda", dtype=torch.float16):
        colors, _ = render_batch(scene.to(torch.float16), c2w, 39.6, 64, (0.5, 0.5, 0.5))
    assert colors.dtype == torch.float32 and backend_in_use("cuda")["backend"] == "gsplat"
    reference, _ = render_batch(scene.to(torch.float16).to(torch.float32), c2w, 39.6, 64, (0.5, 0.5, 0.5),
                                backend="torch")
    assert (colors - reference).abs().max() < 1e-3


@pytest.mark.gpu
@cuda
def test_the_evaluation_fits_its_gaussians_on_the_gpu(tiny_dir, tmp_path, monkeypatch):
    import pipeline.evaluation.sample_scores
    from models.gaussians.fit import FitConfig, fit_gaussians
    from pipeline.evaluation.protocol import EvaluationConfig, evaluate

    devices = []

    def recording_fit(views, *args, **kwargs):
        devices.append(views.device.type)
        return fit_gaussians(views, *args, **kwargs)

    monkeypatch.setattr(pipeline.evaluation.sample_scores, "fit_gaussians", recording_fit)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a duck\n")
    evaluate(EvaluationConfig(model=f"{tiny_dir}/t2v", prompts=str(prompts), settings=("plain",), num_inference_steps=2,
                              fit=FitConfig(steps=2, num_gaussians=64), mlflow_uri=f"sqlite:///{tmp_path}/m.db"),
             log=lambda *_: None)
    assert devices == ["cuda"]
    assert torch.backends.cuda.matmul.allow_tf32, "load_pipeline allows TF32 on CUDA"


@pytest.mark.gpu
@cuda
def test_latents_offset_noise_and_the_ema_run_on_the_gpu():
    """Issue 27's new device paths: the posterior drawn with a CUDA generator (precomputed latents,
    the encoders left on the CPU), offset noise, and the EMA's fused lerp on CUDA weights."""
    from models.generator.ema import ShardedEMA

    model = build_tiny("t2v")
    views = torch.rand(2, 24, 3, 32, 32) * 2 - 1
    posterior = model.encode_posterior(views).half()  # the encode stage's work, on the CPU here
    states = model.encode_prompts(["a", "b"]).half()
    model.denoiser.to("cuda")  # the VAE and text encoder stay on the CPU, as finetune --latents keeps them
    negative = model.encode_prompts([""], device=torch.device("cpu"))[0]
    cameras = model.orbit_cameras(*_orbit("t2v"), 2)
    batch = MultiViewBatch(views=None, cameras=cameras, prompts=["a", "b"], posterior=posterior.cuda(),
                           prompt_states=states.cuda(), negative_states=negative.cuda())
    generator = torch.Generator(device="cuda").manual_seed(0)
    loss = diffusion_loss(model, batch, generator, 0.5, torch.float16, offset_noise=0.1)
    assert torch.isfinite(loss)
    ema = ShardedEMA(model.denoiser, 0.9)
    loss.backward()
    with torch.no_grad():
        for parameter in model.denoiser.parameters():
            parameter.add_(0.01)
    ema.update()
    assert all(tensor.is_cuda for tensor in ema.shadow.values())
