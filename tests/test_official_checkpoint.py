"""Converting the authors' released checkpoints (issue 28), verified against the authors' network.

The fixtures (tests/data/videomv/README.md) are a tiny text UNet in the authors' own class with one
forward pass, and the full-size key lists; the converted UNet and camera embedding must reproduce
the authors' outputs from this project's cameras.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from diffusers import UNet3DConditionModel
from safetensors.torch import load_file

from models.official_checkpoint import (
    WORLD_FROM_OURS,
    CheckpointConversionError,
    convert_official,
    convert_state,
    modelscope_unet_names,
    read_checkpoint,
    split_checkpoint,
)
from tests.conftest import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "data" / "videomv"


def tiny_checkpoint() -> dict[str, torch.Tensor]:
    return {key: value.float() for key, value in load_file(FIXTURES / "videomv_t2v_tiny.safetensors").items()}


def tiny_base_dir(root, variant: str) -> str:
    """A tiny published-layout base directory of ``variant`` whose unet/config.json is the fixture's UNet."""
    from diffusers import I2VGenXLUNet

    from models.toy.tiny import make_tiny

    base = root / f"tiny-{variant}"
    make_tiny(variant, str(base))
    config = json.loads((FIXTURES / f"videomv_{variant}_tiny_config.json").read_text())["diffusers_equivalent_verified"]
    unet_class = I2VGenXLUNet if variant == "i2v" else UNet3DConditionModel
    unet_class(**config["kwargs"]).save_pretrained(str(base / "unet"))
    return str(base)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return tiny_base_dir(tmp_path_factory.mktemp("base"), "t2v")


def run_authors_inputs(pipe, with_camera: bool) -> torch.Tensor:
    io = load_file(FIXTURES / "videomv_t2v_tiny_io.safetensors")
    # The authors' cameras (Z-up world) in this project's convention (Y-up): ours = W^-1 theirs.
    theirs = io["camera_data"].double().reshape(2, 24, 4, 4)
    ours = (torch.linalg.inv(WORLD_FROM_OURS) @ theirs).float()
    model = pipe
    with torch.no_grad():
        if with_camera:
            return model.denoiser(io["x"].clone(), io["t"].clone(), cameras=ours, encoder_hidden_states=io["y"].clone())
        return model.unet(io["x"].clone(), io["t"].clone(), encoder_hidden_states=io["y"].clone()).sample


def test_the_converted_text_model_reproduces_the_authors_network(tiny_base, tmp_path):
    io = load_file(FIXTURES / "videomv_t2v_tiny_io.safetensors")
    path = tmp_path / "t2v.pth"
    torch.save({"state_dict": tiny_checkpoint(), "step": 333000}, path)  # the released checkpoints' layout
    pipe = convert_official(str(path), tiny_base)
    for with_camera, expected in ((True, io["out"]), (False, io["out_without_camera"])):
        torch.testing.assert_close(run_authors_inputs(pipe, with_camera), expected, atol=1e-4, rtol=1e-4)
    assert (io["out"] - io["out_without_camera"]).abs().max() > 0.5, "the camera path matters in this fixture"
    config = pipe.camera_embedding.config
    assert config["prompt_suffix"] == ", 3d asset" and config["negative_prompt"].startswith("Distorted")

    # An EMA checkpoint sharded by rank (keys[rank::2]) converts to the same model.
    state = tiny_checkpoint()
    keys = list(state)
    shards = []
    for rank in (0, 1):
        shards.append(tmp_path / f"ema_00333000_rank{rank:04d}.pth")
        torch.save({"state_dict": {k: state[k] for k in keys[rank::2]}, "step": 1}, shards[-1])
    merged = convert_official([str(s) for s in shards], tiny_base)
    torch.testing.assert_close(run_authors_inputs(merged, True), io["out"], atol=1e-4, rtol=1e-4)
    with pytest.raises(CheckpointConversionError, match="UNet: "):  # one shard alone is not a model
        convert_official(str(shards[0]), tiny_base)

    # ModelScope's original UNet (no camera MLP) converts through the same code: a zero camera embedding.
    original = tmp_path / "text2video_pytorch_model.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("camera_embedding.")}, original)
    plain = convert_official(str(original), tiny_base)
    torch.testing.assert_close(run_authors_inputs(plain, True), io["out_without_camera"], atol=1e-4, rtol=1e-4)


