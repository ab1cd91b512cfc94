"""The project as its users run it: the commands of docs/scale.md "A cluster on one machine", run as
written on a real local Ray cluster (`ray start --head`, `ray job submit --working-dir .` for every
stage, models handed on through the MLflow registry, `serve deploy serve_config.yaml`, a request).

The commands come from the doc's blocks marked ``<!-- runnable: one machine -->``, so a doc that
drifts fails here. The only changes are the test's isolation and size: the cluster gets its own temp
folder, ports and home (so its own auth token; it never joins or stops another cluster on this machine and is
stopped by its process group, not `ray stop`), the outputs go to a temporary folder instead of
``$PWD/out/cluster``, and training takes 3 steps instead of 20. Everything is checked after the
cluster is gone: outputs, MLflow runs, artifacts and registered versions where the user asked.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, runnable_blocks

# The suite's 900 s per test would cut the module's fixture (the docs' whole chain on a cluster of
# its own: 600-681 s inside `make test` on two busy cores) before the chain's own 2,400 s limit.
CHAIN_TIMEOUT_S = 2400
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(CHAIN_TIMEOUT_S + 300)]

STEPS_AS_DOCUMENTED = "--steps 20"
STEPS_HERE = "--steps 3"


def runnable_script(doc: Path, name: str) -> str:
    """The shell blocks of ``doc`` marked ``<!-- runnable: NAME -->``, in order, as one script."""
    return "\n".join(runnable_blocks(doc, name))


def substitute(script: str, old: str, new: str, count: int | None = None) -> str:
    """``script`` with ``old`` replaced; the doc must still say ``old`` (``count`` times if given)."""
    found = script.count(old)
    assert found and (count is None or found == count), f"the doc no longer says {old!r} ({found} times)"
    return script.replace(old, new)


def stop_process_group(group: int, grace: float = 3.0, timeout: float = 20.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, every process of ``group`` and all their
    descendants (Ray's workers start sessions of their own); nothing else on the machine is touched.
    The grace is short: a cluster's GCS server and one of its Python daemons outlive SIGTERM by more
    than 20 s (measured), and nothing of a test's cluster needs keeping."""
    import psutil

    members = set()
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.add(process)
                members.update(process.children(recursive=True))
        except (psutil.Error, ProcessLookupError):
            continue
    for process in members:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(members), timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout)


_RESERVED: list[range] = []  # ports this module gave out: single ones and the workers' ranges
WORKER_PORTS = 200


def reserved_port() -> int:
    """A port free now and outside every port and range this module gave out before."""
    while True:
        port = free_port()
        if not any(port in taken for taken in _RESERVED):
            _RESERVED.append(range(port, port + 1))
            return port


def isolated_head_flags(temp: Path) -> str:
    """`ray start --head` flags giving a cluster its own temp folder and ports: a workers' range
    first, then single ports outside it and outside every other cluster's (Ray refuses a port its
    own components share)."""
    while True:
        start = free_port()
        block = range(start, start + WORKER_PORTS + 1)
        if block.stop < 65535 and not any(set(block) & set(taken) for taken in _RESERVED):
            _RESERVED.append(block)
            break
    names = ("port", "ray-client-server-port", "node-manager-port", "object-manager-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
             "metrics-export-port")
    flags = " ".join(f"--{name} {reserved_port()}" for name in names)
    return f"--temp-dir {temp} {flags} --min-worker-port {block.start} --max-worker-port {block.stop - 1}"


