"""Asset sources: local folders, manifests (local and fsspec URIs), and Objaverse offline."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from pathlib import Path

import fsspec
import pytest

from pipeline.data.sources import AssetRef, SourceError, fetch_asset, prefetch_objaverse, resolve_input, scan_input

OBJAVERSE_UIDS = {"duck": "8476c4170df24cf5bbe6967222d1a42d", "box": "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}
NOT_DOWNLOADED_UID = "ffffeeeeddddccccbbbbaaaa99998888"  # in the index, file not in the cache


def stage_objaverse_tree(root: Path, sample_assets: Path) -> Path:
    """Build the cache tree the ``objaverse`` package keeps, from the sample assets (no network)."""
    versioned = root / "hf-objaverse-v1"
    paths = {}
    for name, uid in OBJAVERSE_UIDS.items():
        relative = f"glbs/000-000/{uid}.glb"
        (versioned / relative).parent.mkdir(parents=True, exist_ok=True)
        source = "Duck.glb" if name == "duck" else "BoxTextured.glb"
        shutil.copy(sample_assets / source, versioned / relative)
        paths[uid] = relative
    paths[NOT_DOWNLOADED_UID] = f"glbs/000-001/{NOT_DOWNLOADED_UID}.glb"
    with gzip.open(versioned / "object-paths.json.gz", "wt") as handle:
        json.dump(paths, handle)
    with gzip.open(versioned / "lvis-annotations.json.gz", "wt") as handle:
        json.dump({"duck": [OBJAVERSE_UIDS["duck"]], "box": [OBJAVERSE_UIDS["box"]]}, handle)
    (versioned / "metadata").mkdir()
    metadata = {uid: {"name": f"a {name}", "license": "by"} for name, uid in OBJAVERSE_UIDS.items()}
    with gzip.open(versioned / "metadata" / "000-000.json.gz", "wt") as handle:
        json.dump(metadata, handle)
    with gzip.open(versioned / "metadata" / "000-001.json.gz", "wt") as handle:
        json.dump({NOT_DOWNLOADED_UID: {"name": "not downloaded yet"}}, handle)
    return root


def test_local_folder_is_scanned_with_stable_uids(sample_assets):
    refs = resolve_input(str(sample_assets))
    names = sorted(Path(r.uri).name for r in refs)
    assert names == sorted(["BoxTextured.glb", "Duck.glb", "bunny.ply", "empty_nodes.glb", "fuze.obj", "monkey.glb", "teapot.stl"])
    assert all(r.source == "local" for r in refs)
    assert [r.uid for r in refs] == [r.uid for r in resolve_input(str(sample_assets))]
    assert any(r.uid.startswith("Duck-") for r in refs)


def test_manifest_with_relative_paths_comments_and_uris(tmp_path, sample_assets):
    (tmp_path / "sub").mkdir()
    shutil.copy(sample_assets / "teapot.stl", tmp_path / "sub" / "teapot.stl")
    manifest = tmp_path / "assets.txt"
    manifest.write_text(f"# sample assets\nsub/teapot.stl\n\n{sample_assets / 'Duck.glb'}\nmemory://bucket/monkey.glb\n")
    refs = resolve_input(str(manifest))
    assert [r.uri for r in refs] == [str(tmp_path / "sub" / "teapot.stl"), str(sample_assets / "Duck.glb"), "memory://bucket/monkey.glb"]
    assert {r.source for r in refs} == {"manifest"}


def test_remote_assets_are_fetched_with_their_folder(tmp_path, sample_assets):
    memory = fsspec.filesystem("memory")
    for name in ("fuze.obj", "fuze.obj.mtl", "fuze uv.jpg"):
        memory.pipe(f"/bucket/fuze/{name}", (sample_assets / name).read_bytes())
    ref = AssetRef(uid="fuze", source="manifest", uri="memory://bucket/fuze/fuze.obj")
    local = Path(fetch_asset(ref, str(tmp_path)))
    assert local.name == "fuze.obj"
    assert (local.parent / "fuze uv.jpg").exists() and (local.parent / "fuze.obj.mtl").exists()
    with pytest.raises(SourceError, match="download of memory://bucket/nothing.glb failed"):
        fetch_asset(AssetRef("x", "manifest", "memory://bucket/nothing.glb"), str(tmp_path))


def test_a_remote_asset_folder_cannot_write_outside_the_scratch_folder(tmp_path, sample_assets):
    """Issue 40, the one rule: an OBJ's folder is fetched key by key, each key kept inside scratch."""
    memory = fsspec.filesystem("memory")
    memory.pipe("/hostile/fuze/fuze.obj", (sample_assets / "fuze.obj").read_bytes())
    memory.pipe("/hostile/fuze/a/../../../../planted.txt", b"x")
    scratch = tmp_path / "scratch" / "one"
    scratch.mkdir(parents=True)
    with pytest.raises(SourceError, match=r"memory://hostile/fuze/fuze.obj: object key: .* resolves outside"):
        fetch_asset(AssetRef("fuze", "manifest", "memory://hostile/fuze/fuze.obj"), str(scratch))
    assert not list(tmp_path.rglob("planted.txt"))


