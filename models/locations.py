"""Model locations: a local path, any fsspec URI, an MLflow model URI, or a cached Hugging Face repo.

``fetch(location)`` returns a local path holding the model (a directory, or one file such as the
official LGM safetensors):

- a local directory or file: itself;
- ``file://path``: the path;
- an fsspec URI (``s3://``, ``gs://``, ``memory://`` in tests, ...): copied once into the cache;
- an MLflow URI: ``models:/name/version``, ``models:/name/latest``, ``models:/name@alias`` or
  ``runs:/run_id/path``, read from the tracking store (``tracking_uri``, else MLflow's own
  setting: ``MLFLOW_TRACKING_URI``) and copied once into the cache; ``latest`` and aliases are
  resolved to a version number first, so a newer registration is fetched anew;
- anything else: a Hugging Face repo id already in the local HF cache (never downloaded here).

The cache is ``$VIDEOMV_CACHE`` (default ``~/.cache/videomv``)/models, one folder per location.
A copy is made in a temporary folder and renamed into place when complete, so an interrupted
fetch never leaves a partial model behind; delete a folder to fetch it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from typing import Callable

from trust import OutsideRootError, inside

logger = logging.getLogger(__name__)
MLFLOW_SCHEMES = ("models:/", "runs:/")
MODEL_PATH_FILE = ".videomv-model-path"  # in a cache folder: where the model lies inside it
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class ModelLocationError(FileNotFoundError):
    """A model location that cannot be read; the message says which and why."""


def cache_root() -> str:
    return os.path.join(os.environ.get("VIDEOMV_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "videomv")),
                        "models")


def is_remote(location: str) -> bool:
    """True for locations ``fetch`` copies into the cache (fsspec and MLflow URIs)."""
    return location.startswith(MLFLOW_SCHEMES) or (bool(_URI.match(location)) and not location.startswith("file://"))


def fetch(location: str, tracking_uri: str | None = None) -> str:
    """A local path for ``location`` (see the module docstring). Raises ``ModelLocationError``."""
    location = str(location)
    if location.startswith("file://"):
        location = location[len("file://"):]
    if not is_remote(location):
        if os.path.exists(location):
            return location
        return _hugging_face_cache(location)
    if location.startswith(MLFLOW_SCHEMES):
        return _fetch_mlflow(location, tracking_uri)
    return _cached(location, lambda target: _copy_fsspec(location, target))


def _cache_folder(key: str, name: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rstrip("/").split("/")[-1] or "model")
    return os.path.join(cache_root(), f"{safe}-{digest}")


def _cached(key: str, copy: Callable[[str], str], name: str | None = None) -> str:
    """The model cached for ``key``: ``copy(staging_dir)`` fills a fresh folder the first time and
    returns where the model lies inside it ("" for the folder itself)."""
    folder = _cache_folder(key, name or key)
    if not os.path.isdir(folder):
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".fetch-", dir=os.path.dirname(folder))
        try:
            inside = copy(staging)
            with open(os.path.join(staging, MODEL_PATH_FILE), "w") as handle:
                handle.write(inside)
            try:
                os.rename(staging, folder)
            except OSError:  # another process finished the same fetch first
                if not os.path.isdir(folder):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("fetched %s into %s", key, folder)
    with open(os.path.join(folder, MODEL_PATH_FILE)) as handle:
        inside = handle.read().strip()
    return os.path.join(folder, inside) if inside else folder


def _copy_fsspec(location: str, target: str) -> str:
    import fsspec

    try:
        filesystem, path = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as error:
        raise ModelLocationError(f"cannot open {location}: {error}") from error
    if filesystem.isdir(path):
        files = [f for f in filesystem.find(path) if not filesystem.isdir(f)]
        if not files:
            raise ModelLocationError(f"{location} is an empty folder")
        root = path.rstrip("/") + "/"
        for remote in files:
            # Object keys are data: "a/../../x" or "a//x" are legal in S3 and must not leave the cache.
            key = remote[len(root):] if remote.startswith(root) else remote
            try:
                local = inside(target, key, f"{location}: object key")
            except OutsideRootError as error:
                raise ModelLocationError(str(error)) from None
            os.makedirs(os.path.dirname(local), exist_ok=True)
            filesystem.get_file(remote, local)
        return ""
    if filesystem.isfile(path):
        name = os.path.basename(path.rstrip("/"))
        filesystem.get_file(path, os.path.join(target, name))
        return name
    raise ModelLocationError(f"{location} does not exist")


def _fetch_mlflow(location: str, tracking_uri: str | None) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or mlflow.get_tracking_uri()
    try:
        pinned = _pin_model_version(location, uri)

        def download(target: str) -> str:
            # models:/ URIs are resolved by MLflow against its process-wide registry URI, not the
            # tracking_uri given here (it would open ./mlflow.db of the current folder): ask the
            # store itself where the version's files are, then download those.
            source = _model_version_source(pinned, uri)
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=target, tracking_uri=uri)
            inside = os.path.relpath(local, target)
            return "" if inside == "." else inside

        return _cached(f"{uri}|{pinned}", download, name=pinned)
    except MlflowException as error:
        raise ModelLocationError(f"{location} cannot be read from the MLflow tracking store {uri}: "
                                 f"{error.message}") from error


def _model_version_source(location: str, tracking_uri: str) -> str:
    """Where a pinned ``models:/name/N`` keeps its files, read from ``tracking_uri``'s registry;
    other URIs (``runs:/``) unchanged."""
    if not location.startswith("models:/"):
        return location
    from mlflow import MlflowClient

    name, _, version = location[len("models:/"):].strip("/").rpartition("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return client.get_model_version_download_uri(name, version)


def _pin_model_version(location: str, tracking_uri: str) -> str:
    """``models:/name/latest`` and ``models:/name@alias`` -> ``models:/name/<number>``; others unchanged."""
    if not location.startswith("models:/"):
        return location
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rest = location[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = rest.rpartition("/")
    if not name:
        raise ModelLocationError(f"{location}: expected models:/<name>/<version|latest> or models:/<name>@<alias>")
    if version == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise ModelLocationError(f"{location}: the registry has no versions of {name!r}")
        return f"models:/{name}/{max(int(v.version) for v in versions)}"
    return location


def _hugging_face_cache(location: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(location, local_files_only=True)
    except Exception as error:
        raise ModelLocationError(
            f"{location!r} is neither a local directory nor a repo in the Hugging Face cache, nor an fsspec or "
            f"MLflow URI (models are never downloaded from the Hub at run time; fetch it beforehand): {error}"
        ) from error
