"""The training jobs' configuration: ``TrainConfig`` (the flags both jobs share, ``pipeline.cli``)
and ``WorkerConfig``, what the driver hands every Ray Train worker (typed, not a merged dict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.precision import TRAINING_PRECISIONS
from models.reconstructor.options import PRESETS
from pipeline.cli import check_minimums, option
from pipeline.tracking import ARTIFACTS_HELP

TRAINING_STATE = "training_state.pt"
OPTIMIZER_SHARD = "optimizer_shard_{rank}.pt"  # zero1: each rank's part of the optimizer state
EMA_SHARD = "ema_shard_{rank}.pt"  # each rank's part of the weights' moving average (models.generator.ema)
FINAL_MODEL = "final_model"
FINAL_MODEL_STEP_TAG = "final_model_step"  # the MLflow run's tag: the step whose weights final_model holds
OPTIMIZERS = ("adamw", "zero1")


@dataclass
class TrainConfig:
    """Flags shared by ``jobs/finetune.py`` and ``jobs/train_recon.py`` (``pipeline.cli``)."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {
        "model": "input", "output": "output", "data": "input", "latents": "input", "captions": "input",
        "image_data": "input", "mlflow_uri": "tracking", "mlflow_artifacts": "output"}
    # Fields only fine-tuning G reads: jobs/train_recon.py offers the others.
    FINETUNE_ONLY = ("image_data", "image_ratio", "sample_every", "sample_num_inference_steps", "latents", "condition_dropout",
                     "negative_prompt", "offset_noise", "ema_decay")

    model: str = option(help="diffusers directory of G (ModelScope T2V / I2VGen-XL layout, or fine-tuned)")
    output: str = option(help="storage path for checkpoints and the final model (folder or URI)")
    name: str = option(help="run name: re-submitting with the same name and output resumes")
    data: str | None = option(None, "orbit shards from jobs/render.py (folder or URI)")
    latents: str | None = option(
        None, "latent shards from jobs/encode.py: fine-tune G from them instead of --data's orbits, with the VAE and "
        "text encoder off the GPU (text model only)")
    steps: int = option(1000, "optimizer steps", minimum=1)
    num_workers: int = option(1, "Ray Train workers", minimum=1)
    cpus_per_worker: float | None = option(
        None, "CPUs reserved per worker (default: 1, or less where the cluster's CPUs would leave Ray Data's read "
        "and decode tasks none)", exclusive_minimum=0.0)
    wait_for_nodes: bool = option(
        False, "an autoscaling cluster: wait for the nodes the workers need instead of failing at once when the "
        "cluster cannot place them now")
    use_gpu: bool | None = option(
        None, "one GPU per worker; --no-use-gpu: CPUs only (default: GPUs where the cluster has one per worker "
        "now; an autoscaling cluster whose GPU nodes are at zero needs --use-gpu)")
    accelerator_type: str | None = option(None, "e.g. A100 (Ray's accelerator_type)")
    resources_per_worker: dict[str, float] = option(
        {}, "custom Ray resources per worker, e.g. trainer=1 (places workers on the nodes that advertise them)")
    micro_batch: int = option(1, "samples per worker per forward", minimum=1)
    optimizer: str = option("adamw", "adamw; or zero1: AdamW with its state sharded over the workers "
                            "(ZeroRedundancyOptimizer: 1/N of the 8 bytes per parameter; docs/costs.md)",
                            choices=OPTIMIZERS)
    global_batch: int = option(32, "samples per optimizer step over all workers, by gradient accumulation",
                               minimum=1)
    lr: float = option(3e-5, "AdamW learning rate", exclusive_minimum=0.0)
    lr_schedule: str = option("constant", "constant, or cosine: anneal to 5%% of --lr over --steps",
                              choices=("constant", "cosine"))
    precision: str = option("fp16", "autocast precision; fp16 uses a grad scaler on CUDA, a CPU runs bf16 for it "
                            "where it has bf16 instructions and fp32 where not", choices=TRAINING_PRECISIONS)
    gradient_checkpointing: bool = option(True, "recompute block activations in the backward pass (less memory)")
    checkpoint_every: int = option(500, "steps between checkpoints", minimum=1)
    log_every: int = option(10, "steps between progress lines/metrics", minimum=1)
    sample_every: int = option(0, "steps between sampled-view grids in MLflow (0: off)", minimum=0)
    sample_num_inference_steps: int = option(25, "DDIM steps of those samples", deprecated_alias="sample_steps",
                                              minimum=1)
    resolution: int = option(256, "training image size", minimum=8)
    captions: str | None = option(None, "CSV uid or file name,caption overriding the shards' captions")
    image_data: str | None = option(
        None, "optional Parquet of 2D images (columns image, caption; a file or a folder of *.parquet) mixed "
        "in as 1-frame videos")
    image_ratio: float = option(0.0, "share of micro-batches taken from --image-data")
    roll_orbits: bool = option(
        False, "start each training orbit at a random view (views and cameras together), so only the cameras "
        "tell which view a frame is (docs/results.md: camera control)")
    reverse_orbits: bool = option(False, "run half the training orbits backwards (views and cameras together)")
    # G's objective (jobs/finetune.py); None takes the authors' choice for the model's variant (models.variants.VARIANTS).
    condition_dropout: float | None = option(
        None, "share of samples trained unconditioned, for classifier-free guidance (default: 0.1 text, 0 image)")
    negative_prompt: str | None = option(
        None, "the text dropped samples get and guidance guides against, recorded in the model (default: the "
        "authors' negative prompt, models.prompts; '' for the empty prompt)")
    offset_noise: float | None = option(None, "offset-noise strength (default: 0 text, 0.1 image)", minimum=0.0)
    ema_decay: float | None = option(
        None, "keep an EMA of the weights with this decay, saved beside them as ema/ (default: none for text, "
        "0.9999 for image; 0: none)")
    max_decoders: int | None = option(
        None, "decode actors the data pool may scale up to, per dataset (default: the CPUs the workers leave, "
        "in 0.5-CPU shares)", minimum=1)
    shuffle_buffer: int = option(
        16, "rows shuffled in each worker's local buffer, every read in another order (seeded by --seed); the "
        "shards' file order is shuffled every read too; 0: neither, the shards' order", minimum=0)
    materialize_data: bool = option(
        False, "decode the shards once and keep the arrays in Ray's object store (data that fits in memory): "
        "otherwise every pass decodes again, which dominates when a pass is a few steps")
    data_passes: int = option(
        0, "passes over the data one read covers (one Ray Data execution, which takes seconds to start); 0: "
        "automatic, several when the data is a few files, so it is not read afresh every few steps "
        "(pipeline.data.datasets.plan_reads)", minimum=0)
    max_failures: int = option(2, "worker failures survived (-1: no limit, as in Ray's FailureConfig)", minimum=-1)
    keep_checkpoints: int = option(2, "checkpoints kept", minimum=1)
    mlflow_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    mlflow_artifacts: str | None = option(None, ARTIFACTS_HELP)
    experiment: str = option("videomv-finetune", "MLflow experiment")
    register_as: str | None = option(None, "register the final model in the MLflow model registry under this name "
                                           "(then load it as models:/NAME/latest)")
    seed: int = option(0, "seed of weights' noise, data order and condition dropout")
    fail_at_step: int | None = option(None, "fault drill: raise once at this step to exercise recovery",
                                       minimum=1)

    def __post_init__(self) -> None:
        check_minimums(self)
        if (self.data is None) == (self.latents is None):
            raise ValueError("give the training data: --data (orbit shards) or --latents (latent shards), one of them")
        if self.precision not in ("fp16", "bf16", "no"):
            raise ValueError(f"precision must be fp16, bf16 or no, got {self.precision!r}")
        if not 0.0 <= self.image_ratio < 1.0:
            raise ValueError("image_ratio must be in [0, 1)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.condition_dropout is not None and not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")

    def samples(self) -> int:
        """Samples the whole run draws at most, over all workers (every step's micro-batches on
        ``num_workers``): what a read of the data need cover (``pipeline.data.datasets.plan_reads``)."""
        return self.steps * self.micro_batch * self.num_workers * self.accumulation_steps(self.num_workers)

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per optimizer step on ``world_size`` workers, so that micro_batch x workers x
        steps = global_batch (the workers ask with their world size: a restarted group may differ)."""
        return max(1, self.global_batch // (self.micro_batch * world_size))


@dataclass(frozen=True)
class WorkerConfig:
    """What every training worker is given (``run_trainer``): the job's ``TrainConfig``, G's variant,
    the MLflow run the driver opened, and the trainer's own settings (``job``: the reconstructor's
    ``ReconConfig``, fine-tuning's ``FinetuneSettings``)."""

    train: TrainConfig
    variant: str
    mlflow_run_id: str
    mlflow_tracking_uri: str
    job: Any = None  # the trainer's own settings; this module does not name the trainers (they import it)


