"""The LGM reconstructor: checkpoint compatibility, inputs, loss, and learning one object."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import camera
from models.reconstructor.model import LGM
from models.reconstructor.options import PRESETS
from models.metrics.lpips import LPIPS, bundled_lin_weights
from models.reconstructor.rays import apply_normalisation, normalisation_transform, plucker_rays
from models.reconstructor.loss import ReconstructionLoss

FIXTURES = Path(__file__).resolve().parent / "data"  # key/shape lists of the official checkpoints


def read_fixture(name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (FIXTURES / name).read_text().splitlines():
        key, shape = line.split("\t")
        shapes[key] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return shapes


@pytest.mark.parametrize("preset, fixture, gaussians", [("big", "lgm_big_state_dict.tsv", 65536),
                                                          ("small", "lgm_small_state_dict.tsv", 16384)])
def test_state_dict_matches_the_official_checkpoints(preset, fixture, gaussians):
    with torch.device("meta"):
        model = LGM(preset)
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == read_fixture(fixture)
    assert model.options.num_gaussians == gaussians
    if preset == "big":
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(415e6, rel=0.01)


def test_official_format_loads_strictly_and_round_trips(tmp_path):
    model = LGM("tiny")
    path = tmp_path / "model_fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))  # as released: fp16
    loaded = LGM.load_official(str(path), options="tiny")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor.half().float())
    with pytest.raises(ValueError, match="does not match the LGM 'small' architecture"):
        LGM.load_official(str(path), options="small")
    with pytest.raises(FileNotFoundError, match="LGM checkpoint not found"):
        LGM.load_official(str(tmp_path / "missing.safetensors"))
    model.save_pretrained(str(tmp_path / "ours"))
    again = LGM.from_pretrained(str(tmp_path / "ours"))
    assert again.options == model.options
    with pytest.raises(FileNotFoundError, match="lgm_options.json is missing"):
        LGM.from_pretrained(str(tmp_path))


def test_camera_normalisation_and_plucker_rays():
    c2w = torch.tensor(camera.orbit_c2w(20.0, [30.0, 120.0, 210.0, 300.0], distance=2.0))
    transform = normalisation_transform(c2w[0], radius=1.5)
    normalised = apply_normalisation(transform, c2w)
    torch.testing.assert_close(normalised[0], torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1.5], [0, 0, 0, 1]],
                                                           dtype=torch.float64))
    rotations = normalised[:, :3, :3]
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    # Cameras still look at the (fixed) origin from radius 1.5.
    torch.testing.assert_close(normalised[:, :3, 3].norm(dim=-1), torch.full((4,), 1.5, dtype=torch.float64))
    torch.testing.assert_close((transform @ torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))[:3],
                               torch.zeros(3, dtype=torch.float64))
    rays = plucker_rays(normalised.float(), 8, 8, 39.6)
    assert rays.shape == (4, 6, 8, 8)
    moment, direction = rays[:, :3], rays[:, 3:]
    torch.testing.assert_close(direction.norm(dim=1), torch.ones(4, 8, 8))
    origin = normalised[:, :3, 3].float()[:, :, None, None].expand_as(direction)
    torch.testing.assert_close(moment, torch.cross(origin, direction, dim=1))
    # View 0 looks down -z: its central rays point at (0, 0, -1); moments vanish there.
    centre = direction[0, :, 3:5, 3:5].mean(dim=(1, 2))
    torch.testing.assert_close(centre, torch.tensor([0.0, 0.0, -1.0]), atol=0.01, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "big"])
def test_camera_setting_of_each_preset(preset):
    """tiny: VideoMV's rigid frame at the renders' fov; big: LGM's own (fov 49.1, radius 1.5), the
    renders read through a dolly that keeps the look-at plane's image size."""
    model = LGM.__new__(LGM)  # the camera methods need only the options (big's network is 415M parameters)
    model.options = PRESETS[preset]
    c2w = torch.tensor(camera.orbit_c2w(15.0, [30.0, 120.0, 210.0, 300.0], distance=2.0))
    transform = model.normalisation(c2w[0])
    normalised = model.normalise_cameras(transform[None], c2w[None])[0]
    radius = 2.0 if preset == "tiny" else 1.5
    expected = torch.eye(4, dtype=torch.float64)
    expected[2, 3] = radius
    torch.testing.assert_close(normalised[0], expected)
    torch.testing.assert_close(normalised[:, :3, 3].norm(dim=-1), torch.full((4,), radius, dtype=torch.float64))
    scene_scale = float(transform[:3, 0].norm())
    if preset == "tiny":
        assert model.options.fov == camera.DEFAULT_FOV_DEG and scene_scale == pytest.approx(1.0)
    else:
        assert model.options.fov == pytest.approx(49.1)
        tan = lambda fov: np.tan(np.radians(fov) / 2)  # noqa: E731
        # The unit object at distance 2 through 39.6 deg fills the frame as the scaled one at 1.5 through 49.1.
        assert scene_scale == pytest.approx(1.5 * tan(49.1) / (2.0 * tan(39.6)))
        assert scene_scale / (1.5 * tan(49.1)) == pytest.approx(1.0 / (2.0 * tan(39.6)))


