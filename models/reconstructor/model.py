"""The LGM reconstructor: 4 posed views -> 3D Gaussians (paper 3.3; LGM).

``LGM.prepare_inputs`` builds the network input from views and cameras (ImageNet-normalised RGB +
Plücker rays in the normalised camera frame); ``LGM.forward`` returns ``Gaussians`` in that frame;
``LGM.reconstruct`` does both and maps the Gaussians back to the world frame of the given cameras.

Weights: ``LGM.load_official`` reads LGM's released ``model_fp16_fixrot.safetensors`` (big preset)
with ``strict=True``; ``save_pretrained``/``from_pretrained`` keep the options next to the weights
(``lgm_options.json`` + ``model.safetensors``), and the measured 3D-aware schedule when there is one
(``three_d_aware.json``: ``models.reconstructor.renders_vs_x0``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

import camera
from models.locations import fetch
from models.gaussians.gaussians import Gaussians
from models.reconstructor.options import PRESETS, LGMOptions
from models.reconstructor.unet import AsymmetricUNet
from models.precision import cast
from models.reconstructor.rays import apply_normalisation, dolly_factor, normalisation_transform, plucker_rays
from models.reconstructor.renders_vs_x0 import RendersVsX0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTIONS_FILE = "lgm_options.json"
WEIGHTS_FILE = "model.safetensors"


class LGM(ModelMixin):
    """The reconstructor. A diffusers ``ModelMixin`` (device, dtype, offloading, and loading as a
    pipeline component), with its own weight format: ``lgm_options.json`` + ``model.safetensors``."""

    def __init__(self, options: LGMOptions | str = "small") -> None:
        super().__init__()
        self.options = PRESETS[options] if isinstance(options, str) else options
        self.unet = AsymmetricUNet(self.options)
        self.conv = nn.Conv2d(14, 14, kernel_size=1)
        self.renders_vs_x0: RendersVsX0 | None = None  # where its renders may replace G's x0

    # -- inputs ----------------------------------------------------------------------------------
    def dolly(self, fov: float = camera.DEFAULT_FOV_DEG) -> float:
        """Camera dolly of views taken at ``fov`` seen through the reconstructor's own fov (1 when equal)."""
        return dolly_factor(fov, self.options.fov)

    def normalisation(self, c2w_first: torch.Tensor, fov: float = camera.DEFAULT_FOV_DEG) -> torch.Tensor:
        """[4, 4] similarity from the world to the reconstructor's frame for one sample (view 0 given).

        View 0 ends at identity rotation at (0, 0, r), r = ``options.cam_radius`` (None: its true
        distance, a rigid transform as VideoMV). When the views' ``fov`` differs from
        ``options.fov`` (the official weights were trained at 49.1 deg), the views are read as taken
        by cameras of the reconstructor's fov dollied back to keep the object's image size: the
        scene scales by ``r / (|c0| * dolly)`` and the cameras (``normalise_cameras``) by ``r / |c0|``.
        Exact for the plane through the look-at point; off it the perspective differs slightly.
        """
        distance = float(c2w_first[:3, 3].norm())
        radius = distance if self.options.cam_radius is None else self.options.cam_radius
        return normalisation_transform(c2w_first.detach().cpu(), radius, radius / distance / self.dolly(fov))

    def normalise_cameras(self, transforms: torch.Tensor, c2w: torch.Tensor,
                          fov: float = camera.DEFAULT_FOV_DEG) -> torch.Tensor:
        """World cameras [B, V, 4, 4] (vertical ``fov``) -> the reconstructor's frame, where they render
        with ``options.fov`` (per sample ``transforms`` from ``prepare_inputs``)."""
        with torch.autocast(c2w.device.type, enabled=False):  # camera geometry in full precision
            return normalise_cameras(transforms, c2w, self.dolly(fov))

    def prepare_inputs(self, views: torch.Tensor, c2w: torch.Tensor, fov: float = camera.DEFAULT_FOV_DEG
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input and the camera normalisation.

        Args:
            views: [B, V, 3, H, W] RGB in [0, 1] (background composited), V = num_input_views.
            c2w: [B, V, 4, 4] OpenGL camera-to-world of those views (``camera`` module), looking at
                the origin (orbits); fov: their vertical field of view in degrees.
        Returns:
            inputs [B, V, 9, S, S] (S = input_size) and transforms [B, 4, 4]: the similarity taking
            each sample's world to its normalised frame (``normalisation``).

        Computed in float32 with autocast off (training runs the reconstructor under autocast, and
        the ray maps' matrix products would otherwise come out in half precision).
        """
        with torch.autocast(views.device.type, enabled=False):
            return self._prepare_inputs(views, c2w, fov)

    def _prepare_inputs(self, views: torch.Tensor, c2w: torch.Tensor, fov: float) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_views = views.shape[:2]
        if num_views != self.options.num_input_views:
            raise ValueError(f"LGM takes {self.options.num_input_views} views, got {num_views}")
        size = self.options.input_size
        images = F.interpolate(views.flatten(0, 1).float(), size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=views.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=views.device).view(1, 3, 1, 1)
        images = ((images - mean) / std).unflatten(0, (batch, num_views))
        transforms, rays = [], []
        for sample in range(batch):
            transform = self.normalisation(c2w[sample, 0], fov)
            normalised = apply_normalisation(transform.to(c2w.device), c2w[sample].double(), self.dolly(fov)).float()
            rays.append(plucker_rays(normalised, size, size, self.options.fov))
            transforms.append(transform.float().to(views.device))
        inputs = torch.cat([images, torch.stack(rays)], dim=2)
        return inputs.to(self.conv.weight.dtype), torch.stack(transforms)

    # -- network ---------------------------------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> Gaussians:
        """[B, V, 9, S, S] -> Gaussians with [B, V * splat_size^2, ...] (normalised camera frame).

        Activations as LGM: position clamp to [-1, 1], opacity sigmoid, scale 0.1 * softplus,
        rotation normalised (w first), colour 0.5 * tanh + 0.5.
        """
        batch, num_views = inputs.shape[:2]
        x = self.conv(self.unet(inputs.flatten(0, 1)))
        size = self.options.splat_size
        x = x.reshape(batch, num_views, 14, size, size).permute(0, 1, 3, 4, 2).reshape(batch, -1, 14).float()
        return Gaussians(
            means=x[..., 0:3].clamp(-1, 1),
            opacities=torch.sigmoid(x[..., 3]),
            scales=0.1 * F.softplus(x[..., 4:7]),
            quats=F.normalize(x[..., 7:11], dim=-1),
            colors=0.5 * torch.tanh(x[..., 11:14]) + 0.5,
        )

    def reconstruct(self, views: torch.Tensor, c2w: torch.Tensor, fov: float = camera.DEFAULT_FOV_DEG
                    ) -> tuple[Gaussians, torch.Tensor]:
        """Views [B, V, 3, H, W] in [0, 1] + cameras [B, V, 4, 4] -> (Gaussians in the normalised
        frame, transforms [B, 4, 4]); render them with ``self.normalise_cameras(transforms, c2w, fov)``."""
        inputs, transforms = self.prepare_inputs(views, c2w, fov)
        return self(inputs), transforms

    # -- weights ---------------------------------------------------------------------------------
    @classmethod
    def load_official(cls, path: str, options: LGMOptions | str = "big") -> "LGM":
        """LGM's released safetensors (e.g. model_fp16_fixrot.safetensors), loaded strictly."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LGM checkpoint not found: {path}")
        model = cls(options)
        state = load_file(path)
        try:
            model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{path} does not match the LGM '{options}' architecture: {error}") from error
        return model

    @classmethod
    def load(cls, location: str, options: LGMOptions | str = "big", tracking_uri: str | None = None) -> "LGM":
        """A directory written by ``save_pretrained``, or an official safetensors file (``options``),
        at any location ``models.locations.fetch`` reads (a path, fsspec or MLflow URI)."""
        path = fetch(location, tracking_uri)
        return cls.from_pretrained(path) if os.path.isdir(path) else cls.load_official(path, options)

    def save_pretrained(self, directory: str, variant: str | None = None, **_: object) -> None:
        """Options, weights and the renders-vs-x0 measurement into ``directory``. ``variant`` (diffusers'
        keyword, e.g. "fp16") writes ``model.<variant>.safetensors`` beside the other weights, never
        over them; diffusers' other saving keywords are not needed."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, OPTIONS_FILE), "w") as handle:
            handle.write(self.options.to_json())
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  os.path.join(directory, weights_file(variant)))
        if self.renders_vs_x0 is not None:
            self.renders_vs_x0.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str, torch_dtype: torch.dtype | None = None, variant: str | None = None,
                        **_: object) -> "LGM":
        """Load what ``save_pretrained`` wrote (``variant``: its ``model.<variant>.safetensors``;
        diffusers' other loading keywords are ignored)."""
        for name in (OPTIONS_FILE, weights_file(variant)):
            if not os.path.isfile(os.path.join(directory, name)):
                raise FileNotFoundError(f"{directory} is not an LGM directory: {name} is missing")
        options_path, weights_path = os.path.join(directory, OPTIONS_FILE), os.path.join(directory, weights_file(variant))
        try:
            with open(options_path) as handle:
                model = cls(LGMOptions.from_json(handle.read()))
        except (ValueError, TypeError, KeyError) as error:  # json's errors are ValueErrors
            raise ValueError(f"{options_path} is not an LGM options file: {error}") from None
        try:
            state = load_file(weights_path)
        except Exception as error:  # safetensors' own error type for a truncated or foreign file
            raise ValueError(f"{weights_path} is not a readable safetensors file (truncated?): {error}") from None
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        model.renders_vs_x0 = RendersVsX0.load(directory)
        return model if torch_dtype is None else cast(model, torch_dtype)


def weights_file(variant: str | None = None) -> str:
    """``model.safetensors``, or ``model.<variant>.safetensors`` (diffusers' naming of weight variants)."""
    return WEIGHTS_FILE if not variant else WEIGHTS_FILE.replace(".safetensors", f".{variant}.safetensors")


def normalise_cameras(transforms: torch.Tensor, c2w: torch.Tensor, dolly: float = 1.0) -> torch.Tensor:
    """World cameras [B, V, 4, 4] -> the reconstruction's normalised frame (per sample)."""
    return torch.stack([apply_normalisation(t.to(c2w.device).double(), c.double(), dolly).to(c2w.dtype)
                        for t, c in zip(transforms, c2w)])
