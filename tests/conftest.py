"""Shared fixtures: the sample assets, generated test assets and a local Ray instance."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The main job's bundled assets (assets/) plus the test-only ones (tests/data/assets/); see the
# ATTRIBUTION.md in each folder.
ASSET_FOLDERS = (REPO_ROOT / "assets", REPO_ROOT / "tests" / "data" / "assets")
ASSET_SUFFIXES = (".glb", ".obj", ".mtl", ".jpg", ".ply", ".stl")


@pytest.fixture(scope="session")
def sample_assets(tmp_path_factory) -> Path:
    """One folder with every real sample asset (GLB, textured OBJ, PLY, STL, and a GLB without
    geometry), copied from the repository's asset folders (1.1 MB; links leaving an input folder
    are not followed)."""
    folder = tmp_path_factory.mktemp("sample-assets")
    for source in ASSET_FOLDERS:
        for path in sorted(source.iterdir()):
            if path.suffix.lower() in ASSET_SUFFIXES:
                shutil.copy(path, folder / path.name)
    return folder


# A doc's block marked ``<!-- runnable: NAME -->`` is a promise that a test runs it as written.
RUNNABLE = re.compile(r"<!-- runnable: (?P<name>[^>]+?) -->\s*```(?P<language>\w+)\n(?P<body>.*?)```", re.S)


def runnable_blocks(doc: Path, name: str, language: str = "bash") -> list[str]:
    """The ``language`` blocks of ``doc`` marked ``<!-- runnable: NAME -->``, in order (``bash``
    takes ``sh`` blocks too)."""
    languages = {"bash", "sh"} if language == "bash" else {language}
    blocks = [match["body"] for match in RUNNABLE.finditer(doc.read_text())
              if match["name"] == name and match["language"] in languages]
    assert blocks, f"{doc} has no {language} block marked runnable: {name}"
    return blocks


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a Serve HTTP proxy)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_tiny_serve_app(root: Path, name: str, training_cameras: dict[str, list[float]]) -> tuple[str, str]:
    """The Serve app on a tiny t2v model (its camera embedding records ``training_cameras``, as a
    fine-tune writes it) and a tiny reconstructor, on a free port; returns (url, model directory)
    once ``/v1/health`` answers. The caller shuts Serve down."""
    import time

    import requests
    import torch
    from ray import serve

    from models.reconstructor.model import LGM
    from models.pipeline_videomv.pipeline_videomv import VideoMVPipeline
    from models.toy.tiny import make_tiny
    from pipeline.serve.app import start_http

    model_dir = make_tiny("t2v", str(root / "tiny-t2v"))
    model = VideoMVPipeline.from_pretrained(model_dir)
    model.camera_embedding.register_to_config(training_cameras=training_cameras)
    model.save_pretrained(model_dir)
    torch.manual_seed(0)
    LGM("tiny").save_pretrained(str(root / "lgm"))
    port = free_port()
    start_http("127.0.0.1", port)
    serve.run(tiny_serve_app(root, model_dir), name=name, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if requests.get(f"{url}/v1/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(1)
    return url, model_dir


def tiny_serve_app(root: Path, model_dir: str):
    """The application ``start_tiny_serve_app`` deploys (its reconstructor in ``root / "lgm"``)."""
    from pipeline.serve.app import build_app

    # Batching is asked for: a CPU replica does not batch by default, and the tests check batching.
    return build_app(model_dir, reconstructor=str(root / "lgm"), num_gpus=0, max_batch_size=4, timeout_s=120)


def load_job(name: str):
    """``jobs/<name>.py`` as a module (nothing imports jobs/: tests load the file, as Python runs it)."""
    return load_script(REPO_ROOT / "jobs" / f"{name}.py", f"job_{name}")


def load_script(path: Path, module_name: str):
    """The script at ``path`` (jobs/, scripts/) as the module ``module_name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations there
    spec.loader.exec_module(module)
    return module


WORKER_ENV = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}


def start_local_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, runtime_env=WORKER_ENV)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for the whole session (tests that need another cluster
    restore it when they are done)."""
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head and a second raylet on this machine, each with 2 CPUs and the custom resources
    render=1 and trainer=1 (standing in for cluster.yaml's node types). Yields the two node ids;
    afterwards the session's local Ray is restored."""
    import ray
    from ray.cluster_utils import Cluster

    was_running = ray.is_initialized()
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"render": 1, "trainer": 1},
                                                           "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"render": 1, "trainer": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env=WORKER_ENV)
    try:
        nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        assert len(nodes) == 2
        yield nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        if was_running:
            start_local_ray()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def pytest_configure(config) -> None:
    # Blender and Ray must not pick up a user's GPU or config in tests.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray Train's controller polls its workers every 2 s: a tiny fit that is done waits for the next
    # poll, at its start and its end. Polling every 0.5 s took about 2 s off a fit (a 2-step fit, twice
    # each way: 25.4 s against 27.3 s); the suite runs about 16. Ray passes this on to the controllers
    # of the jobs the tests start; the cluster tier's chain keeps Ray's default, as users have it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # Ray Train's preemption watcher (an actor per fit, for observability of cloud nodes being
    # drained) has nothing to watch here: about 2 CPU-s a fit, 31 over a suite. The chain keeps Ray's
    # default (on), as users have it.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    if running_under_xdist(config):
        # Two test workers on two cores: one thread each (torch's OpenMP, numba's kernels and every
        # process they start), or each one's threads wait on the other's.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(name, "1")


