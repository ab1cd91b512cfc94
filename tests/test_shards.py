"""Schema and shard I/O: atomic writes, resume bookkeeping, decoding helpers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import schema, shards


def make_row(uid: str, status: str = "ok", size: int = 8) -> dict:
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[2:6, 2:6] = (255, 0, 0, 255)
    return schema.empty_row(
        uid=uid, source="local", uri=f"/{uid}.glb", status=status,
        error=None if status == "ok" else "boom",
        views=[schema.encode_png(rgba)] * 2 if status == "ok" else None,
        c2w=[list(np.eye(4).reshape(-1))] * 2, intrinsics=list(np.eye(3).reshape(-1)),
        depth=[schema.encode_array(np.ones((size, size)))] * 2 if status == "ok" else None,
    )


def test_rows_round_trip_through_a_shard(tmp_path):
    path = shards.write_shard_atomically(schema.rows_to_table([make_row("a"), make_row("b", "failed")]), str(tmp_path), "s.parquet")
    table = pq.read_table(path)
    assert table.schema.equals(schema.SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"videomv_schema_version"] == str(schema.SCHEMA_VERSION).encode() == b"3"
    rows = shards.read_rows(str(tmp_path))
    assert [r["uid"] for r in rows] == ["a"]
    views = schema.decode_views(rows[0])
    assert views.shape == (2, 8, 8, 4) and views[0, 3, 3].tolist() == [255, 0, 0, 255]
    grey = schema.decode_views(rows[0], background=(128, 128, 128))
    assert grey.shape == (2, 8, 8, 3) and grey[0, 0, 0].tolist() == [128, 128, 128] and grey[0, 3, 3].tolist() == [255, 0, 0]
    c2w, K = schema.decode_cameras(rows[0])
    assert c2w.shape == (2, 4, 4) and K.shape == (3, 3)
    assert schema.decode_pass(rows[0], "depth").shape == (2, 8, 8)
    assert schema.decode_pass(rows[0], "normal") is None
    failed = shards.read_rows(str(tmp_path), only_ok=False)[1]
    with pytest.raises(ValueError, match="status 'failed'"):
        schema.decode_views(failed)


def test_unknown_columns_are_rejected():
    with pytest.raises(KeyError, match="not schema columns"):
        schema.empty_row(uid="a", colour="red")


def test_interrupted_write_leaves_no_visible_shard(tmp_path, monkeypatch):
    shards.write_shard_atomically(schema.rows_to_table([make_row("good")]), str(tmp_path), "good.parquet")

    def crash_midway(table, handle, **kwargs):
        handle.write(b"PAR1 partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(shards.pq, "write_table", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        shards.write_shard_atomically(schema.rows_to_table([make_row("new")]), str(tmp_path), "new.parquet")
    monkeypatch.undo()
    assert [p.split("/")[-1] for p in shards.list_shards(str(tmp_path))] == ["good.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.parquet"]
    # A hard kill leaves a hidden temporary: readers ignore it and the next job removes it.
    (tmp_path / f"{shards.TEMP_PREFIX}abc-shard.parquet").write_bytes(b"PAR1 partial")
    assert shards.existing_status(str(tmp_path)) == {"good": "ok"}
    assert shards.remove_stale_temporaries(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.parquet"]


def test_existing_status_prefers_ok(tmp_path):
    shards.write_shard_atomically(schema.rows_to_table([make_row("a", "failed"), make_row("b", "failed")]), str(tmp_path), "1.parquet")
    shards.write_shard_atomically(schema.rows_to_table([make_row("a")]), str(tmp_path), "2.parquet")
    assert shards.existing_status(str(tmp_path)) == {"a": "ok", "b": "failed"}
    assert shards.existing_status(str(tmp_path / "missing")) == {}


def test_shards_on_an_fsspec_uri():
    uri = "memory://videomv-test/shards"
    shards.write_shard_atomically(schema.rows_to_table([make_row("m")]), uri, "x.parquet")
    assert shards.existing_status(uri) == {"m": "ok"}
    assert [r["uid"] for r in shards.read_rows(uri)] == ["m"]


@pytest.mark.parametrize("version, added", [(1, ("render_node", "missing_textures")), (2, ("missing_textures",))])
def test_older_shards_still_read(tmp_path, version, added):
    """Schemas 2 and 3 only added nullable columns (render_node, missing_textures): older files read
    and resume as before."""
    old = pa.schema([f for f in schema.SCHEMA if f.name not in added],
                    metadata={b"videomv_schema_version": str(version).encode()})
    rows = [{k: v for k, v in make_row(uid).items() if k not in added} | {"schema_version": version}
            for uid in ("a", "b")]
    pq.write_table(pa.Table.from_pylist(rows, schema=old), tmp_path / "shard-old.parquet")
    read = shards.read_rows(str(tmp_path))
    assert [r["uid"] for r in read] == ["a", "b"] and not set(added) & set(read[0])
    assert schema.decode_views(read[0]).shape == (2, 8, 8, 4)
    assert shards.existing_status(str(tmp_path)) == {"a": "ok", "b": "ok"}
