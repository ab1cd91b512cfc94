"""The GPU check suite: the full-size paths on one GPU, in one command, as one table.

On a CUDA machine (one H100/H200) every network is built at full size from its published config
with random weights (``benchmarks.full_size``; nothing is downloaded) and the production code runs
on it. The default ``--budget`` (540 s) fits one 10-minute command including gsplat's first build
of its CUDA kernels (a few minutes on a fresh machine, inside the rasteriser row): a check whose
estimated time (``ESTIMATED_S``) would not fit what is left becomes a "skipped" row. Every row is
printed, and appended to ``--markdown``, as it finishes, so a run stopped by a time limit keeps
the rows it made. TF32 is on only where production turns it on (``models.precision.allow_tf32``:
sampling, the evaluation fit, meshing, through ``load_pipeline``), never for the training rows,
as the training workers never set it.

1. rasteriser: gsplat forward+backward on 65,536 Gaussians x 24 views at 256 px, fp32 and with
   half-precision Gaussians under autocast, against the PyTorch rasteriser (time, peak, max |diff|);
2. CUDA generators: G's fine-tuning loss, its one-step x0 (4 decoded views) and sampling, each
   drawing from a generator on the GPU;
3. a fine-tuning step of the full-size UNet (fp32 master weights, fp16 autocast, gradient
   checkpointing, DDP with gradients as bucket views, fused AdamW) at micro-batch 1, 2 and 4, with
   AdamW and with ``--optimizer zero1`` (ZeroRedundancyOptimizer over this one rank: its code path
   and its step time; the memory it saves needs several GPUs);
4. sampling, fp32 against fp16, plain against 3D-aware (the authors' steps, two reconstructions),
   batch 1 and 4 (``Sizes.num_inference_steps`` DDIM steps; seconds also scaled to 50 steps);
5. one reconstructor micro-step as ``jobs/train_recon.py`` runs it: G's one-step x0 under autocast
   and the 4 input views decoded, then LGM big supervised at 24 views at 512 px with LPIPS;
6. the evaluation's Gaussian fit (12 views, 8,192 Gaussians, 300 steps) on the GPU;
7. a tiny ``jobs/finetune.py`` run of 2 steps with the default ``--use-gpu`` (the GPU, found on the
   cluster), then resumed to 3 with ``--use-gpu``;
8. the mesh of 65,536 half-precision Gaussians (a sphere's shell) from 24 views at 256 px: depth
   rendered on the GPU, fused and textured on the CPU (``models.mesh``; time and peak);
9. multi-view score distillation (``models.distillation``, MVDream's settings): steps per second
   and peak memory of the x0-reconstruction and SDS losses, G in fp16 under autocast, 16,384
   Gaussians rendered at G's 24 views;
10. the test suite's CUDA-only tests (``pytest -m gpu``; skipped on a CPU).

``--smoke`` runs the same code on the CPU with tiny models and sizes in 3-5 minutes on 2 cores (part of
``make test`` through ``tests/test_gpu_check.py``); gsplat rows then say "skipped: needs CUDA", and
the training rows' autocast is the workers' on that CPU (bf16, or fp32 without bf16 instructions:
``models.precision.training_autocast``).

    python benchmarks/gpu_check.py [--smoke] [--only rasteriser,training,...] [--markdown FILE] [--budget S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402

import camera  # noqa: E402
from models.gaussians.gaussians import Gaussians  # noqa: E402
from models.precision import training_autocast  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ("rasteriser", "generators", "training", "sampling", "reconstructor", "fit", "finetune_job", "mesh",
          "distillation", "gpu_tests")
# Seconds each check is planned to take at full size on one H100 (the rasteriser's includes gsplat's
# first build): estimates from FLOP counts and the CPU runs, not yet measured on a GPU (none lent);
# they sum to 570 s. --budget skips a check whose estimate no longer fits. The smoke run's are a tenth.
ESTIMATED_S = {"rasteriser": 150, "generators": 30, "training": 80, "sampling": 70, "reconstructor": 50,
               "fit": 20, "finetune_job": 60, "mesh": 30, "distillation": 40, "gpu_tests": 40}
TF32_CHECKS = ("sampling", "fit", "mesh", "distillation")  # inference paths: load_pipeline turns TF32 on; training never does
DEFAULT_BUDGET_S = 540.0
HEADER = ("| check | setting | seconds | peak GB | result |", "|---|---|---:|---:|---|")


@dataclass
class Sizes:
    gaussians: int
    render_size: int
    micro_batches: tuple[int, ...]
    sample_batches: tuple[int, ...]
    sample_dtypes: tuple[str, ...]
    num_inference_steps: int
    recon_size: int
    fit_steps: int
    fit_gaussians: int


FULL = Sizes(gaussians=65_536, render_size=256, micro_batches=(1, 2, 4), sample_batches=(1, 4),
             sample_dtypes=("fp32", "fp16"), num_inference_steps=10, recon_size=512, fit_steps=300, fit_gaussians=8192)
SMOKE = Sizes(gaussians=2048, render_size=32, micro_batches=(1, 2), sample_batches=(1, 2),
              sample_dtypes=("fp32", "bf16"), num_inference_steps=3, recon_size=32, fit_steps=5, fit_gaussians=256)


@dataclass
class Row:
    check: str
    setting: str
    seconds: float | None = None
    peak_gb: float | None = None
    result: str = "ok"


def row_line(row: Row) -> str:
    seconds = f"{row.seconds:.3f}" if row.seconds is not None else ""
    peak = f"{row.peak_gb:.1f}" if row.peak_gb is not None else ""
    return f"| {row.check} | {row.setting} | {seconds} | {peak} | {row.result} |"


class Suite:
    def __init__(self, device: torch.device, smoke: bool, markdown: str | None = None) -> None:
        self.device, self.smoke = device, smoke
        self.sizes = SMOKE if smoke else FULL
        self.rows: list[Row] = []
        self.cuda = device.type == "cuda"
        self.markdown = markdown
        self.deadline = float("inf")  # time.perf_counter() by which the run must end (--budget)
        self._emit("\n".join(HEADER), mode="w")

    def _emit(self, text: str, mode: str = "a") -> None:
        """A line of the table, on stdout and in the markdown file, now."""
        print(text, flush=True)
        if self.markdown:
            with open(self.markdown, mode, encoding="utf-8") as handle:
                handle.write(text + "\n")

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self._emit(row_line(row))

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    # -- measuring ---------------------------------------------------------------------------------
    def measure(self, check: str, setting: str, run: Callable[[], str | None], repeat: int = 1,
                annotate: Callable[[float], str] | None = None) -> None:
        """Time ``run`` (after one warm-up call when ``repeat`` > 1) and record its peak memory;
        ``annotate(seconds)`` adds to the row's result."""
        try:
            if repeat > 1:
                run()
            self._sync()
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            start = time.perf_counter()
            for _ in range(repeat):
                result = run()
            self._sync()
            seconds = (time.perf_counter() - start) / repeat
            peak = torch.cuda.max_memory_allocated(self.device) / 1e9 if self.cuda else None
            self.add(Row(check, setting, seconds, peak, (result or "ok") + (annotate(seconds) if annotate else "")))
        except Exception as error:  # a failed check is a row of the table, the others still run
            self.add(Row(check, setting, result=f"FAILED {type(error).__name__}: {str(error).splitlines()[0]}"))
        finally:
            if self.cuda:
                torch.cuda.empty_cache()

    def skip(self, check: str, setting: str, why: str) -> None:
        self.add(Row(check, setting, result=f"skipped: {why}"))

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- the models --------------------------------------------------------------------------------
    def generator_model(self, dtype: torch.dtype = torch.float32) -> Any:
        """G in eval mode, as loaded (``in_eval_mode``)."""
        from benchmarks.full_size import build_full_size_model, in_eval_mode

        if self.smoke:
            from models.precision import cast
            from models.toy.tiny import build_tiny

            model = in_eval_mode(build_tiny("t2v").to(self.device))
            for module in (model.denoiser, model.vae, model.text_encoder):
                cast(module, dtype)
            return model

        return build_full_size_model(self.device, dtype)

    def reconstructor(self) -> Any:
        from models.reconstructor.model import LGM

        torch.manual_seed(0)
        return LGM("tiny" if self.smoke else "big").to(self.device)

    def orbit(self, batch: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        views = torch.rand(batch, camera.NUM_VIEWS, 3, resolution, resolution, device=self.device)
        c2w = torch.as_tensor(camera.orbit_c2w(15.0), dtype=torch.float32, device=self.device)
        return views, c2w[None].expand(batch, -1, -1, -1)

    # -- 1. rasteriser -----------------------------------------------------------------------------
    def rasteriser(self) -> None:
        from models.gaussians.rendering import render_batch, warm_up

        size, count = self.sizes.render_size, self.sizes.gaussians
        generator = torch.Generator(device=self.device).manual_seed(0)
        leaves = {
            "means": (torch.rand(1, count, 3, generator=generator, device=self.device) - 0.5) * 0.8,
            "quats": torch.randn(1, count, 4, generator=generator, device=self.device),
            "scales": torch.full((1, count, 3), -4.0, device=self.device),
            "opacities": torch.zeros(1, count, device=self.device),
            "colors": torch.rand(1, count, 3, generator=generator, device=self.device),
        }
        for tensor in leaves.values():
            tensor.requires_grad_(True)
        _, c2w = self.orbit(1, size)

        def scene(dtype: torch.dtype) -> Gaussians:
            return Gaussians(means=leaves["means"].to(dtype),
                             quats=torch.nn.functional.normalize(leaves["quats"], dim=-1).to(dtype),
                             scales=leaves["scales"].exp().to(dtype), opacities=torch.sigmoid(leaves["opacities"]).to(dtype),
                             colors=leaves["colors"].to(dtype))

        outputs: dict[str, torch.Tensor] = {}

        def step(backend: str, dtype: torch.dtype, autocast: bool) -> Callable[[], str]:
            def run() -> str:
                context = (torch.autocast(self.device.type, dtype=torch.float16) if autocast
                           else torch.autocast(self.device.type, enabled=False))
                with context:
                    colors, _ = render_batch(scene(dtype), c2w, camera.DEFAULT_FOV_DEG, size, (0.5, 0.5, 0.5), backend)
                colors.mean().backward()
                outputs[f"{backend}-{dtype}"] = colors.detach()
                return f"{count} Gaussians x {camera.NUM_VIEWS} views at {size} px"
            return run

        label = f"{count // 1024}K x 24 views, {size} px, fwd+bwd"
        self.measure("rasteriser", f"torch, fp32, {label}", step("torch", torch.float32, False))
        if not self.cuda:
            self.skip("rasteriser", "gsplat, fp32 and fp16 autocast", "needs CUDA")
            return
        backend = warm_up(self.device)
        if backend["backend"] != "gsplat":
            self.skip("rasteriser", "gsplat", f"gsplat unusable: {backend['fallback']}")
            return
        self.measure("rasteriser", f"gsplat, fp32, {label}", step("gsplat", torch.float32, False), repeat=3)
        self.measure("rasteriser", f"gsplat, fp16 Gaussians under autocast, {label}",
                     step("gsplat", torch.float16, True), repeat=3)
        difference = (outputs["gsplat-torch.float32"] - outputs["torch-torch.float32"]).abs().max().item()
        self.add(Row("rasteriser", "gsplat vs torch, fp32", result=f"max |diff| {difference:.2e}"))

    # -- 2. CUDA generators ------------------------------------------------------------------------
    def generators(self) -> None:
        from models.generator.objective import MultiViewBatch, diffusion_loss
        from models.pipeline_videomv.one_step import one_step_x0

        model = self.generator_model()
        model.freeze_encoders()
        resolution = model.resolution
        views, c2w = self.orbit(1, resolution)
        generator = torch.Generator(device=self.device).manual_seed(0)
        autocast = training_autocast("fp16", self.device)  # the workers' default

        def loss() -> str:
            model.denoiser.train()  # as fine-tuning computes it
            with torch.no_grad():
                value = diffusion_loss(model, MultiViewBatch(views * 2 - 1, c2w, ["a chair, 3d asset"]), generator,
                                       autocast_dtype=autocast)
            return f"loss {value.item():.4f}" if torch.isfinite(value) else "FAILED: loss not finite"

        def x0() -> str:
            model.denoiser.eval()  # as the reconstructor's training holds G
            out = one_step_x0(model, views * 2 - 1, c2w, ["a chair, 3d asset"], torch.tensor([381], device=self.device),
                              generator, frames=[0, 6, 12, 18], autocast_dtype=autocast)
            return f"x0 {tuple(out.shape)} on {out.device.type}"

        self.measure("generators", f"fine-tuning loss, {self.device.type} generator", loss)
        self.measure("generators", f"one-step x0 (4 views decoded), {self.device.type} generator", x0)
        del model

    # -- 3. fine-tuning step -----------------------------------------------------------------------
    def training(self) -> None:
        import torch.distributed as dist

        from models.generator.objective import MultiViewBatch, diffusion_loss
        from pipeline.train.worker import build_optimizer, ddp_options

        _init_process_group("nccl" if self.cuda else "gloo")
        model = self.generator_model(torch.float32)
        model.freeze_encoders()
        model.denoiser.enable_gradient_checkpointing()
        model.denoiser.train()
        ddp = torch.nn.parallel.DistributedDataParallel(model.denoiser, **ddp_options())
        optimizer = None
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.cuda)
        autocast = training_autocast("fp16", self.device)  # the workers' default
        generator = torch.Generator(device=self.device).manual_seed(0)

        def step(micro_batch: int) -> Callable[[], str]:
            def run() -> str:
                views, c2w = self.orbit(micro_batch, model.resolution)
                batch = MultiViewBatch(views * 2 - 1, c2w, ["a chair, 3d asset"] * micro_batch)
                loss = diffusion_loss(model, batch, generator, autocast_dtype=autocast, unet=ddp)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                return f"loss {loss.item():.4f}"
            return run

        for name in ("adamw", "zero1"):
            # world_size 2 asks for the sharded optimizer; over this one rank it holds the whole state.
            optimizer = build_optimizer(model.denoiser.parameters(), 3e-5, name, world_size=1 if name == "adamw" else 2)
            for micro_batch in self.sizes.micro_batches:
                self.measure("training", f"fine-tuning step, micro-batch {micro_batch} (DDP, fused AdamW"
                             f"{', ZeRO-1' if name == 'zero1' else ''})", step(micro_batch), repeat=2)
            optimizer = None
        del ddp, model
        dist.destroy_process_group()

    # -- 4. sampling -------------------------------------------------------------------------------
    def sampling(self) -> None:
        from models.precision import DTYPES, cast
        from models.pipeline_videomv.three_d_aware import reconstruction_steps

        steps = self.sizes.num_inference_steps
        for name in self.sizes.sample_dtypes:
            dtype = DTYPES[name]
            model = self.generator_model(dtype)
            reconstructor = cast(self.reconstructor(), dtype)
            pipe = model.with_reconstructor(reconstructor)
            pipe.set_progress_bar_config(disable=True)
            for three_d_aware in (False, True):
                for batch in self.sizes.sample_batches:
                    at = reconstruction_steps(steps, "authors") if three_d_aware else ()
                    generators = [torch.Generator(device=self.device).manual_seed(i) for i in range(batch)]

                    def run(at: tuple = at, batch: int = batch, generators: list = generators) -> str:
                        out = pipe(prompt=["a wooden chair, 3d asset"] * batch, num_inference_steps=steps,
                                   three_d_aware=at, generator=generators, output_type="pt")
                        if not torch.isfinite(out.frames).all():
                            return "FAILED: views not finite"
                        return f"{out.reconstructions} reconstructions"

                    setting = f"{name}, {'3D-aware' if three_d_aware else 'plain'}, batch {batch}, {steps} steps"
                    self.measure("sampling", setting, run,
                                 annotate=lambda seconds: f"; {seconds * 50 / steps:.1f} s at 50 steps")
            del pipe, model, reconstructor

    # -- 5. reconstructor step ---------------------------------------------------------------------
    def reconstructor_step(self) -> None:
        """``jobs/train_recon.py``'s micro-step as its workers run it: G (full size, fp32 weights,
        frozen) predicts x0 from the noised orbit under autocast and decodes the 4 input views, then
        LGM takes them and is supervised at every view (``reconstructor_batch``, ``reconstruction_step``)."""
        from models.metrics.lpips import LPIPS
        from models.reconstructor.loss import ReconstructionLoss
        from models.reconstructor.training import reconstruction_step
        from models.toy.tiny import make_tiny_evaluation_weights
        from pipeline.train.reconstructor import reconstructor_batch

        generator_model = self.generator_model(torch.float32)
        generator_model.freeze_encoders()
        generator_model.denoiser.requires_grad_(False).eval()
        lgm = self.reconstructor().train()
        with tempfile.TemporaryDirectory() as scratch:
            weights = make_tiny_evaluation_weights(scratch)
            loss_fn = ReconstructionLoss(LPIPS.from_files(weights["lpips_vgg"], weights["lpips_lin"])).to(self.device)
        optimizer = torch.optim.AdamW(lgm.parameters(), lr=3e-5, weight_decay=0.0, fused=True)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.cuda)
        autocast = training_autocast("fp16", self.device)  # the workers' default (pipeline.train.worker)
        size = self.sizes.recon_size
        views, c2w = self.orbit(1, size)
        inputs = {"views": views * 2 - 1, "alphas": torch.ones_like(views[:, :, :1]), "cameras": c2w,
                  "prompts": ["a chair, 3d asset"]}
        rng = torch.Generator(device=self.device).manual_seed(0)

        def run() -> str:
            batch = reconstructor_batch(generator_model, inputs, rng, generator_model.resolution, camera.NUM_VIEWS,
                                        "random", autocast)
            with torch.autocast(self.device.type, dtype=autocast, enabled=autocast is not None):
                terms, _, _ = reconstruction_step(lgm, loss_fn, batch.targets, batch.alphas, batch.cameras,
                                                  batch.input_views, batch.supervised, batch.background,
                                                  input_images=batch.inputs)
            scaler.scale(terms["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            return f"loss {terms['loss'].item():.4f}"

        preset = "tiny" if self.smoke else "big"
        self.measure("reconstructor", f"train_recon micro-step: G's x0 under autocast, LGM {preset} on 4 views, "
                     f"24 views at {min(size, lgm.options.output_size)} px, LPIPS", run, repeat=2)
        del generator_model, lgm, optimizer

    # -- 6. evaluation fit -------------------------------------------------------------------------
    def fit(self) -> None:
        from models.gaussians.fit import FitConfig, fit_gaussians

        resolution = 32 if self.smoke else 256
        views, c2w = self.orbit(1, resolution)
        config = FitConfig(steps=self.sizes.fit_steps, num_gaussians=self.sizes.fit_gaussians)

        def run() -> str:
            fitted = fit_gaussians(views[0, ::2], c2w[0, ::2], camera.DEFAULT_FOV_DEG, (0.5, 0.5, 0.5), config)
            return f"{fitted.count} Gaussians on {fitted.means.device.type}"

        self.measure("fit", f"evaluation fit, 12 views at {resolution} px, {config.num_gaussians} Gaussians, "
                     f"{config.steps} steps", run)

    # -- 7. the fine-tuning job --------------------------------------------------------------------
    def finetune_job(self) -> None:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
            def job(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)

            def run() -> str:
                from models.toy.tiny import make_tiny

                make_tiny("t2v", f"{scratch}/tiny")  # here, not a job: a process start less (~8 s)
                render = job("jobs/render.py", "--input", "assets", "--output", f"{scratch}/shards", "--resolution",
                             "32", "--samples", "2", "--mlflow-uri", f"sqlite:///{scratch}/mlflow.db")
                if render.returncode != 0:
                    return f"FAILED: render exited {render.returncode}: {render.stderr.strip().splitlines()[-1:]}"
                common = ["jobs/finetune.py", "--data", f"{scratch}/shards", "--model", f"{scratch}/tiny",
                          "--output", f"{scratch}/runs", "--name", "gpu-check", "--num-workers", "1",
                          "--resolution", "32", "--global-batch", "1", "--checkpoint-every", "2",
                          "--mlflow-uri", f"sqlite:///{scratch}/mlflow.db"]
                # The first run takes the default (the cluster's GPUs when there are any), the resume asks for them.
                first = job(*common, "--steps", "2")
                second = job(*common, "--steps", "3", *(["--use-gpu"] if self.cuda else []))
                for name, done in (("first run", first), ("resumed run", second)):
                    if done.returncode != 0:
                        return f"FAILED: {name} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"
                if "resumed from step 2" not in second.stdout + second.stderr:
                    return "FAILED: the second run did not resume from step 2"
                if self.cuda and "training on 1 of them" not in first.stdout + first.stderr:
                    return "FAILED: the default --use-gpu did not choose the GPU"
                return "2 steps, then resumed at step 3"

            self.measure("finetune_job", f"jobs/finetune.py 2 steps (default device) + resume"
                         f"{' with --use-gpu' if self.cuda else ''}", run)

    # -- 8. the mesh -------------------------------------------------------------------------------
    def mesh(self) -> None:
        from models.gaussians.rendering import render_batch
        from models.mesh.fusion import MeshOptions
        from models.mesh.from_gaussians import mesh_from_gaussians

        count, size = self.sizes.gaussians, self.sizes.render_size
        generator = torch.Generator(device=self.device).manual_seed(0)
        directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, device=self.device), dim=-1)
        colours = torch.rand(count, 3, generator=generator, device=self.device)
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device)
        sphere = Gaussians(means=directions * 0.35, quats=identity.expand(count, 4),
                           scales=torch.full((count, 3), 0.02 if self.smoke else 0.006, device=self.device),
                           opacities=torch.full((count,), 0.95, device=self.device), colors=colours).to(torch.float16)
        _, c2w = self.orbit(1, size)
        views: list[torch.Tensor] = []  # the views the mesh is textured from

        def render() -> str:
            with torch.no_grad():
                views.append(render_batch(sphere.to(torch.float32).as_batch(), c2w, camera.DEFAULT_FOV_DEG, size,
                                          (1.0, 1.0, 1.0))[0][0])
            return f"{len(views[0])} views"

        self.measure("mesh", f"the views to texture from, {size} px", render)
        if not views:
            return
        options = MeshOptions(resolution=32, depth_size=32, texture_size=64) if self.smoke else MeshOptions()

        def run() -> str:
            mesh = mesh_from_gaussians(sphere, views[0], c2w[0], options)
            return (f"{len(mesh.textured.faces)} faces, watertight {mesh.watertight.is_watertight}, "
                    f"{'texture' if mesh.has_texture else 'vertex colours'}")

        self.measure("mesh", f"{count // 1024}K fp16 Gaussians, 24 views at {size} px, {options.resolution}^3 grid, "
                     f"depth {options.depth_size} px", run)

    # -- 9. multi-view score distillation --------------------------------------------------------
    def distillation(self) -> None:
        from models.distillation.config import preset
        from models.distillation.distill import Distillation

        model = self.generator_model(torch.float16 if self.cuda else torch.float32)
        count = 256 if self.smoke else 16_384
        for loss in ("x0", "sds"):
            config = preset("mvdream", num_gaussians=count, loss=loss)
            run = Distillation(model, config, prompt="a corgi wearing a top hat")
            self.measure("distillation", f"{loss} loss, {count} Gaussians, {model.num_frames} views at "
                         f"{run.resolution} px, CFG {config.guidance_scale:g}, G {next(model.unet.parameters()).dtype}",
                         lambda: f"loss {run.step()['loss']:.3g}", repeat=3,
                         annotate=lambda seconds: f"; {1 / seconds:.2f} steps/s")
        del model

    # -- 10. the tests marked gpu -------------------------------------------------------------------
    def gpu_tests(self) -> None:
        files = sorted(name for name in os.listdir(os.path.join(REPO, "tests"))
                       if name.startswith("test_") and "mark.gpu" in open(os.path.join(REPO, "tests", name)).read())

        def run() -> str:
            done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                   *(os.path.join("tests", name) for name in files)], cwd=REPO, capture_output=True,
                                  text=True, timeout=max(30.0, min(900.0, self.left_s())))
            summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
            return summary if done.returncode in (0, 5) else f"FAILED: {summary}"

        self.measure("gpu_tests", f"pytest -m gpu ({', '.join(files)})", run)

    # -- the table ---------------------------------------------------------------------------------
    def table(self) -> str:
        return "\n".join([*HEADER, *(row_line(row) for row in self.rows)])


