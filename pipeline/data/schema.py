"""The orbit shard format: one Parquet row per object, written by the render stage; and the latent
shard format (``LATENT_SCHEMA``), one row per orbit, written by the encode stage.

Everything downstream (training, reconstruction, evaluation) reads rows through this module. The
schema is versioned (``SCHEMA_VERSION``, stored per row and in the file metadata) and documented in
``docs/data.md``. Conventions are those of the ``camera`` module: ``c2w`` is OpenGL camera-to-world
in the Y-up world, flattened row-major; ``intrinsics`` is a pinhole K in pixels (OpenCV pixel
convention); angles are degrees.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
from PIL import Image

SCHEMA_VERSION = 3  # 2 added render_node, 3 missing_textures; older files read the same, those columns missing
STATUS_OK = "ok"
STATUS_FAILED = "failed"
BACKGROUND_TRANSPARENT = "transparent"

SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "local", "manifest" or "objaverse"
        pa.field("uri", pa.string(), nullable=False),  # where the asset was read from
        pa.field("status", pa.string(), nullable=False),  # "ok" or "failed"
        pa.field("error", pa.string()),  # null when ok
        pa.field("caption", pa.string()),
        pa.field("license", pa.string()),
        pa.field("elevation", pa.float32()),  # degrees, positive above
        pa.field("azimuth", pa.list_(pa.float32())),  # [V] degrees, view order
        pa.field("distance", pa.float32()),
        pa.field("fov", pa.float32()),  # vertical, degrees
        pa.field("c2w", pa.list_(pa.list_(pa.float32()))),  # [V][16] OpenGL c2w, row-major
        pa.field("intrinsics", pa.list_(pa.float32())),  # [9] K row-major, pixels
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("background", pa.string()),  # "transparent": views are RGBA, composite on read
        pa.field("views", pa.list_(pa.binary())),  # [V] PNG RGBA 8-bit, azimuth order
        pa.field("depth", pa.list_(pa.binary())),  # [V] .npy float16 [H, W] z-depth, 0 = empty; or null
        pa.field("normal", pa.list_(pa.binary())),  # [V] .npy float16 [H, W, 3] world normals; or null
        pa.field("render_seconds", pa.float32()),
        pa.field("render_settings", pa.string()),  # RenderSettings JSON
        pa.field("blender_version", pa.string()),
        pa.field("render_node", pa.string()),  # Ray node id of the worker that rendered it; null outside Ray
        pa.field("missing_textures", pa.int32()),  # textures that did not load (rendered magenta); null if failed
    ],
    metadata={b"videomv_schema_version": str(SCHEMA_VERSION).encode()},
)


LATENT_SCHEMA_VERSION = 1
LATENT_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("caption", pa.string()),  # the prompt encoded: the caption with its suffix, once
        pa.field("variant", pa.string(), nullable=False),  # "t2v"
        pa.field("resolution", pa.int32(), nullable=False),  # G's input size the views were resized to
        pa.field("posterior", pa.binary(), nullable=False),  # .npy float16 [F, 2C, h, w]: VAE mean, log-variance
        pa.field("prompt_states", pa.binary(), nullable=False),  # .npy float16 [L, D]: text encoder states
        pa.field("c2w", pa.list_(pa.list_(pa.float32()))),  # [F][16] OpenGL c2w, row-major, as in the orbit row
        pa.field("elevation", pa.float32()),
        pa.field("distance", pa.float32()),
        pa.field("fov", pa.float32()),
        pa.field("encoders", pa.string(), nullable=False),  # fingerprint of the VAE and text encoder weights
    ],
    metadata={b"videomv_latent_schema_version": str(LATENT_SCHEMA_VERSION).encode()},
)


def encode_png(image: np.ndarray) -> bytes:
    """[H, W, C] uint8 (C = 1, 3 or 4) -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_array(array: np.ndarray, dtype: str = "float16") -> bytes:
    """Array -> .npy bytes (self-describing shape and dtype)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array).astype(dtype), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_views(row: Mapping[str, Any], background: tuple[int, int, int] | None = None) -> np.ndarray:
    """The row's views as an array.

    Args:
        row: one shard row (a dict, as from ``pyarrow.Table.to_pylist`` or Ray Data).
        background: RGB 0-255 to composite onto; None keeps the alpha channel.
    Returns:
        uint8 [V, H, W, 4] (RGBA) when ``background`` is None, else uint8 [V, H, W, 3].
    """
    if row["status"] != STATUS_OK:
        raise ValueError(f"row {row['uid']!r} has status {row['status']!r}: {row.get('error')}")
    rgba = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")) for data in row["views"]])
    if background is None:
        return rgba
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    colour = np.asarray(background, dtype=np.float32).reshape(1, 1, 1, 3)
    return np.round(rgba[..., :3] * alpha + colour * (1.0 - alpha)).astype(np.uint8)


def decode_cameras(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(c2w [V, 4, 4] OpenGL camera-to-world, intrinsics [3, 3]) as float64."""
    c2w = np.asarray(row["c2w"], dtype=np.float64).reshape(-1, 4, 4)
    intrinsics = np.asarray(row["intrinsics"], dtype=np.float64).reshape(3, 3)
    return c2w, intrinsics


def decode_pass(row: Mapping[str, Any], name: str) -> np.ndarray | None:
    """Optional pass as float32: "depth" [V, H, W] or "normal" [V, H, W, 3]; None if not rendered."""
    if name not in ("depth", "normal"):
        raise ValueError(f"unknown pass {name!r}")
    data = row.get(name)
    if not data:
        return None
    return np.stack([decode_array(item) for item in data]).astype(np.float32)


def empty_row(**fields: Any) -> dict[str, Any]:
    """A row with every schema column present (None by default), ``fields`` filled in."""
    row = {name: None for name in SCHEMA.names}
    row["schema_version"] = SCHEMA_VERSION
    unknown = set(fields) - set(row)
    if unknown:
        raise KeyError(f"not schema columns: {sorted(unknown)}")
    row.update(fields)
    return row


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with every column) -> a table with exactly ``SCHEMA``."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def settings_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(row["render_settings"]) if row.get("render_settings") else {}
