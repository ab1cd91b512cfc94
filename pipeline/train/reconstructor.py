"""Training the reconstructor on G's one-step predictions with Ray Train (paper 3.3, supp. 7.3).

G stays frozen. Per batch (``reconstructor_batch``): encode the ground-truth views at G's resolution,
draw t in [0, 700], noise the latents, one G forward (under the job's autocast), decode the
predicted x0 at 4 random views only and give those to LGM; every supervised view (all 24 by
default) is compared with the ground truth, at the supervision resolution (the LGM's
``output_size`` by default: 512 px for "big" while G sees 256), on a random background colour per
micro-step (the authors' LGM training; G's inputs keep the variant's background).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from models.reconstructor.model import LGM
from models.reconstructor.options import PRESET_TRAINING, PRESETS
from models.variants import VARIANTS
from models.pipeline_videomv.loading import detect_variant, resolve_model_dir
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.reconstructor.loss import ReconstructionLoss, missing_lpips
from models.reconstructor.training import downsample, reconstruction_step
from models.pipeline_videomv.one_step import decode_x0, one_step_x0_latents
from pipeline.cluster import connect
from pipeline.tracking import tracking_uri
from pipeline.train.config import ReconConfig, TrainConfig, WorkerConfig
from pipeline.train.driver import TrainSummary, placed, run_trainer, summarise
from pipeline.train.worker import (WorkerState, build_optimizer, cycle_batches, ddp_options, prepare_checkpoint_space,
                                   publish_final, restore)
from pipeline.data.datasets import check_resolution, orbit_dataset, to_model_inputs

logger = logging.getLogger(__name__)
MAX_TIMESTEP = 700


def build_lgm(recon: ReconConfig, tracking_uri: str | None = None) -> LGM:
    """The reconstructor to train: ``recon.reconstructor``'s weights, or a fresh one of the preset (and size)."""
    options = PRESETS[recon.lgm_preset]
    if recon.lgm_size:
        options = dataclasses.replace(options, input_size=recon.lgm_size, output_size=recon.lgm_size)
    return LGM.load(recon.reconstructor, options, tracking_uri) if recon.reconstructor else LGM(options)


@dataclasses.dataclass
class ReconBatch:
    """What one reconstructor micro-step trains on.

    Attributes:
        inputs: [B, 4, 3, r, r] in [0, 1], G's one-step predictions at ``input_views`` (G's
            resolution r, the variant's background): what LGM is given.
        input_views: [4] sorted view indices; supervised: [S] view indices.
        targets: [B, F, 3, R, R] in [0, 1], the ground-truth views (the supervision resolution R or
            more) composited on ``background``; alphas [B, F, 1, R, R]; cameras [B, F, 4, 4].
    """

    inputs: torch.Tensor
    input_views: torch.Tensor
    supervised: torch.Tensor
    targets: torch.Tensor
    alphas: torch.Tensor
    cameras: torch.Tensor
    background: tuple[float, float, float]


def reconstructor_batch(generator_model: VideoMVPipeline, inputs: dict, rng: torch.Generator, resolution: int,
                        supervised_views: int, background: str = "random",
                        autocast_dtype: torch.dtype | None = None) -> ReconBatch:
    """One micro-batch of reconstructor training from decoded orbits (``to_model_inputs``).

    G is given the views at ``resolution`` (downsampled when the orbits are larger); LGM gets G's
    predictions at 4 random views, and the targets are the ground truth at every view, recomposited
    on a random colour (``background`` "random") or kept on the variant's. Draws, in order, from
    ``rng``: timesteps and noise, the input views, the supervised views, the background colour.
    """
    # the shards' own composite (8-bit: 128 for grey)
    variant_background = torch.tensor(VARIANTS[generator_model.variant].background_uint8, device=rng.device) / 255.0
    views = inputs["views"]
    generator_views = downsample(views, resolution) if views.shape[-1] > resolution else views
    latents = one_step_latents(generator_model, {**inputs, "views": generator_views}, rng, autocast_dtype)
    frames = views.shape[1]
    input_views = torch.randperm(frames, generator=rng, device=rng.device)[:4].sort().values
    supervised = torch.randperm(frames, generator=rng, device=rng.device)[:supervised_views]
    predicted = decode_x0(generator_model, latents, input_views)  # only the 4 views LGM is given
    colour = (torch.rand(3, generator=rng, device=rng.device) if background == "random" else variant_background)
    truth = views / 2 + 0.5  # on the variant's background: put the new colour where the object is not
    targets = truth + (colour - variant_background).view(1, 1, 3, 1, 1) * (1 - inputs["alphas"])
    return ReconBatch(predicted, input_views, supervised, targets.clamp(0, 1), inputs["alphas"], inputs["cameras"],
                      tuple(float(c) for c in colour))


def load_lgm_into(model: LGM) -> Any:
    def load(directory: str) -> None:
        model.load_state_dict(LGM.from_pretrained(directory).state_dict(), strict=True)
    return load


