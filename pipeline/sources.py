"""Where assets come from: a local folder, a manifest file, or Objaverse.

``resolve_input`` turns the ``--input`` spec into ``AssetRef`` rows (cheap metadata only); the
render tasks later turn each ref into a local file with ``fetch_asset`` (downloading from Objaverse
or any fsspec URI as needed), so downloads are spread over the cluster.
"""

from __future__ import annotations

import csv
import hashlib
import os
import posixpath
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fsspec

ASSET_EXTENSIONS = (".glb", ".gltf", ".fbx", ".obj", ".ply", ".stl")
OBJAVERSE_PREFIX = "objaverse:"
DEFAULT_OBJAVERSE_ROOT = os.path.join(os.path.expanduser("~"), ".objaverse")


class SourceError(ValueError):
    """The ``--input`` spec or a source file is unusable; the message says how."""


@dataclass(frozen=True)
class AssetRef:
    """One asset to render.

    Attributes:
        uid: stable identifier (Objaverse uid, or file stem + hash of its path) used for resume.
        source: "local", "manifest" or "objaverse".
        uri: local path, fsspec URI, or the Objaverse uid.
        caption: text for the text-to-multi-view model, if known.
        license: licence string, if known.
    """

    uid: str
    source: str
    uri: str
    caption: str | None = None
    license: str | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "AssetRef":
        return cls(**{name: row.get(name) for name in ("uid", "source", "uri", "caption", "license")})


def _path_uid(path: str, key: str) -> str:
    """Readable, stable uid for a file: its stem plus a hash of ``key`` (its path in the source)."""
    stem = Path(path).stem.replace(" ", "_")
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def load_captions(path: str) -> dict[str, str]:
    """Captions keyed by uid from a CSV (Cap3D style ``uid,caption``, header optional)."""
    captions: dict[str, str] = {}
    with fsspec.open(path, "rt") as handle:
        for record in csv.reader(handle):
            if len(record) < 2 or record[0] in ("uid", "object_uid"):
                continue
            captions[record[0].strip()] = record[1].strip()
    return captions


def _local_folder(folder: str) -> list[AssetRef]:
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in ASSET_EXTENSIONS and p.is_file())
    if not files:
        raise SourceError(f"no assets ({', '.join(ASSET_EXTENSIONS)}) found under {folder}")
    return [
        AssetRef(uid=_path_uid(str(p), p.relative_to(root).as_posix()), source="local", uri=str(p.resolve()))
        for p in files
    ]


def _manifest(path: str) -> list[AssetRef]:
    with fsspec.open(path, "rt") as handle:
        lines = [line.strip() for line in handle]
    base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    refs = []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        uri = line if ("://" in line or os.path.isabs(line)) else posixpath.join(base, line)
        if Path(uri).suffix.lower() not in ASSET_EXTENSIONS:
            raise SourceError(f"{path}:{number}: {line!r} is not a supported asset ({', '.join(ASSET_EXTENSIONS)})")
        refs.append(AssetRef(uid=_path_uid(uri, uri), source="manifest", uri=uri))
    if not refs:
        raise SourceError(f"manifest {path} lists no assets")
    return refs


def use_objaverse_root(root: str | None) -> Any:
    """Import ``objaverse`` with its cache tree at ``root`` (default ``~/.objaverse``).

    The package reads its cache location from module globals set at import time; pointing them at
    another root is the only way it offers to use a pre-staged tree (for example on shared storage).
    """
    import objaverse

    root = os.path.abspath(os.path.expanduser(root or DEFAULT_OBJAVERSE_ROOT))
    objaverse.BASE_PATH = root
    objaverse._VERSIONED_PATH = os.path.join(root, "hf-objaverse-v1")
    return objaverse