@dataclasses.dataclass
class EarlyRun:
    """A subprocess that a test marked ``starts_early(command)`` only checks the output of: started
    when collection ends, with its own folder (``{folder}`` in the command) and its stdout and stderr
    in files there, so that it runs beside the tests before it. A test that leaves a core idle for
    minutes then lends it: the cluster tier's chain, first in the suite, ran at 0.99 of the 2 cores
    over 279 s (per-test CPU from /proc/stat). The test takes its run from the ``early_run`` fixture."""

    command: list[str]
    folder: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.folder / "stdout.txt", "w") as out, open(self.folder / "stderr.txt", "w") as err:
            self.process = subprocess.Popen([part.replace("{folder}", str(self.folder)) for part in self.command],
                                            cwd=REPO_ROOT, stdout=out, stderr=err, text=True)

    def wait(self, timeout: float) -> tuple[int | None, str, str]:
        """(exit code, None when it ran past ``timeout`` and was killed; stdout; stderr)."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        return code, (self.folder / "stdout.txt").read_text(), (self.folder / "stderr.txt").read_text()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_EARLY = pytest.StashKey[dict]()


def running_under_xdist(config) -> bool:
    """True in a pytest-xdist worker: there the other worker lends the idle core, and a worker does
    not know at collection which tests it will run, so a ``starts_early`` run starts with its test."""
    return hasattr(config, "workerinput")


def pytest_collection_finish(session) -> None:
    if session.config.option.collectonly or running_under_xdist(session.config):
        return
    runs = session.config.stash.setdefault(_EARLY, {})
    for item in session.items:  # the selected tests, in the order they run
        if item.get_closest_marker("starts_early") is not None:
            runs[item.nodeid] = start_early(item)


def start_early(item) -> EarlyRun:
    run = EarlyRun(list(item.get_closest_marker("starts_early").args[0]), Path(tempfile.mkdtemp(prefix="early-run-")))
    run.start()
    return run


def pytest_sessionfinish(session) -> None:
    for run in session.config.stash.get(_EARLY, {}).values():
        run.stop()
        shutil.rmtree(run.folder, ignore_errors=True)


@pytest.fixture
def early_run(request) -> EarlyRun:
    """The ``starts_early`` run of the requesting test (started when collection ended; under xdist,
    now: the ordering below makes it a worker's first test)."""
    runs = request.config.stash.setdefault(_EARLY, {})
    if request.node.nodeid not in runs:
        runs[request.node.nodeid] = start_early(request.node)
    return runs[request.node.nodeid]


# Fixtures that start or join a Ray instance: their tests are the "ray" tier (make check leaves it out).
RAY_FIXTURES = {"ray_local", "two_node_cluster", "own_ray"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
    # The longest files first, so that `make test`'s two workers (pytest-xdist, --dist loadfile) do not
    # end on one long file alone: the cluster tier, then the starts_early subprocess (the GPU suite's
    # smoke run, about 5 min on one thread), then by their count of slow and Ray tests.
    rank: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        cost = 1000 if item.get_closest_marker("cluster") else 100 if item.get_closest_marker("starts_early") \
            else 10 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("ray") else 0
        rank[path] = rank.get(path, 0) + cost
    items.sort(key=lambda item: -rank[item.nodeid.split("::")[0]])


@pytest.fixture(scope="session")
def duck_row(sample_assets) -> dict:
    """The Duck rendered by the render stage at 64 px (8 samples): one ok shard row."""
    from pipeline.render_stage import render_asset
    from pipeline.data.sources import AssetRef
    from render.process import BlenderProcess
    from render.settings import RenderSettings

    with BlenderProcess() as process:
        row = render_asset(AssetRef("duck", "local", str(sample_assets / "Duck.glb")), process,
                           RenderSettings(resolution=64, samples=8, threads=2))
    assert row["status"] == "ok", row["error"]
    return row


@pytest.fixture(scope="session")
def overfit_duck(duck_row):
    """The tiny reconstructor (32 px) overfit for 60 steps on the Duck rendered by the render stage.

    Returns (lgm, data, result): data has views [24, 3, 64, 64] on white, alphas, c2w.
    """
    import dataclasses

    import torch

    from models.reconstructor.model import LGM
    from models.reconstructor.options import PRESETS
    from models.reconstructor.training import overfit_one_object
    from pipeline.data.rows import row_to_tensors

    data = row_to_tensors(duck_row, background=(1.0, 1.0, 1.0))
    torch.manual_seed(0)
    model = LGM(dataclasses.replace(PRESETS["tiny"], input_size=32, output_size=32))
    result = overfit_one_object(model, data["views"], data["alphas"], data["c2w"], steps=60)
    model.eval()
    return model, data, result
