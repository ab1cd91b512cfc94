"""Fine-tuning G on orbit shards with Ray Train (paper 3.2, supp. 8).

AdamW (lr 3e-5, no weight decay), global batch 32 reached by gradient accumulation, fp16 autocast
with a grad scaler (or bf16), gradient checkpointing, optional 2D images as 1-frame videos; per
variant the authors' condition dropout to the negative prompt (0.1 text, none for image), offset
noise (0.1 image) and EMA (0.9999 image, saved as ``ema/`` beside the trained weights):
``models.variants.VARIANTS``, each overridable. ``run_finetune`` is what ``jobs/finetune.py`` calls.
The model records the cameras of its training orbits (``CameraEmbedding.config.training_cameras``),
joined with what the starting model had recorded, the caption suffix and the negative prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from camera.training_cameras import camera_ranges
from models.pipeline_videomv.loading import EMA_FOLDER, detect_variant, resolve_model_dir
from models.generator.ema import ShardedEMA, swapped_in, write_record
from models.generator.objective import MultiViewBatch, diffusion_loss, reorder_orbits
from models.variants import VARIANTS
from models.prompts import AUTHORS_NEGATIVE_PROMPT
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from pipeline.cluster import connect
from pipeline.data import shards
from pipeline.serve.media import grid_image
from pipeline.tracking import tracking_uri
from pipeline.train.config import FinetuneSettings, TrainConfig, WorkerConfig
from pipeline.train.driver import TrainSummary, placed, run_trainer, summarise
from pipeline.train.worker import (WorkerState, build_optimizer, cycle_batches, ddp_options, prepare_checkpoint_space,
                                   publish_final, restore)
from pipeline.encode_stage import check_latents
from pipeline.data.datasets import (
    check_resolution,
    image_dataset,
    latent_dataset,
    latent_inputs,
    orbit_dataset,
    to_model_inputs,
)

logger = logging.getLogger(__name__)


def finetune_loop(loop_config: dict[str, WorkerConfig]) -> None:
    """Ray Train worker loop (every worker runs it; rank 0 also logs and checkpoints)."""
    worker = WorkerState(loop_config["worker"])
    config, settings = worker.train, worker.config.job
    torch.manual_seed(config.seed + worker.rank)
    model = VideoMVPipeline.from_pretrained(config.model, tracking_uri=worker.config.mlflow_tracking_uri,
                                           load_reconstructor=False)  # G alone: the reconstructor trains apart
    embedding = model.camera_embedding
    seen = settings.training_cameras
    embedding.register_to_config(training_cameras=camera_ranges(
        seen["elevation"], seen["distance"], seen["fov"], previous=embedding.config.get("training_cameras")),
        prompt_suffix=VARIANTS[model.variant].caption_suffix, negative_prompt=config.negative_prompt,
        fps=VARIANTS[model.variant].fps)
    model.freeze_encoders()
    from_latents = bool(config.latents)
    negative_states = None
    if from_latents:  # the VAE and text encoder stay on the CPU: only the negative prompt is encoded, once
        negative_states = model.encode_prompts([config.negative_prompt], device=torch.device("cpu"))[0]
        model.denoiser.to(worker.device)
        negative_states = negative_states.to(worker.device)
    else:
        model.to(worker.device)
    if config.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
    model.denoiser.train()
    optimizer = build_optimizer(model.denoiser.parameters(), config.lr, config.optimizer, worker.world_size)
    ema = (ShardedEMA(model.denoiser, config.ema_decay, worker.rank, worker.world_size) if config.ema_decay
           else None)
    prepare_checkpoint_space(worker, optimizer, ema)
    start = restore(model.load_trainable, optimizer, worker.scaler, worker.rank, worker.world_size, ema)
    # 1-frame image batches leave the camera embedding unused, which DDP must be told about.
    unet = (ray.train.torch.prepare_model(model.denoiser, parallel_strategy_kwargs=ddp_options(
        find_unused_parameters=bool(config.image_data))) if worker.world_size > 1 else model.denoiser)
    shuffle = {"shuffle_buffer": config.shuffle_buffer, "seed": config.seed + worker.rank}
    orbits = cycle_batches(ray.train.get_dataset_shard("orbits"), config.micro_batch, "orbit", **shuffle)
    images = (cycle_batches(ray.train.get_dataset_shard("images"), config.micro_batch, "image", **shuffle)
              if config.image_data else None)
    accumulation = config.accumulation_steps(worker.world_size)
    takes_image = VARIANTS[model.variant].takes_image  # the first view conditions the image model
    # The image-or-orbit choice is the same on every rank (a function of the micro-step): each rank then
    # takes as many batches of each dataset, so all ranks reach a read's end at the same micro-step.
    # (Per-rank draws deadlock: streaming_split holds a new read until every split asks for it while
    # the others wait in DDP.)
    generator = torch.Generator(device=worker.device).manual_seed(config.seed * 7919 + worker.rank + start)
    order = torch.Generator().manual_seed(config.seed * 104729 + worker.rank + start)  # roll/reverse draws
    last: dict[str, dict] = {}  # the step's last inputs, for the samples logged after it

    def micro_step(step: int, micro: int) -> tuple[torch.Tensor, int]:
        use_images = images is not None and takes_images((step - 1) * accumulation + micro, config.image_ratio)
        if from_latents:
            inputs = latent_inputs(next(orbits), worker.device)
            frames = "posterior"  # the frame axis to reorder with the cameras
        else:
            inputs = to_model_inputs(next(images if use_images else orbits), worker.device)
            frames = "views"
        if inputs["cameras"] is not None and (config.roll_orbits or config.reverse_orbits):
            inputs[frames], inputs["cameras"] = reorder_orbits(
                [inputs[frames], inputs["cameras"]], order, config.roll_orbits, config.reverse_orbits)
        if from_latents:
            batch = MultiViewBatch(views=None, cameras=inputs["cameras"], prompts=inputs["prompts"],
                                   posterior=inputs["posterior"], prompt_states=inputs["prompt_states"],
                                   negative_states=negative_states)
        else:
            batch = MultiViewBatch(views=inputs["views"], cameras=inputs["cameras"], prompts=inputs["prompts"],
                                   condition_images=inputs["views"][:, 0] if takes_image else None)
        last["inputs"] = inputs
        loss = diffusion_loss(model, batch, generator, config.condition_dropout, worker.autocast_dtype, unet,
                              config.negative_prompt, config.offset_noise)
        return loss, len(inputs["prompts"])

    with worker.mlflow() as mlflow:
        def log_samples(step: int) -> None:
            if worker.is_chief and config.sample_every and (step % config.sample_every == 0 or step == config.steps):
                _log_samples(model, last["inputs"], config, mlflow, step)

        worker.train_steps(start, optimizer, micro_step, model.save_trainable,
                           network=None if unet is model.denoiser else unet, ema=ema, after_step=log_samples)
        averaged = ema.gathered() if ema is not None else None  # a collective: every rank
        if worker.is_chief:
            publish_final(lambda directory: save_with_ema(model, directory, averaged, config.ema_decay, config.steps),
                          config, mlflow)


def takes_images(micro_step: int, ratio: float) -> bool:
    """Whether micro-batch ``micro_step`` (counted from 0 over the whole run) comes from the image
    data: exactly ``ratio`` of every run of micro-batches, evenly spread (a random draw per
    micro-batch only gives that share on average, far from it over a short run), and the same
    after a resume."""
    return int((micro_step + 1) * ratio + 1e-9) > int(micro_step * ratio + 1e-9)


def save_with_ema(model: VideoMVPipeline, directory: str, averaged: dict[str, torch.Tensor] | None,
                  decay: float | None = None, steps: int = 0) -> None:
    """The model as trained, and with an EMA its averaged unet/ and camera_embedding/ under ``ema/``
    (``VideoMVPipeline.from_pretrained(..., use_ema=True)`` loads them) with its ``EMA_RECORD``."""
    model.save_pretrained(directory)
    if averaged is not None:
        with swapped_in(model.denoiser, averaged):
            model.save_trainable(os.path.join(directory, EMA_FOLDER))
        write_record(os.path.join(directory, EMA_FOLDER), decay, steps)


def _log_samples(model: VideoMVPipeline, inputs: dict, config: TrainConfig, mlflow: Any, step: int) -> None:
    """A grid of views sampled for the current batch's first prompt (or image), as an artifact."""
    was_training = model.denoiser.training
    model.denoiser.eval()
    model.set_progress_bar_config(disable=True)
    condition = ({"prompt": inputs["prompts"][:1]} if VARIANTS[model.variant].takes_prompt
                 else {"image": inputs["views"][:1, 0] / 2 + 0.5})
    views = model(**condition, num_inference_steps=config.sample_num_inference_steps, output_type="pt",
                 generator=torch.Generator().manual_seed(step)).frames
    model.denoiser.train(was_training)
    if mlflow is not None:
        mlflow.log_image(grid_image(views[0]), f"samples/step_{step:07d}.png")


