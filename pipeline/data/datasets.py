"""Ray Data input for training: orbit shards (and optional 2D images), or latent shards, decoded into arrays.

Decoding (PNG -> composited, resized RGB), caption joining and camera flattening all happen in Ray
Data tasks, so the training workers receive ready arrays and only convert them to tensors.

Batches (numpy) as the workers see them:
    views    uint8 [N, F, H, W, 3]   RGB composited on the variant's background
    alphas   uint8 [N, F, H, W]      foreground masks (for the reconstructor)
    cameras  float32 [N, F, 16]      OpenGL c2w, row-major (``camera`` module)
    prompt   str [N]                 caption + ", 3d asset" (orbits) or the image's caption
F = 24 for orbits, 1 for images (cameras are then zeros and unused).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, NamedTuple

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from PIL import Image

from models.prompts import with_suffix
from models.variants import VARIANTS
from pipeline.data import schema, shards
from pipeline.data.sources import load_captions

ORBIT_COLUMNS = ["uid", "status", "caption", "c2w", "views"]
LATENT_COLUMNS = ["caption", "c2w", "posterior", "prompt_states"]
# Reading and decoding are light next to a training step; small CPU shares let them run beside the
# training workers even when those hold most CPUs (Ray Data only gets what Train leaves over).
READ_CPUS = 0.25
DECODE_CPUS = 0.5
DATA_CPUS_PER_DATASET = READ_CPUS + DECODE_CPUS  # one read task and one decoder: the least a dataset needs
# A read (one Ray Data execution: what a worker's iter_batches starts) takes seconds to start (the
# decode actors, the split's executor), so small data is read several passes at a time: at least
# this many files (row groups, decoded blocks) per read when no number of passes is given.
PIECES_PER_READ = 64


class Reads(NamedTuple):
    """How a dataset is read: ``passes`` over the data per read (one Ray Data execution), in
    blocks of at most ``rows_per_block`` rows (None: the blocks as read and decoded)."""
    passes: int
    rows_per_block: int | None = None


def plan_reads(pieces: int, rows: Callable[[], int], passes: int = 0, demand: int | None = None) -> Reads:
    """How to read data of ``pieces`` files (row groups, decoded blocks) holding ``rows()`` rows
    (counted only for small data): ``passes`` per read when given (``TrainConfig.data_passes``);
    when 0, enough for ``PIECES_PER_READ`` pieces, but no more than ``demand`` samples need (the
    run's: ``TrainConfig.samples``): a read streams ahead of the workers, so passes the run never
    reaches would be read and decoded for nothing. A read of several passes comes in blocks of
    about a ``PIECES_PER_READ``-th of a pass: Ray Data's split hands each worker whole blocks, and a
    pass in one block would give every worker the same rows at the same step."""
    if passes < 0:
        raise ValueError(f"passes must be 0 (automatic) or more, got {passes}")
    count = passes or math.ceil(PIECES_PER_READ / max(1, pieces))
    if count == 1:
        return Reads(1)
    total = rows()
    if not passes and demand is not None:
        count = max(1, min(count, math.ceil(demand / max(1, total))))
    return Reads(count, max(1, total // PIECES_PER_READ)) if count > 1 else Reads(1)


def _in_blocks(dataset: ray.data.Dataset, reads: Reads) -> ray.data.Dataset:
    return (dataset if reads.rows_per_block is None
            else dataset.repartition(target_num_rows_per_block=reads.rows_per_block))


def default_decoders(cluster_cpus: float, worker_cpus: float) -> int:
    """The decode actor pool's bound when none is given: every CPU the training workers leave, in
    ``DECODE_CPUS`` shares (at least one). The pool autoscales up to it as the workers' demand
    needs; ``benchmarks/train.py`` measures what one decoder gives (docs/costs.md)."""
    return max(1, int((cluster_cpus - worker_cpus - READ_CPUS) // DECODE_CPUS))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [F, H, W, C] -> [F, size, size, C] (area filter)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BOX)) for image in images])


class DecodeOrbits:
    """Ray Data UDF: shard rows -> training arrays; failed rows are dropped."""

    def __init__(self, background: tuple[int, int, int], resolution: int, captions: dict[str, str] | None = None):
        self.background = background
        self.resolution = resolution
        self.captions = captions or {}

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        views, alphas, cameras, prompts = [], [], [], []
        for row in batch.to_pylist():
            if row["status"] != schema.STATUS_OK:
                continue
            rgba = _resize(schema.decode_views(row), self.resolution)
            alpha = rgba[..., 3:4].astype(np.float32) / 255.0
            colour = np.asarray(self.background, np.float32)
            views.append(np.round(rgba[..., :3] * alpha + colour * (1.0 - alpha)).astype(np.uint8))
            alphas.append(rgba[..., 3])
            cameras.append(np.asarray(row["c2w"], np.float32).reshape(-1, 16))
            prompts.append(with_suffix(self.captions.get(row["uid"], row.get("caption"))))
        return _stack(views, alphas, cameras, prompts, self.resolution)


class DecodeImages:
    """Ray Data UDF: rows with an encoded ``image`` and a ``caption`` -> 1-frame "videos"."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        views, alphas, cameras, prompts = [], [], [], []
        for row in batch.to_pylist():
            image = Image.open(io.BytesIO(row["image"])).convert("RGB")
            side = min(image.size)  # centre crop to a square, then resize
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((self.resolution, self.resolution), Image.BOX)
            views.append(np.asarray(image)[None])
            alphas.append(np.full((1, self.resolution, self.resolution), 255, np.uint8))
            cameras.append(np.zeros((1, 16), np.float32))
            prompts.append((row.get("caption") or "").strip())
        return _stack(views, alphas, cameras, prompts, self.resolution)


def _stack(views: list, alphas: list, cameras: list, prompts: list, resolution: int) -> dict[str, np.ndarray]:
    if not views:
        return {"views": np.zeros((0, 1, resolution, resolution, 3), np.uint8),
                "alphas": np.zeros((0, 1, resolution, resolution), np.uint8),
                "cameras": np.zeros((0, 1, 16), np.float32), "prompt": np.array([], dtype=object)}
    return {"views": np.stack(views), "alphas": np.stack(alphas), "cameras": np.stack(cameras),
            "prompt": np.array(prompts, dtype=object)}


def read_ok_rows(item: dict[str, Any], columns: list[str] = ORBIT_COLUMNS) -> list[dict[str, Any]]:
    """One complete shard file -> its ok rows (only ``columns``: those training needs)."""
    filesystem, path = fsspec.core.url_to_fs(item["path"])
    with filesystem.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=columns, filters=[("status", "=", schema.STATUS_OK)])
    return table.to_pylist()


