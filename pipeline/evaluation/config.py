"""The flags of ``jobs/evaluate.py`` (``EvaluationConfig``), in a module without the model libraries
so that ``--help`` is quick."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.gaussians.fit import FitConfig
from models.precision import DTYPE_CHOICES
from pipeline.cli import check_minimums, option
from pipeline.tracking import ARTIFACTS_HELP

SETTINGS = ("3d-aware", "plain")


@dataclass
class EvaluationConfig:
    """Everything ``jobs/evaluate.py`` exposes as flags (``pipeline.cli``)."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {
        "model": "input", "reconstructor": "input", "prompts": "input", "shards": "input", "lpips_vgg": "input",
        "lpips_lin": "input", "clip": "input", "raft": "input", "output": "output", "mlflow_uri": "tracking",
        "mlflow_artifacts": "output"}

    model: str = option(help="diffusers-layout directory of the multi-view model (text- or image-to-multi-view)")
    reconstructor: str | None = option(None, "LGM directory or official .safetensors (needed for 3d-aware)")
    prompts: str | None = option(None, "text-to-MV: prompt file, one prompt per line ('#' comments skipped)")
    shards: str | None = option(None, "image-to-MV: held-out orbit shards (local path or fsspec URI)")
    max_samples: int | None = option(None, "evaluate only the first N prompts/objects", minimum=1)
    settings: tuple[str, ...] = option(SETTINGS, "sampling settings to compare", choices=SETTINGS)
    num_inference_steps: int = option(50, "DDIM steps", deprecated_alias="steps", minimum=1)
    schedule: str = option("authors", "3D-aware reconstruction steps (authors: 20/30/40 of 50; every: every 10)",
                           choices=("authors", "every"))
    mode: str = option("two", "3D-aware form", choices=("two", "one"))
    seed: int = option(0, "seed of sample 0 (sample i uses seed + i)")
    fit: FitConfig = field(default_factory=FitConfig, metadata={"prefix": "fit_"})
    lpips_vgg: str | None = option(None, "torchvision VGG16 weights (.pth) for LPIPS")
    lpips_lin: str | None = option(None, "lpips 'lin' weights (vgg.pth) for LPIPS "
                                         "(default: torchmetrics' bundled copy)")
    clip: str | None = option(None, "local Hugging Face CLIP directory (CLIP score)")
    raft: str | None = option(None, "RAFT checkpoint, e.g. raft-things.pth (flow-warping RMSE)")
    raft_iterations: int = option(12, "RAFT update iterations", minimum=1)
    output: str | None = option(None, "also write results.csv, table.md and grids here")
    mlflow_artifacts: str | None = option(None, ARTIFACTS_HELP)
    experiment: str = option("videomv-eval", "MLflow experiment")
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    run_name: str | None = option(None, "MLflow run name")
    dtype: str = option("auto", "G's and the reconstructor's precision (auto: fp16 on a GPU, fp32 on a CPU); "
                        "the metrics and the Gaussian fit run in fp32", choices=DTYPE_CHOICES)
    use_ema: bool = option(False, "evaluate G's moving-average weights (ema/, from fine-tuning with --ema-decay)")
    geometry: bool = option(True, "image-to-MV: mesh each sample's Gaussians and score it against the held-out "
                                  "asset's mesh (Chamfer, F-score, volume IoU); needs the reconstructor and the "
                                  "assets' files where the shards' uri column says")

    def __post_init__(self) -> None:
        check_minimums(self)
        unknown = [name for name in self.settings if name not in SETTINGS]
        if unknown or not self.settings:
            raise ValueError(f"settings must be drawn from {SETTINGS}, got {self.settings}")
