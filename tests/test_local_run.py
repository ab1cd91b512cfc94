"""The README's main job, reduced (fewer steps), end to end: render -> fine-tune -> reconstructor
training -> Serve -> prompt -> files, all in one MLflow experiment."""

from __future__ import annotations

import mlflow
from PIL import Image

from conftest import REPO_ROOT
from models.ply import load_ply
from pipeline.local_run import LocalRunConfig, run_local


def test_the_whole_pipeline_runs_locally(ray_local, tmp_path):
    out = tmp_path / "out"
    paths = run_local(LocalRunConfig(assets=str(REPO_ROOT / "assets"), out=str(out), finetune_steps=3,
                                     recon_steps=3, sampling_steps=5, render_resolution=32, render_samples=2))
    result = out / "result"
    assert len(list((result / "views").glob("view_*.png"))) == 24
    assert Image.open(result / "grid.png").size == (6 * 32, 4 * 32)
    assert Image.open(result / "orbit.gif").n_frames == 24
    assert load_ply(str(result / "gaussians.ply")).count > 0
    mlflow.set_tracking_uri(paths["mlflow"])
    runs = mlflow.search_runs(experiment_names=["videomv-local"], output_format="list")
    assert sorted(run.info.run_name for run in runs) == ["finetune", "generate", "reconstructor", "render"]