def venv_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def group_of(temp: Path) -> int | None:
    """The process group of the GCS server of the cluster whose temp folder is ``temp``."""
    import psutil

    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "gcs_server" and any(str(temp) in part for part in process.info["cmdline"]):
                return os.getpgid(process.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return None


@pytest.fixture(scope="module")
def one_machine_run(tmp_path_factory):
    """Runs the doc's one-machine script once; yields (exit code, log text, OUT, ray temp dir)."""
    root = tmp_path_factory.mktemp("as-users-run-it")
    out = root / "out"
    # Short: Ray's socket paths under it must stay within the 107 bytes of a Unix socket address.
    ray_temp = Path(tempfile.mkdtemp(prefix="vmv-ray-", dir="/tmp"))
    script = runnable_script(REPO_ROOT / "docs" / "scale.md", "one machine")
    ports = {"dashboard": reserved_port(), "serve": reserved_port()}
    script = substitute(script, "ray start --head", f"ray start --head {isolated_head_flags(ray_temp)}", count=1)
    script = substitute(script, "8265", str(ports["dashboard"]))
    script = substitute(script, "http://127.0.0.1:8000", f"http://127.0.0.1:{ports['serve']}")
    script = substitute(script, 'serve_config.yaml > "$OUT/serve_config.yaml"',
                        f'serve_config.yaml | sed "s|port: 8000|port: {ports["serve"]}|" > "$OUT/serve_config.yaml"',
                        count=1)
    script = substitute(script, '"$PWD/out/cluster"', f'"{out}"', count=1)
    script = substitute(script, STEPS_AS_DOCUMENTED, STEPS_HERE)
    script = re.sub(r"(?m)^ray stop\b.*$", ": the test stops its own cluster by its process group", script)
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("RAY_", "MLFLOW_")) and key != "PYTHONPATH"}
    # A home of its own: the doc's `ray get-auth-token --generate` writes this cluster's token there,
    # and the machine's ~/.ray/auth_token (other clusters') is left alone.
    (root / "home").mkdir()
    environment.update(HOME=str(root / "home"), VIDEOMV_CACHE=str(root / "cache"))
    # Another user's cluster on the same machine: the jobs must neither join it nor trip over it
    # (Ray's helpers that look their cluster up as "auto" find two), and it must outlive the test.
    decoy_temp = Path(tempfile.mkdtemp(prefix="vmv-decoy-", dir="/tmp"))
    decoy = subprocess.run(f"ray start --head --num-cpus 1 --include-dashboard false --disable-usage-stats "
                           f"{isolated_head_flags(decoy_temp)}", shell=True, env={**environment, "PATH": venv_path()},
                           capture_output=True, text=True, start_new_session=True, timeout=120)
    assert decoy.returncode == 0, decoy.stdout + decoy.stderr
    decoy_group = group_of(decoy_temp)
    log_path = root / "script.log"
    try:
        with open(log_path, "w") as log:
            process = subprocess.Popen(["bash", "-c", "set -euxo pipefail\n" + script], cwd=REPO_ROOT,
                                       env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=CHAIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                stop_process_group(process.pid)
        assert group_of(decoy_temp) == decoy_group, "the other cluster on the machine is still running"
        yield code, log_path.read_text(), out, ray_temp
    finally:
        stop_process_group(decoy_group)
        shutil.rmtree(ray_temp, ignore_errors=True)
        shutil.rmtree(decoy_temp, ignore_errors=True)


def test_the_docs_one_machine_commands_run_as_written(one_machine_run):
    code, log, out, _ = one_machine_run
    assert code == 0, f"the doc's commands failed (exit {code}); the end of their output:\n{log[-6000:]}"
    submitted = runnable_script(REPO_ROOT / "docs" / "scale.md", "one machine").count("ray job submit")
    assert log.count("succeeded") == submitted >= 8, "every ray job submit succeeded"
    # Row 2: submitting the finished render again renders nothing and succeeds.
    assert re.search(r"4 assets in input, 4 already in \S+, 0 to render", log), log[-4000:]
    # Every job says what it did (the jobs' own loggers reach the log).
    assert "fine-tuning t2v-tiny done: 3 steps" in log and "reconstructor training recon-tiny done" in log
    # The fine-tune submitted again unchanged: its driver finds the final model published and starts no workers.
    assert re.search(r"t2v-tiny: the final model of step 3 is already published at \S+ \(registered as "
                     r"models:/videomv-t2v-tiny/1\): nothing to train", log), log[-4000:]
    # Row 7: a healthy chain's log holds no traceback (Ray Train's cleaner, MLflow's imports).
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def test_every_output_is_where_the_user_asked_and_readable_after_the_cluster_is_gone(one_machine_run):
    import mlflow

    from pipeline.data import shards

    code, log, out, ray_temp = one_machine_run
    assert code == 0, log[-3000:]
    rows = shards.read_rows(str(out / "shards"), columns=["uid", "status", "caption"])
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}
    assert all(row["caption"] for row in rows), "assets/captions.csv was picked up"
    assert (out / "latents").is_dir() and (out / "train" / "t2v-tiny" / "final_model" / "model_index.json").is_file()
    assert (out / "train" / "recon-tiny" / "final_model").is_dir()
    assert (out / "eval" / "table.md").is_file()
    assert {"gaussians.ply", "gaussians.splat", "orbit.mp4", "mesh.glb"} <= set(os.listdir(out / "distill"))
    assert {"grid.png", "gaussians.ply", "mesh.glb"} <= set(os.listdir(out / "result"))

    store = f"sqlite:///{out / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    experiments = {e.name: e for e in client.search_experiments()}
    for name in ("videomv-render", "videomv-finetune", "videomv-eval", "videomv-distill"):
        assert name in experiments, sorted(experiments)
    for experiment in experiments.values():
        if experiment.name == "Default":
            continue
        assert experiment.artifact_location == f"file://{out / 'mlartifacts'}", experiment
        runs = client.search_runs([experiment.experiment_id])
        assert runs and {run.info.status for run in runs} == {"FINISHED"}, (experiment.name, runs)
    assert len(client.search_runs([experiments["videomv-render"].experiment_id])) == 2
    for name in ("videomv-t2v-tiny", "videomv-lgm-tiny"):
        (version,) = client.search_model_versions(f"name = '{name}'")
        source = client.get_model_version_download_uri(name, version.version)
        assert source.startswith(f"file://{out / 'mlartifacts'}/"), source
        assert os.listdir(source[len("file://"):]), f"{name}'s files are readable at {source}"
    # Nothing landed in Ray's copies of the working dir (relative outputs, ./mlflow.db, ./mlruns).
    copies = list(ray_temp.glob("session_*/runtime_resources/working_dir_files/*"))
    strays = [str(path) for copy in copies for pattern in ("mlflow.db", "mlruns", "mlartifacts", "out")
              for path in copy.glob(pattern)]
    assert not strays, strays
