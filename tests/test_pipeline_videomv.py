"""VideoMVPipeline: diffusers' loading and saving, its call conventions, and one code path with the sampler."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

from models import VideoMVPipeline
from models.reconstructor.model import LGM
from models.reconstructor.renders_vs_x0 import RendersVsX0
from pipeline.experiments.sampling import SamplingConfig, sample_views
from models.toy.tiny import make_tiny

STEPS = 3


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, str]:
    """Published-layout tiny models, and a "fine-tuned" t2v directory (camera embedding randomised,
    a reconstructor with a renders-vs-x0 record) saved by the pipeline."""
    root = tmp_path_factory.mktemp("pipeline")
    published = {variant: make_tiny(variant, str(root / variant)) for variant in ("t2v", "i2v")}
    model = VideoMVPipeline.from_pretrained(published["t2v"])
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.camera_embedding.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    torch.manual_seed(0)
    reconstructor = LGM("tiny").eval()
    reconstructor.renders_vs_x0 = RendersVsX0(t=[581, 381, 181], render_psnr=[20.0, 21.0, 22.0],
                                              x0_psnr=[25.0, 21.2, 21.0])
    model.with_reconstructor(reconstructor).save_pretrained(str(root / "finetuned"))
    return {**published, "finetuned": str(root / "finetuned")}


def quiet(pipe: VideoMVPipeline) -> VideoMVPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_saved_directory_lists_every_component_and_names_the_pipeline(dirs):
    with open(os.path.join(dirs["finetuned"], "model_index.json")) as handle:
        index = json.load(handle)
    assert index["_class_name"] == ["pipeline_videomv", "VideoMVPipeline"]
    assert index["camera_embedding"] == ["models.generator.camera_embedding", "CameraEmbedding"]
    assert index["reconstructor"] == ["models.reconstructor.model", "LGM"]
    assert index["image_encoder"] == [None, None]
    for folder in ("unet", "camera_embedding", "vae", "text_encoder", "tokenizer", "scheduler", "reconstructor"):
        assert os.path.isdir(os.path.join(dirs["finetuned"], folder)), folder
    assert os.path.isfile(os.path.join(dirs["finetuned"], "pipeline_videomv.py"))


def test_diffusers_loads_the_pipeline_or_says_why_never_a_camera_less_video_model(dirs):
    with pytest.raises(ValueError, match=r"(?s)pipeline_videomv\.py.*trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(dirs["finetuned"])
    generic = quiet(DiffusionPipeline.from_pretrained(dirs["finetuned"], trust_remote_code=True))
    ours = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    assert type(generic) is VideoMVPipeline
    assert isinstance(generic.reconstructor, LGM) and generic.reconstructor.renders_vs_x0 is not None
    for name, tensor in ours.camera_embedding.state_dict().items():
        assert torch.equal(tensor, generic.camera_embedding.state_dict()[name]), name
    assert generic.camera_embedding.state_dict()["linear_2.weight"].abs().sum() > 0  # the trained one, not zeros
    a = ours(prompt="a chair", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    b = generic(prompt="a chair", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(a.frames, b.frames, atol=1e-6)


def test_a_directory_saved_before_the_concern_folders_still_loads(dirs, tmp_path):
    """Directories written by the flat layout name ``models.camera_embedding`` and ``models.lgm`` in
    model_index.json: both loaders still read them, to the same weights."""
    old = tmp_path / "old-layout"
    shutil.copytree(dirs["finetuned"], old)
    index_path = old / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(camera_embedding=["models.camera_embedding", "CameraEmbedding"], reconstructor=["models.lgm", "LGM"])
    index_path.write_text(json.dumps(index))
    ours = VideoMVPipeline.from_pretrained(dirs["finetuned"])
    for loaded in (VideoMVPipeline.from_pretrained(str(old)),
                   DiffusionPipeline.from_pretrained(str(old), trust_remote_code=True)):
        assert type(loaded) is VideoMVPipeline and isinstance(loaded.reconstructor, LGM)
        for name, tensor in ours.camera_embedding.state_dict().items():
            assert torch.equal(tensor, loaded.camera_embedding.state_dict()[name]), name
    # A fresh interpreter, as a user's: nothing of the project imported before diffusers' loader.
    code = ("import sys, torch; from diffusers import DiffusionPipeline; "
            f"pipe = DiffusionPipeline.from_pretrained({str(old)!r}, trust_remote_code=True); "
            "print(type(pipe).__name__, type(pipe.reconstructor).__name__, "
            "float(pipe.camera_embedding.linear_2.weight.abs().sum()))")
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    name, reconstructor, weight = result.stdout.split()[-3:]
    assert (name, reconstructor) == ("VideoMVPipeline", "LGM")
    assert float(weight) == pytest.approx(float(ours.camera_embedding.linear_2.weight.abs().sum()), rel=1e-6)


def test_loading_takes_diffusers_per_component_dtypes_and_its_error_types(dirs):
    """As diffusers' pipelines: ``torch_dtype`` as a dict per component ("default" for the rest), a
    weight variant the directory does not have is a ValueError; a bad dict is named."""
    pipe = VideoMVPipeline.from_pretrained(dirs["finetuned"], torch_dtype={"unet": torch.bfloat16,
                                                                            "reconstructor": torch.float16})
    assert (pipe.unet.dtype, pipe.reconstructor.dtype) == (torch.bfloat16, torch.float16)
    assert pipe.vae.dtype == pipe.text_encoder.dtype == pipe.camera_embedding.dtype == torch.float32
    pipe = VideoMVPipeline.from_pretrained(dirs["i2v"], torch_dtype={"default": torch.bfloat16})
    assert pipe.unet.dtype == pipe.image_encoder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"unknown components \['unets'\]"):
        VideoMVPipeline.from_pretrained(dirs["t2v"], torch_dtype={"unets": torch.float16})
    with pytest.raises(ValueError, match=r"torch_dtype\['vae'\] must be a torch dtype"):
        VideoMVPipeline.from_pretrained(dirs["t2v"], torch_dtype={"vae": "fp16"})
    # diffusers' own test (test_loading_with_incorrect_variants_raises_error) matches these words.
    with pytest.raises(ValueError, match=r"You are trying to load the model files of the `variant=fp16`"):
        VideoMVPipeline.from_pretrained(dirs["t2v"], variant="fp16")


def test_loading_reports_each_component_where_diffusers_pipelines_do(dirs, caplog):
    """diffusers' test_save_load_local reads one line per required component on its pipeline logger."""
    with caplog.at_level(logging.INFO, logger="diffusers.pipelines.pipeline_utils"):
        VideoMVPipeline.from_pretrained(dirs["finetuned"])
    lines = [r.getMessage() for r in caplog.records if r.name == "diffusers.pipelines.pipeline_utils"]
    for name in ("unet", "camera_embedding", "vae", "text_encoder", "tokenizer", "scheduler", "reconstructor"):
        assert any(line.startswith(f"Loaded {name} as ") for line in lines), (name, lines)