def _read_rows(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One complete latent shard file -> its rows."""
    filesystem, path = fsspec.core.url_to_fs(item["path"])
    with filesystem.open(path, "rb") as handle:
        return pq.read_table(handle, columns=LATENT_COLUMNS).to_pylist()


def orbit_dataset(data: str, variant: str, resolution: int, captions: str | None = None,
                  materialize: bool = False, max_decoders: int = 1, shuffle_seed: int | None = None,
                  passes: int = 0, demand: int | None = None) -> ray.data.Dataset:
    """Orbit shards at ``data`` (folder or URI) as training arrays for ``variant`` ("t2v"/"i2v").

    ``materialize`` decodes them once into Ray's object store (``TrainConfig.materialize_data``);
    ``max_decoders`` bounds the autoscaling pool of decode actors (``default_decoders``);
    ``passes``: passes over the shards one read covers (``plan_reads``; 0: automatic, for a run
    of ``demand`` samples);
    ``shuffle_seed`` shuffles the shard files (or decoded blocks) of a read: every one ``passes``
    times, in another order every read (``shuffled``).

    Shards are listed with ``pipeline.data.shards`` (complete files only) and read by light tasks; Ray
    Data's own file listing reserves a whole CPU, which a small cluster busy training may not have.
    """
    filesystem, _ = fsspec.core.url_to_fs(data)
    paths = [filesystem.unstrip_protocol(path) for path in shards.list_shards(data)]
    if not paths:
        raise ValueError(f"no orbit shards (*.parquet) found at {data}")
    table = load_captions(captions) if captions else None
    reads = (Reads(1) if materialize else
             plan_reads(len(paths), lambda: len(shards.read_rows(data, columns=["status"])), passes, demand))
    items = [{"path": path} for path in paths] * reads.passes
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    if not materialize:  # the file list, before any reading: nothing decoded waits behind the shuffle
        dataset = shuffled(dataset, shuffle_seed)
    dataset = dataset.flat_map(read_ok_rows, num_cpus=READ_CPUS)
    dataset = dataset.map_batches(DecodeOrbits, fn_constructor_kwargs={
        "background": VARIANTS[variant].background_uint8, "resolution": resolution, "captions": table,
    }, batch_format="pyarrow", batch_size=8, num_cpus=DECODE_CPUS,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, max_decoders)))
    if not materialize:
        return _in_blocks(dataset, reads)
    decoded = dataset.materialize()
    reads = plan_reads(decoded.num_blocks(), decoded.count, passes, demand)
    blocks = _in_blocks(decoded, reads).materialize().to_arrow_refs()  # each pass reads the same blocks
    return shuffled(ray.data.from_arrow_refs(blocks * reads.passes), shuffle_seed)


def check_resolution(data: str, resolution: int, purpose: str = "--resolution") -> int:
    """The smallest render size among the ok orbits at ``data``; ValueError when it is below
    ``resolution`` (training never upsamples renders: it would train on blur, silently)."""
    sizes = {int(row["width"]) for row in shards.read_rows(data, columns=["status", "width"]) if row.get("width")}
    if sizes and min(sizes) < resolution:
        raise ValueError(f"{purpose} {resolution} is larger than the renders at {data} ({min(sizes)} px): render at "
                         f"{resolution} px or more (jobs/render.py --resolution), or train at {min(sizes)}")
    return min(sizes) if sizes else resolution


def shuffled(dataset: ray.data.Dataset, seed: int | None) -> ray.data.Dataset:
    """``dataset`` with its blocks in a random order, another every read (execution) and the same
    sequence of orders for the same ``seed``; None: unchanged. The shuffle is all-to-all, so it is
    applied where blocks are small or already exist: the list of shard files (one block each), or
    the decoded blocks of materialised data. A read of several passes is shuffled as a whole (as
    tf.data's repeat-then-shuffle): each piece comes ``passes`` times, the passes not kept apart."""
    if seed is None:
        return dataset
    return dataset.randomize_block_order(seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True))


class DecodeLatents:
    """Ray Data UDF: latent shard rows (``pipeline.encode_stage``) -> the arrays the workers get:
    ``posterior`` float16 [N, F, 2C, h, w], ``prompt_states`` float16 [N, L, D], ``cameras`` float32
    [N, F, 16], ``prompt`` (what was encoded, for logs)."""

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        rows = batch.to_pylist()
        return {"posterior": np.stack([schema.decode_array(row["posterior"]) for row in rows]),
                "prompt_states": np.stack([schema.decode_array(row["prompt_states"]) for row in rows]),
                "cameras": np.stack([np.asarray(row["c2w"], np.float32).reshape(-1, 16) for row in rows]),
                "prompt": np.array([row["caption"] or "" for row in rows], dtype=object)}


def latent_dataset(data: str, max_decoders: int = 1, shuffle_seed: int | None = None, passes: int = 0,
                   demand: int | None = None) -> ray.data.Dataset:
    """Latent shards at ``data`` (``jobs/encode.py``) as training arrays (``DecodeLatents``), listed,
    read ``passes`` at a time and shuffled as ``orbit_dataset`` does."""
    filesystem, _ = fsspec.core.url_to_fs(data)
    paths = [filesystem.unstrip_protocol(path) for path in shards.list_shards(data)]
    if not paths:
        raise ValueError(f"no latent shards (*.parquet) found at {data}")
    reads = plan_reads(len(paths), lambda: _parquet_rows(paths), passes, demand)
    items = [{"path": path} for path in paths] * reads.passes
    dataset = shuffled(ray.data.from_items(items, override_num_blocks=len(items)), shuffle_seed)
    dataset = dataset.flat_map(_read_rows, num_cpus=READ_CPUS)
    return _in_blocks(dataset.map_batches(
        DecodeLatents, batch_format="pyarrow", batch_size=8, num_cpus=DECODE_CPUS,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, max_decoders))), reads)