def test_conversion_is_strict_and_reads_no_code(tiny_base, tmp_path):
    state = tiny_checkpoint()
    missing = dict(state)
    dropped = "input_blocks.1.0.in_layers.2.weight"
    del missing[dropped]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointConversionError, match=r"down_blocks\.0\.resnets\.0\.conv1\.weight"):
        convert_official(str(tmp_path / "missing.pth"), tiny_base)
    torch.save({**state, "input_blocks.1.0.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointConversionError, match="extra.weight"):
        convert_official(str(tmp_path / "extra.pth"), tiny_base)
    wrong = dict(state)
    wrong["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointConversionError, match=r"out\.2\.weight \(3, 32, 3, 3\) does not fit conv_out"):
        convert_official(str(tmp_path / "wrong.pth"), tiny_base)
    torch.save({"state_dict": state, "hook": CheckpointConversionError("code")}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointConversionError, match="weights_only=True"):
        read_checkpoint(str(tmp_path / "pickled.pth"))


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    rows = (FIXTURES / name).read_text().splitlines()[1:]
    return {key: tuple(int(n) for n in shape.split("x")) for key, shape, _ in (row.split("\t") for row in rows)}


def test_the_full_size_checkpoint_maps_completely_onto_the_published_configs():
    from models.reconstructor.model import LGM

    shapes = read_tsv("videomv_t2v_unet_state_dict.tsv") | read_tsv("videomv_lgm_big_state_dict.tsv")  # lgm_big.*
    assert len(shapes) == 1484 + 376
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    unet_state, camera, lgm_state = split_checkpoint(state)
    assert len(camera) == 4 and len(lgm_state) == 376
    with torch.device("meta"):
        unet = UNet3DConditionModel()  # ModelScope text-to-video-ms-1.7b's published UNet config
        lgm = LGM("big")
    converted = convert_state(unet_state, modelscope_unet_names(unet_state, unet.config.layers_per_block),
                              unet.state_dict(), "UNet")
    assert len(converted) == len(unet.state_dict()) == 1480
    assert len(convert_state(lgm_state, {k: k for k in lgm_state}, lgm.state_dict(), "lgm_big")) == 376
    assert camera["0.weight"].shape == (unet.time_embedding.linear_2.out_features, 16)


@pytest.fixture(scope="module")
def tiny_i2v_base(tmp_path_factory):
    return tiny_base_dir(tmp_path_factory.mktemp("base"), "i2v")


def test_the_converted_image_model_reproduces_the_authors_network(tiny_i2v_base, tmp_path):
    """The I2VGen-XL layout onto diffusers' I2VGenXLUNet; the authors add the image-latent branch
    twice, which the converter reproduces exactly (conv_in's concat channels doubled)."""
    io = load_file(FIXTURES / "videomv_i2v_tiny_io.safetensors")
    state = {key: value.float() for key, value in load_file(FIXTURES / "videomv_i2v_tiny.safetensors").items()}
    path = tmp_path / "i2v.pth"
    torch.save({"state_dict": state, "step": 882000}, path)
    pipe = convert_official(str(path), tiny_i2v_base)
    ours = (torch.linalg.inv(WORLD_FROM_OURS) @ io["camera_data"].double().reshape(2, 24, 4, 4)).float()
    # diffusers' image_latents carry the frame-position mask the authors' UNet builds inside.
    inputs = dict(encoder_hidden_states=io["y"].clone(), image_latents=io["derived_image_latents_with_frame_mask"].clone(),
                  image_embeddings=io["image"].clone(), fps=io["fps"].clone())
    with torch.no_grad():
        out = pipe.denoiser(io["x"].clone(), io["t"].clone(), cameras=ours, **inputs)
        plain = pipe.unet(io["x"].clone(), io["t"].clone(), **inputs).sample
    torch.testing.assert_close(out, io["out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, io["out_without_camera"], atol=1e-4, rtol=1e-4)
    # It samples as the authors sample the image model (inference_i2vgen_entrance.py): fps 8, e=5, d=1.7,
    # guidance 6, 50 steps, their negative prompt; recorded in the directory, so it survives a save.
    pipe.save_pretrained(str(tmp_path / "converted"))
    from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
    from models.prompts import AUTHORS_NEGATIVE_PROMPT

    for model in (pipe, VideoMVPipeline.from_pretrained(str(tmp_path / "converted"))):
        assert model.sampling_defaults == {"guidance_scale": 6.0, "elevation": 5.0, "distance": 1.7,
                                           "num_inference_steps": 50, "negative_prompt": AUTHORS_NEGATIVE_PROMPT,
                                           "prompt_suffix": None, "fps": 8}
        condition = model.image_condition(torch.zeros(1, 3, 64, 64), model.num_frames)
        assert condition["fps"].tolist() == [8], "the frame-rate condition the authors train and sample with"
    with pytest.raises(CheckpointConversionError, match="is an i2v model; the checkpoint is the t2v one"):
        torch.save(tiny_checkpoint(), tmp_path / "t2v.pth")
        convert_official(str(tmp_path / "t2v.pth"), tiny_i2v_base)


def test_the_full_size_image_checkpoint_maps_onto_i2vgen_xl():
    from diffusers import I2VGenXLUNet

    from models.official_checkpoint import split_fused_qkv

    state = {key: torch.empty(shape, device="meta") for key, shape in read_tsv("videomv_i2v_unet_state_dict.tsv").items()}
    unet_state, camera, _ = split_checkpoint(state)
    unet_state = split_fused_qkv(unet_state)
    with torch.device("meta"):
        unet = I2VGenXLUNet(sample_size=32)  # the published i2vgen-xl UNet config
    converted = convert_state(unet_state, modelscope_unet_names(unet_state, unet.config.layers_per_block),
                              unet.state_dict(), "UNet")
    assert len(converted) == len(unet.state_dict()) == 1511 and len(camera) == 4


@pytest.mark.slow
def test_the_convert_command_writes_a_pipeline_every_job_loads(tiny_base, tmp_path):
    from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline

    path = tmp_path / "t2v.pth"
    torch.save({"state_dict": tiny_checkpoint(), "step": 1}, path)
    output = tmp_path / "converted"
    command = [sys.executable, str(REPO_ROOT / "jobs" / "convert_official.py"), "--checkpoint", str(path),
               "--base", tiny_base, "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = VideoMVPipeline.from_pretrained(str(output))
    io = load_file(FIXTURES / "videomv_t2v_tiny_io.safetensors")
    torch.testing.assert_close(run_authors_inputs(loaded, True), io["out"], atol=1e-4, rtol=1e-4)
    assert loaded.sampling_defaults["elevation"] == 15.0 and loaded.sampling_defaults["distance"] == 2.0
    assert (loaded.sampling_defaults["guidance_scale"], loaded.sampling_defaults["prompt_suffix"]) == (9.0, ", 3d asset")
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "not empty: nothing is overwritten" in again.stderr


@pytest.mark.slow
def test_a_checkpoint_in_the_released_layout_converts_loads_its_reconstructor_and_samples_3d_aware(tiny_base,
                                                                                                  tmp_path):
    """The released inference checkpoints carry the fine-tuned big LGM as ``lgm_big.*`` beside the
    UNet and the camera MLP: the tiny UNet fixture plus every ``lgm_big`` tensor at its real name and
    shape and dtype (float32, random values) goes through the command, and the directory loads with
    its reconstructor and samples 3D-aware into Gaussians."""
    from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline

    generator = torch.Generator().manual_seed(0)
    state = tiny_checkpoint()
    for key, shape in read_tsv("videomv_lgm_big_state_dict.tsv").items():
        state[key] = torch.randn(shape, generator=generator) * 0.02
    path = tmp_path / "t2v_00333000.pth"
    torch.save({"state_dict": state, "step": 333000}, path)
    del state
    output = tmp_path / "converted"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "convert_official.py"), "--checkpoint",
                             str(path), "--base", tiny_base, "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and f"into {output} (reconstructor: yes)" in result.stderr
    pipe = VideoMVPipeline.from_pretrained(str(output))
    assert pipe.reconstructor is not None and pipe.reconstructor.options.fov == pytest.approx(39.6)
    # The fixture UNet attends to ModelScope's 1024-wide text states (the tiny base's encoder is narrower).
    states = load_file(FIXTURES / "videomv_t2v_tiny_io.safetensors")["y"][:1]
    out = pipe(prompt_embeds=states, negative_prompt_embeds=torch.zeros_like(states), num_inference_steps=2,
               three_d_aware=(1,), three_d_aware_mode="one", generator=torch.Generator().manual_seed(0))
    assert out.reconstructions == 1 and out.gaussians is not None
    assert out.gaussians.means.shape[-2] == 4 * 128 * 128 and torch.isfinite(out.gaussians.means).all()


def test_a_conversion_that_fails_is_one_line_never_a_traceback(tiny_base, tmp_path):
    path = tmp_path / "broken.pth"
    state = tiny_checkpoint()
    state["lgm_big.conv_in.weight"] = torch.zeros(3)  # a released layout whose reconstructor does not fit
    torch.save({"state_dict": state}, path)
    result = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "convert_official.py"), "--checkpoint",
                             str(path), "--base", tiny_base, "--output", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if "ERROR" in line]) == 1, result.stderr
