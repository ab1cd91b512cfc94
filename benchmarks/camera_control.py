"""Camera control of the miniature G (issue 13): generated views at unseen cameras vs controls.

    python benchmarks/camera_control.py [--steps 500] [--json out/camera_control.json]

Trains the tiny UNet3D with the real camera embedding, objective, scheduler and sampler on Blender
orbits of three bundled objects at ten elevations (16 px, pixel-shuffle latents), twice (with
cameras, and with zeroed poses as the "no camera embedding" control), then scores views generated
at a held-out elevation and at half-step-shifted azimuths against Blender's renders there, next
to the controls (pipeline/camera_control.py). Prints a Markdown table; docs/results.md has it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline.logs import configure_logging  # noqa: E402

configure_logging()

from pipeline.camera_control import CameraControlConfig, format_table, run_camera_control  # noqa: E402


def main() -> int:
    defaults = CameraControlConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps per model")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--sampling-steps", type=int, default=defaults.sampling_steps)
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--prediction", choices=("v", "eps"), default=defaults.prediction)
    parser.add_argument("--resolution", type=int, default=defaults.resolution)
    parser.add_argument("--camera-lr-scale", type=float, default=defaults.camera_lr_scale)
    parser.add_argument("--roll-orbits", action=argparse.BooleanOptionalAction, default=defaults.roll_orbits,
                        help="train on orbits that start at random views")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", default=None, help="also write the rows and timings here")
    args = parser.parse_args()
    config = CameraControlConfig(steps=args.steps, lr=args.lr, sampling_steps=args.sampling_steps,
                                 guidance_scale=args.guidance_scale, seed=args.seed, prediction=args.prediction,
                                 resolution=args.resolution, camera_lr_scale=args.camera_lr_scale,
                                 roll_orbits=args.roll_orbits)
    result = run_camera_control(config)
    print(format_table(result))
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
