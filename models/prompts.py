"""The prompt suffix of VideoMV's captions (", 3d asset"), applied once, and the negative prompt.

Fine-tuning appends the suffix to every caption (``pipeline.data.datasets``) and records it in the model
(``CameraEmbedding.config.prompt_suffix``); the pipeline appends the recorded suffix to every
prompt, so inference sees the prompts training saw, as the authors do. Fine-tuning also records the
negative prompt its condition dropout trained to (``CameraEmbedding.config.negative_prompt``), which
the sampler then guides against (``negative_prompt_of``).
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

# The authors' negative prompt (alibaba/VideoMV, tools/modules/config.py:195): condition dropout trains
# to its text embedding and classifier-free guidance guides against it, for both variants.
AUTHORS_NEGATIVE_PROMPT = ("Distorted, discontinuous, Ugly, blurry, low resolution, disfigured, disconnected limbs, "
                           "Ugly faces, incomplete arms")


def negative_prompt_of(recorded: dict | None, given: str | None = None) -> str:
    """The negative prompt to guide against: ``given``; else what the model recorded from its
    fine-tuning (``CameraEmbedding.config.negative_prompt``, "" included); else the authors'."""
    if given is not None:
        return given
    if recorded and recorded.get("negative_prompt") is not None:
        return recorded["negative_prompt"]
    return AUTHORS_NEGATIVE_PROMPT
