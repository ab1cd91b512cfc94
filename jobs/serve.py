"""The VideoMV Serve application (an application builder for ``serve run`` / ``serve deploy``).

    serve run jobs.serve:app model_dir=out/train/demo/final_model lgm=out/train/recon-demo/final_model
    serve deploy serve_config.yaml           # the same, from the config file
    python jobs/serve.py --model-dir DIR [--lgm PATH] [--port 8000]   # local, blocks

Arguments (``key=value`` after the import path): model_dir (required), lgm (LGM directory or official
safetensors; needed for 3D-aware sampling and PLY output), num_gpus (per model replica, default 1;
0 on CPU machines), max_replicas (default 1), timeout_s (default 300), max_batch_size (default 4).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pipeline.serving import build_app  # noqa: E402


def app(args: dict[str, str]):
    """Application builder: ``serve run jobs.serve:app model_dir=DIR``."""
    unknown = set(args) - {"model_dir", "lgm", "num_gpus", "max_replicas", "timeout_s", "max_batch_size"}
    if unknown or "model_dir" not in args:
        raise ValueError(f"arguments: model_dir=DIR [lgm=PATH num_gpus=1 max_replicas=1 timeout_s=300 "
                         f"max_batch_size=4]; unknown: {sorted(unknown)}")
    return build_app(
        model_dir=args["model_dir"], lgm=args.get("lgm") or None,
        num_gpus=float(args.get("num_gpus", 1)), max_replicas=int(args.get("max_replicas", 1)),
        timeout_s=float(args.get("timeout_s", 300)), max_batch_size=int(args.get("max_batch_size", 4)),
    )


def main(argv: list[str] | None = None) -> int:
    import time

    from ray import serve

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--lgm", default=None)
    parser.add_argument("--num-gpus", type=float, default=None, help="default: 1 with CUDA, else 0")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    import torch

    gpus = args.num_gpus if args.num_gpus is not None else (1.0 if torch.cuda.is_available() else 0.0)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app({"model_dir": args.model_dir, "lgm": args.lgm or "", "num_gpus": str(gpus)}), route_prefix="/")
    print(f"serving on http://{args.host}:{args.port} (POST /v1/generate, GET /v1/health, /docs); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
