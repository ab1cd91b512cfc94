"""CLIP score of a prompt against images (Hessel et al. 2021 without the 2.5 factor, as torchmetrics):
``100 * max(0, cos(text embedding, image embedding))``, averaged over images.

The model is a Hugging Face CLIP directory (``CLIPModel`` + its tokenizer and image processor,
e.g. a local copy of ``openai/clip-vit-large-patch14``) loaded with ``local_files_only``: nothing is
downloaded.
"""

from __future__ import annotations

import os

import torch
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer


class CLIPScorer:
    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, processor: CLIPImageProcessor) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.processor = processor

    @classmethod
    def from_pretrained(cls, directory: str) -> "CLIPScorer":
        missing = [name for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json")
                   if not os.path.isfile(os.path.join(directory, name))]
        if missing:
            raise FileNotFoundError(f"{directory} is not a local CLIP directory (missing {', '.join(missing)})")
        return cls(CLIPModel.from_pretrained(directory, local_files_only=True),
                   CLIPTokenizer.from_pretrained(directory, local_files_only=True),
                   CLIPImageProcessor.from_pretrained(directory, local_files_only=True))

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        """[P, D] unit-norm text embeddings."""
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt")
        output = self.model.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] in [0, 1] -> [N, D] unit-norm image embeddings (the processor's
        resize, centre crop and normalisation)."""
        pixels = self.processor(images=list(images.float().cpu()), return_tensors="pt", do_rescale=False).pixel_values
        output = self.model.get_image_features(pixel_values=pixels)
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def score(self, prompt: str, images: torch.Tensor) -> float:
        """Mean CLIP score of ``prompt`` against each of ``images`` [N, 3, H, W] in [0, 1]."""
        cosine = self.embed_images(images) @ self.embed_texts([prompt])[0]
        return float((100.0 * cosine.clamp(min=0)).mean())
