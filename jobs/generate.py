"""Call the VideoMV endpoint and write the result: 24 view PNGs, a grid, an orbit GIF and MP4, the
Gaussians (PLY) and a textured mesh of them (mesh.glb).

    python jobs/generate.py --url http://127.0.0.1:8000 --prompt "a red chair" --out out/chair
    python jobs/generate.py --url http://127.0.0.1:8000 --image photo.png --out out/photo
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import logging
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pipeline.entry import BAD_INPUT_EXIT, FAILED_EXIT, job_parser, run_job  # noqa: E402  (logging first)

from pipeline.cli import check_minimums, config_from_args, option  # noqa: E402

logger = logging.getLogger("jobs.generate")


@dataclasses.dataclass
class GenerateConfig:
    """One request to the endpoint (``pipeline.serve.ingress.GenerateRequest``) and where to write its answer."""

    out: str = option(help="output folder")
    url: str = option("http://127.0.0.1:8000", "the Serve endpoint")
    prompt: str | None = option(None, "text prompt (text-to-multi-view model); give it or --image")
    image: str | None = option(None, "image file (image-to-multi-view model); give it or --prompt")
    seed: int = option(0, "seed of the initial noise")
    num_inference_steps: int = option(50, "DDIM denoising steps", deprecated_alias="steps", minimum=1)
    guidance_scale: float | None = option(None, "classifier-free guidance (default: the model's variant's, 9.0 "
                                                "text, 6.0 image)")
    elevation: float | None = option(None, "camera elevation in degrees (default: the model's, inside its "
                                           "training cameras)")
    three_d_aware: bool = option(True, "3D-aware sampling (--no-3d-aware: plain DDIM, no reconstruction in the "
                                       "loop, no Gaussians or mesh)", flag="3d_aware")
    timeout: float = option(900.0, "seconds to wait for the answer", exclusive_minimum=0.0)

    def __post_init__(self) -> None:
        check_minimums(self)
        if (self.prompt is None) == (self.image is None):
            raise ValueError("give --prompt (a text model) or --image (an image model), one of them")

    def request(self) -> dict:
        """The request's JSON body (the API keeps its short name ``steps``): every output the
        endpoint makes, those of the Gaussians only with 3D-aware sampling."""
        from pipeline.serve.api import GAUSSIAN_OUTPUTS, OUTPUTS  # loads torch: after parsing

        request = {"seed": self.seed, "steps": self.num_inference_steps, "three_d_aware": self.three_d_aware,
                   "outputs": [name for name in OUTPUTS if self.three_d_aware or name not in GAUSSIAN_OUTPUTS]}
        if self.prompt is not None:
            request["prompt"] = self.prompt
        else:
            with open(self.image, "rb") as handle:
                request["image"] = base64.b64encode(handle.read()).decode()
        for key in ("guidance_scale", "elevation"):
            if getattr(self, key) is not None:
                request[key] = getattr(self, key)
        return request


def build_parser() -> argparse.ArgumentParser:
    return job_parser(__doc__, GenerateConfig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import requests  # after parsing: --help stays quick

    from pipeline.serve.client import EndpointError, generate, write_result

    def work() -> int:
        config = config_from_args(GenerateConfig, args)
        try:
            body = generate(config.url, config.request(), timeout=config.timeout)
        except requests.RequestException as error:
            logger.error("cannot reach %s: %s", config.url, error)
            return FAILED_EXIT
        except EndpointError as error:
            logger.error("%s", error)
            return BAD_INPUT_EXIT if 400 <= error.status < 500 else FAILED_EXIT
        write_result(body, config.out)
        for name, reason in body.get("unavailable", {}).items():
            logger.warning("no %s: %s", name, reason)
        print(f"wrote {len(body['views'])} views{', the Gaussians and the mesh' if 'ply' in body else ''} to "
              f"{config.out} ({body['seconds']:.1f} s, {body['reconstructions']} reconstructions)")
        return 0

    return run_job(work, logger)


if __name__ == "__main__":
    sys.exit(main())