def image_dataset(data: str, resolution: int, max_decoders: int = 1, shuffle_seed: int | None = None,
                  passes: int = 0, demand: int | None = None) -> ray.data.Dataset:
    """A Parquet of images (``image``: encoded bytes, ``caption``; one file or a folder of them) as
    1-frame training arrays, read by row group, ``passes`` at a time and shuffled as
    ``orbit_dataset`` does (Ray Data's ``read_parquet`` reads a path listed twice once)."""
    filesystem, root = fsspec.core.url_to_fs(data)
    files = shards.list_shards(data) if filesystem.isdir(root) else [root]
    if not files or not filesystem.exists(files[0]):
        raise ValueError(f"no image Parquet found at {data}")
    groups, rows = [], 0
    for path in files:
        with filesystem.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        groups += [{"path": filesystem.unstrip_protocol(path), "row_group": group}
                   for group in range(metadata.num_row_groups)]
        rows += metadata.num_rows
    reads = plan_reads(len(groups), lambda: rows, passes, demand)
    items = groups * reads.passes
    dataset = shuffled(ray.data.from_items(items, override_num_blocks=len(items)), shuffle_seed)
    dataset = dataset.flat_map(_read_images, num_cpus=READ_CPUS)
    return _in_blocks(dataset.map_batches(
        DecodeImages, fn_constructor_kwargs={"resolution": resolution}, batch_format="pyarrow", batch_size=32,
        num_cpus=DECODE_CPUS, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, max_decoders))), reads)


