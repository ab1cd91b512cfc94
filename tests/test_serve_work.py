"""The model deployment's work on its own (no HTTP, no Serve controller): every stage after the
denoising loop stops when its requests went away or the work passed its time limit (issue 40 F6)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from models.reconstructor.model import LGM
from models.toy.tiny import make_tiny
from pipeline.serve import deployment as deployment_module
from pipeline.serve.api import GenerationCancelled, GenerationTimedOut, Job
from pipeline.serve.deployment import VideoMVDeployment

ALL_OUTPUTS = ("views", "grid", "gif", "mp4", "gaussians_mp4", "ply", "glb")


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> VideoMVDeployment:
    root = tmp_path_factory.mktemp("serve-work")
    torch.manual_seed(0)
    LGM("tiny").save_pretrained(str(root / "lgm"))
    return VideoMVDeployment(make_tiny("t2v", str(root / "t2v")), str(root / "lgm"), 1, None, "fp32")


def job(**fields) -> Job:
    values = dict(prompt="a chair", image=None, seed=0, steps=2, guidance_scale=None, elevation=None,
                  three_d_aware=False, mode="two", outputs=ALL_OUTPUTS)
    return Job(**{**values, **fields})


def test_a_request_that_goes_away_after_denoising_stops_before_the_next_stage(replica, monkeypatch):
    """The client leaves while the orbit video is encoded: the mesh (the costliest stage) is never made."""
    went_away = threading.Event()
    meshed = []

    def mp4_then_leave(frames):
        went_away.set()
        return b"mp4"

    monkeypatch.setattr(deployment_module, "orbit_mp4", mp4_then_leave)
    monkeypatch.setattr(deployment_module, "mesh_from_gaussians", lambda *a, **k: meshed.append(1))
    with pytest.raises(GenerationCancelled, match="stopped before the gaussians_mp4 output"):
        replica._run([job()], [went_away])
    assert meshed == []


def test_the_time_limit_counts_from_the_start_of_the_work_and_covers_every_stage(replica, monkeypatch):
    began = time.monotonic()
    answers = replica._run([job(outputs=("views", "gif"))], [threading.Event()])  # without a stop: every stage
    assert len(answers[0]["views"]) == 24 and answers[0]["gif"]
    # A limit well above the denoising's time, and a GIF that takes longer than the limit.
    limit = round(2 * (time.monotonic() - began) + 2)
    meshed = []

    def slow_gif(frames):
        time.sleep(limit)
        return b"gif"

    monkeypatch.setattr(deployment_module, "orbit_gif", slow_gif)
    monkeypatch.setattr(deployment_module, "mesh_from_gaussians", lambda *a, **k: meshed.append(1))
    with pytest.raises(GenerationTimedOut, match=rf"longer than {limit} s \(stopped before the mp4 output\)"):
        replica._run([job(time_limit_s=float(limit))], [threading.Event()])
    assert meshed == []


def test_json_depth_counts_the_structure_not_the_brackets_in_strings():
    """The ingress refuses JSON nested deeper than its limit before parsing it (json.loads would
    recurse); brackets inside strings are text, whichever path (few brackets, or the string scan)
    the check takes."""
    import json

    from pipeline.serve.ingress import JSON_MAX_DEPTH, json_too_deep
    at_limit, over = "[" * JSON_MAX_DEPTH + "]" * JSON_MAX_DEPTH, "[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1)
    assert not json_too_deep(at_limit.encode()) and json_too_deep(over.encode())
    assert not json_too_deep(json.dumps({"prompt": "[{" * 10_000, "steps": 2}).encode())  # many, all in a string
    assert not json_too_deep(json.dumps({"prompt": "x" * (1 << 20), "steps": 2}).encode())
    assert json_too_deep(json.dumps({"prompt": '"[' * 100, "a": json.loads(over)}).encode())
    inside = "[" * (JSON_MAX_DEPTH - 1) + "]" * (JSON_MAX_DEPTH - 1)  # in an object: the limit exactly
    assert not json_too_deep(json.dumps({"a": json.loads(inside), "b": "[[[[" * 50}).encode())
