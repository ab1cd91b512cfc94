"""The cameras a model was fine-tuned on (``training_cameras``: elevation, distance and fov ranges
of the training orbits, recorded in the camera embedding's config): building the record, and
keeping a sampler's cameras inside it. Plain Python (no torch): the Serve ingress checks requests
with it.
"""

from __future__ import annotations

from typing import Any, Iterable

CAMERA_TOLERANCE = {"elevation": 0.5, "distance": 0.01, "fov": 0.1}  # degrees, world units, degrees


def camera_ranges(elevations: Iterable[float], distances: Iterable[float], fovs: Iterable[float],
                  previous: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """The ``training_cameras`` record of some orbits, joined with a ``previous`` record."""
    values: dict[str, list[float]] = {"elevation": [float(v) for v in elevations],
                                      "distance": [float(v) for v in distances], "fov": [float(v) for v in fovs]}
    if not all(values.values()):
        raise ValueError("no cameras to record: the training data has no orbits")
    for name, (low, high) in (previous or {}).items():
        values[name] += [low, high]
    return {name: [round(min(v), 4), round(max(v), 4)] for name, v in values.items()}


def camera_problems(training_cameras: dict[str, Any] | None, **requested: float) -> list[str]:
    """Why cameras ``requested`` (elevation=, distance=, fov=) lie outside ``training_cameras``:
    one sentence per value; empty when inside, or when nothing is recorded."""
    problems = []
    for name, value in requested.items():
        if not training_cameras or name not in training_cameras:
            continue
        low, high = training_cameras[name]
        if not low - CAMERA_TOLERANCE[name] <= value <= high + CAMERA_TOLERANCE[name]:
            span = f"{low:g}" if low == high else f"{low:g} to {high:g}"
            problems.append(f"{name} {value:g} is outside the model's training cameras ({name} {span})")
    return problems


def inside(training_cameras: dict[str, Any] | None, name: str, value: float) -> float:
    """``value`` moved to the nearest point of the recorded range of ``name`` (unchanged when none)."""
    if not training_cameras or name not in training_cameras:
        return value
    low, high = training_cameras[name]
    return min(max(value, low), high)
