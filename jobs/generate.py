"""Call the VideoMV endpoint and write the result: 24 view PNGs, a grid, an orbit GIF and MP4, the
Gaussians (PLY) and a textured mesh of them (mesh.glb).

    python jobs/generate.py --url http://127.0.0.1:8000 --prompt "a red chair" --out out/chair
    python jobs/generate.py --url http://127.0.0.1:8000 --image photo.png --out out/photo
"""

from __future__ import annotations

import argparse
import base64
import os
import sys

import requests

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline.cli import StoreWithDeprecatedAlias  # noqa: E402
from pipeline.serve.client import EndpointError, generate, write_result  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the Serve endpoint (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text prompt (text-to-multi-view model)")
    source.add_argument("--image", help="image file (image-to-multi-view model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: %(default)s)")
    parser.add_argument("--num-inference-steps", "--steps", type=int, default=50, action=StoreWithDeprecatedAlias,
                        alias="--steps", help="DDIM denoising steps (default: %(default)s; --steps is its deprecated "
                                              "old name)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance (default: the model's variant's, 9.0 text, 6.0 image)")
    parser.add_argument("--elevation", type=float, default=None,
                        help="camera elevation in degrees (default: the model's, inside its training cameras)")
    parser.add_argument("--no-3d-aware", action="store_true", help="plain DDIM (no reconstruction in the loop)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for the answer (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    request = {"seed": args.seed, "steps": args.num_inference_steps, "three_d_aware": not args.no_3d_aware,
               "outputs": ["views", "grid", "gif", "mp4"] + ([] if args.no_3d_aware else ["ply", "splat", "glb", "gaussians_mp4"])}
    if args.prompt is not None:
        request["prompt"] = args.prompt
    else:
        with open(args.image, "rb") as handle:
            request["image"] = base64.b64encode(handle.read()).decode()
    for key in ("guidance_scale", "elevation"):
        if getattr(args, key) is not None:
            request[key] = getattr(args, key)
    try:
        body = generate(args.url, request, timeout=args.timeout)
    except requests.RequestException as error:
        print(f"error: cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    except EndpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if 400 <= error.status < 500 else 1
    write_result(body, args.out)
    for name, reason in body.get("unavailable", {}).items():
        print(f"warning: no {name}: {reason}", file=sys.stderr)
    print(f"wrote {len(body['views'])} views{', the Gaussians and the mesh' if 'ply' in body else ''} to {args.out} "
          f"({body['seconds']:.1f} s, {body['reconstructions']} reconstructions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