def test_published_video_model_gets_a_zero_camera_embedding(dirs):
    pipe = VideoMVPipeline.from_pretrained(dirs["t2v"])
    assert pipe.reconstructor is None
    assert torch.count_nonzero(pipe.camera_embedding.linear_2.weight) == 0
    assert pipe.variant == "t2v" and VideoMVPipeline.from_pretrained(dirs["i2v"]).variant == "i2v"


def test_call_matches_the_sampler_and_follows_diffusers_conventions(dirs):
    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    seen = []

    def on_step_end(pipeline, index, timestep, tensors):
        seen.append((index, int(timestep), tuple(tensors)))
        return tensors

    out = pipe(prompt=["a chair", "a lamp"], num_inference_steps=STEPS, output_type="pt",
               generator=[torch.Generator().manual_seed(4), torch.Generator().manual_seed(5)],
               callback_on_step_end=on_step_end)
    assert [s[0] for s in seen] == list(range(STEPS)) and all(s[2] == ("latents",) for s in seen)
    assert out.frames.shape == (2, 24, 3, 32, 32) and out.cameras.shape == (2, 24, 4, 4)
    assert out.gaussians is not None and out.gaussians.means.shape[0] == 2
    # One code path: the sampler with the same seeds gives the same views.
    direct = sample_views(pipe, prompts=["a chair", "a lamp"], config=SamplingConfig(num_inference_steps=STEPS, seeds=(4, 5)))
    torch.testing.assert_close(out.frames, direct.views, atol=1e-6, rtol=0)
    as_np = pipe(prompt="a chair", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(4))
    assert as_np.frames.shape == (1, 24, 32, 32, 3) and as_np.frames.dtype == np.float32
    # batch 1 against batch 2: the same numbers up to float summation order
    np.testing.assert_allclose(as_np.frames[0], out.frames[0].permute(0, 2, 3, 1).numpy(), atol=1e-5)
    as_pil = pipe(prompt="a chair", num_inference_steps=STEPS, output_type="pil", return_dict=False)
    assert len(as_pil[0][0]) == 24 and as_pil[0][0][0].size == (32, 32)


