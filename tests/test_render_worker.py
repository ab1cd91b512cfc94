"""The isolated Blender worker on its own (no Ray): geometry, cameras, passes, timeouts, crashes."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

import camera
from make_assets import (export_with_blender, normalised_cube_centres, write_bad_assets, write_colour_cubes,
                         write_textured_quad_gltf)
from pipeline.data import schema
from pipeline.render_stage import render_asset
from pipeline.data.sources import AssetRef
from render.process import BlenderProcess, RenderFailure
from render.settings import RenderSettings

SETTINGS = RenderSettings(resolution=64, samples=8, threads=2, passes=("depth", "normal"), timeout=60)


@pytest.fixture(scope="module")
def blender():
    with BlenderProcess(max_assets_per_process=3) as process:
        yield process


def local_ref(path) -> AssetRef:
    return AssetRef(uid=os.path.basename(str(path)), source="local", uri=str(path))


def test_stored_cameras_reproduce_projected_positions(blender, tmp_path):
    """Project each cube's centre with the row's own c2w and K: the pixel shows that cube's colour."""
    row = render_asset(local_ref(write_colour_cubes(tmp_path)), blender, SETTINGS)
    assert row["status"] == schema.STATUS_OK, row["error"]
    views = schema.decode_views(row)
    c2w, K = schema.decode_cameras(row)
    depth = schema.decode_pass(row, "depth")
    normal = schema.decode_pass(row, "normal")
    assert views.shape == (24, 64, 64, 4) and depth.shape == (24, 64, 64) and normal.shape == (24, 64, 64, 3)
    centres = normalised_cube_centres()
    names = list(centres)
    pixels, distances = camera.project_points(np.stack([centres[n] for n in names]), c2w, K)
    channel = {"red": 0, "green": 1, "blue": 2}
    for view in range(24):
        nearest = int(np.argmin(distances[view]))  # the cube nearest the camera is never hidden
        x, y = np.round(pixels[view, nearest]).astype(int)
        patch = views[view, y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 4).astype(float).mean(0)
        rgb = patch[:3]
        assert patch[3] > 250, f"view {view}: {names[nearest]} cube not opaque at its projection"
        dominant = channel[names[nearest]]
        others = [rgb[c] for c in range(3) if c != dominant]
        assert rgb[dominant] > max(others) + 60, f"view {view}: expected {names[nearest]} at ({x}, {y}), got {rgb}"
        # The depth pass agrees: the visible face is about half a cube in front of the centre.
        expected = distances[view, nearest]
        assert expected - 0.3 < depth[view, y, x] < expected + 0.02
    # Empty pixels have no depth and the mask matches alpha; normals are unit length on the object.
    mask = views[..., 3] > 0
    assert np.all(depth[views[..., 3] == 0] == 0)
    lengths = np.linalg.norm(normal[views[..., 3] == 255], axis=-1)
    assert np.median(lengths) == pytest.approx(1.0, abs=0.05)
    assert mask.mean() > 0.02


def test_bad_assets_fail_with_clear_errors_and_worker_recovers(blender, tmp_path, sample_assets):
    bad = write_bad_assets(tmp_path, sample_assets)
    fast = RenderSettings(resolution=32, samples=1, threads=2, timeout=60)
    no_geometry = render_asset(local_ref(sample_assets / "empty_nodes.glb"), blender, fast)
    assert no_geometry["status"] == "failed" and "no mesh geometry" in no_geometry["error"]
    for name in ("truncated", "random"):
        row = render_asset(local_ref(bad[name]), blender, fast)
        assert row["status"] == "failed"
        assert "GLB import failed" in row["error"], row["error"]
        assert row["views"] is None
    missing = render_asset(local_ref(tmp_path / "missing.glb"), blender, fast)
    assert missing["status"] == "failed" and "not found" in missing["error"]
    unsupported = tmp_path / "notes.txt"
    unsupported.write_text("hello")
    with pytest.raises(RenderFailure, match="unsupported file type"):
        blender.render(str(unsupported), camera.orbit_c2w(10.0), fast)
    ok = render_asset(local_ref(sample_assets / "teapot.stl"), blender, fast)
    assert ok["status"] == "ok"


