"""Where assets come from: a local folder, a manifest file, or Objaverse.

``resolve_input`` turns the ``--input`` spec into ``AssetRef`` rows (cheap metadata only); the
render tasks later turn each ref into a local file with ``fetch_asset`` (downloading from Objaverse
or any fsspec URI as needed), so downloads are spread over the cluster.
"""

from __future__ import annotations

import collections
import csv
import gzip
import hashlib
import json
import logging
import os
import posixpath
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from render.formats import ASSET_EXTENSIONS, COMPANION_EXTENSIONS, UNSUPPORTED_REASONS
from trust import OutsideRootError, inside, is_inside

BUNDLED_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets")
"""The repository's sample assets and their captions (``assets/``): the local run's default input."""

logger = logging.getLogger(__name__)
OBJAVERSE_PREFIX = "objaverse:"
FOLDER_CAPTIONS = "captions.csv"  # a folder input's own captions, used when --captions is not given
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


@dataclass
class ResolvedInput:
    """What ``--input`` names: the assets to render, and the files left out (by extension)."""

    refs: list[AssetRef]
    unsupported: dict[str, int] = field(default_factory=dict)  # extension -> files not rendered
    examples: list[str] = field(default_factory=list)  # the first few of them ("list.txt:3: 'a.dae'")

    def unsupported_summary(self) -> str:
        """E.g. "2 .dae (Collada ... first), 1 .3ds"; empty when nothing was left out."""
        return ", ".join(f"{count} {ext}" + (f" ({UNSUPPORTED_REASONS[ext]})" if ext in UNSUPPORTED_REASONS else "")
                         for ext, count in sorted(self.unsupported.items()))


LINK_OUTSIDE = "(link outside the folder)"  # ResolvedInput.unsupported's key for links that leave the input


def _extension(path: str) -> str:
    return Path(path).suffix.lower() or "(no extension)"


def load_captions(path: str) -> dict[str, str]:
    """Captions from a CSV (Cap3D style ``uid,caption``, header optional).

    The first column is an asset's uid or its file name (``Duck.glb``): ``resolve_input`` matches
    either, so a folder's captions survive the uid's path hash."""
    captions: dict[str, str] = {}
    with fsspec.open(path, "rt") as handle:
        for record in csv.reader(handle):
            if len(record) < 2 or record[0] in ("uid", "object_uid", "file"):  # a header row
                continue
            captions[record[0].strip()] = record[1].strip()
    return captions


def captioned_assets(folder: str, captions: str) -> dict[str, tuple[str, str]]:
    """The files of a local ``folder`` that ``captions`` names: file name -> (path, caption), sorted."""
    table = load_captions(captions)
    return {name: (os.path.join(folder, name), table[name]) for name in sorted(table)
            if os.path.isfile(os.path.join(folder, name))}


def _local_folder(folder: str) -> ResolvedInput:
    root = Path(folder)
    files, unsupported, examples = [], collections.Counter(), []
    for path in sorted(p for p in root.rglob("*") if not p.name.startswith(".")):
        if path.is_symlink() and not is_inside(folder, str(path)):
            # A link is followed only while it stays in the folder (files or folders alike).
            unsupported[LINK_OUTSIDE] += 1
            examples.append(f"{path} -> {os.path.realpath(path)}")
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() in ASSET_EXTENSIONS:
            files.append(path)
        elif path.suffix.lower() not in COMPANION_EXTENSIONS:
            unsupported[_extension(path.name)] += 1
    if not files:
        raise SourceError(f"no assets ({', '.join(ASSET_EXTENSIONS)}) found under {folder}"
                          + (f"; unsupported files: {dict(unsupported)}" if unsupported else ""))
    if examples:
        logger.warning("%d link(s) under %s point outside it and are not rendered: %s", len(examples), folder,
                       "; ".join(examples[:5]))
    refs = [AssetRef(uid=_path_uid(str(p), p.relative_to(root).as_posix()), source="local", uri=str(p.resolve()))
            for p in files]
    return ResolvedInput(refs, dict(unsupported), examples[:5])