def with_variant_recipe(config: TrainConfig, variant: str) -> TrainConfig:
    """``config`` with every objective option left None set to the authors' choice for ``variant``
    (``models.variants.VARIANTS``; the authors' negative prompt), so that the run records what it used."""
    recipe = VARIANTS[variant]
    return dataclasses.replace(
        config,
        condition_dropout=recipe.condition_dropout if config.condition_dropout is None else config.condition_dropout,
        offset_noise=recipe.offset_noise if config.offset_noise is None else config.offset_noise,
        ema_decay=(recipe.ema_decay or 0.0) if config.ema_decay is None else config.ema_decay,
        negative_prompt=AUTHORS_NEGATIVE_PROMPT if config.negative_prompt is None else config.negative_prompt)


def run_finetune(config: TrainConfig) -> TrainSummary:
    """Fine-tune G on ``config.data`` (orbit shards) or ``config.latents`` (latent shards, the text
    model; checked to come from this model's encoders at ``config.resolution``); resumable by
    ``config.name``."""
    # Workers fetch config.model themselves (each node caches it); the driver only reads its variant.
    model_dir = resolve_model_dir(config.model, tracking_uri(config.mlflow_uri))
    variant = detect_variant(model_dir)
    config = with_variant_recipe(config, variant)
    if config.latents:
        refused = [flag for flag, given in (("an image model", VARIANTS[variant].takes_image),
                                            ("--image-data", config.image_data),
                                            ("--sample-every", config.sample_every), ("--captions", config.captions),
                                            ("--materialize-data", config.materialize_data)) if given]
        if refused:
            raise ValueError(f"--latents cannot be combined with {', '.join(refused)}: the latents hold the text "
                             "model's encoded orbits and captions only (train from --data instead)")
        check_latents(config.latents, model_dir, config.resolution)
    else:
        check_resolution(config.data, config.resolution)
    connect()
    config = placed(config, num_datasets=2 if config.image_data else 1)
    shuffle_seed = config.seed if config.shuffle_buffer else None
    reads = {"passes": config.data_passes, "demand": config.samples()}

    def datasets() -> dict[str, Any]:
        if config.latents:
            built = {"orbits": latent_dataset(config.latents, config.max_decoders, shuffle_seed, **reads)}
        else:
            built = {"orbits": orbit_dataset(config.data, variant, config.resolution, config.captions,
                                             materialize=config.materialize_data, max_decoders=config.max_decoders,
                                             shuffle_seed=shuffle_seed, **reads)}
        if config.image_data:
            built["images"] = image_dataset(config.image_data, config.resolution, config.max_decoders,
                                            shuffle_seed=shuffle_seed, **reads)
        return built

    columns = ["elevation", "distance", "fov"] + ([] if config.latents else ["status"])  # latent rows are all ok
    rows = shards.read_rows(config.data or config.latents, columns=columns)
    cameras = camera_ranges(*([row[name] for row in rows] for name in ("elevation", "distance", "fov")))
    return summarise(run_trainer(finetune_loop, config, datasets, variant, FinetuneSettings(cameras)), config)