def test_hang_is_killed_at_the_timeout_and_the_next_asset_renders(tmp_path, sample_assets):
    bad = write_bad_assets(tmp_path, sample_assets)
    settings = RenderSettings(resolution=32, samples=1, threads=2, timeout=5)
    with BlenderProcess() as process:
        process.render(str(sample_assets / "monkey.glb"), camera.orbit_c2w(10.0), settings)  # warm start
        first_pid = process.pid
        start = time.monotonic()
        row = render_asset(local_ref(bad["hang"]), process, settings)
        assert time.monotonic() - start < 30
        assert row["status"] == "failed" and "timed out after 5 s" in row["error"]
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)  # the hung process is gone
        row = render_asset(local_ref(sample_assets / "monkey.glb"), process, settings)
        assert row["status"] == "ok" and process.pid != first_pid


def test_crash_mid_render_becomes_a_failure_with_log(tmp_path, sample_assets):
    settings = RenderSettings(resolution=256, samples=64, threads=1, timeout=120)
    with BlenderProcess() as process:
        process.render(str(sample_assets / "teapot.stl"), camera.orbit_c2w(10.0, [0.0]), settings)
        victim = process.pid
        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
        with pytest.raises(RenderFailure, match="died"):
            process.render(str(sample_assets / "Duck.glb"), camera.orbit_c2w(10.0), settings)
        out = process.render(str(sample_assets / "teapot.stl"), camera.orbit_c2w(10.0, [0.0]),
                             RenderSettings(resolution=32, samples=1, threads=2))
        assert len(out.views) == 1 and process.pid != victim
        out.cleanup()


def test_process_is_recycled_after_n_assets(sample_assets):
    settings = RenderSettings(resolution=16, samples=1, threads=2)
    with BlenderProcess(max_assets_per_process=2) as process:
        pids = []
        for _ in range(3):
            out = process.render(str(sample_assets / "teapot.stl"), camera.orbit_c2w(10.0, [0.0]), settings)
            out.cleanup()
            pids.append(process.pid)
        assert pids[0] == pids[1] != pids[2]


def test_a_closed_process_leaves_nothing_behind(sample_assets):
    """Killed and recycled Blender processes never clean up after themselves; their folders (and
    Blender's own blender_XXXXXX) live in the work folder, which close removes."""
    settings = RenderSettings(resolution=16, samples=1, threads=2)
    with BlenderProcess(max_assets_per_process=1) as process:
        for _ in range(2):  # the second render kills the first process and starts another
            process.render(str(sample_assets / "teapot.stl"), camera.orbit_c2w(10.0, [0.0]), settings).cleanup()
        work_dir = process.work_dir
        assert any(name.startswith("blender_") for name in os.listdir(work_dir)), os.listdir(work_dir)
    assert not os.path.exists(work_dir)
    with process:  # a closed process starts again when asked
        assert len(process.render(str(sample_assets / "teapot.stl"), camera.orbit_c2w(10.0, [0.0]), settings).views) == 1
    assert not os.path.exists(work_dir)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024.0


def test_memory_stays_flat_across_assets(sample_assets):
    settings = RenderSettings(resolution=16, samples=1, threads=2)
    assets = ["Duck.glb", "fuze.obj", "bunny.ply", "monkey.glb"]
    with BlenderProcess(max_assets_per_process=100) as process:
        readings = []
        for index in range(12):
            out = process.render(str(sample_assets / assets[index % 4]), camera.orbit_c2w(10.0, [0.0]), settings)
            out.cleanup()
            readings.append(_rss_mb(process.pid))
        # After one round of every asset, further rounds must not keep growing the process.
        assert readings[-1] - readings[3] < 40, readings


def test_fbx_gltf_usd_alembic_and_blend_import(blender, tmp_path):
    settings = RenderSettings(resolution=32, samples=1, threads=2)
    exported = export_with_blender(tmp_path)
    assert (exported["gltf"].parent / "cone.bin").exists()
    coverage = {}
    for kind, path in exported.items():
        row = render_asset(local_ref(path), blender, settings)
        assert row["status"] == "ok", f"{kind}: {row['error']}"
        coverage[kind] = (schema.decode_views(row)[..., 3] > 0).mean()
    # The same two objects whatever the format (normalised into the unit cube): similar coverage.
    assert min(coverage.values()) > 0.02, coverage
    assert max(coverage.values()) < 1.5 * min(coverage.values()), coverage


def test_collada_gets_a_clear_message(blender, tmp_path):
    path = tmp_path / "scene.dae"
    path.write_text("<COLLADA/>")
    row = render_asset(local_ref(path), blender, RenderSettings(resolution=16, samples=1))
    assert row["status"] == "failed" and "removed in Blender 5" in row["error"] and "glTF" in row["error"]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present here")
