"""Precomputed latents: orbit shards -> latent shards, once, on Ray Data actors (``jobs/encode.py``).

Fine-tuning from pixels runs G's VAE and text encoder on every micro-step on the training GPUs
(about 6.5 TFLOP of VAE encode per sample against ~28 TFLOP of UNet forward and backward at full
size, ``docs/costs.md``) and ships 6.3 MB of decoded uint8 views per sample. Ray's Stable Diffusion
pre-training template encodes once instead; so does this stage. Each orbit row becomes one latent
row (``pipeline.data.schema.LATENT_SCHEMA``, ``docs/data.md``):

- the VAE posterior's parameters (mean and log-variance, fp16), not one sample: every training step
  still draws its own latents from them, with its own generator, as the pixel path does;
- the text encoder's states of the caption (with the suffix, once), fp16;
- the cameras and the orbit's elevation, distance and fov (the model's training-camera record);
- a fingerprint of the encoders' weights, which fine-tuning checks against its model's.

Actors hold the VAE and text encoder only (no UNet): on GPUs in production
(``--num-gpus-per-actor 1``), on CPUs here. Text model only: the image model's condition (a CLIP
image embedding and a fresh VAE draw of the first view) trains from pixels.
"""

from __future__ import annotations

import dataclasses
import logging

import fsspec
import pyarrow as pa
import ray
import torch

from models.pipeline_videomv.loading import detect_variant, resolve_model_dir
from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
from models.variants import VARIANTS
from pipeline.cluster import connect
from pipeline.data import schema, shards
from pipeline.encode_config import EncodeConfig
from pipeline.data.sources import load_captions
from pipeline.data.datasets import READ_CPUS, DecodeOrbits, check_resolution, read_ok_rows

logger = logging.getLogger(__name__)
ENCODE_COLUMNS = ["uid", "status", "caption", "c2w", "views", "elevation", "distance", "fov"]


class EncodeLatents:
    """Ray Data UDF (an actor): ok orbit rows -> latent rows (``LATENT_SCHEMA``)."""

    def __init__(self, model_dir: str, resolution: int, captions: dict[str, str] | None = None) -> None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoders = VideoMVPipeline.load_encoders(model_dir, device)
        self.fingerprint = self.encoders.encoders_fingerprint()
        self.resolution = resolution
        self.decode = DecodeOrbits(VARIANTS[self.encoders.variant].background_uint8, resolution, captions)

    @torch.no_grad()
    def __call__(self, table: pa.Table) -> pa.Table:
        rows = [row for row in table.to_pylist() if row["status"] == schema.STATUS_OK]
        arrays = self.decode(table)
        if not rows:
            return schema.LATENT_SCHEMA.empty_table()
        views = torch.from_numpy(arrays["views"]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        posterior = self.encoders.encode_posterior(views).float().cpu().numpy()
        prompts = [str(p) for p in arrays["prompt"]]
        states = self.encoders.encode_prompts(prompts).float().cpu().numpy()
        out = [{"schema_version": schema.LATENT_SCHEMA_VERSION, "uid": row["uid"], "caption": prompt, "variant": "t2v",
                "resolution": self.resolution, "posterior": schema.encode_array(posterior[i]),
                "prompt_states": schema.encode_array(states[i]), "c2w": row["c2w"], "elevation": row["elevation"],
                "distance": row["distance"], "fov": row["fov"], "encoders": self.fingerprint}
               for i, (row, prompt) in enumerate(zip(rows, prompts))]
        return pa.Table.from_pylist(out, schema=schema.LATENT_SCHEMA)


@dataclasses.dataclass
class EncodeSummary:
    output: str
    orbits: int
    files: int
    bytes_per_orbit: float


def run_encode(config: EncodeConfig) -> EncodeSummary:
    """Encode every ok orbit under ``config.data`` into latent shards under ``config.output``."""
    model_dir = resolve_model_dir(config.model)
    variant = detect_variant(model_dir)
    if VARIANTS[variant].takes_image:
        raise ValueError(f"{config.model} is an image-to-multi-view model: precomputed latents hold the text "
                         "model's inputs only (the image model trains from the orbit shards)")
    check_resolution(config.data, config.resolution)
    if shards.list_shards(config.output):
        raise ValueError(f"{config.output} already holds latent shards: give an empty --output (nothing is overwritten)")
    filesystem, _ = fsspec.core.url_to_fs(config.data)
    paths = [filesystem.unstrip_protocol(path) for path in shards.list_shards(config.data)]
    if not paths:
        raise ValueError(f"no orbit shards (*.parquet) found at {config.data}")
    connect()
    captions = load_captions(config.captions) if config.captions else None
    dataset = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=len(paths))
    dataset = dataset.flat_map(read_ok_rows, fn_kwargs={"columns": ENCODE_COLUMNS}, num_cpus=READ_CPUS)
    dataset = dataset.map_batches(
        EncodeLatents, fn_constructor_kwargs={"model_dir": model_dir, "resolution": config.resolution,
                                              "captions": captions},
        batch_format="pyarrow", batch_size=config.batch_size, num_gpus=config.num_gpus_per_actor,
        num_cpus=config.num_cpus_per_actor, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.max_actors))
    dataset.write_parquet(config.output, max_rows_per_file=config.rows_per_file)
    written = shards.list_shards(config.output)
    out_fs, _ = fsspec.core.url_to_fs(config.output)
    orbits = len(shards.read_rows(config.output, columns=["uid"]))
    total = sum(out_fs.size(path) for path in written)
    summary = EncodeSummary(config.output, orbits, len(written), total / max(orbits, 1))
    logger.info("encoded %d orbits into %d latent shard(s) at %s (%.2f MB per orbit)", orbits, len(written),
                config.output, summary.bytes_per_orbit / 1e6)
    return summary


def check_latents(latents: str, model_dir: str, resolution: int) -> None:
    """ValueError unless the latent shards at ``latents`` were encoded at ``resolution`` by the VAE
    and text encoder of ``model_dir`` (the fingerprint of their weights), so that training from them
    is training on what the model would have encoded."""
    rows = shards.read_rows(latents, columns=["variant", "resolution", "encoders"])
    if not rows:
        raise ValueError(f"no latent shards found at {latents} (jobs/encode.py writes them)")
    fingerprints = {row["encoders"] for row in rows}
    resolutions = {row["resolution"] for row in rows}
    if resolutions != {resolution}:
        raise ValueError(f"the latents at {latents} were encoded at {sorted(resolutions)} px, not --resolution "
                         f"{resolution}")
    expected = VideoMVPipeline.load_encoders(model_dir, torch.device("cpu")).encoders_fingerprint()
    if fingerprints != {expected}:
        raise ValueError(f"the latents at {latents} were encoded by other encoders than {model_dir}'s VAE and text "
                         "encoder: encode again with jobs/encode.py --model set to this model")
