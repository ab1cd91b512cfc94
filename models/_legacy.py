"""Module paths that model directories saved by earlier releases name, mapped to where the code
lives now. A directory's ``model_index.json`` records each component's module, which diffusers'
loader takes only from modules already imported: before the concern folders, the camera embedding
was ``models.camera_embedding`` and the reconstructor ``models.lgm``. ``VideoMVPipeline.from_pretrained``
never reads those names; ``register`` (run when the pipeline's module is imported, which diffusers
does first for a directory naming ``pipeline_videomv.py``) keeps
``DiffusionPipeline.from_pretrained(old_directory, trust_remote_code=True)`` working too."""

from __future__ import annotations

import importlib
import sys

MOVED = {
    "models.camera_embedding": "models.generator.camera_embedding",
    "models.lgm": "models.reconstructor.model",
}


def register() -> None:
    """Each old path in ``sys.modules`` as the module at its new one (the same module object)."""
    for old, new in MOVED.items():
        sys.modules.setdefault(old, importlib.import_module(new))