def test_forward_shapes_and_activations():
    model = LGM("tiny")
    views = torch.rand(2, 4, 3, 48, 48)
    c2w = torch.tensor(camera.orbit_c2w(10.0, [0.0, 90.0, 180.0, 270.0]), dtype=torch.float32)[None].repeat(2, 1, 1, 1)
    with torch.no_grad():
        gaussians, transforms = model.reconstruct(views, c2w)
    assert gaussians.means.shape == (2, 4 * 32 * 32, 3) and transforms.shape == (2, 4, 4)
    assert gaussians.means.abs().max() <= 1 and (gaussians.opacities > 0).all() and (gaussians.opacities < 1).all()
    torch.testing.assert_close(gaussians.quats.norm(dim=-1), torch.ones(2, 4096))
    assert (gaussians.colors >= 0).all() and (gaussians.colors <= 1).all() and (gaussians.scales > 0).all()
    with pytest.raises(ValueError, match="takes 4 views"):
        model.prepare_inputs(views[:, :3], c2w[:, :3])


def test_reconstruction_loss_with_and_without_lpips(tmp_path):
    rgb, target = torch.rand(1, 2, 3, 32, 32), torch.rand(1, 2, 3, 32, 32)
    alpha, target_alpha = torch.rand(1, 2, 1, 32, 32), torch.rand(1, 2, 1, 32, 32)
    plain = ReconstructionLoss.from_paths(None, None)
    with pytest.raises(ValueError, match=r"includes LPIPS, but --lpips-vgg \("):  # lin: torchmetrics' copy
        ReconstructionLoss.from_paths(None, None, required=True)
    terms = plain(rgb, alpha, target, target_alpha)
    assert "lpips" not in terms
    torch.testing.assert_close(terms["loss"], terms["mse_rgb"] + terms["mse_alpha"])
    # A tiny local network with the real file layouts: torchvision VGG16 keys and lpips lin keys.
    network = LPIPS()
    torch.save({f"features.{k}": v for k, v in network.features.state_dict().items()}, tmp_path / "vgg16.pth")
    lin = {k: torch.rand_like(v) for k, v in network.state_dict().items() if k.startswith("lin")}
    torch.save(lin, tmp_path / "vgg.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = ReconstructionLoss.from_paths(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"), required=True)
    terms = full(rgb, alpha, target, target_alpha)
    assert terms["lpips"] > 0
    torch.testing.assert_close(terms["loss"], terms["mse_rgb"] + terms["mse_alpha"] + terms["lpips"])
    same = full(target, target_alpha, target, target_alpha)
    assert same["lpips"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="LPIPS weights not found"):
        ReconstructionLoss.from_paths(str(tmp_path / "nope.pth"), str(tmp_path / "vgg.pth"))
    with pytest.raises(ValueError, match="do not match"):
        ReconstructionLoss.from_paths(str(tmp_path / "vgg.pth"), str(tmp_path / "vgg.pth"))
    # Without --lpips-lin the lin layers come from the reference package's bundled file.
    bundled = ReconstructionLoss.from_paths(str(tmp_path / "vgg16.pth"), None, required=True).lpips
    reference = torch.load(bundled_lin_weights(), map_location="cpu", weights_only=True)
    for name, tensor in reference.items():
        assert torch.equal(bundled.state_dict()[name], tensor), name


