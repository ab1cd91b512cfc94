"""``benchmarks/gpu_check.py --smoke``: the GPU check suite's code on the CPU with tiny models, so
that the suite a GPU machine runs is known to work before one is lent."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.starts_early([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--markdown", "{folder}/table.md"])
def test_the_gpu_check_suite_runs_on_the_cpu_with_tiny_models(early_run):
    table = early_run.folder / "table.md"
    code, stdout, stderr = early_run.wait(timeout=900)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    rows = [line.split(" | ") for line in table.read_text().splitlines()[2:]]
    checks = {row[0].lstrip("| ") for row in rows}
    assert checks == {"rasteriser", "generators", "training", "sampling", "reconstructor", "fit", "finetune_job",
                      "mesh", "distillation", "gpu_tests"}
    results = [row[-1].rstrip(" |") for row in rows]
    assert not [r for r in results if r.startswith("FAILED")]
    assert "skipped: needs CUDA" in results  # gsplat, on this CPU
    assert sum(row[0].lstrip("| ") == "sampling" for row in rows) == 8  # 2 dtypes x plain/3D-aware x 2 batches
    assert any("resumed at step 3" in r for r in results)
    assert sum("ZeRO-1" in row[1] for row in rows) == 2  # micro-batches 1 and 2, with the sharded optimizer
    assert sum(row[0].lstrip("| ") == "distillation" and "steps/s" in row[-1] for row in rows) == 2  # x0 and SDS
    # Each row is printed as it finishes, the same as the file's.
    assert [line for line in stdout.splitlines() if line.startswith("|")] == table.read_text().splitlines()


def test_checks_that_would_not_fit_the_budget_are_skipped_rows(tmp_path):
    table = tmp_path / "table.md"
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--only", "fit,mesh", "--budget", "1",
                           "--markdown", str(table)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = table.read_text().splitlines()[2:]
    assert len(rows) == 2 and all("skipped: would not fit the --budget" in row for row in rows), rows


def test_the_gpu_suite_samples_g_in_eval_mode_as_loaded():
    """Built modules are in training mode (the UNet's temporal convolutions then drop out while
    sampling); the suite's G is put in eval mode, as ``from_pretrained`` returns it."""
    from benchmarks.full_size import in_eval_mode
    from models.toy.tiny import build_tiny

    model = build_tiny("t2v")
    assert model.denoiser.training
    in_eval_mode(model)
    assert not [name for component in (model.denoiser, model.vae, model.text_encoder)
                for name, module in component.named_modules() if module.training]