def test_callback_can_replace_the_latents(dirs):
    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["t2v"]))
    plain = pipe(prompt="a chair", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    zeroed = pipe(prompt="a chair", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                  callback_on_step_end=lambda p, i, t, kw: {"latents": torch.zeros_like(kw["latents"])})
    assert not np.allclose(plain.frames, zeroed.frames)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(prompt="a chair", num_inference_steps=1, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_other_schedulers_and_the_three_d_aware_measurement(dirs):
    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    out = pipe(prompt="a chair", num_inference_steps=STEPS, eta=0.5, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(out.frames).all()
    # 3D-aware at the authors' steps of 50 (t = 581, 381, 181): the reconstructor's record leaves out
    # t = 581 (renders 20.0 vs x0 25.0 dB) and keeps 381 (21.0 vs 21.2, within 0.5 dB) and 181.
    pipe.scheduler = VideoMVPipeline.from_pretrained(dirs["finetuned"]).scheduler
    aware = pipe(prompt="a chair", num_inference_steps=50, three_d_aware=True, guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(0))
    assert aware.reconstructions == 2


def test_image_model_and_bad_calls(dirs):
    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["i2v"]))
    photo = PIL.Image.fromarray((np.random.default_rng(0).random((48, 40, 4)) * 255).astype(np.uint8), "RGBA")
    torch.manual_seed(0)
    out = pipe(image=photo, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 24, 32, 32, 3) and out.gaussians is None
    with pytest.raises(ValueError, match="image-to-multi-view model: give image="):
        pipe(prompt="a chair", num_inference_steps=1)
    with pytest.raises(ValueError, match="not both"):
        pipe(prompt="a chair", image=photo, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type"):  # ("latent" is one now: issue 28)
        pipe(image=photo, num_inference_steps=1, output_type="mp4")
    with pytest.raises(TypeError, match="image must be"):
        pipe(image="photo.png", num_inference_steps=1)


def test_model_cpu_offload_hooks_every_component_and_keeps_the_result(dirs):
    """diffusers' model offload wired through every component, the reconstructor included. Here
    the offload device is the CPU itself (diffusers refuses to pick one without an accelerator), so
    this checks the hooks and the execution device; the CUDA test below checks the moves."""
    arguments = dict(prompt="a chair", num_inference_steps=STEPS, three_d_aware=(1,))
    expected = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))(
        **arguments, generator=torch.Generator().manual_seed(0))
    offloaded = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    offloaded.enable_model_cpu_offload(device="cpu")
    hooked = {name for name, module in offloaded.components.items() if hasattr(module, "_hf_hook")}
    assert hooked == {"unet", "camera_embedding", "vae", "text_encoder", "reconstructor"}
    assert offloaded.device == offloaded._execution_device
    result = offloaded(**arguments, generator=torch.Generator().manual_seed(0))
    assert result.reconstructions == expected.reconstructions > 0
    np.testing.assert_allclose(result.frames, expected.frames, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="enable_model_cpu_offload needs CUDA")
def test_model_cpu_offload_gives_the_on_device_result_and_frees_the_device(dirs):
    """diffusers' model offload on CUDA: the views equal those of the pipeline moved to the GPU
    whole, and every component (the reconstructor included) is back on the CPU afterwards."""
    arguments = dict(prompt="a chair", num_inference_steps=STEPS, three_d_aware=(1,),
                     generator=torch.Generator().manual_seed(0))
    on_device = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"])).to("cuda")
    expected = on_device(**arguments)
    del on_device
    offloaded = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    offloaded.enable_model_cpu_offload()
    arguments["generator"] = torch.Generator().manual_seed(0)
    result = offloaded(**arguments)
    assert result.reconstructions > 0 and expected.reconstructions == result.reconstructions
    np.testing.assert_allclose(result.frames, expected.frames, atol=1e-4)
    for name in ("unet", "camera_embedding", "vae", "text_encoder", "reconstructor"):
        module = getattr(offloaded, name)
        assert next(module.parameters()).device.type == "cpu", f"{name} was left on the GPU"