def _parse_objaverse_spec(spec: str) -> dict[str, str]:
    options = {}
    for part in filter(None, spec[len(OBJAVERSE_PREFIX):].split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in ("lvis", "uids", "limit"):
            raise SourceError(
                f"bad objaverse spec part {part!r}: use objaverse:lvis=CATEGORY,limit=N or objaverse:uids=FILE"
            )
        options[key] = value
    return options


def _objaverse(spec: str, root: str | None) -> list[AssetRef]:
    options = _parse_objaverse_spec(spec)
    objaverse = use_objaverse_root(root)
    if "uids" in options:
        with fsspec.open(options["uids"], "rt") as handle:
            uids = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    elif "lvis" in options:
        categories = objaverse.load_lvis_annotations()
        if options["lvis"] not in categories:
            raise SourceError(f"LVIS category {options['lvis']!r} not found in the Objaverse LVIS annotations")
        uids = sorted(categories[options["lvis"]])
    else:
        uids = sorted(objaverse.load_uids())
    if "limit" in options:
        uids = uids[: int(options["limit"])]
    try:
        annotations = objaverse.load_annotations(uids)
    except Exception as error:  # annotations are optional: captions/licences stay empty
        print(f"warning: Objaverse annotations unavailable ({error}); continuing without captions/licences")
        annotations = {}
    refs = []
    for uid in uids:
        meta = annotations.get(uid, {})
        refs.append(
            AssetRef(uid=uid, source="objaverse", uri=uid, caption=meta.get("name") or None, license=meta.get("license"))
        )
    return refs


def resolve_input(spec: str, captions: str | None = None, objaverse_root: str | None = None) -> list[AssetRef]:
    """The assets named by ``--input``.

    Args:
        spec: a folder (scanned recursively), a manifest file (one local path or fsspec URI per
            line, ``#`` comments; relative paths are relative to the manifest), or
            ``objaverse:[lvis=CATEGORY][,uids=FILE][,limit=N]``.
        captions: optional CSV ``uid,caption`` overriding captions from the source.
        objaverse_root: Objaverse cache root (default ``~/.objaverse``).
    Returns:
        Refs in a stable order, unique by uid.
    """
    if spec.startswith(OBJAVERSE_PREFIX):
        refs = _objaverse(spec, objaverse_root)
    elif os.path.isdir(spec):
        refs = _local_folder(spec)
    elif "://" in spec or os.path.isfile(spec):
        refs = _manifest(spec)
    else:
        raise SourceError(f"--input {spec!r} is neither a folder, a manifest file nor an objaverse: spec")
    if captions:
        table = load_captions(captions)
        refs = [AssetRef(r.uid, r.source, r.uri, table.get(r.uid, r.caption), r.license) for r in refs]
    unique: dict[str, AssetRef] = {}
    for ref in refs:
        unique.setdefault(ref.uid, ref)
    return list(unique.values())


def prefetch_objaverse(uids: list[str], processes: int, objaverse_root: str | None = None) -> None:
    """Download several Objaverse objects at once with ``processes`` parallel downloads.

    Best effort: a failure here is reported per asset by ``fetch_asset`` afterwards.
    """
    objaverse = use_objaverse_root(objaverse_root)
    try:
        objaverse.load_objects(uids=uids, download_processes=processes)
    except Exception as error:
        print(f"warning: Objaverse prefetch of {len(uids)} objects failed ({error}); fetching one by one")


def fetch_asset(ref: AssetRef, scratch_dir: str, objaverse_root: str | None = None) -> str:
    """A local path for the asset, downloading it when needed.

    Remote files are copied into ``scratch_dir`` (the caller removes it after rendering); remote
    OBJ/GLTF files bring their folder along (MTL files, textures, buffers). Objaverse objects stay
    in the Objaverse cache. Raises ``SourceError`` naming the asset on failure.
    """
    if ref.source == "objaverse":
        objaverse = use_objaverse_root(objaverse_root)
        try:
            paths = objaverse.load_objects(uids=[ref.uri], download_processes=1)
        except Exception as error:
            raise SourceError(f"Objaverse download of {ref.uri} failed: {error}") from error
        if ref.uri not in paths:
            raise SourceError(f"uid {ref.uri} is not in Objaverse's object-paths index")
        return paths[ref.uri]
    if "://" not in ref.uri or ref.uri.startswith("file://"):
        path = ref.uri[len("file://"):] if ref.uri.startswith("file://") else ref.uri
        if not os.path.exists(path):
            raise SourceError(f"asset file not found: {path}")
        return path
    try:
        filesystem, remote = fsspec.core.url_to_fs(ref.uri)
        if Path(remote).suffix.lower() in (".obj", ".gltf"):
            filesystem.get(posixpath.dirname(remote) + "/", scratch_dir + "/", recursive=True)
        else:
            filesystem.get(remote, os.path.join(scratch_dir, posixpath.basename(remote)))
    except Exception as error:
        raise SourceError(f"download of {ref.uri} failed: {error}") from error
    return os.path.join(scratch_dir, posixpath.basename(remote))