# The trainers' own settings live here, not beside their loops: Ray Train's controller unpickles the
# worker config, and a class from pipeline.train.finetune would make it import the models and diffusers
# first (about 4 s before it asks for the workers, in every fit).
@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning's own worker settings (``WorkerConfig.job``): the cameras of the training orbits,
    read from the shards by the driver (elevation, distance, fov: [low, high] each)."""

    training_cameras: dict[str, list[float]]


TARGET_BACKGROUNDS = ("random", "variant")


# What jobs/train_recon.py changes in TrainConfig's defaults: the learning rate comes from the preset's
# recipe (``models.reconstructor.options.PRESET_TRAINING``) unless given; its own experiment.
RECON_TRAIN_DEFAULTS = {"lr": None, "experiment": "videomv-recon"}


@dataclass
class ReconConfig:
    """Reconstructor settings on top of ``TrainConfig``."""
    # Fields that are paths or URIs (pipeline.submission: what a submitted job may be given).
    LOCATIONS = {"reconstructor": "input", "lpips_vgg": "input", "lpips_lin": "input"}

    reconstructor: str | None = option(
        None, "the reconstructor's weights to start from: the official LGM .safetensors or an LGM directory",
        deprecated_alias="lgm")
    lgm_preset: str = option("big", "architecture and camera setting; its training recipe gives the default --lr "
                             "(big 3e-5, small 4e-4, tiny 2e-3)", choices=tuple(sorted(PRESETS)))
    lgm_size: int | None = option(None, "override LGM input/output resolution (small CPU runs)", minimum=8)
    supervised_views: int = option(24, "views rendered and supervised", minimum=1)
    target_resolution: int | None = option(
        None, "size of the ground-truth views the reconstructor is supervised with (default: the shards' own, "
        "e.g. 512 while G is given --resolution 256); the Gaussians are rendered at the smaller of this and the "
        "LGM's output_size (512 for big)", minimum=1)
    background: str = option("random", "background of the supervised views: random (a colour per micro-step, "
                             "the authors' LGM training) or variant (grey for text, white for image)",
                             choices=TARGET_BACKGROUNDS)
    lpips_vgg: str | None = option(
        None, "torchvision VGG16 weights (.pth) for the LPIPS term (required by the big and small presets)")
    lpips_lin: str | None = option(
        None, "lpips 'lin' weights (vgg.pth) for the LPIPS term (default: the copy torchmetrics bundles)")

    def __post_init__(self) -> None:
        check_minimums(self)
        if self.background not in TARGET_BACKGROUNDS:
            raise ValueError(f"background must be one of {TARGET_BACKGROUNDS}, got {self.background!r}")
