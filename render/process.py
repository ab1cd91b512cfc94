"""Parent side of the Blender isolation: one Blender process, a timeout per object, recycling.

Blender can hang or crash on bad assets, and leaks memory over thousands of imports. So it runs in
its own process group (``python -m render.worker``); a hang past the timeout or a crash kills the
whole group, and the process is replaced after ``max_assets_per_process`` objects. Nothing here
imports bpy or torch.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.settings import RenderSettings
from render.worker import MEMORY_LIMIT_ENV

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
_STARTUP_TIMEOUT_S = 180.0
_LOG_TAIL_LINES = 30


class RenderFailure(RuntimeError):
    """One object could not be rendered; the message says why (shown in the row's ``error``)."""


@dataclass
class RenderOutput:
    """What one rendered object produced. Files live in ``directory`` until ``cleanup`` (or until
    the ``BlenderProcess`` that made them closes)."""

    directory: str
    views: list[str]
    passes: dict[str, list[str]] = field(default_factory=dict)
    device: str = "CPU"
    seconds: float = 0.0
    missing_textures: list[str] = field(default_factory=list)  # references that did not load (rendered magenta)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class BlenderProcess:
    """A recycled, killable Blender worker process.

    Use as a context manager, or call ``close``. ``render`` is not thread-safe. Everything the
    process writes (its log, the renders, Blender's own temporary folder) lives in ``work_dir``;
    ``close`` removes that folder unless the caller gave it.
    """

    def __init__(self, max_assets_per_process: int = 20, work_dir: str | None = None,
                 memory_limit_gb: float = 0.0) -> None:
        self.max_assets_per_process = max_assets_per_process
        self.memory_limit_gb = memory_limit_gb  # heap the process may use (render.worker); 0: no limit
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="videomv-render-")
        self.blender_version: str | None = None
        self._process: subprocess.Popen | None = None
        self._log_path = os.path.join(self.work_dir, "blender.log")
        self._assets_rendered = 0
        self._buffer = b""

    # -- lifecycle -----------------------------------------------------------------------------
    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        # Blender makes its own blender_XXXXXX folder under TMPDIR and removes it only on a clean
        # exit; a killed or recycled process would leave one in /tmp per start.
        env["TMPDIR"] = self.work_dir
        env.pop(MEMORY_LIMIT_ENV, None)
        if self.memory_limit_gb > 0:
            env[MEMORY_LIMIT_ENV] = str(int(self.memory_limit_gb * 2**30))
        os.makedirs(self.work_dir, exist_ok=True)  # again after a close
        self._log = open(self._log_path, "ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "render.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=_PROJECT_ROOT,
            start_new_session=True,  # own process group: a kill reaches every child
        )
        self._buffer = b""
        self._assets_rendered = 0
        hello = self._read_message(_STARTUP_TIMEOUT_S, "starting Blender")
        self.blender_version = hello.get("blender_version")

    def kill(self) -> None:
        """Kill the whole process group now (used on timeouts and at close)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()
        self._log.close()

    def close(self) -> None:
        self.kill()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> "BlenderProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -- protocol ------------------------------------------------------------------------------
    def _log_tail(self) -> str:
        try:
            with open(self._log_path, "rb") as log:
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(collections.deque(lines, maxlen=_LOG_TAIL_LINES))

    def _read_message(self, timeout: float, what: str) -> dict:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + timeout
        stdout = self._process.stdout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise RenderFailure(f"timed out after {timeout:.0f} s while {what}; Blender process killed")
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 1 << 16)
                if not chunk:
                    code = self._process.wait()
                    tail = self._log_tail()
                    self.kill()
                    limit = (f"; it may have needed more than its memory limit of {self.memory_limit_gb:g} GB "
                             "(memory_limit_gb)" if self.memory_limit_gb > 0 else "")
                    raise RenderFailure(f"Blender process died (exit code {code}) while {what}{limit}. "
                                        f"Log tail:\n{tail}"[-3000:])
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def render(self, asset_path: str, c2w: np.ndarray, settings: RenderSettings) -> RenderOutput:
        """Render one object; raises ``RenderFailure`` with a clear message on any failure.

        Args:
            asset_path: local file (GLB/GLTF/FBX/OBJ/PLY/STL).
            c2w: [V, 4, 4] OpenGL camera-to-world, project world frame.
            settings: render settings; ``settings.timeout`` bounds this call (import + all views).
        """
        os.makedirs(self.work_dir, exist_ok=True)  # again after a close
        output_dir = tempfile.mkdtemp(prefix="object-", dir=self.work_dir)
        request = {
            "asset": os.path.abspath(asset_path),
            "c2w": np.asarray(c2w, dtype=np.float64).reshape(-1, 16).tolist(),
            "settings": settings.to_json(),
            "output_dir": output_dir,
        }
        try:
            answer = self._ask(request, settings.timeout, f"rendering {os.path.basename(asset_path)}")
        except RenderFailure:
            shutil.rmtree(output_dir, ignore_errors=True)
            raise
        outputs = answer["outputs"]
        return RenderOutput(
            directory=output_dir,
            views=outputs.pop("views"),
            passes=outputs,
            device=answer.get("device", "CPU"),
            seconds=float(answer.get("seconds", 0.0)),
            missing_textures=list(answer.get("missing_textures", [])),
        )

    def world_mesh(self, asset_path: str, timeout: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
        """The object's triangles as the renders show it: normalised into the unit cube, in the
        project's Y-up world frame. Returns (vertices [N, 3] float64, faces [F, 3] int64)."""
        path = os.path.join(self.work_dir, f"mesh-{os.getpid()}-{time.monotonic_ns()}.npz")
        self._ask({"asset": os.path.abspath(asset_path), "mesh": path}, timeout,
                  f"exporting the mesh of {os.path.basename(asset_path)}")
        try:
            with np.load(path) as data:
                return data["vertices"], data["faces"]
        finally:
            os.remove(path)

    def _ask(self, request: dict, timeout: float, what: str) -> dict:
        """Send one request to the worker (started or recycled first) and return its answer;
        ``RenderFailure`` on a crash, a timeout or an answer that is not ok."""
        if self._process is None or self._assets_rendered >= self.max_assets_per_process:
            self.kill()
            self._start()
        assert self._process is not None and self._process.stdin is not None
        self._assets_rendered += 1
        try:
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
            answer = self._read_message(timeout, what)
        except BrokenPipeError:
            tail = self._log_tail()
            self.kill()
            raise RenderFailure(f"Blender process died before the request was sent. Log tail:\n{tail}") from None
        if not answer["ok"]:
            raise RenderFailure(answer["error"])
        return answer
