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

from pipeline.logs import configure_logging  # noqa: E402

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments, config_from_args  # noqa: E402
from pipeline.serve.config import ServeConfig  # noqa: E402

logger = logging.getLogger("jobs.serve")
DEFAULT_HOST = "127.0.0.1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ServeConfig)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default: %(default)s; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import time

    args = build_parser().parse_args(argv)
    from ray import serve  # after parsing: --help stays quick

    from pipeline.serve.app import build_app, start_http

    config = config_from_args(ServeConfig, args)  # build_app fills num_gpus and max_batch_size for the cluster
    if args.host not in ("127.0.0.1", "localhost", "::1") and "*" not in config.allowed_hosts:
        logger.warning("binding %s: only requests whose Host is one of %s are answered (421 otherwise); give "
                       "--allowed-hosts the names clients use", args.host, ", ".join(config.allowed_hosts))
    host, port = start_http(args.host, args.port)
    serve.run(build_app(**dataclasses.asdict(config)), route_prefix="/")
    logger.info("serving on http://%s:%d: the demo page at /, the API at /v1/generate and /v1/health, its docs at "
                "/docs; Ctrl-C stops", host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
