"""Run diffusers' own pipeline tests (``PipelineTesterMixin``) against ``VideoMVPipeline``.

diffusers ships its tests only in its git repository (not in its wheel or sdist), so this script takes
a checkout: it copies the checkout's ``tests/`` into a temporary folder, adds one test class that
hands the mixin a tiny VideoMV pipeline (``models.toy.tiny.make_tiny``: built here, nothing
downloaded), installs the two test-only packages the mixins import (``parameterized``,
``requests_mock``) into that folder, and runs pytest there. The checkout and our tree are not changed.

    git clone https://github.com/huggingface/diffusers /tmp/diffusers
    .venv/bin/python scripts/diffusers_pipeline_tests.py /tmp/diffusers

Tests that need a GPU (offloading, fp16 on an accelerator, xformers) skip on a CPU machine; run the
script on a GPU machine to include them. The last result is recorded in docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ADAPTER = '''\
import functools
import tempfile
import unittest

import torch

from models import VideoMVPipeline
from models.toy.tiny import make_tiny

from ..pipeline_params import TEXT_TO_IMAGE_BATCH_PARAMS, TEXT_TO_IMAGE_PARAMS
from ..test_pipelines_common import PipelineTesterMixin


@functools.lru_cache(maxsize=None)
def tiny_directory(variant):
    return make_tiny(variant, tempfile.mkdtemp() + "/" + variant)


class VideoMVPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = VideoMVPipeline
    params = TEXT_TO_IMAGE_PARAMS - {"height", "width"}  # the views' size is the model's
    batch_params = TEXT_TO_IMAGE_BATCH_PARAMS
    required_optional_params = frozenset(["num_inference_steps", "generator", "latents", "return_dict",
                                          "callback_on_step_end", "callback_on_step_end_tensor_inputs"])
    test_attention_slicing = False  # the UNets' own processors; no slicing API
    test_xformers_attention = False

    def get_dummy_components(self):
        return dict(VideoMVPipeline.from_pretrained(tiny_directory("t2v")).components)

    def get_dummy_inputs(self, device, seed=0):
        return {"prompt": "a chair", "generator": torch.Generator(device="cpu").manual_seed(seed),
                "num_inference_steps": 2, "guidance_scale": 6.0, "output_type": "pt"}
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("diffusers_checkout", help="a git checkout of huggingface/diffusers (its tests/ is read)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k save_load)")
    args = parser.parse_args(argv)
    source = os.path.join(args.diffusers_checkout, "tests", "pipelines", "test_pipelines_common.py")
    if not os.path.isfile(source):
        parser.error(f"{args.diffusers_checkout} is not a diffusers checkout: no tests/pipelines/test_pipelines_common.py")
    with tempfile.TemporaryDirectory(prefix="diffusers-tests-") as work:
        shutil.copytree(os.path.join(args.diffusers_checkout, "tests"), os.path.join(work, "tests"))
        ours = os.path.join(work, "tests", "pipelines", "videomv")
        os.makedirs(ours)
        open(os.path.join(ours, "__init__.py"), "w").close()
        with open(os.path.join(ours, "test_videomv.py"), "w") as handle:
            handle.write(ADAPTER)
        extra = os.path.join(work, "site")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", extra, "parameterized",
                        "requests-mock"], check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([extra, REPO, work])}
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-c", os.devnull,
                   "--rootdir", work, "-o", "addopts=", os.path.join(ours, "test_videomv.py"), *args.pytest_args]
        return subprocess.run(command, cwd=work, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