def _init_process_group(backend: str) -> None:
    """A one-process group, so that DDP (and its buckets) is the trainers' own wrapper."""
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=0, world_size=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes on the CPU (the CI's run)")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks of {', '.join(CHECKS)}")
    parser.add_argument("--markdown", help="also write the table to this file, row by row")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds the run may take; checks that would not fit are skipped rows (default: "
                             f"{DEFAULT_BUDGET_S:g}, one 10-minute command with gsplat's build; none with --smoke)")
    args = parser.parse_args(argv)
    checks = [name for name in args.only.split(",") if name]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {CHECKS}")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: the full-size suite needs a GPU (run --smoke for the CPU version)")
    device = torch.device("cpu" if args.smoke else "cuda")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke: tiny models)"
    print(f"GPU check on {where}, torch {torch.__version__}\n", flush=True)
    suite = Suite(device, args.smoke, args.markdown)
    began = time.perf_counter()
    budget = args.budget if args.budget is not None else (float("inf") if args.smoke else DEFAULT_BUDGET_S)
    suite.deadline = began + budget
    scale = 0.1 if args.smoke else 1.0
    from models.precision import allow_tf32

    defaults = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for name in checks:
        estimate = ESTIMATED_S[name] * scale
        if estimate > suite.left_s():
            suite.skip(name, "all", f"would not fit the --budget (about {estimate:.0f} s, {max(0, suite.left_s()):.0f} s "
                                    "left)")
            continue
        if name in TF32_CHECKS:
            allow_tf32()
        else:  # torch's defaults, which the training workers keep
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = defaults
        getattr(suite, "reconstructor_step" if name == "reconstructor" else name)()
        print(f"gpu_check: {name} done at {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    print(f"\n{len(suite.rows)} rows in {time.perf_counter() - began:.0f} s", flush=True)
    failed = [row for row in suite.rows if row.result.startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