def test_links_leaving_an_input_folder_are_named_and_not_followed(tmp_path, sample_assets, caplog):
    """Issue 40 F9: a linked file used to be followed outside the folder, a linked folder skipped
    silently. Links that stay inside are followed; links that leave are reported, not rendered."""
    outside = tmp_path / "private"
    (outside / "more").mkdir(parents=True)
    shutil.copy(sample_assets / "Duck.glb", outside / "secret.glb")
    shutil.copy(sample_assets / "Duck.glb", outside / "more" / "also.glb")
    folder = tmp_path / "input"
    folder.mkdir()
    shutil.copy(sample_assets / "teapot.stl", folder / "teapot.stl")
    (folder / "secret.glb").symlink_to(outside / "secret.glb")
    (folder / "more").symlink_to(outside / "more")
    (folder / "same_teapot.stl").symlink_to(folder / "teapot.stl")
    with caplog.at_level(logging.WARNING, logger="pipeline.data.sources"):
        resolved = scan_input(str(folder))
    assert sorted(Path(r.uri).name for r in resolved.refs) == ["teapot.stl", "teapot.stl"]
    assert resolved.unsupported == {"(link outside the folder)": 2}
    assert "point outside it and are not rendered" in caplog.text and "secret.glb" in caplog.text


def test_a_tampered_objaverse_index_is_not_followed_outside_its_cache(tmp_path, sample_assets):
    root = stage_objaverse_tree(tmp_path / "objaverse", sample_assets)
    shutil.copy(sample_assets / "Duck.glb", tmp_path / "elsewhere.glb")
    index = root / "hf-objaverse-v1" / "object-paths.json.gz"
    with gzip.open(index, "rt") as handle:
        paths = json.load(handle)
    paths[OBJAVERSE_UIDS["duck"]] = "../../elsewhere.glb"
    with gzip.open(index, "wt") as handle:
        json.dump(paths, handle)
    with pytest.raises(SourceError, match="index points outside its cache"):
        fetch_asset(AssetRef(OBJAVERSE_UIDS["duck"], "objaverse", OBJAVERSE_UIDS["duck"]), str(tmp_path),
                    objaverse_root=str(root))


def test_captions_file_overrides(tmp_path, sample_assets):
    refs = resolve_input(str(sample_assets))
    duck = next(r for r in refs if r.uid.startswith("Duck-"))
    captions = tmp_path / "captions.csv"
    captions.write_text(f"{duck.uid},a yellow rubber duck\n")
    refs = resolve_input(str(sample_assets), captions=str(captions))
    assert next(r for r in refs if r.uid == duck.uid).caption == "a yellow rubber duck"
    # A folder's captions may name files instead of uids (assets/captions.csv does).
    captions.write_text("uid,caption\nteapot.stl,a white teapot\n")
    refs = resolve_input(str(sample_assets), captions=str(captions))
    assert next(r for r in refs if r.uri.endswith("teapot.stl")).caption == "a white teapot"


