"""Serve throughput and latency: 1, 4 and 16 concurrent clients, with and without batching.

Starts the Serve application locally with tiny models (or --model/--reconstructor), sends plain-DDIM
requests of a few steps from N client threads for a fixed number of requests, and prints requests
per second with p50/p99 latency.

    python benchmarks/serve.py [--steps 4] [--requests 32]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[0] = ROOT
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32, help="requests per measurement")
    parser.add_argument("--model", default=None)
    parser.add_argument("--reconstructor", default=None, help="LGM directory or safetensors (default: a tiny one)")
    args = parser.parse_args()

    import ray
    import requests
    import torch
    from ray import serve

    from models.reconstructor.model import LGM
    from models.toy.tiny import make_tiny
    from pipeline.serve.app import build_app, start_http

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or make_tiny("t2v", os.path.join(scratch, "t2v"))
        lgm = args.reconstructor
        if lgm is None:
            torch.manual_seed(0)
            lgm = os.path.join(scratch, "lgm")
            LGM("tiny").save_pretrained(lgm)
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        start_http("127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/v1/generate"
        gpus = 1.0 if torch.cuda.is_available() else 0.0
        rows = []
        for batching in (False, True):
            serve.run(build_app(model_dir, reconstructor=lgm, num_gpus=gpus, max_batch_size=4 if batching else 1),
                      name="videomv", route_prefix="/")
            body = {"prompt": "a chair", "steps": args.steps, "three_d_aware": False, "outputs": ["views"]}
            requests.post(url, json=body, timeout=600).raise_for_status()  # warm-up
            for clients in (1, 4, 16):
                latencies: list[float] = []

                def one(index: int) -> None:
                    start = time.perf_counter()
                    response = requests.post(url, json={**body, "seed": index}, timeout=600)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - start)

                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
                    list(pool.map(one, range(args.requests)))
                elapsed = time.perf_counter() - start
                latencies.sort()
                p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
                rows.append((batching, clients, args.requests / elapsed, statistics.median(latencies), p99))
                print(f"batching={'on ' if batching else 'off'} clients={clients:2d}: {rows[-1][2]:.2f} req/s, "
                      f"p50 {rows[-1][3]:.2f} s, p99 {p99:.2f} s", flush=True)
            serve.delete("videomv")
        serve.shutdown()
        ray.shutdown()
    print(f"(plain DDIM, {args.steps} steps, {args.requests} requests per row, one model replica, "
          f"{'GPU' if gpus else 'CPU'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
