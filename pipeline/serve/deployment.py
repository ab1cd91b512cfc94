"""The model deployment of the Serve app: one replica holds G, the reconstructor and the sampler
(``VideoMVPipeline``) on its device, batches compatible requests into one pipeline call, reports
progress and stops a generation whose requests went away. It runs in its own process (a GPU actor
where the cluster has GPUs); only this module imports the model code, so the CPU ingress never does.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import threading
import time
from typing import Any

import torch
from ray import serve

import camera
from models.gaussians.ply import save_ply, save_splat
from models.mesh.from_gaussians import glb_bytes, mesh_from_gaussians
from models.mesh.fusion import MeshingError, MeshOptions
from models.gaussians.rendering import backend_in_use, render_batch, warm_up
from models.pipeline_videomv.pipeline_videomv import load_pipeline
from models.precision import dtype_name
from models.variants import VARIANTS
from pipeline.serve.api import GenerationCancelled, GenerationTimedOut, Job
from pipeline.serve.media import grid_image, orbit_gif, orbit_mp4, png_bytes, to_uint8
from pipeline.tracking import tracking_uri

logger = logging.getLogger(__name__)
PROGRESS_KEPT = 1024  # request ids whose progress a replica remembers


class VideoMVDeployment:
    """A model replica: ``VideoMVPipeline`` (G and the reconstructor) with request batching."""

    def __init__(self, model_dir: str, reconstructor: str | None = None, max_batch_size: int = 4,
                 mlflow_uri: str | None = None, dtype: str = "auto", use_ema: bool = False,
                 mesh_max_faces: int | None = None) -> None:
        self.pipe = load_pipeline(model_dir, reconstructor, tracking_uri=tracking_uri(mlflow_uri), dtype=dtype,
                                  use_ema=use_ema)
        self.pipe.set_progress_bar_config(disable=True)
        self.mesh_options = MeshOptions() if mesh_max_faces is None else MeshOptions(max_faces=mesh_max_faces)
        # gsplat builds its CUDA kernels on first use (minutes): here, so the replica is ready only
        # once it can answer, and a fallback to the PyTorch rasteriser shows in /v1/health.
        if self.pipe.reconstructor is not None:
            warm_up(self.pipe.device)
        self._generate_batch.set_max_batch_size(max_batch_size)  # 1 turns batching off
        self._cancelled: dict[int, threading.Event] = {}  # id(job) -> set when its request went away
        self.stats = {"running": 0, "completed": 0, "cancelled": 0, "timed_out": 0, "failed": 0}
        self.progress: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    def info(self) -> dict[str, Any]:
        pipe = self.pipe
        rasterizer = backend_in_use(pipe.device) if pipe.reconstructor is not None else None
        return {"variant": pipe.variant, "reconstructor": pipe.reconstructor is not None,
                "resolution": pipe.resolution, "frames": pipe.num_frames,
                "training_cameras": pipe.training_cameras, "sampling_defaults": pipe.sampling_defaults,
                "device": str(pipe.device),
                "dtype": dtype_name(pipe.unet.dtype), "rasterizer": rasterizer}

    def get_progress(self, request_id: str) -> dict[str, Any]:
        """Steps done of a request named by its ``request_id`` (state "unknown" when this replica
        has not seen it: not arrived yet, or on another replica)."""
        return {"request_id": request_id, **self.progress.get(request_id, {"state": "unknown", "done": 0,
                                                                           "total": 0})}

    def _report_progress(self, jobs: list[Job], state: str, done: int | None) -> None:
        """``done`` None: the steps done so far stay as they are (a stop's state)."""
        for job in jobs:
            if job.request_id:
                steps = self.progress.get(job.request_id, {}).get("done", 0) if done is None else done
                self.progress[job.request_id] = {"state": state, "done": steps, "total": job.steps}
                self.progress.move_to_end(job.request_id)
        while len(self.progress) > PROGRESS_KEPT:
            self.progress.popitem(last=False)

    def get_stats(self) -> dict[str, int]:
        return dict(self.stats)

    async def generate(self, job: Job) -> dict[str, Any] | Exception:
        """One request. Serve cancels this call when the client disconnects or the ingress gives
        up; the event tells the sampling thread, which stops at its next step or stage. A
        ``request_id`` names one request only: a second request with it is refused."""
        if job.request_id:
            if job.request_id in self.progress:
                return ValueError("request_id was already used: ask POST /v1/requests for a new one")
            self._report_progress([job], "queued", 0)
        cancelled = self._cancelled[id(job)] = threading.Event()
        try:
            return await self._generate_batch(job)
        except asyncio.CancelledError:
            cancelled.set()
            if job.request_id and self.progress.get(job.request_id, {}).get("state") == "queued":
                self._report_progress([job], "cancelled", 0)  # went away before its work began
            raise
        finally:
            self._cancelled.pop(id(job), None)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, jobs: list[Job]) -> list[dict[str, Any] | Exception]:
        results: list[dict[str, Any] | Exception | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.batch_key(), []).append(index)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            events = [self._cancelled.get(id(job)) or threading.Event() for job in group]
            self.stats["running"] += len(group)
            try:
                # In a thread, so the replica's event loop stays free to take cancellations.
                outputs = await asyncio.to_thread(self._run, group, events)
                self.stats["completed"] += len(group)
            except GenerationCancelled as error:
                self.stats["cancelled"] += len(group)
                self._report_progress(group, "cancelled", None)
                logger.info("generation of %d request(s) stopped (%s): their clients went away", len(group), error)
                outputs = [RuntimeError("generation cancelled")] * len(group)
            except GenerationTimedOut as error:
                self.stats["timed_out"] += len(group)
                self._report_progress(group, "timed_out", None)
                outputs = [error] * len(group)
            except Exception as error:  # a model error answers these requests, the replica lives on
                self.stats["failed"] += len(group)
                self._report_progress(group, "failed", None)
                outputs = [RuntimeError(f"generation failed: {type(error).__name__}: {error}")] * len(indices)
            finally:
                self.stats["running"] -= len(group)
            for index, output in zip(indices, outputs):
                results[index] = output
        return results

    def _run(self, jobs: list[Job], cancelled: list[threading.Event]) -> list[dict[str, Any]]:
        first, pipe = jobs[0], self.pipe

        self._report_progress(jobs, "running", 0)
        start = time.perf_counter()

        def check(stage: str) -> None:
            """Stop the batch when every request went away, or its work passed the time limit:
            between denoising steps and before every stage after them."""
            if all(event.is_set() for event in cancelled):
                raise GenerationCancelled(f"stopped {stage}")
            if first.time_limit_s is not None and time.perf_counter() - start > first.time_limit_s:
                raise GenerationTimedOut(f"generation took longer than {first.time_limit_s:.0f} s (stopped {stage})")

        def stop_when_abandoned(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            self._report_progress(jobs, "running", index + 1)
            check(f"after {index + 1} of {first.steps} steps")
            return tensors

        takes_prompt = VARIANTS[pipe.variant].takes_prompt
        inputs: dict[str, Any] = ({"prompt": [job.prompt for job in jobs]} if takes_prompt
                                  else {"image": torch.stack([job.image for job in jobs]) / 2 + 0.5})
        result = self.pipe(**inputs, num_inference_steps=first.steps, guidance_scale=first.guidance_scale,
                           elevation=first.elevation, three_d_aware=first.three_d_aware, three_d_aware_mode=first.mode,
                           generator=[torch.Generator().manual_seed(job.seed) for job in jobs], output_type="pt",
                           callback_on_step_end=stop_when_abandoned)
        seconds = time.perf_counter() - start
        answers: list[dict[str, Any]] = []
        for index, job in enumerate(jobs):
            if cancelled[index].is_set():  # its client went away: no outputs for nobody
                answers.append({})
                continue
            frames = to_uint8(result.frames[index])
            answer: dict[str, Any] = {"seed": job.seed, "seconds": seconds, "reconstructions": result.reconstructions,
                                      "batch_size": len(jobs)}
            if job.image is not None:  # the condition as the model saw it (preprocessed): always returned
                answer["input"] = png_bytes(to_uint8(job.image[None] / 2 + 0.5)[0])
            if "views" in job.outputs:
                check("before the views output")
                answer["views"] = [png_bytes(frame) for frame in frames]
            if "grid" in job.outputs:
                check("before the grid output")
                answer["grid"] = png_bytes(grid_image(frames))
            if "gif" in job.outputs:
                check("before the gif output")
                answer["gif"] = orbit_gif(frames)
            if "mp4" in job.outputs:
                check("before the mp4 output")
                answer["mp4"] = orbit_mp4(frames)
            if "gaussians_mp4" in job.outputs and result.gaussians is not None:
                check("before the gaussians_mp4 output")
                c2w = torch.as_tensor(result.cameras[index])[None].to(pipe.device)
                rendered, _ = render_batch(result.gaussians[index].as_batch(), c2w, camera.DEFAULT_FOV_DEG,
                                           pipe.resolution, pipe.background)
                answer["gaussians_mp4"] = orbit_mp4(rendered[0].clamp(0, 1))
            if "ply" in job.outputs and result.gaussians is not None:
                buffer = io.BytesIO()
                save_ply(result.gaussians[index], buffer)
                answer["ply"] = buffer.getvalue()
            if "splat" in job.outputs and result.gaussians is not None:
                buffer = io.BytesIO()
                save_splat(result.gaussians[index], buffer)
                answer["splat"] = buffer.getvalue()
            if "glb" in job.outputs and result.gaussians is not None:
                check("before the glb output")
                try:
                    # On the replica's device: gsplat renders the depth maps on a GPU replica.
                    mesh = mesh_from_gaussians(result.gaussians[index], result.frames[index],
                                               result.cameras[index], self.mesh_options)
                    answer["glb"] = glb_bytes(mesh.textured)
                except MeshingError as error:  # the rest of the answer stands; the reason goes with it
                    answer.setdefault("unavailable", {})["glb"] = str(error)
            answers.append(answer)
        self._report_progress(jobs, "done", first.steps)
        return answers