def _manifest(path: str) -> ResolvedInput:
    with fsspec.open(path, "rt") as handle:
        lines = [line.strip() for line in handle]
    base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    refs, unsupported, examples = [], collections.Counter(), []
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        uri = line if ("://" in line or os.path.isabs(line)) else posixpath.join(base, line)
        if Path(uri).suffix.lower() not in ASSET_EXTENSIONS:
            unsupported[_extension(uri)] += 1
            examples.append(f"{path}:{number}: {line!r}")
            continue
        refs.append(AssetRef(uid=_path_uid(uri, uri), source="manifest", uri=uri))
    if not refs:
        raise SourceError(f"manifest {path} lists no supported assets ({', '.join(ASSET_EXTENSIONS)})"
                          + (f"; unsupported: {'; '.join(examples[:5])}" if examples else ""))
    return ResolvedInput(refs, dict(unsupported), examples[:5])


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
        logger.warning("Objaverse annotations unavailable (%s); continuing without captions/licences", error)
        annotations = {}
    refs = []
    for uid in uids:
        meta = annotations.get(uid, {})
        refs.append(
            AssetRef(uid=uid, source="objaverse", uri=uid, caption=meta.get("name") or None, license=meta.get("license"))
        )
    return refs


def resolve_input(spec: str, captions: str | None = None, objaverse_root: str | None = None) -> list[AssetRef]:
    """The assets named by ``--input`` (``scan_input(...).refs``; see there)."""
    return scan_input(spec, captions, objaverse_root).refs


def scan_input(spec: str, captions: str | None = None, objaverse_root: str | None = None) -> ResolvedInput:
    """The assets named by ``--input``, and the files of unsupported types it names.

    Args:
        spec: a folder (scanned recursively), a manifest file (one local path or fsspec URI per
            line, ``#`` comments; relative paths are relative to the manifest), or
            ``objaverse:[lvis=CATEGORY][,uids=FILE][,limit=N]``.
        captions: optional CSV ``uid or file name,caption`` overriding captions from the source;
            default: a folder's own ``captions.csv``, if it has one.
        objaverse_root: Objaverse cache root (default ``~/.objaverse``).
    Returns:
        Refs in a stable order, unique by uid, and the count of unsupported files per extension
        (also logged as one warning).
    """
    if spec.startswith(OBJAVERSE_PREFIX):
        resolved = ResolvedInput(_objaverse(spec, objaverse_root))
    elif os.path.isdir(spec):
        resolved = _local_folder(spec)
    elif "://" in spec or os.path.isfile(spec):
        resolved = _manifest(spec)
    else:
        raise SourceError(f"--input {spec!r} is neither a folder, a manifest file nor an objaverse: spec")
    refs = resolved.refs
    if captions is None and os.path.isdir(spec) and os.path.isfile(os.path.join(spec, FOLDER_CAPTIONS)):
        captions = os.path.join(spec, FOLDER_CAPTIONS)
        logger.info("captions from %s (the input folder's own; --captions FILE replaces it)", captions)
    if captions:
        table = load_captions(captions)
        covered = [r.uid in table or posixpath.basename(r.uri) in table for r in refs]
        if not all(covered):
            logger.warning("%d of %d assets have no row in %s: they keep the source's caption (Objaverse's 'name' "
                           "field) or none", covered.count(False), len(refs), captions)
        refs = [AssetRef(r.uid, r.source, r.uri, table.get(r.uid, table.get(posixpath.basename(r.uri), r.caption)),
                         r.license) for r in refs]
    elif spec.startswith(OBJAVERSE_PREFIX) and refs:
        logger.warning("the captions of these %d Objaverse assets are their 'name' field: the paper trains on Cap3D's "
                       "captions, given with --captions FILE (its uid,caption CSV as published)", len(refs))
    unique: dict[str, AssetRef] = {}
    for ref in refs:
        unique.setdefault(ref.uid, ref)
    resolved = ResolvedInput(list(unique.values()), resolved.unsupported, resolved.examples)
    if resolved.unsupported:
        logger.warning("%s: %d file(s) of unsupported types not rendered: %s%s", spec,
                       sum(resolved.unsupported.values()), resolved.unsupported_summary(),
                       f" ({'; '.join(resolved.examples)})" if resolved.examples else "")
    return resolved


