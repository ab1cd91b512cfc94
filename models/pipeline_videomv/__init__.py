"""VideoMV as a diffusers pipeline: ``VideoMVPipeline`` (its denoising loop in ``__call__``), its
output, the 3D-aware helpers the loop calls, image input and model-directory loading.

``from models.pipeline_videomv import VideoMVPipeline`` is a stable path: the ``pipeline_videomv.py``
that ``save_pretrained`` writes beside ``model_index.json`` imports it. The import is lazy so that
light modules of this package (``loading``, ``image_input``) load without diffusers' pipeline code."""

from __future__ import annotations

from typing import Any

__all__ = ["VideoMVPipeline", "VideoMVPipelineOutput"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models.pipeline_videomv import pipeline_videomv

        return getattr(pipeline_videomv, name)
    raise AttributeError(f"module 'models.pipeline_videomv' has no attribute {name!r}")