def _parquet_rows(paths: list[str]) -> int:
    """Rows in the Parquet files ``paths`` (URIs), from their footers."""
    total = 0
    for path in paths:
        filesystem, local = fsspec.core.url_to_fs(path)
        with filesystem.open(local, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def _read_images(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One row group of an image Parquet -> its rows."""
    filesystem, path = fsspec.core.url_to_fs(item["path"])
    with filesystem.open(path, "rb") as handle:
        return pq.ParquetFile(handle).read_row_group(item["row_group"], columns=["image", "caption"]).to_pylist()


def to_model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A worker-side batch -> tensors: views [N, F, 3, H, W] in [-1, 1], alphas [N, F, 1, H, W] in
    [0, 1], cameras [N, F, 4, 4] (None for 1-frame image batches), prompts."""
    import torch

    # Ray hands read-only arrays; torch.tensor copies them (as_tensor would warn that they are not writable).
    views = torch.tensor(batch["views"], device=device).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    alphas = torch.tensor(batch["alphas"], device=device)[:, :, None].float() / 255.0
    frames = views.shape[1]
    cameras = torch.tensor(batch["cameras"], device=device).reshape(len(views), frames, 4, 4) if frames > 1 else None
    return {"views": views, "alphas": alphas, "cameras": cameras, "prompts": [str(p) for p in batch["prompt"]]}


def latent_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A worker-side latent batch (``DecodeLatents``) -> tensors on ``device``: posterior [N, F, 2C, h, w]
    and prompt_states [N, L, D] (float16, as stored), cameras [N, F, 4, 4], prompts."""
    import torch

    posterior = torch.tensor(batch["posterior"], device=device)
    cameras = torch.tensor(batch["cameras"], device=device).reshape(*posterior.shape[:2], 4, 4)
    return {"posterior": posterior, "prompt_states": torch.tensor(batch["prompt_states"], device=device),
            "cameras": cameras, "prompts": [str(p) for p in batch["prompt"]]}