def prefetch_objaverse(uids: list[str], processes: int, objaverse_root: str | None = None) -> None:
    """Download several Objaverse objects at once, ``processes`` downloads in parallel.

    In threads, not through objaverse's own process pool: it forks the calling process, a Ray
    actor with threads of its own, and a child forked while another thread held a lock can wait
    on it forever (a render job hung that way). Best effort: a failure here is reported per asset
    by ``fetch_asset`` afterwards.
    """
    objaverse = use_objaverse_root(objaverse_root)
    # One chunk per thread: each load_objects call parses the whole object-paths index again.
    threads = max(1, min(processes, len(uids)))
    chunks = [uids[start::threads] for start in range(threads)]

    def fetch(chunk: list[str]) -> Exception | None:
        try:
            objaverse.load_objects(uids=chunk, download_processes=1)
        except Exception as error:
            return error
        return None

    try:
        objaverse.load_objects(uids=[])  # the object-paths index, fetched once before the threads read it
    except Exception as error:
        logger.warning("Objaverse prefetch skipped: %s", _objaverse_error(objaverse, error))
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="objaverse-download") as pool:
        failed = [(chunk, error) for chunk, error in zip(chunks, pool.map(fetch, chunks)) if error is not None]
    if failed:
        logger.warning("Objaverse prefetch: downloads of %d of %d objects stopped (%s); they are fetched again one "
                       "by one", sum(len(chunk) for chunk, _ in failed), len(uids),
                       "; ".join(f"{', '.join(chunk)}: {error}" for chunk, error in failed[:3]))


def _objaverse_error(objaverse: Any, error: Exception) -> str:
    """What went wrong, saying which cache file to delete when the index itself is damaged (the
    package writes its index files in place, so an interrupted download leaves a truncated one).
    Only the index is parsed by ``load_objects``: a gzip or JSON error is the index's."""
    if isinstance(error, (EOFError, gzip.BadGzipFile, zlib.error, json.JSONDecodeError)):
        index = os.path.join(objaverse._VERSIONED_PATH, "object-paths.json.gz")
        return f"Objaverse's index {index} is damaged ({error}): delete it to download it again"
    return str(error)


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
            raise SourceError(f"Objaverse download of {ref.uri} failed: {_objaverse_error(objaverse, error)}") from error
        if ref.uri not in paths:
            raise SourceError(f"uid {ref.uri} is not in Objaverse's object-paths index")
        if not is_inside(objaverse.BASE_PATH, paths[ref.uri]):  # the index is a local file anyone may edit
            raise SourceError(f"uid {ref.uri}: Objaverse's index points outside its cache "
                              f"{objaverse.BASE_PATH}: {paths[ref.uri]}")
        return paths[ref.uri]
    if "://" not in ref.uri or ref.uri.startswith("file://"):
        path = ref.uri[len("file://"):] if ref.uri.startswith("file://") else ref.uri
        if not os.path.exists(path):
            raise SourceError(f"asset file not found: {path}")
        return path
    try:
        filesystem, remote = fsspec.core.url_to_fs(ref.uri)
        folder = posixpath.dirname(remote) + "/"
        if Path(remote).suffix.lower() in (".obj", ".gltf"):
            remotes = [key for key in filesystem.find(folder) if not filesystem.isdir(key)]
        else:
            remotes = [remote]
        for key in remotes:  # object keys are data: each stays inside the scratch folder
            local = inside(scratch_dir, key[len(folder):] if key.startswith(folder) else key,
                           f"{ref.uri}: object key")
            os.makedirs(os.path.dirname(local), exist_ok=True)
            filesystem.get_file(key, local)
    except OutsideRootError as error:
        raise SourceError(str(error)) from None
    except Exception as error:
        raise SourceError(f"download of {ref.uri} failed: {error}") from error
    return os.path.join(scratch_dir, posixpath.basename(remote))