@pytest.fixture
def seen(monkeypatch) -> list[list[str]]:
    """Every list of prompts the text encoder is given, in order (``VideoMVPipeline.encode_prompts`` recorded)."""

    calls: list[list[str]] = []
    original = VideoMVPipeline.encode_prompts
    monkeypatch.setattr(VideoMVPipeline, "encode_prompts",
                        lambda self, prompts, **options: calls.append(list(prompts)) or original(self, prompts, **options))
    return calls


def test_prompts_get_the_recorded_caption_suffix_once(seen):
    """Fine-tuning records ", 3d asset" (what it appended to every caption); the pipeline appends it
    to prompts that lack it, never twice; a model without the record takes prompts as they are."""
    from models.toy.tiny import build_tiny

    model = build_tiny("t2v")
    pipe = model
    pipe.set_progress_bar_config(disable=True)
    pipe(prompt=["a duck", "a box, 3d asset"], num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert seen[0] == ["a duck", "a box, 3d asset"]
    seen.clear()
    model.camera_embedding.register_to_config(prompt_suffix=", 3d asset")
    pipe(prompt=["a duck", "a box, 3d asset"], num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert seen[0] == ["a duck, 3d asset", "a box, 3d asset"]


def test_guidance_and_condition_dropout_use_the_negative_prompt(seen):
    """Issue 27, item 3: the unconditional branch is the authors' negative prompt (not ""), or the
    one the model recorded from its fine-tuning, or the caller's; condition dropout trains to it."""
    from models.generator.objective import MultiViewBatch, diffusion_loss
    from models.prompts import AUTHORS_NEGATIVE_PROMPT
    from models.toy.tiny import build_tiny

    model = build_tiny("t2v")
    pipe = model
    pipe.set_progress_bar_config(disable=True)

    def unconditional(**options) -> list[str]:
        seen.clear()
        pipe(prompt=["a duck", "a box"], num_inference_steps=1, generator=torch.Generator().manual_seed(0), **options)
        return seen[1]

    assert unconditional() == [AUTHORS_NEGATIVE_PROMPT] * 2
    assert unconditional(negative_prompt="blurry") == ["blurry"] * 2
    model.camera_embedding.register_to_config(negative_prompt="")
    assert unconditional() == ["", ""], "the recorded negative prompt (here the empty one) wins over the default"

    batch = MultiViewBatch(views=torch.zeros(2, 24, 3, 32, 32), cameras=torch.eye(4).expand(2, 24, 4, 4),
                           prompts=["a duck", "a box"])
    seen.clear()
    with torch.no_grad():
        diffusion_loss(model, batch, torch.Generator().manual_seed(0), condition_dropout=0.999,
                       negative_prompt=AUTHORS_NEGATIVE_PROMPT)
    assert seen == [[AUTHORS_NEGATIVE_PROMPT] * 2]

    i2v = build_tiny("i2v")
    image_batch = MultiViewBatch(views=torch.zeros(2, 24, 3, 32, 32), cameras=torch.eye(4).expand(2, 24, 4, 4),
                                 prompts=["", ""], condition_images=torch.zeros(2, 3, 32, 32))
    seen.clear()
    with torch.no_grad():
        diffusion_loss(i2v, image_batch, torch.Generator().manual_seed(0), condition_dropout=0.999,
                       negative_prompt="blurry")
    assert seen == [["blurry", "blurry"]]
    i2v_pipe = i2v
    i2v_pipe.set_progress_bar_config(disable=True)
    seen.clear()
    i2v_pipe(image=torch.zeros(1, 3, 32, 32), num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    assert seen == [[""], [AUTHORS_NEGATIVE_PROMPT]], "the image model: '' vs the negative prompt, as the authors"


def test_the_pipeline_speaks_diffusers(dirs, tmp_path):
    """Issue 28, deliver 3: what diffusers' pipeline tests (PipelineTesterMixin) ask of a pipeline and
    this one lacked: prompt_embeds / negative_prompt_embeds, output_type="latent", guidance_scale and
    num_timesteps seen by step callbacks, weight variants that never overwrite the fp32 weights, the
    saved frame count, device_map."""
    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    call = dict(num_inference_steps=2, guidance_scale=3.0, output_type="pt")
    by_text = pipe(prompt=["a duck"], negative_prompt="blurry", generator=torch.Generator().manual_seed(0), **call)
    model = pipe
    by_embeds = pipe(prompt_embeds=model.encode_prompts(["a duck"]), negative_prompt_embeds=model.encode_prompts(
        ["blurry"]), generator=torch.Generator().manual_seed(0), **call)
    torch.testing.assert_close(by_embeds.frames, by_text.frames)
    with pytest.raises(ValueError, match="prompt or prompt_embeds, not both"):
        pipe(prompt="a", prompt_embeds=model.encode_prompts(["a"]), num_inference_steps=1)

    seen = []
    latent = pipe(prompt=["a duck"], negative_prompt="blurry", generator=torch.Generator().manual_seed(0),
                  callback_on_step_end=lambda p, i, t, kw: seen.append((p.guidance_scale, p.num_timesteps)) or {},
                  **{**call, "output_type": "latent"})
    assert latent.frames.shape == (1, 4, 24, 16, 16) and latent.gaussians is None
    torch.testing.assert_close((model.decode_latents(latent.frames) / 2 + 0.5).clamp(0, 1), by_text.frames)
    assert seen == [(3.0, 2), (3.0, 2)]

    # fp16 weights beside the fp32 ones: the reconstructor's fp32 file is not overwritten.
    saved = tmp_path / "saved"
    pipe.save_pretrained(str(saved))
    fp32 = (saved / "reconstructor" / "model.safetensors").read_bytes()
    pipe.to(torch_dtype=torch.float16).save_pretrained(str(saved), variant="fp16")
    pipe.to(torch_dtype=torch.float32)
    assert (saved / "reconstructor" / "model.safetensors").read_bytes() == fp32
    assert (saved / "reconstructor" / "model.fp16.safetensors").is_file()
    half = VideoMVPipeline.from_pretrained(str(saved), variant="fp16", torch_dtype=torch.float16)
    assert half.denoiser.dtype == torch.float16 and next(half.reconstructor.parameters()).dtype == torch.float16

    # A saved 4-frame model loads as one without num_frames=.
    four = VideoMVPipeline.from_pretrained(dirs["t2v"], num_frames=4)
    four.save_pretrained(str(tmp_path / "four"))
    assert VideoMVPipeline.from_pretrained(str(tmp_path / "four")).num_frames == 4
    assert VideoMVPipeline.from_pretrained(dirs["finetuned"], device_map="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device_map='balanced' is not supported"):
        VideoMVPipeline.from_pretrained(dirs["finetuned"], device_map="balanced")


def test_diffusers_step_callbacks_end_guidance_and_change_its_scale(dirs):
    """diffusers' own ``SDCFGCutoffCallback`` (it keeps ``prompt_embeds[-1:]``, the conditional text,
    and sets ``pipe._guidance_scale = 0``) and a callback changing ``_guidance_scale`` both act."""
    from diffusers.callbacks import SDCFGCutoffCallback

    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["finetuned"]))
    common = dict(prompt="a chair", num_inference_steps=4, output_type="latent")

    def run(guidance: float, callback=None, inputs=None) -> torch.Tensor:
        return pipe(**common, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                    callback_on_step_end=callback, callback_on_step_end_tensor_inputs=inputs).frames

    def set_scale(value: float):
        def callback(pipeline, index, timestep, tensors):
            if index == 0:
                pipeline._guidance_scale = value
            return tensors
        return callback

    guided = run(5.0)
    raised = run(5.0, set_scale(9.0))
    assert (raised - guided).abs().max() > 1e-4 and (raised - run(9.0)).abs().max() > 1e-4
    # From step 1 on: the conditional prediction alone, whether guidance is cut (one half left) or
    # kept at scale 1 (both halves, the unconditional one weighted 0).
    cut = run(5.0, SDCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=0), ["prompt_embeds"])
    torch.testing.assert_close(cut, run(5.0, set_scale(1.0)), atol=1e-5, rtol=1e-5)
    assert (cut - guided).abs().max() > 1e-4


def test_cross_attention_kwargs_reach_the_attention_processors(dirs):
    from diffusers.models.attention_processor import AttnProcessor2_0

    seen = []

    class Recording(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     marker=None, **kwargs):
            seen.append(marker)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    pipe = quiet(VideoMVPipeline.from_pretrained(dirs["t2v"]))
    pipe.unet.set_attn_processor(Recording())
    pipe(prompt="a chair", num_inference_steps=1, output_type="latent", cross_attention_kwargs={"marker": "lora"})
    assert seen and set(seen) == {"lora"}
