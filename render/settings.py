"""Render settings: one small dataclass shared by the Blender worker, the pipeline and the schema."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import camera

PASSES = ("depth", "normal")
DEVICES = ("auto", "cpu", "gpu")
MISSING_TEXTURES = ("warn", "fail")


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
        missing_textures: "warn" renders an asset whose textures do not load (counted in the row's
            ``missing_textures``), "fail" makes it a failed row.
        memory_limit_gb: address space one Blender process may use; 0 for no limit.
    """

    resolution: int = field(default=256, metadata={"help": "square image size in pixels"})
    samples: int = field(default=32, metadata={"help": "Cycles samples per pixel"})
    num_views: int = field(default=camera.NUM_VIEWS, metadata={"help": "views per orbit"})
    distance: float = field(default=camera.DEFAULT_DISTANCE, metadata={"help": "camera distance to the object's centre"})
    fov: float = field(default=camera.DEFAULT_FOV_DEG, metadata={"help": "vertical field of view in degrees"})
    elevation_range: tuple[float, float] = field(default=camera.ELEVATION_RANGE_DEG, metadata={
        "help": "elevation range in degrees", "metavar": ("LOW", "HIGH")})
    seed: int = field(default=0, metadata={"help": "with each uid, fixes the object's elevation"})
    device: str = field(default="auto", metadata={
        "help": "Cycles device: auto uses a GPU when Cycles finds one", "choices": DEVICES})
    threads: int = field(default=0, metadata={"help": "Cycles CPU threads (0: the task's CPU share)"})
    passes: tuple[str, ...] = field(default_factory=tuple, metadata={"help": "extra passes", "choices": PASSES})
    timeout: float = field(default=300.0, metadata={
        "help": "seconds per asset before its Blender process is killed"})
    max_assets_per_process: int = field(default=20, metadata={
        "help": "recycle each Blender process after this many assets"})
    missing_textures: str = field(default="warn", metadata={
        "help": "an asset whose textures do not load: warn (render it, untextured parts magenta, and count "
                "them in the row's missing_textures) or fail (a failed row)", "choices": MISSING_TEXTURES})
    memory_limit_gb: float = field(default=8.0, metadata={
        "help": "memory one Blender process may use (GB of address space; 0: no limit): an asset over it "
                "becomes a failed row naming the limit"})

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
        if self.missing_textures not in MISSING_TEXTURES:
            raise ValueError(f"missing_textures must be one of {MISSING_TEXTURES}, got {self.missing_textures!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (the task's CPU share) or more, got {self.threads}")
        if self.max_assets_per_process < 1:
            raise ValueError(f"max_assets_per_process must be at least 1, got {self.max_assets_per_process}")
        if self.memory_limit_gb < 0:
            raise ValueError(f"memory_limit_gb must be 0 (no limit) or positive, got {self.memory_limit_gb}")
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
