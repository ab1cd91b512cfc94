"""The one rule for paths made from untrusted input (docs/architecture.md "Trust boundaries").

Remote object keys, manifest lines, uid files, an asset's texture references and request fields
are data, not paths: each is resolved against the folder it belongs to (its root) and must stay
inside it, or the item it came with fails with a message naming both. Nothing here imports the
rest of the project, so every layer (``render/`` in Blender's process included) can use it.
"""

from __future__ import annotations

import os

__all__ = ["OutsideRootError", "inside", "is_inside"]


class OutsideRootError(ValueError):
    """A path made from untrusted input is absolute, empty, or resolves outside its root."""


def is_inside(root: str, path: str) -> bool:
    """Whether ``path`` (absolute or relative to the working folder) resolves inside ``root``,
    symbolic links followed on both sides."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def inside(root: str, relative: str, what: str = "path") -> str:
    """``root`` joined with ``relative``, resolved, and checked to stay inside ``root``.

    Args:
        root: the folder the input belongs to (a cache folder, an asset's folder, an output root).
        relative: the untrusted part (an object key below its prefix, a texture reference, a uid).
        what: names the input in the error (e.g. "s3://bucket/model: key ../x").

    Returns:
        The absolute, resolved path (symbolic links followed), inside ``root``.

    Raises:
        OutsideRootError: ``relative`` is empty, holds a NUL byte, is absolute (``/x``, ``//x``,
        ``C:\\x``), or resolves outside ``root`` (``..``, a symbolic link pointing out).
    """
    if not relative or "\x00" in relative:
        raise OutsideRootError(f"{what}: {relative!r} is not a path")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or os.path.splitdrive(relative)[0]:
        raise OutsideRootError(f"{what}: {relative!r} is absolute; it must be relative to {root}")
    joined = os.path.join(root, relative)
    if not is_inside(root, joined):
        raise OutsideRootError(f"{what}: {relative!r} resolves outside {root}")
    return os.path.realpath(joined)