def test_a_folder_with_its_own_captions_csv_is_captioned_without_flags():
    """The README's `jobs/render.py --input assets` captions every bundled asset from assets/captions.csv."""
    from pipeline.data.sources import BUNDLED_ASSETS

    refs = resolve_input(BUNDLED_ASSETS)
    captions = {os.path.basename(r.uri): r.caption for r in refs}
    assert captions["Duck.glb"] == "a yellow rubber duck" and all(captions.values()), captions


@pytest.mark.parametrize(
    "spec, message",
    [
        ("/no/such/place", "neither a folder"),
        ("objaverse:colour=red", "bad objaverse spec"),
    ],
)
def test_bad_input_specs(spec, message):
    with pytest.raises(SourceError, match=message):
        resolve_input(spec)


def test_empty_folder_and_a_manifest_without_supported_assets(tmp_path):
    with pytest.raises(SourceError, match="no assets"):
        resolve_input(str(tmp_path))
    manifest = tmp_path / "list.txt"
    manifest.write_text("model.dae\n")
    with pytest.raises(SourceError, match="list.txt:1"):
        resolve_input(str(manifest))


def test_unsupported_files_in_a_folder_are_reported_once_with_counts(tmp_path, sample_assets, caplog):
    shutil.copy(sample_assets / "teapot.stl", tmp_path / "teapot.stl")
    for name in ("scene.dae", "sub/other.dae", "model.3ds", "notes"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for companion in ("README.md", "texture.png", "teapot.mtl"):  # travel with assets: no warning
        (tmp_path / companion).write_bytes(b"x")
    (tmp_path / "captions.csv").write_text("teapot.stl,a white teapot\n")  # the folder's captions, read
    with caplog.at_level(logging.WARNING, logger="pipeline.data.sources"):
        resolved = scan_input(str(tmp_path))
    assert [Path(r.uri).name for r in resolved.refs] == ["teapot.stl"]
    assert resolved.unsupported == {".dae": 2, ".3ds": 1, "(no extension)": 1}
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.data.sources"]
    assert len(warnings) == 1
    assert "4 file(s) of unsupported types" in warnings[0] and "2 .dae (Collada (.dae) import was removed" in warnings[0]
    assert "1 .3ds" in warnings[0]


def test_unsupported_manifest_lines_are_reported_with_their_line(tmp_path, sample_assets, caplog):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{sample_assets / 'teapot.stl'}\nold/scene.dae\n{sample_assets / 'monkey.glb'}\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.data.sources"):
        resolved = scan_input(str(manifest))
    assert [Path(r.uri).name for r in resolved.refs] == ["teapot.stl", "monkey.glb"]
    assert resolved.unsupported == {".dae": 1}
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.data.sources"]
    assert len(warnings) == 1 and "1 .dae" in warnings[0] and "list.txt:2: 'old/scene.dae'" in warnings[0]


def test_every_format_blender_reads_is_an_asset():
    from render.formats import ASSET_EXTENSIONS

    for extension in (".blend", ".usd", ".usda", ".usdc", ".usdz", ".abc", ".glb", ".fbx"):
        assert extension in ASSET_EXTENSIONS
    assert ".dae" not in ASSET_EXTENSIONS


def test_objaverse_offline_through_the_package_api(tmp_path, sample_assets):
    root = stage_objaverse_tree(tmp_path / "objaverse", sample_assets)
    refs = resolve_input("objaverse:lvis=duck", objaverse_root=str(root))
    assert refs == [AssetRef(OBJAVERSE_UIDS["duck"], "objaverse", OBJAVERSE_UIDS["duck"], "a duck", "by")]
    everything = resolve_input("objaverse:limit=1", objaverse_root=str(root))
    assert len(everything) == 1
    uid_file = tmp_path / "uids.txt"
    uid_file.write_text("\n".join(OBJAVERSE_UIDS.values()) + "\n")
    refs = resolve_input(f"objaverse:uids={uid_file}", objaverse_root=str(root))
    assert [r.caption for r in refs] == ["a duck", "a box"]
    path = fetch_asset(refs[0], str(tmp_path), objaverse_root=str(root))
    assert path == str(root / "hf-objaverse-v1" / "glbs" / "000-000" / f"{OBJAVERSE_UIDS['duck']}.glb")
    with pytest.raises(SourceError, match="not in Objaverse's object-paths index"):
        fetch_asset(AssetRef("f" * 32, "objaverse", "f" * 32), str(tmp_path), objaverse_root=str(root))
    with pytest.raises(SourceError, match="LVIS category 'chair' not found"):
        resolve_input("objaverse:lvis=chair", objaverse_root=str(root))


def test_objaverse_prefetch_never_forks_and_says_what_failed(tmp_path, sample_assets, monkeypatch, caplog):
    """Parallel downloads run in threads: objaverse's process pool forks the render actor, whose
    other threads can leave a lock held in the child (a render job hung there)."""
    root = stage_objaverse_tree(tmp_path / "objaverse", sample_assets)

    def no_fork(*args, **kwargs):
        raise AssertionError("prefetch_objaverse forked")

    monkeypatch.setattr(os, "fork", no_fork)
    uids = [*OBJAVERSE_UIDS.values(), NOT_DOWNLOADED_UID]
    with caplog.at_level("WARNING", logger="pipeline.data.sources"):
        prefetch_objaverse(uids, processes=3, objaverse_root=str(root))
    assert "downloads of 1 of 3 objects stopped" in caplog.text and NOT_DOWNLOADED_UID in caplog.text  # no network
    path = fetch_asset(AssetRef(OBJAVERSE_UIDS["duck"], "objaverse", OBJAVERSE_UIDS["duck"]), str(tmp_path),
                       objaverse_root=str(root))
    assert os.path.isfile(path)


def test_a_truncated_objaverse_index_is_named(tmp_path, sample_assets):
    """objaverse writes its index in place: an interrupted download leaves a truncated file that
    fails every later fetch; the error says which file to delete."""
    root = stage_objaverse_tree(tmp_path / "objaverse", sample_assets)
    index = root / "hf-objaverse-v1" / "object-paths.json.gz"
    index.write_bytes(index.read_bytes()[:20])
    with pytest.raises(SourceError, match=rf"index {index} is damaged.*delete it"):
        fetch_asset(AssetRef(OBJAVERSE_UIDS["duck"], "objaverse", OBJAVERSE_UIDS["duck"]), str(tmp_path),
                    objaverse_root=str(root))


def test_cap3d_captions_are_read_as_published_and_gaps_are_said(tmp_path, sample_assets, caplog):
    """Cap3D's CSV: uid,caption rows, no header, captions quoted where they hold commas."""
    refs = resolve_input(str(sample_assets))
    duck, box = (next(r for r in refs if r.uid.startswith(name)) for name in ("Duck-", "BoxTextured-"))
    captions = tmp_path / "Cap3D_automated_Objaverse.csv"
    captions.write_text(f'{duck.uid},"A yellow rubber duck, with an orange beak."\n{box.uid},a textured box\n')
    with caplog.at_level("WARNING", logger="pipeline.data.sources"):
        captioned = {r.uid: r.caption for r in resolve_input(str(sample_assets), captions=str(captions))}
    assert captioned[duck.uid] == "A yellow rubber duck, with an orange beak."
    assert captioned[box.uid] == "a textured box"
    assert f"{len(refs) - 2} of {len(refs)} assets have no row in {captions}" in caplog.text


def test_objaverse_names_as_captions_are_said(tmp_path, sample_assets, caplog):
    root = stage_objaverse_tree(tmp_path / "objaverse", sample_assets)
    with caplog.at_level("WARNING", logger="pipeline.data.sources"):
        resolve_input("objaverse:lvis=duck", objaverse_root=str(root))
    assert "their 'name' field: the paper trains on Cap3D's captions" in caplog.text


def test_a_render_summary_says_when_most_assets_have_no_caption():
    from pipeline.render_stage import RenderSummary

    summary = RenderSummary(total=10, skipped=0, rendered=10, failed=0, seconds=1.0, shards=[], uncaptioned=7)
    assert "7 of 10 assets have no caption (most: give --captions" in str(summary)
    assert "no caption" not in str(RenderSummary(total=10, skipped=0, rendered=10, failed=0, seconds=1.0, shards=[]))
