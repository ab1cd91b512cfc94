"""Camera control of the miniature G (issue 13): generated views at unseen cameras vs controls.

    python benchmarks/camera_control.py [--steps 2800] [--json out/camera_control.json]   # ~15 min

Trains the tiny UNet3D with the real camera embedding, objective, scheduler and sampler on Blender
orbits of two bundled objects at six elevations (16 px, pixel-shuffle latents; orbits rolled to
random starts and reversed at random, so only the cameras tell the view), twice (with cameras,
and with zeroed poses as the "no camera embedding" control; side by side, one core each), then scores views generated
at a held-out elevation and at half-step-shifted azimuths against Blender's renders there, next
to the controls (pipeline/experiments/camera_control.py). Prints a Markdown table; docs/results.md has it.
"""

from __future__ import annotations

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

from pipeline.experiments.camera_control import CameraControlConfig, format_table, run_camera_control  # noqa: E402
from pipeline.experiments.command import run_experiment  # noqa: E402


def main() -> int:
    return run_experiment(__doc__, CameraControlConfig, run_camera_control, format_table)


if __name__ == "__main__":
    sys.exit(main())
