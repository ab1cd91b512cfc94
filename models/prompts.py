"""The prompt suffix of VideoMV's captions (", 3d asset"), applied once.

Fine-tuning appends it to every caption (``pipeline.train_data``) and records it in the model
(``CameraEmbedding.config.prompt_suffix``); the pipeline appends the recorded suffix to every
prompt, so inference sees the prompts training saw, as the authors do.
"""

from __future__ import annotations

CAPTION_SUFFIX = ", 3d asset"


def with_suffix(prompt: str | None, suffix: str | None = CAPTION_SUFFIX) -> str:
    """``prompt`` ending in ``suffix`` exactly once ("a chair" -> "a chair, 3d asset"; "a chair,
    3d asset" unchanged); an empty prompt becomes the suffix's words alone ("3d asset")."""
    prompt = (prompt or "").strip()
    if not suffix:
        return prompt
    words = suffix.strip(", ")
    if prompt.lower().rstrip(" .,").endswith(words.lower()):
        return prompt
    return prompt + suffix if prompt else words
