"""The paper's evaluation: each metric on cases with a known answer, the Gaussian fit, and the
evaluation job end to end on tiny models (text-to-MV on prompts, image-to-MV on a rendered object)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import torch.nn.functional as F

import camera
from models.metrics.clip_score import CLIPScorer
from models.metrics.scores import image_scores
from models.gaussians.fit import FitConfig, fit_gaussians, random_gaussians
from models.gaussians.rendering import render_batch
from models.gaussians.gaussians import Gaussians
from models.metrics.lpips import LPIPS
from models.metrics.image import flow_warping_rmse, psnr
from models.metrics.raft import RAFT
from models.toy.tiny import make_tiny, make_tiny_evaluation_weights
from models.metrics.warping import backward_warp, bilinear_sample, softmax_splat
from pipeline.data import schema, shards
from pipeline.evaluation.protocol import EvaluationConfig, evaluate

SIZE = 48
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    return make_tiny_evaluation_weights(str(tmp_path_factory.mktemp("metric-weights")))


def smooth_texture(width: int, seed: int = 0) -> torch.Tensor:
    """[1, 3, SIZE, width] smooth colour texture (bilinearly upsampled noise)."""
    noise = torch.rand(1, 3, SIZE // 6, width // 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(noise, size=(SIZE, width), mode="bilinear", align_corners=True)


def panning_frames(count: int, step: float) -> torch.Tensor:
    """Frames of a camera panning right by ``step`` px per frame: content moves by -step in x."""
    texture = smooth_texture(SIZE + int(step * count) + 8)
    y, x = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    frames = []
    for index in range(count):
        frames.append(bilinear_sample(texture, torch.stack([x + step * index, y], dim=-1)[None])[0])
    return torch.stack(frames)


def constant_flow(dx: float):
    def flow(sources: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        field = torch.zeros(len(sources), 2, *sources.shape[-2:])
        field[:, 0] = dx
        return field
    return flow


# -- warping and flow-warping RMSE --------------------------------------------------------------------
def test_backward_warp_and_splat_move_content_by_the_flow():
    image = torch.rand(1, 3, 8, 8)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 2.0  # every pixel lands 2 px to the right
    splatted, weight = softmax_splat(image, flow)
    torch.testing.assert_close(splatted[..., 2:], image[..., :-2])
    assert (weight[..., :2] == 0).all() and (splatted[..., :2] == 0).all()
    pulled = backward_warp(splatted, flow)  # out[p] = splatted[p + 2]
    torch.testing.assert_close(pulled[..., :-2], image[..., :-2])


def test_softmax_splat_resolves_collisions_by_importance():
    source = torch.zeros(1, 1, 1, 4)
    source[..., 0], source[..., 1] = 1.0, 3.0
    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0, 0] = 2.0  # pixels 0 and 1 both land on pixel 2 (pixel 2 itself moves away)
    flow[0, 0, 0, 1] = 1.0
    flow[0, 0, 0, 2] = 1.0
    average, _ = softmax_splat(source, flow)
    assert average[0, 0, 0, 2].item() == pytest.approx(2.0)
    metric = torch.tensor([[[[10.0, -10.0, 0.0, 0.0]]]])  # pixel 0 is in front
    front, _ = softmax_splat(source, flow, metric)
    assert front[0, 0, 0, 2].item() == pytest.approx(1.0, abs=1e-6)


def test_flow_warping_rmse_known_shifts():
    frames = panning_frames(8, 2.0)
    exact = flow_warping_rmse(frames, constant_flow(-2.0), interval=1)
    assert exact.shape == (7,) and exact.max() < 1e-5
    assert flow_warping_rmse(frames, constant_flow(-12.0), interval=6).max() < 1e-5
    wrong = flow_warping_rmse(frames, constant_flow(0.0), interval=1)
    assert wrong.min() > 0.02
    # A sub-pixel shift: bilinear splatting is close, not exact; still far better than no motion.
    fractional = panning_frames(4, 1.5)
    close = flow_warping_rmse(fractional, constant_flow(-1.5)).mean()
    assert close < 0.01 and close < flow_warping_rmse(fractional, constant_flow(0.0)).mean() / 3
    with pytest.raises(ValueError, match="interval"):
        flow_warping_rmse(frames, constant_flow(0.0), interval=8)


# -- RAFT -----------------------------------------------------------------------------------------------
def test_raft_has_the_reference_layout_and_loads_local_files(weights, tmp_path):
    model = RAFT.from_file(weights["raft"])  # the published file's "module." prefix
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 5_257_536  # the paper's 5.3M parameters
    # Shapes and names that only the reference architecture has.
    assert state["update_block.encoder.convc1.weight"].shape == (256, 4 * 81, 1, 1)
    assert state["update_block.gru.convq2.weight"].shape == (128, 128 + 256, 5, 1)
    assert state["update_block.mask.2.weight"].shape == (64 * 9, 256, 1, 1)
    assert "cnet.layer2.0.norm3.running_mean" in state and "cnet.layer2.0.downsample.1.running_var" in state
    assert not any(key.startswith("fnet") and "running" in key for key in state)  # instance norm
    unprefixed = tmp_path / "raft.pth"
    torch.save(state, unprefixed)
    images = torch.rand(2, 3, 36, 44, generator=torch.Generator().manual_seed(0))
    flow = model(images, images.flip(0), iterations=2)
    assert flow.shape == (2, 2, 36, 44) and torch.isfinite(flow).all()
    torch.testing.assert_close(RAFT.from_file(str(unprefixed))(images, images.flip(0), iterations=2), flow)
    with pytest.raises(FileNotFoundError, match="RAFT weights not found"):
        RAFT.from_file(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not a RAFT"):
        RAFT.from_file(weights["lpips_lin"])
    with pytest.raises(ValueError, match="at least one"):
        model(images, images, iterations=0)


# -- LPIPS and CLIP score ---------------------------------------------------------------------------------
def test_lpips_known_cases(weights):
    lpips = LPIPS.from_files(weights["lpips_vgg"], weights["lpips_lin"])
    image = smooth_texture(64, seed=3)[..., :64].repeat(2, 1, 1, 1)
    image[1] = torch.rand(3, SIZE, 64, generator=torch.Generator().manual_seed(4))
    image = F.interpolate(image, size=(64, 64))
    torch.testing.assert_close(lpips(image, image), torch.zeros(2), atol=1e-6, rtol=0)
    weak = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    strong = F.avg_pool2d(F.pad(image, (3, 3, 3, 3), mode="reflect"), 7, stride=1)
    assert (lpips(image, weak) > 0).all() and (lpips(image, strong) > lpips(image, weak)).all()
    torch.testing.assert_close(lpips(image, weak), lpips(weak, image))
    # The evaluation upsamples images smaller than VGG needs, and scores identical views perfectly.
    small = image[:, :, :32, :32]
    scores = image_scores(small, small, lpips)
    assert scores["lpips"] == pytest.approx(0.0, abs=1e-6) and scores["ssim"] == pytest.approx(1.0)


def test_clip_score_known_answers(weights):
    scorer = CLIPScorer.from_pretrained(weights["clip"])
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cosine = scorer.embed_images(images) @ scorer.embed_texts(["a cube"])[0]
    assert scorer.score("a cube", images) == pytest.approx(float((100 * cosine.clamp(min=0)).mean()), rel=1e-5)
    # Teach the tiny CLIP three colour words, then: matching pairs score far above the others.
    words, colours = ["red", "green", "blue"], torch.eye(3)
    generator = torch.Generator().manual_seed(1)

    def tinted(k: int, count: int) -> torch.Tensor:
        return (0.7 * colours[k].view(3, 1, 1) + 0.3 * torch.rand(count, 3, 32, 32, generator=generator)).clamp(0, 1)

    model = scorer.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    tokens = scorer.tokenizer(words, padding="max_length", return_tensors="pt")
    for _ in range(60):
        pixels = scorer.processor(images=list(torch.cat([tinted(k, 1) for k in range(3)])), return_tensors="pt",
                                  do_rescale=False).pixel_values
        loss = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels,
                     return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    for w, word in enumerate(words):
        scores = [scorer.score(word, tinted(k, 4)) for k in range(3)]
        assert scores[w] > 40 and all(scores[k] < scores[w] - 30 for k in range(3) if k != w), (word, scores)
    with pytest.raises(FileNotFoundError, match="not a local CLIP directory"):
        CLIPScorer.from_pretrained(os.path.dirname(weights["clip"]))


# -- Gaussian fitting -----------------------------------------------------------------------------------
def test_gaussian_fit_predicts_held_out_views():
    generator = torch.Generator().manual_seed(1)
    scene = random_gaussians(300, 0.4, seed=5)
    scene = Gaussians(means=scene.means, quats=scene.quats, scales=scene.scales * 1.5,
                      opacities=torch.full((300,), 0.8), colors=torch.rand(300, 3, generator=generator))
    c2w = torch.tensor(camera.orbit_c2w(15.0, camera.orbit_azimuths(24), 2.0), dtype=torch.float32)
    background = (0.5, 0.5, 0.5)
    views = render_batch(scene.as_batch(), c2w[None], camera.DEFAULT_FOV_DEG, 32, background)[0][0]
    even, odd = slice(0, None, 2), slice(1, None, 2)

    def held_out_psnr(steps: int) -> float:
        fitted = fit_gaussians(views[even], c2w[even], camera.DEFAULT_FOV_DEG, background,
                               FitConfig(steps=steps, num_gaussians=1024))
        rendered = render_batch(fitted.as_batch(), c2w[odd][None], camera.DEFAULT_FOV_DEG, 32, background)[0][0]
        return float(psnr(rendered, views[odd]).mean())

    before, after = held_out_psnr(0), held_out_psnr(60)
    assert after > before + 6 and after > 28, (before, after)


# -- the evaluation job ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from models.reconstructor.model import LGM

    root = tmp_path_factory.mktemp("eval-models")
    torch.manual_seed(0)
    LGM("tiny").save_pretrained(str(root / "lgm"))
    return {"t2v": make_tiny("t2v", str(root / "t2v")), "i2v": make_tiny("i2v", str(root / "i2v")),
            "lgm": str(root / "lgm")}


def fast_config(model: str, lgm: str, weights: dict[str, str], mlflow_uri: str, **extra) -> EvaluationConfig:
    fields = dict(model=model, reconstructor=lgm, num_inference_steps=4, fit=FitConfig(steps=5, num_gaussians=512),
                  clip=weights["clip"], raft=weights["raft"], raft_iterations=1, lpips_vgg=weights["lpips_vgg"],
                  lpips_lin=weights["lpips_lin"], mlflow_uri=mlflow_uri)
    return EvaluationConfig(**{**fields, **extra})


@pytest.mark.slow
def test_evaluate_text_to_multiview_side_by_side(tiny_models, weights, mlflow_uri, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# T3Bench style\na red cube, 3d asset\n\na blue sphere, 3d asset\n")
    lines: list[str] = []
    result = evaluate(fast_config(tiny_models["t2v"], tiny_models["lgm"], weights, mlflow_uri, prompts=str(prompts),
                                  max_samples=1, output=str(tmp_path / "out")), log=lines.append)
    assert result.task == "text-to-multiview" and [row["setting"] for row in result.rows] == ["3d-aware", "plain"]
    expected = {"psnr", "ssim", "lpips", "clip_score", "flow_rmse_1", "flow_rmse_6", "seconds"}
    for setting in ("3d-aware", "plain"):
        assert set(result.summary[setting]) == expected
        assert all(torch.isfinite(torch.tensor(v)) for v in result.summary[setting].values())
    # Same seed, different sampling: the settings really differ.
    assert result.rows[0]["psnr"] != result.rows[1]["psnr"]
    table = result.table()
    assert "| text-to-multiview | 3d-aware | plain |" in table and "flow_rmse_6" in table
    assert (tmp_path / "out" / "table.md").read_text().strip() == table
    assert len((tmp_path / "out" / "results.csv").read_text().strip().splitlines()) == 3
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.search_runs(experiment_names=["videomv-eval"], output_format="list")[0]
    assert run.data.metrics["3d-aware/psnr"] == pytest.approx(result.summary["3d-aware"]["psnr"])
    assert "plain/clip_score" in run.data.metrics and run.data.params["networks"] == "lpips,clip,raft"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"results.csv", "table.md", "grids"} <= artifacts


@pytest.mark.slow
def test_evaluate_image_to_multiview_on_a_rendered_object(tiny_models, weights, mlflow_uri, duck_row, tmp_path):
    shards.write_shard_atomically(schema.rows_to_table([duck_row]), str(tmp_path / "held-out"), "shard-0.parquet")
    config = fast_config(tiny_models["i2v"], tiny_models["lgm"], weights, mlflow_uri, shards=str(tmp_path / "held-out"),
                         settings=("plain",), clip=None)
    result = evaluate(config, log=lambda _: None)
    assert result.task == "image-to-multiview" and result.rows[0]["name"] == "duck"
    assert set(result.summary["plain"]) == {"psnr", "ssim", "lpips", "flow_rmse_1", "flow_rmse_6", "chamfer", "fscore",
                                            "volume_iou", "seconds"}
    # The tiny untrained models draw no duck: its mesh is scored, and far from the Duck's.
    assert 0.02 < result.rows[0]["chamfer"] < 1 and 0 <= result.rows[0]["volume_iou"] < 0.9
    logged = []
    without = evaluate(dataclasses.replace(config, geometry=False, run_name="no-geometry"), log=logged.append)
    assert "chamfer" not in without.summary["plain"]


@pytest.mark.slow
def test_evaluate_errors_name_the_problem(tiny_models, weights, mlflow_uri, tmp_path):
    def attempt(**fields) -> None:
        evaluate(EvaluationConfig(**{"model": tiny_models["t2v"], "num_inference_steps": 2, "mlflow_uri": mlflow_uri, **fields}))

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cube\n")
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        attempt(prompts=str(tmp_path / "none.txt"), settings=("plain",))
    with pytest.raises(ValueError, match="text-to-multi-view model: give a prompt file"):
        attempt(settings=("plain",))
    with pytest.raises(ValueError, match="3d-aware setting needs a reconstructor"):
        attempt(prompts=str(prompts))
    with pytest.raises(FileNotFoundError, match="not a local CLIP directory"):
        attempt(prompts=str(prompts), settings=("plain",), clip=str(tmp_path))
    with pytest.raises(ValueError, match="LPIPS needs the VGG16 backbone weights too"):
        attempt(prompts=str(prompts), settings=("plain",), lpips_lin=weights["lpips_lin"])
    with pytest.raises(ValueError, match="no rendered"):
        attempt(model=tiny_models["i2v"], settings=("plain",), shards=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="settings must be drawn from"):
        attempt(settings=("fancy",))
    # The job prints the message and exits 2 instead of a traceback.
    result = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "evaluate.py"), "--model", tiny_models["t2v"],
                             "--prompts", str(prompts), "--mlflow-uri", mlflow_uri],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "ERROR jobs.evaluate: the 3d-aware setting needs a reconstructor" in result.stderr


@pytest.mark.slow
def test_gaussian_fit_scores_fall_as_the_views_grow_inconsistent(sample_assets):
    """The 12/12 fit on Blender's Duck: highest on the exact orbit, lower at every step of per-view
    azimuth jitter (2, 5, 10 degrees), so the protocol's score can tell consistency (small scale)."""
    from pipeline.experiments.fit_calibration import fit_calibration

    rows = fit_calibration(str(sample_assets / "Duck.glb"), resolution=32, jitters=(0.0, 2.0, 5.0, 10.0),
                           fit=FitConfig(steps=150, num_gaussians=2048), samples=4)
    psnrs = [row.psnr for row in rows]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert psnrs[0] > psnrs[-1] + 0.5, psnrs  # measured: 24.2, 24.1, 23.8, 23.3 dB
