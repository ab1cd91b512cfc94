"""Where the reconstructor's renders beat G's own x0: the measured 3D-aware step schedule.

VideoMV's 3D-aware sampling replaces G's predicted x0 by render(LGM(x0)) at a few DDIM steps. That
helps only where the renders are closer to a consistent truth than x0 itself. ``RendersVsX0`` holds
that measurement (``models.pipeline_videomv.one_step.measure_renders_vs_x0``) and decides, per timestep, whether
the sampler may use the renders there. It is kept beside the reconstructor's weights
(``three_d_aware.json``, ``LGM.save_pretrained``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

FILE = "three_d_aware.json"
TOLERANCE_DB = 0.5  # renders may be this much worse than x0 and still be used


@dataclass
class RendersVsX0:
    """PSNR (dB) of the renders and of x0 against the truth on the views that are not LGM's inputs,
    per diffusion timestep ``t`` (lists of equal length), with SSIM and, when measured, LPIPS.
    ``truth_render_psnr``: the renders when LGM is given the true views instead of x0, the
    reconstructor's own ceiling."""

    t: list[int]
    render_psnr: list[float]
    x0_psnr: list[float]
    render_ssim: list[float] = field(default_factory=list)
    x0_ssim: list[float] = field(default_factory=list)
    render_lpips: list[float] | None = None
    x0_lpips: list[float] | None = None
    truth_render_psnr: float | None = None
    tolerance_db: float = TOLERANCE_DB

    def __post_init__(self) -> None:
        if not self.t or len(self.render_psnr) != len(self.t) or len(self.x0_psnr) != len(self.t):
            raise ValueError("t, render_psnr and x0_psnr must be non-empty lists of the same length")

    def helps(self, timestep: int) -> bool:
        """True when, at the measured timestep nearest ``timestep``, the renders are at most
        ``tolerance_db`` worse than x0."""
        nearest = min(range(len(self.t)), key=lambda i: abs(self.t[i] - timestep))
        return self.render_psnr[nearest] >= self.x0_psnr[nearest] - self.tolerance_db

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, FILE), "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls, directory: str) -> "RendersVsX0 | None":
        """The measurement saved in ``directory``, or None when there is none."""
        path = os.path.join(directory, FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as handle:
            try:
                return cls(**json.load(handle))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path} is not a renders-vs-x0 measurement: {error}") from error
