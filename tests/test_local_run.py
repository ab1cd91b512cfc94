"""The README's main job, reduced (fewer steps), end to end as a user runs it, output to a file:
render -> fine-tune -> reconstructor training -> Serve -> prompt -> files, all in one MLflow
experiment, and a log that reads as a log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import mlflow
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, runnable_blocks
from models.gaussians.ply import load_ply
from models.reconstructor.renders_vs_x0 import RendersVsX0

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # the whole pipeline, its own Ray, minutes

CURSOR_OR_COLOUR = re.compile(r"\x1b\[|\r")
# A line that reads as trouble: a warning, an error, a glog W/E/F line of Ray's C++ core, a failure.
ALARMING = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback|Error|failed)\b|^\[\S+ \S+ [WEF] \d+ \d+\]")
# The project's own lines (pipeline/logs.py's FORMAT), also as a Ray worker forwards them.
PROJECT_LINE = re.compile(r"^(\([^)]*pid=\d+\) )?\d\d:\d\d:\d\d [A-Z]+ (camera|render|pipeline|models|jobs)[.:]")
# Ray's two harmless lines in a healthy run (docs/running.md "Logs").
RAY_NOTES = re.compile(r"Token authentication is enabled for this Ray cluster|"
                       r"MapWorker\(MapBatches\(OrbitRenderer\)\).* has constructor arguments in the object store")


def test_the_whole_pipeline_runs_locally_and_logs_readably(tmp_path, monkeypatch):
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    # As a user runs it: not a terminal (`make run > run.log 2>&1`), and without the suite's
    # RAY_DEDUP_LOGS=0 (which shows every worker line, the skipped bookkeeping included).
    env = {k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS"}
    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "jobs" / "run_all.py"), "--out", str(out), "--finetune-steps", "3",
             "--autoencoder-steps", "5", "--recon-steps", "3", "--num-inference-steps", "5", "--render-resolution", "32", "--render-samples", "2"],
            stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=900)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    result_dir = out / "result"
    assert len(list((result_dir / "views").glob("view_*.png"))) == 24
    assert Image.open(result_dir / "grid.png").size == (6 * 32, 4 * 32)
    assert Image.open(result_dir / "orbit.gif").n_frames == 24
    for name in ("orbit.mp4", "gaussians_orbit.mp4"):
        assert (result_dir / name).read_bytes()[4:8] == b"ftyp", name
    assert load_ply(str(result_dir / "gaussians.ply")).count > 0
    import trimesh

    mesh = trimesh.load(str(result_dir / "mesh.glb"), force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.material.baseColorTexture is not None
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["videomv-local"], output_format="list")
    assert sorted(run.info.run_name for run in runs) == ["autoencoder", "finetune", "generate", "reconstructor",
                                                         "render"]

    # result.json: what was generated, at which cameras, its scores against the prompted object
    # (the default prompt is the bundled Duck's caption), and the MLflow runs of every stage.
    record = json.loads((result_dir / "result.json").read_text())
    assert record["prompt"] == "a yellow rubber duck, 3d asset" and record["scored_against"] == "Duck.glb"
    assert len(record["azimuths"]) == 24 and record["elevation"] == 15.0 and record["background"] == [0.5] * 3
    scores = record["scores"]
    for name in ("psnr", "ssim", "margin_db", "view_accuracy", "gaussians_psnr", "psnr_vs_monkey.glb",
                 "psnr_vs_BoxTextured.glb", "psnr_vs_teapot.stl", "mesh_chamfer", "mesh_fscore", "mesh_volume_iou",
                 "mesh_chamfer_vs_monkey.glb", "mesh_chamfer_vs_sphere"):
        assert np.isfinite(scores[name]), name
    assert scores["mesh_chamfer_ratio"] == pytest.approx(min(
        scores[f"mesh_chamfer_vs_{n}"] for n in ("monkey.glb", "BoxTextured.glb", "teapot.stl", "sphere"))
        / scores["mesh_chamfer"])
    assert scores["margin_db"] == pytest.approx(scores["psnr"] - max(scores[f"psnr_vs_{n}"] for n in
                                                                      ("monkey.glb", "BoxTextured.glb", "teapot.stl")))
    assert set(record["mlflow_run_ids"]) == {"autoencoder", "finetune", "generate", "reconstructor", "render"}
    # the tiny model's VAE was trained on the renders: it reconstructs them better than untrained
    autoencoder = record["autoencoder"]
    assert autoencoder["reconstruction_psnr"] > autoencoder["untrained_reconstruction_psnr"], autoencoder
    autoencoder_run = next(run for run in runs if run.info.run_name == "autoencoder")
    assert autoencoder_run.data.metrics["reconstruction_psnr"] == pytest.approx(autoencoder["reconstruction_psnr"])
    generate_run = next(run for run in runs if run.info.run_name == "generate")
    assert generate_run.data.metrics["score/psnr"] == pytest.approx(scores["psnr"])
    # The 3D-aware schedule was measured on held-out orbits, saved with the reconstructor, and followed:
    # 5 DDIM steps reconstruct (authors' indices 2, 3, 4) at t = 401, 201, 1.
    measured = RendersVsX0.load(str(out / "runs" / "reconstructor" / "final_model"))
    assert measured.t == [581, 381, 181] and record["renders_vs_x0"]["used"] == [measured.helps(t) for t in measured.t]
    assert generate_run.data.metrics["reconstructions"] == sum(measured.helps(t) for t in (401, 201, 1))

    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) <= 300, f"{len(lines)} lines"
    assert not CURSOR_OR_COLOUR.search(text), "progress-bar redraws or colour codes in a log file"
    repeated = [line for line, count in Counter(lines).items() if count > 1]
    assert not repeated, repeated[:5]
    assert sum("scores against Duck.glb" in line for line in lines) == 1
    for stage in range(1, 7):
        assert sum(f"=== stage {stage}/6" in line for line in lines) == 1
    for asset in ("Duck", "BoxTextured", "monkey", "teapot"):  # every asset's result, exactly once
        assert sum(re.search(rf"render_stage: {asset}-\w+ (ok|failed) in", line) is not None for line in lines) == 1
    assert sum("render summary:" in line for line in lines) == 1
    alarming = [line for line in lines if ALARMING.search(line) and not PROJECT_LINE.match(line)
                and not RAY_NOTES.search(line)]
    assert not alarming, alarming[:5]

    # The docs' Python on what `make run` wrote (blocks marked "runnable: after make run"), as
    # written, from the folder it ran in (`out/` there).
    monkeypatch.chdir(tmp_path)
    readme, data, serving = (run_python_blocks(doc, "after make run") for doc in ("README.md", "docs/data.md",
                                                                                  "docs/serving.md"))
    for sampled in (readme["out"], serving["out"]):
        assert np.shape(sampled.frames[0]) == (24, 32, 32, 3) and np.shape(sampled.cameras[0]) == (24, 4, 4)
        assert sampled.gaussians is not None
    assert (tmp_path / "my-videomv" / "reconstructor").is_dir()
    assert data["views"].shape == (24, 32, 32, 4) and data["grey"].shape == (24, 32, 32, 3)
    assert data["c2w"].shape == (24, 4, 4) and data["K"].shape == (3, 3)


def run_python_blocks(doc: str, name: str) -> dict:
    """Runs ``doc``'s Python blocks marked ``<!-- runnable: NAME -->`` in one namespace, returned."""
    namespace: dict = {}
    for block in runnable_blocks(REPO_ROOT / doc, name, "python"):
        exec(compile(block, doc, "exec"), namespace)
    return namespace


