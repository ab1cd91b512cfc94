"""G, the reconstructor, Gaussians, metrics and the diffusers pipeline (no Ray, no Blender). ``from models import VideoMVPipeline``
is the public entry point; the import is lazy so that light modules (``models.reconstructor.rays``) stay light."""

from __future__ import annotations

from typing import Any

__all__ = ["VideoMVPipeline", "VideoMVPipelineOutput"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import models.pipeline_videomv as pipeline_videomv

        return getattr(pipeline_videomv, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