@pytest.mark.slow
def test_tiny_reconstructor_learns_a_rendered_object(overfit_duck):
    _, _, result = overfit_duck
    assert result.psnr_after > result.psnr_before + 5.0, result
    assert result.psnr_after > 16.0, result
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:5])


def test_supervision_at_the_targets_own_resolution():
    """Gaussians render at the targets' resolution when it is below output_size: never upsampled targets."""
    from models.reconstructor.training import reconstruction_step

    torch.manual_seed(0)
    model = LGM(dataclasses.replace(PRESETS["tiny"], input_size=32, output_size=64))
    views, alphas = torch.rand(1, 24, 3, 16, 16), torch.rand(1, 24, 1, 16, 16)
    c2w = torch.tensor(camera.orbit_c2w(15.0, camera.orbit_azimuths()), dtype=torch.float32)[None]
    with torch.no_grad():
        _, rgb, target = reconstruction_step(model, ReconstructionLoss(None), views, alphas, c2w, (0, 6, 12, 18),
                                             (1, 2), (0.5, 0.5, 0.5))
    assert rgb.shape == target.shape == (1, 2, 3, 16, 16)
    torch.testing.assert_close(target, views[:, [1, 2]])
    with torch.no_grad():  # larger targets are downsampled to output_size
        _, rgb, target = reconstruction_step(model, ReconstructionLoss(None), torch.rand(1, 24, 3, 128, 128),
                                             torch.rand(1, 24, 1, 128, 128), c2w, (0, 6, 12, 18), (1,), (0.5,) * 3)
    assert rgb.shape == target.shape == (1, 1, 3, 64, 64)


# One 60-step overfit from random weights lands about 1 dB from the next seed's (measured gaps
# -1.54, +0.20, -2.03 dB for seeds 0-2), so the gap is taken between means over seeds.
SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_our_renders_through_lgms_camera_setting(sample_assets):
    """A reconstructor of LGM's own camera setting (fov 49.1, radius 1.5, as the official weights),
    overfit on the Duck rendered by Blender at that setting, and on the Duck rendered at ours
    (fov 39.6, distance 2.0) read through the dolly (``LGM.normalisation``). Both learn; the gap is
    what reading our renders through LGM's setting costs (docs/cameras.md has the figures)."""
    from models.reconstructor.training import overfit_one_object
    from pipeline.data.rows import row_to_tensors
    from pipeline.render_stage import render_asset
    from pipeline.data.sources import AssetRef
    from render.process import BlenderProcess
    from render.settings import RenderSettings

    settings = {"lgm": (49.1, 1.5), "ours": (camera.DEFAULT_FOV_DEG, camera.DEFAULT_DISTANCE)}
    results = {}
    with BlenderProcess() as process:
        for name, (fov, distance) in settings.items():
            row = render_asset(AssetRef("duck", "local", str(sample_assets / "Duck.glb")), process,
                               RenderSettings(resolution=32, samples=8, threads=2, fov=fov, distance=distance))
            data = row_to_tensors(row, background=(1.0, 1.0, 1.0))
            results[name] = []
            for seed in SEEDS:
                torch.manual_seed(seed)
                model = LGM(dataclasses.replace(PRESETS["tiny"], input_size=32, output_size=32, fov=49.1,
                                                cam_radius=1.5))
                results[name].append(overfit_one_object(model, data["views"], data["alphas"], data["c2w"],
                                                        steps=60, fov=fov))
    for name, runs in results.items():
        for result in runs:
            assert result.psnr_after > result.psnr_before + 3.0, (name, result.psnr_before, result.psnr_after)
    mean = {name: sum(r.psnr_after for r in runs) / len(runs) for name, runs in results.items()}
    gap = mean["lgm"] - mean["ours"]
    print(f"held-out PSNR after 60 steps, mean of seeds {SEEDS}: LGM's setting {mean['lgm']:.2f} dB, "
          f"ours through the dolly {mean['ours']:.2f} dB (gap {gap:.2f} dB)")
    assert abs(gap) < 1.5, gap