def test_the_image_model_runs_end_to_end_from_a_view_it_was_not_trained_on(tmp_path):
    """``--variant i2v``: the same stages with the tiny image-to-multi-view model; the input is the
    Duck rendered at an elevation no training orbit has, preprocessed by the endpoint (input.png),
    and the result is scored against the Duck like the text model's."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / "run_all.py"), "--variant", "i2v", "--out", str(out),
         "--finetune-steps", "3", "--autoencoder-steps", "5", "--recon-steps", "3", "--num-inference-steps", "3",
         "--render-resolution", "32", "--render-samples", "2", "--input-resolution", "64"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    result_dir = out / "result"
    record = json.loads((result_dir / "result.json").read_text())
    assert record["variant"] == "i2v" and record["scored_against"] == "Duck.glb" and record["background"] == [1.0] * 3
    assert np.isfinite(record["scores"]["psnr"]) and np.isfinite(record["scores"]["margin_db"])
    sent = np.asarray(Image.open(result_dir / "input_view.png"))
    seen = np.asarray(Image.open(result_dir / "input.png"))
    assert sent.shape == (64, 64, 4) and seen.shape == (32, 32, 3)  # the RGBA view, and what the model saw
    assert (seen[0, 0] > 250).all()  # on the image model's white background
    assert len(list((result_dir / "views").glob("view_*.png"))) == 24
