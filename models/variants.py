"""The two variants of G and every fact that differs between them: one home.

- ``t2v``: text to 24 views, fine-tuned from ModelScope T2V (``text-to-video-ms-1.7b``).
- ``i2v``: one image to 24 views, fine-tuned from I2VGen-XL (``i2vgen-xl``); its prompt is empty.

Sampling defaults (guidance, elevation, distance, steps, the image model's frame-rate condition)
and the background are the paper's and the authors' code's (``tools/modules/config.py``,
``configs/*_train.yaml``, ``inference_*_entrance.py``: text e=15 d=2.0, image e=5 d=1.7, fps 8 in
training and sampling); the fine-tuning recipe is the authors' ``p_zero``, ``noise_strength`` and
``use_ema``/``ema_decay``. A model that records its training cameras samples inside them
(``models.pipeline_videomv.pipeline_videomv.sampling_defaults``): ours are rendered at 2.0.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.prompts import CAPTION_SUFFIX


@dataclass(frozen=True)
class Variant:
    """One variant's facts. ``background``: RGB in [0, 1], what every view is composited on
    (renders for training, the reconstructor's renders while sampling, the image model's input)."""

    name: str
    components: tuple[str, ...]  # the diffusers directory's component folders
    guidance_scale: float
    elevation: float  # degrees, the orbit sampled by default
    distance: float  # the camera's distance to the object's centre, sampled by default
    background: tuple[float, float, float]
    condition_dropout: float  # share of samples trained unconditioned (classifier-free guidance)
    offset_noise: float
    ema_decay: float | None  # None: no EMA kept
    fps: int | None = None  # the frame-rate condition fine-tuning and sampling give the UNet (image model)
    num_inference_steps: int = 50  # DDIM steps
    takes_prompt: bool = True  # a text prompt conditions G; otherwise one image does (and the prompt is empty)
    caption_suffix: str | None = None  # appended to every caption in fine-tuning and every prompt in sampling
    unet_class: str = "UNet3DConditionModel"  # diffusers' class of the UNet
    published_pipeline: str = "TextToVideoSDPipeline"  # diffusers' pipeline class of the published base model
    base_model: str = "ModelScope-T2V"  # the published video model fine-tuned from
    latent_channels: int | None = None  # the UNet's latent channels when its architecture fixes them

    @property
    def takes_image(self) -> bool:
        """One image conditions G (the image model)."""
        return not self.takes_prompt

    @property
    def input_name(self) -> str:
        """What the user gives: "text" or "image" (for messages: "a text-to-multi-view model")."""
        return "text" if self.takes_prompt else "image"

    @property
    def background_uint8(self) -> tuple[int, int, int]:
        """``background`` as 8-bit RGB (0.5 -> 128, as the authors' grey)."""
        return tuple(int(round(c * 255 + 1e-6)) for c in self.background)  # type: ignore[return-value]


_VIDEO_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
VARIANTS: dict[str, Variant] = {
    "t2v": Variant("t2v", _VIDEO_COMPONENTS, guidance_scale=9.0, elevation=15.0, distance=2.0,
                   background=(0.5, 0.5, 0.5), condition_dropout=0.1, offset_noise=0.0, ema_decay=None,
                   caption_suffix=CAPTION_SUFFIX),
    "i2v": Variant("i2v", (*_VIDEO_COMPONENTS, "image_encoder", "feature_extractor"), guidance_scale=6.0,
                   elevation=5.0, distance=1.7, background=(1.0, 1.0, 1.0), condition_dropout=0.0,
                   offset_noise=0.1, ema_decay=0.9999, fps=8, takes_prompt=False, unet_class="I2VGenXLUNet",
                   published_pipeline="I2VGenXLPipeline", base_model="I2VGen-XL",
                   latent_channels=4),  # I2VGenXLUNet's image-latent branch is built for 4
}


def variant_of(name: str) -> Variant:
    """The ``Variant`` called ``name``; an error naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {name!r}") from None