def one_step_latents(generator_model: VideoMVPipeline, inputs: dict, rng: torch.Generator,
                     autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """G's predicted clean latents [B, C, F, h, w] from noised ground truth at t <= 700 (decode the
    views needed with ``models.pipeline_videomv.one_step.decode_x0``)."""
    timesteps = torch.randint(0, MAX_TIMESTEP + 1, (len(inputs["views"]),), generator=rng, device=rng.device)
    return one_step_x0_latents(generator_model, inputs["views"], inputs["cameras"], inputs["prompts"], timesteps, rng,
                               autocast_dtype=autocast_dtype)


def recon_loop(loop_config: dict[str, WorkerConfig]) -> None:
    """Ray Train worker loop (every worker runs it; rank 0 also logs and checkpoints)."""
    worker = WorkerState(loop_config["worker"])
    config, recon = worker.train, worker.config.job
    torch.manual_seed(config.seed + worker.rank)
    generator_model = VideoMVPipeline.from_pretrained(config.model, tracking_uri=worker.config.mlflow_tracking_uri,
                                                      load_reconstructor=False)
    generator_model.freeze_encoders()
    generator_model.denoiser.requires_grad_(False).eval()
    generator_model.to(worker.device)
    lgm = build_lgm(recon, worker.config.mlflow_tracking_uri).to(worker.device).train()
    loss_fn = ReconstructionLoss.from_paths(recon.lpips_vgg, recon.lpips_lin,
                                            required=PRESET_TRAINING[recon.lgm_preset].lpips_required)
    loss_fn.to(worker.device)
    optimizer = build_optimizer(lgm.parameters(), config.lr, config.optimizer, worker.world_size)
    prepare_checkpoint_space(worker, optimizer, None)
    start = restore(load_lgm_into(lgm), optimizer, worker.scaler, worker.rank, worker.world_size)
    network = (ray.train.torch.prepare_model(lgm, parallel_strategy_kwargs=ddp_options())
               if worker.world_size > 1 else lgm)
    orbits = cycle_batches(ray.train.get_dataset_shard("orbits"), config.micro_batch, "orbit",
                           shuffle_buffer=config.shuffle_buffer, seed=config.seed + worker.rank)
    rng = torch.Generator(device=worker.device).manual_seed(config.seed * 7919 + worker.rank + start)

    def micro_step(step: int, micro: int) -> tuple[torch.Tensor, int]:
        batch = reconstructor_batch(generator_model, to_model_inputs(next(orbits), worker.device), rng,
                                    config.resolution, recon.supervised_views, recon.background, worker.autocast_dtype)
        with torch.autocast(worker.device.type, dtype=worker.autocast_dtype, enabled=worker.autocast_dtype is not None):
            terms, _, _ = reconstruction_step(lgm, loss_fn, batch.targets, batch.alphas, batch.cameras,
                                              batch.input_views, batch.supervised, batch.background,
                                              network=network, input_images=batch.inputs)
        return terms["loss"], len(batch.inputs)

    with worker.mlflow() as mlflow:
        worker.train_steps(start, optimizer, micro_step, lgm.save_pretrained,
                           network=None if network is lgm else network)
        if worker.is_chief:
            publish_final(lgm.save_pretrained, config, mlflow)


def with_preset_recipe(config: TrainConfig, recon: ReconConfig) -> TrainConfig:
    """``config`` with the preset's learning rate where none is given; ValueError when the preset's
    recipe needs LPIPS and its weight files are not given."""
    recipe = PRESET_TRAINING[recon.lgm_preset]
    if missing_lpips(recon.lpips_vgg, recon.lpips_lin):
        if recipe.lpips_required:
            ReconstructionLoss.from_paths(recon.lpips_vgg, recon.lpips_lin, required=True)
        logger.warning("LPIPS weights not given (%s): the %s preset trains without the LPIPS term, on RGB and "
                       "alpha MSE only", missing_lpips(recon.lpips_vgg, recon.lpips_lin), recon.lgm_preset)
    return config if config.lr is not None else dataclasses.replace(config, lr=recipe.lr)


def run_train_recon(config: TrainConfig, recon: ReconConfig) -> TrainSummary:
    """Train the reconstructor on G's one-step predictions; resumable by ``config.name``.

    ``config.lr`` None takes the preset's (``PRESET_TRAINING``). A preset whose recipe includes
    LPIPS refuses to start without its weights (before any Ray work).
    """
    if config.data is None:
        raise ValueError("the reconstructor trains on orbit shards (--data): precomputed latents hold no pixels")
    config = with_preset_recipe(config, recon)
    # Workers fetch config.model themselves (each node caches it); the driver only reads its variant.
    model_dir = resolve_model_dir(config.model, tracking_uri(config.mlflow_uri))
    variant = detect_variant(model_dir)
    connect()
    # The orbits are decoded at the larger of G's and the supervision's resolution (never upsampled).
    rendered = check_resolution(config.data, config.resolution)
    decoded = max(config.resolution, recon.target_resolution or rendered)
    check_resolution(config.data, decoded, "--target-resolution")
    config = placed(config, num_datasets=1)

    def datasets() -> dict[str, Any]:
        return {"orbits": orbit_dataset(config.data, variant, decoded, config.captions,
                                        materialize=config.materialize_data, max_decoders=config.max_decoders,
                                        shuffle_seed=config.seed if config.shuffle_buffer else None,
                                        passes=config.data_passes, demand=config.samples())}

    result = run_trainer(recon_loop, config, datasets, variant, recon)
    return summarise(result, config)
