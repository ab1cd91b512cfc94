"""Render settings: one small dataclass shared by the Blender worker, the pipeline and the schema."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import camera

PASSES = ("depth", "normal")
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class RenderSettings:
    """How every object of a render job is rendered.

    Attributes:
        resolution: square image size in pixels (training uses 256; 512 for reconstruction
            supervision).
        samples: Cycles samples per pixel.
        num_views: views per orbit, azimuth uniform from 0 degrees.
        distance: orbit radius; objects are normalised into the unit cube.
        fov: vertical field of view in degrees.
        elevation_range: (low, high) degrees; one elevation per object drawn from it.
        seed: with the object's uid, fixes its elevation.
        device: "auto" (GPU when Cycles finds one), "cpu" or "gpu" (fails without a GPU).
        threads: Cycles CPU threads, 0 for all cores (set it to the task's CPU share under Ray).
        passes: extra outputs among ``PASSES``.
        timeout: seconds one object may take (import + all views) before its process is killed.
        max_assets_per_process: a Blender process is recycled after this many objects.
    """

    resolution: int = 256
    samples: int = 32
    num_views: int = camera.NUM_VIEWS
    distance: float = camera.DEFAULT_DISTANCE
    fov: float = camera.DEFAULT_FOV_DEG
    elevation_range: tuple[float, float] = camera.ELEVATION_RANGE_DEG
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    passes: tuple[str, ...] = field(default_factory=tuple)
    timeout: float = 300.0
    max_assets_per_process: int = 20

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {self.resolution}")
        if self.samples < 1:
            raise ValueError(f"samples must be positive, got {self.samples}")
        if self.num_views < 1:
            raise ValueError(f"num_views must be positive, got {self.num_views}")
        if not 0.0 < self.fov < 180.0:
            raise ValueError(f"fov must be in (0, 180) degrees, got {self.fov}")
        if self.distance <= 0.0:
            raise ValueError(f"distance must be positive, got {self.distance}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        unknown = set(self.passes) - set(PASSES)
        if unknown:
            raise ValueError(f"unknown passes {sorted(unknown)}; choose from {PASSES}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        object.__setattr__(self, "elevation_range", tuple(float(v) for v in self.elevation_range))
        object.__setattr__(self, "passes", tuple(self.passes))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RenderSettings":
        values = json.loads(text)
        values["elevation_range"] = tuple(values["elevation_range"])
        values["passes"] = tuple(values["passes"])
        return cls(**values)
