"""The multi-view generator: camera embedding equivalence, loading/saving, objective."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import camera
from conftest import REPO_ROOT
from models.generator.camera_embedding import CameraEmbedding
from models.pipeline_videomv.loading import ModelDirectoryError
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.generator.objective import MultiViewBatch, diffusion_loss
from models.toy.tiny import TINY_RESOLUTION, make_tiny


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {variant: make_tiny(variant, str(root / variant)) for variant in ("t2v", "i2v")}


def load(tiny_dirs, variant: str) -> VideoMVPipeline:
    model = VideoMVPipeline.from_pretrained(tiny_dirs[variant])
    model.freeze_encoders()
    return model


def orbit_cameras(batch: int = 1, elevation: float = 20.0) -> torch.Tensor:
    return torch.tensor(camera.orbit_c2w(elevation), dtype=torch.float32)[None].repeat(batch, 1, 1, 1)


def unet_inputs(model: VideoMVPipeline, batch: int = 1, frames: int = 24, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    size = TINY_RESOLUTION // 2
    inputs = {
        "sample": torch.randn(batch, 4, frames, size, size, generator=generator),
        "timestep": torch.tensor([321] * batch),
        "encoder_hidden_states": model.encode_prompts(["a red chair"] * batch),
    }
    if model.variant == "i2v":
        torch.manual_seed(seed)  # the VAE samples the image latents
        image = torch.rand(batch, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=generator) * 2 - 1
        inputs.update(model.image_condition(image, frames))
    return inputs


def randomise_camera_embedding(model: VideoMVPipeline, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.camera_embedding.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_zero_initialised_camera_embedding_equals_the_video_model(tiny_dirs, variant):
    model = load(tiny_dirs, variant)
    assert torch.count_nonzero(model.camera_embedding.linear_2.weight) == 0
    inputs = unet_inputs(model)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    with torch.no_grad():
        plain = model.unet(sample, timestep, return_dict=False, **inputs)[0]
        with_cameras = model.denoiser(sample, timestep, cameras=orbit_cameras(), **inputs)
    assert torch.equal(plain, with_cameras)


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_camera_embedding_is_added_to_each_frames_time_embedding(tiny_dirs, variant):
    model = load(tiny_dirs, variant)
    randomise_camera_embedding(model)
    inputs = unet_inputs(model, batch=2)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    seen: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        seen.append((kwargs["temb"] if "temb" in kwargs else args[1]).detach().clone())

    unet = model.unet
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    # Registered after the camera hook, so it sees what the block receives.
    handles = [block.register_forward_pre_hook(capture, with_kwargs=True) for block in blocks]
    cameras = orbit_cameras(batch=2)
    moved = cameras.clone()
    moved[1, 5] = torch.tensor(camera.orbit_c2w(28.0, [75.0], distance=1.7)[0], dtype=torch.float32)
    with torch.no_grad():
        plain = unet(sample, timestep, return_dict=False, **inputs)[0]
        temb_plain = seen[0]
        seen.clear()
        first = model.denoiser(sample, timestep, cameras=cameras, **inputs)
        temb_first = seen[0]
        assert all(torch.equal(t, temb_first) for t in seen), "every block gets the same temb"
        seen.clear()
        second = model.denoiser(sample, timestep, cameras=moved, **inputs)
        temb_second = seen[0]
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        expected = model.camera_embedding(cameras)  # [B * F, E], batch-major
    assert temb_plain.shape == (48, unet.time_embedding.linear_2.out_features)
    torch.testing.assert_close(temb_first - temb_plain, expected, rtol=1e-5, atol=1e-5)
    changed = (temb_second != temb_first).any(dim=1).nonzero().flatten().tolist()
    assert changed == [24 + 5], "only sample 1, frame 5 has a new time embedding"
    assert not torch.equal(first, plain)
    assert not torch.equal(second[1, :, 5], first[1, :, 5])
    assert torch.equal(second[0], first[0]), "the other sample of the batch is unaffected"


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_save_and_reload_keeps_the_camera_embedding(tiny_dirs, variant, tmp_path):
    model = load(tiny_dirs, variant)
    randomise_camera_embedding(model, seed=3)
    inputs = unet_inputs(model)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    with torch.no_grad():
        before = model.denoiser(sample, timestep, cameras=orbit_cameras(), **inputs)
    model.save_pretrained(str(tmp_path / "finetuned"))
    assert os.path.exists(tmp_path / "finetuned" / "camera_embedding" / "diffusion_pytorch_model.safetensors")
    reloaded = VideoMVPipeline.from_pretrained(str(tmp_path / "finetuned"))
    assert reloaded.variant == variant
    for key in ("embedding_dim", "num_frames"):
        assert reloaded.camera_embedding.config[key] == model.camera_embedding.config[key]
    for name, tensor in model.denoiser.state_dict().items():
        assert torch.equal(tensor, reloaded.denoiser.state_dict()[name]), name
    with torch.no_grad():
        after = reloaded.denoiser(sample, timestep, cameras=orbit_cameras(), **inputs)
    assert torch.equal(before, after)


def test_published_layout_and_hf_cache(tiny_dirs, tmp_path, monkeypatch):
    assert not os.path.exists(os.path.join(tiny_dirs["t2v"], "camera_embedding"))
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert os.path.exists(os.path.join(tiny_dirs["t2v"], name))
    for name in ("image_encoder", "feature_extractor"):
        assert os.path.exists(os.path.join(tiny_dirs["i2v"], name))
    # A repo in the Hugging Face cache loads by its id, offline.
    cache = tmp_path / "hub"
    snapshot = cache / "models--videomv--tiny-t2v" / "snapshots" / "0123456789abcdef"
    shutil.copytree(tiny_dirs["t2v"], snapshot)
    (cache / "models--videomv--tiny-t2v" / "refs").mkdir()
    (cache / "models--videomv--tiny-t2v" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model = VideoMVPipeline.from_pretrained("videomv/tiny-t2v")
    assert model.variant == "t2v"
    with pytest.raises(ModelDirectoryError, match="neither a local directory nor a repo in the Hugging Face cache"):
        VideoMVPipeline.from_pretrained("videomv/not-there")


def test_incomplete_directories_name_what_is_missing(tiny_dirs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dirs["i2v"], broken)
    shutil.rmtree(broken / "vae")
    for weights in (broken / "image_encoder").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelDirectoryError, match=r"missing: vae/, image_encoder/ weights"):
        VideoMVPipeline.from_pretrained(str(broken))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelDirectoryError, match="no model_index.json"):
        VideoMVPipeline.from_pretrained(str(empty))


def test_wrong_frame_count_and_camera_shape_are_rejected(tiny_dirs):
    model = load(tiny_dirs, "t2v")
    inputs = unet_inputs(model, frames=7)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    with pytest.raises(ValueError, match="expected 24 frames"):
        model.denoiser(sample, timestep, cameras=orbit_cameras()[:, :7], **inputs)
    inputs = unet_inputs(model)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    with pytest.raises(ValueError, match=r"cameras must be \[1, 24, 4, 4\]"):
        model.denoiser(sample, timestep, cameras=orbit_cameras()[:, :, :3], **inputs)
    with pytest.raises(ValueError, match="cameras .* are required"):
        model.denoiser(sample, timestep, **inputs)
    with pytest.raises(ValueError, match="cameras must be"):
        CameraEmbedding(embedding_dim=8)(torch.zeros(2, 24, 12))


def fixed_batch(variant: str, frames: int = 24) -> MultiViewBatch:
    generator = torch.Generator().manual_seed(0)
    views = torch.rand(1, frames, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=generator) * 2 - 1
    cameras = orbit_cameras()[:, :frames] if frames > 1 else None
    return MultiViewBatch(views=views, cameras=cameras, prompts=["a chair"],
                          condition_images=views[:, 0] if variant == "i2v" else None)


@pytest.mark.parametrize("variant, steps", [("t2v", 30), ("i2v", 20)])
@pytest.mark.slow
def test_the_objective_can_learn_a_fixed_batch(tiny_dirs, variant, steps):
    torch.manual_seed(0)
    model = load(tiny_dirs, variant)
    batch = fixed_batch(variant)
    optimizer = torch.optim.AdamW(model.denoiser.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        generator = torch.Generator().manual_seed(7)  # same noise and t every step: a fixed target
        loss = diffusion_loss(model, batch, generator, condition_dropout=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.camera_embedding.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dirs):
    model = load(tiny_dirs, "t2v")
    randomise_camera_embedding(model)
    batch = fixed_batch("t2v")
    gradients = []
    for checkpointing in (False, True):
        (model.denoiser.enable_gradient_checkpointing if checkpointing else model.denoiser.disable_gradient_checkpointing)()
        assert model.denoiser.gradient_checkpointing == checkpointing
        model.denoiser.zero_grad()
        loss = diffusion_loss(model, batch, torch.Generator().manual_seed(3), condition_dropout=0.0)
        loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.denoiser.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_mixed_precision_dropout_and_one_frame_image_batches(tiny_dirs):
    model = load(tiny_dirs, "t2v")
    loss = diffusion_loss(model, fixed_batch("t2v"), torch.Generator().manual_seed(0), autocast_dtype=torch.bfloat16)
    assert torch.isfinite(loss)
    image_batch = fixed_batch("t2v", frames=1)
    loss = diffusion_loss(model, image_batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    # Dropout: with p = 1 every prompt is empty, which the loss must see (different result).
    a = diffusion_loss(model, fixed_batch("t2v"), torch.Generator().manual_seed(5), condition_dropout=0.0)
    b = diffusion_loss(model, fixed_batch("t2v"), torch.Generator().manual_seed(5), condition_dropout=1.0)
    assert a.item() != b.item()
    i2v = load(tiny_dirs, "i2v")
    a = diffusion_loss(i2v, fixed_batch("i2v"), torch.Generator().manual_seed(5), condition_dropout=0.0)
    assert torch.isfinite(a)


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_a_training_step_looks_up_its_device_once(tiny_dirs, variant, monkeypatch):
    """diffusers' ``_execution_device`` walks every submodule of every component for offloading
    hooks (4.5 ms a lookup, 7 % of the camera-control miniature's step when each encoder looked it
    up again): the objective looks it up once and hands it to the encoders, the prompts and the
    image branch too."""
    model = load(tiny_dirs, variant)
    lookups = {"device": 0, "_execution_device": 0}

    def counted(name: str) -> property:
        inner = getattr(VideoMVPipeline, name)

        def get(self):
            lookups[name] += 1
            return inner.fget(self)
        return property(get)

    for name in lookups:
        monkeypatch.setattr(VideoMVPipeline, name, counted(name))
    one = fixed_batch(variant)  # two samples of it, with condition dropout: every encoder runs
    images = None if one.condition_images is None else one.condition_images.repeat(2, 1, 1, 1)
    batch = MultiViewBatch(views=one.views.repeat(2, 1, 1, 1, 1), cameras=one.cameras.repeat(2, 1, 1, 1),
                           prompts=["a chair", "a table"], condition_images=images)
    generator = torch.Generator().manual_seed(1)
    assert torch.isfinite(diffusion_loss(model, batch, generator, condition_dropout=0.5))
    assert lookups == {"device": 1, "_execution_device": 0}


@pytest.mark.slow
def test_make_tiny_command(tmp_path):
    output = tmp_path / "tiny"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "make_tiny.py"), "--kind", "t2v",
                             "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert VideoMVPipeline.from_pretrained(str(output)).variant == "t2v"
    again = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "make_tiny.py"), "--kind", "t2v",
                            "--output", str(output)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
    lgm = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "make_tiny.py"), "--kind", "lgm",
                          "--output", str(tmp_path / "lgm")], capture_output=True, text=True)
    assert lgm.returncode == 0, lgm.stderr
    from models.reconstructor.model import LGM

    assert LGM.from_pretrained(str(tmp_path / "lgm")).options.input_size == 64


def test_a_fine_tuned_models_recorded_settings_load_without_a_warning(tmp_path):
    """The camera embedding records the negative prompt fine-tuning used: loading it must not print
    diffusers' "config attributes ... will be ignored", which reads as if the prompt were dropped."""
    import io
    import logging

    embedding = CameraEmbedding(8)
    embedding.register_to_config(negative_prompt="blurry", prompt_suffix=", 3d asset",
                                 training_cameras={"elevation": [5.0, 30.0], "distance": [2.0, 2.0], "fov": [39.6, 39.6]})
    embedding.save_pretrained(tmp_path)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logging.getLogger("diffusers").addHandler(handler)
    try:
        loaded = CameraEmbedding.from_pretrained(tmp_path)
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert "will be ignored" not in captured.getvalue(), captured.getvalue()
    assert (loaded.config.negative_prompt, loaded.config.prompt_suffix) == ("blurry", ", 3d asset")
