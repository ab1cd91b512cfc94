r"""The VideoMV Serve application (an application builder for ``serve run`` / ``serve deploy``).

    serve run pipeline.serve.app:app model_dir=$PWD/out/runs/finetune/final_model \
        reconstructor=$PWD/out/runs/reconstructor/final_model
    serve deploy serve_config.yaml           # the same, from the config file (docs/scale.md)
    python jobs/serve.py --model-dir DIR [--reconstructor PATH] [--port 8000]   # local, blocks

Application arguments (``key=value`` after the import path, or ``args`` in serve_config.yaml) are
the fields of ``pipeline.serve.app.ServeConfig``; ``python jobs/serve.py --help`` lists them with
their defaults. The HTTP server binds 127.0.0.1 unless ``--host`` (or ``http_options.host`` in
serve_config.yaml) says otherwise: the API has no authentication, so open it only behind a proxy
or inside a private network (docs/scale.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import config_from_args, option  # noqa: E402
from pipeline.serve.config import ServeConfig  # noqa: E402

logger = logging.getLogger("jobs.serve")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclasses.dataclass
class HttpConfig:
    """Where the local HTTP server listens (``serve_config.yaml``'s ``http_options``)."""

    host: str = option(LOOPBACK[0], "address to bind (0.0.0.0 opens it to the network)")
    port: int = option(8000, "HTTP port")


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, ServeConfig, HttpConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ray import serve  # after parsing: --help stays quick

    from pipeline.serve.app import build_app, start_http

    def work() -> None:
        import time

        config = config_from_args(ServeConfig, args)  # build_app fills num_gpus and max_batch_size for the cluster
        http = config_from_args(HttpConfig, args)
        if http.host not in LOOPBACK and "*" not in config.allowed_hosts:
            logger.warning("binding %s: only requests whose Host is one of %s are answered (421 otherwise); give "
                           "--allowed-hosts the names clients use", http.host, ", ".join(config.allowed_hosts))
        host, port = start_http(http.host, http.port)
        serve.run(build_app(**dataclasses.asdict(config)), route_prefix="/")
        logger.info("serving on http://%s:%d: the demo page at /, the API at /v1/generate and /v1/health, its docs "
                    "at /docs; Ctrl-C stops", host, port)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