def test_gpu_request_without_gpu_is_a_clear_failure(blender, sample_assets):
    row = render_asset(local_ref(sample_assets / "teapot.stl"), blender,
                       RenderSettings(resolution=16, samples=1, device="gpu"))
    assert row["status"] == "failed" and "no GPU" in row["error"]


def _obj_with_texture(folder, sample_assets, map_kd: str):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample_assets / "fuze.obj", folder / "fuze.obj")
    mtl = (sample_assets / "fuze.obj.mtl").read_text().replace("map_Kd fuze uv.jpg", f"map_Kd {map_kd}")
    (folder / "fuze.obj.mtl").write_text(mtl)
    return folder / "fuze.obj"


def test_textures_are_read_only_from_the_assets_folder(blender, tmp_path, sample_assets, caplog):
    """Issue 40 F2/F3: ``../``, absolute paths, a glTF's external URI and an OBJ's ``map_Kd ../``
    used to pull any readable image into the renders (and the shards). Now the row fails naming
    the texture; a texture that is simply missing is counted (``missing_textures``) and warned
    about, or fails the row with ``missing_textures="fail"``."""
    secret = tmp_path / "secret.jpg"
    shutil.copy(sample_assets / "fuze uv.jpg", secret)
    fast = RenderSettings(resolution=32, samples=1, threads=2, timeout=60)
    hostile = {
        "obj ../": _obj_with_texture(tmp_path / "a", sample_assets, "../secret.jpg"),
        "obj absolute": _obj_with_texture(tmp_path / "b", sample_assets, str(secret)),
        "gltf ../": write_textured_quad_gltf(tmp_path / "c" / "quad.gltf", "../secret.jpg"),
        "gltf absolute": write_textured_quad_gltf(tmp_path / "d" / "quad.gltf", str(secret)),
    }
    for case, path in hostile.items():
        row = render_asset(local_ref(path), blender, fast)
        assert row["status"] == "failed" and "outside the asset's folder" in row["error"], (case, row["error"])
        assert "secret.jpg" in row["error"] and row["views"] is None, case

    inside = _obj_with_texture(tmp_path / "e", sample_assets, "tex/uv.jpg")
    (tmp_path / "e" / "tex").mkdir()
    shutil.copy(sample_assets / "fuze uv.jpg", tmp_path / "e" / "tex" / "uv.jpg")
    row = render_asset(local_ref(inside), blender, fast)
    assert row["status"] == "ok" and row["missing_textures"] == 0

    missing = write_textured_quad_gltf(tmp_path / "f" / "quad.gltf", "not_there.png")
    with caplog.at_level("WARNING", logger="pipeline.render_stage"):
        row = render_asset(local_ref(missing), blender, fast)
    assert row["status"] == "ok" and row["missing_textures"] == 1
    assert "1 texture(s) missing" in caplog.text and "not_there.png" in caplog.text
    strict = RenderSettings(resolution=32, samples=1, threads=2, timeout=60, missing_textures="fail")
    row = render_asset(local_ref(missing), blender, strict)
    assert row["status"] == "failed" and "1 texture(s) missing: " in row["error"]
    file_uri = write_textured_quad_gltf(tmp_path / "g" / "quad.gltf", f"file://{secret}")
    assert render_asset(local_ref(file_uri), blender, strict)["status"] == "failed"  # never read


def test_a_texture_bomb_fails_its_row_under_the_memory_limit(tmp_path, sample_assets):
    """Issue 40 F4: a 450 KB asset holding a 12000^2 PNG took a worker from 283 MB to 1,353 MB.
    Under ``memory_limit_gb`` its row fails naming the limit, and the same process renders on."""
    import PIL.Image

    bomb = write_textured_quad_gltf(tmp_path / "bomb" / "quad.gltf", "big.png")
    PIL.Image.new("RGB", (8000, 8000), (200, 20, 20)).save(tmp_path / "bomb" / "big.png")
    assert (tmp_path / "bomb" / "big.png").stat().st_size < 1_000_000
    fast = RenderSettings(resolution=32, samples=1, threads=2, timeout=120, memory_limit_gb=0.45)
    with BlenderProcess(memory_limit_gb=fast.memory_limit_gb) as process:
        row = render_asset(local_ref(bomb), process, fast)
        assert row["status"] == "failed", row["error"]
        assert "8000x8000" in row["error"] and "memory limit of 0.45 GB" in row["error"], row["error"]
        assert render_asset(local_ref(sample_assets / "teapot.stl"), process, fast)["status"] == "ok"
