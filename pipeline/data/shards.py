"""Reading and atomically writing orbit shards at a local path or any fsspec URI.

A shard becomes visible only when complete: it is written under a hidden temporary name (readers,
Ray Data and pyarrow datasets skip names starting with "." or "_") and renamed into place.
"""

from __future__ import annotations

import collections
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from pipeline.data import schema

TEMP_PREFIX = ".tmp-"


def _filesystem(output: str) -> tuple[fsspec.AbstractFileSystem, str]:
    filesystem, path = fsspec.core.url_to_fs(output)
    return filesystem, path


def list_shards(output: str) -> list[str]:
    """Complete shard files under ``output`` (as fsspec paths), sorted; hidden files are skipped."""
    filesystem, root = _filesystem(output)
    if not filesystem.exists(root):
        return []
    paths = filesystem.glob(posixpath.join(root, "*.parquet"))
    return sorted(p for p in paths if not posixpath.basename(p).startswith((".", "_")))


def existing_status(output: str) -> dict[str, str]:
    """uid -> status over every complete shard in ``output``; an "ok" anywhere wins."""
    filesystem, _ = _filesystem(output)
    status: dict[str, str] = {}
    for path in list_shards(output):
        with filesystem.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=["uid", "status"])
        for uid, state in zip(table.column("uid").to_pylist(), table.column("status").to_pylist()):
            if status.get(uid) != schema.STATUS_OK:
                status[uid] = state
    return status


def remove_stale_temporaries(output: str) -> int:
    """Delete hidden half-written shards left by a killed job. Returns how many were removed."""
    filesystem, root = _filesystem(output)
    if not filesystem.exists(root):
        return 0
    stale = filesystem.glob(posixpath.join(root, TEMP_PREFIX + "*"))
    for path in stale:
        filesystem.rm(path)
    return len(stale)


def read_rows(output: str, columns: list[str] | None = None, only_ok: bool = True) -> list[dict[str, Any]]:
    """All rows of ``output`` as dicts (small data and tests; training reads through Ray Data)."""
    filesystem, _ = _filesystem(output)
    rows: list[dict[str, Any]] = []
    for path in list_shards(output):
        with filesystem.open(path, "rb") as handle:
            rows.extend(pq.read_table(handle, columns=columns).to_pylist())
    if only_ok:
        rows = [row for row in rows if row.get("status", schema.STATUS_OK) == schema.STATUS_OK]
    return rows


def write_shard_atomically(table: pa.Table, output: str, name: str) -> str:
    """Write ``table`` as ``output/name`` so that the file appears only when complete."""
    filesystem, root = _filesystem(output)
    filesystem.makedirs(root, exist_ok=True)
    final = posixpath.join(root, name)
    temporary = posixpath.join(root, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")
    try:
        with filesystem.open(temporary, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
        filesystem.mv(temporary, final)
    except BaseException:
        if filesystem.exists(temporary):
            filesystem.rm(temporary)
        raise
    return final


@dataclass
class WrittenShard:
    path: str
    rows: int
    ok: int
    failed: int
    render_seconds: float
    nodes: dict[str, int] = field(default_factory=dict)  # render_node -> rows
    # One (uid, status, render seconds, first line of the error or "") per row, for the job's log.
    results: list[tuple[str, str, float, str]] = field(default_factory=list)


def first_line(error: str | None) -> str:
    """A row's error as one log line: its first line, at most 200 characters."""
    return (error or "").strip().split("\n")[0][:200]


class OrbitShardDatasink(Datasink):
    """Ray Data sink writing orbit rows in shards of at most ``objects_per_file`` rows.

    Shards are named ``shard-<run>-<task>-<n>.parquet`` and appear atomically (see module doc).
    After the write, ``written`` lists every shard of this run.
    """

    def __init__(self, output: str, objects_per_file: int = 100, run_id: str | None = None) -> None:
        if objects_per_file < 1:
            raise ValueError("objects_per_file must be at least 1")
        self.output = output
        self.objects_per_file = objects_per_file
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.written: list[WrittenShard] = []

    @property
    def min_rows_per_write(self) -> int:
        return self.objects_per_file

    def on_write_start(self, schema_: pa.Schema | None = None) -> None:
        filesystem, root = _filesystem(self.output)
        filesystem.makedirs(root, exist_ok=True)

    def write(self, blocks: Iterable[Block], ctx: Any) -> list[WrittenShard]:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [table for table in tables if table.num_rows]
        if not tables:
            return []
        table = pa.concat_tables([t.select(schema.SCHEMA.names).cast(schema.SCHEMA) for t in tables])
        written = []
        for part, start in enumerate(range(0, table.num_rows, self.objects_per_file)):
            chunk = table.slice(start, self.objects_per_file)
            name = f"shard-{self.run_id}-{ctx.task_idx:05d}-{part:03d}.parquet"
            path = write_shard_atomically(chunk, self.output, name)
            status = chunk.column("status").to_pylist()
            seconds = sum(s or 0.0 for s in chunk.column("render_seconds").to_pylist())
            nodes = collections.Counter(node for node in chunk.column("render_node").to_pylist() if node)
            results = [(uid, state, seconds or 0.0, first_line(error))
                       for uid, state, seconds, error in zip(chunk.column("uid").to_pylist(), status,
                                                             chunk.column("render_seconds").to_pylist(),
                                                             chunk.column("error").to_pylist())]
            written.append(WrittenShard(path, chunk.num_rows, status.count(schema.STATUS_OK),
                                        status.count(schema.STATUS_FAILED), seconds, dict(nodes), results))
        return written

    def on_write_complete(self, write_result: Any) -> None:
        self.written = [shard for returned in write_result.write_returns for shard in returned]
