"""Command-line flags come from the config dataclasses: --help never disagrees with the code."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import typing

import pytest

from conftest import REPO_ROOT, load_job
from models.reconstructor.options import PRESET_TRAINING
from models.distillation.config import PRESETS as DISTILL_PRESETS
from pipeline.cli import add_config_arguments, config_from_args, config_from_strings, option
from pipeline.distillation import DistillJobConfig
from pipeline.encode_config import EncodeConfig
from pipeline.evaluation.config import EvaluationConfig
from pipeline.local_run_config import LocalRunConfig
from pipeline.render_config import RenderJobConfig
from pipeline.serve.api import GenerateRequest
from pipeline.serve.config import ServeConfig
from pipeline.train.config import RECON_TRAIN_DEFAULTS, ReconConfig, TrainConfig
from pipeline.train.reconstructor import with_preset_recipe

# job -> (the configs its flags come from: a class, or the name of one the job's file defines; the
# arguments that make a minimal valid command line). Every file of jobs/ is here.
JOBS = {
    "render": ((RenderJobConfig,), ["--input", "in", "--output", "out"]),
    "finetune": ((TrainConfig,), ["--model", "m", "--output", "o", "--name", "n"]),  # and --data or --latents
    "train_recon": ((TrainConfig, ReconConfig), ["--model", "m", "--output", "o", "--name", "n"]),  # and --data
    "encode": ((EncodeConfig,), ["--data", "d", "--model", "m", "--output", "o"]),
    "evaluate": ((EvaluationConfig,), ["--model", "m"]),
    "run_all": ((LocalRunConfig,), []),
    "serve": ((ServeConfig, "HttpConfig"), ["--model-dir", "m"]),
    "generate": (("GenerateConfig",), ["--out", "o", "--prompt", "p"]),
    "make_tiny": (("MakeTinyConfig",), ["--kind", "t2v", "--output", "o"]),
    "overfit_recon": (("OverfitConfig",), ["--shards", "s"]),
    "convert_official": (("ConvertConfig",), ["--checkpoint", "c", "--base", "b", "--output", "o"]),
    "distill": ((DistillJobConfig,), ["--model", "m", "--prompt", "p", "--output", "o"]),
}


JOB_FILES = sorted(path.stem for path in (REPO_ROOT / "jobs").glob("*.py") if path.stem != "__init__")


def flat_fields(config_cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    fields = {}
    hints = typing.get_type_hints(config_cls)
    for item in dataclasses.fields(config_cls):
        kind = hints[item.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            fields.update(flat_fields(kind, prefix + item.metadata.get("prefix", "")))
        else:
            fields[prefix + item.name] = item
    return fields


def test_every_job_takes_its_flags_from_config_dataclasses():
    assert sorted(JOBS) == JOB_FILES


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_flag_is_a_config_field_with_the_configs_default(job):
    minimal = JOBS[job][1]
    module = load_job(job)
    configs = job_configs(module, job)
    parser = module.build_parser()
    help_text = parser.format_help()
    args = parser.parse_args(minimal)
    fields = {name: item for config in configs for name, item in flat_fields(config).items()}
    overrides = {"train_recon": RECON_TRAIN_DEFAULTS,
                 "distill": {**dataclasses.asdict(DISTILL_PRESETS["mvdream"]), "preset": "mvdream"}}.get(job, {})
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.dest in fields, f"{job}: --{action.dest} is not a field of {configs}"
        item = fields[action.dest]
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            assert action.required, f"{job}: --{action.dest} has no default in the config, so it is required"
            continue
        if set(action.option_strings) & set(minimal):  # an optional flag the minimal command line needs
            continue
        expected = overrides.get(action.dest, item.default if item.default is not dataclasses.MISSING
                                 else item.default_factory())
        value = getattr(args, action.dest)
        if isinstance(expected, tuple):
            value = tuple(value)
        if isinstance(expected, dict):
            value = dict(v.split("=") for v in value or [])
        assert value == expected, f"{job}: --{action.dest} defaults to {value!r}, the config to {expected!r}"
        if item.metadata.get("help"):
            assert item.metadata["help"].split(" (")[0][:30] in " ".join(help_text.split())


def test_train_recon_help_shows_the_learning_rate_it_uses(caplog):
    parser = load_job("train_recon").build_parser()
    assert "its training recipe gives the default --lr (big 3e-5, small 4e-4, tiny 2e-3)" in \
        " ".join(parser.format_help().split())
    args = parser.parse_args(JOBS["train_recon"][1] + ["--data", "d"])
    config = config_from_args(TrainConfig, args)
    assert config.lr is None
    for preset, recipe in PRESET_TRAINING.items():
        recon = ReconConfig(lgm_preset=preset, lpips_vgg="vgg16.pth", lpips_lin="vgg.pth")
        assert with_preset_recipe(config, recon).lr == recipe.lr
    assert with_preset_recipe(dataclasses.replace(config, lr=1e-5), ReconConfig(lgm_preset="tiny")).lr == 1e-5
    with pytest.raises(ValueError, match=r"includes LPIPS, but --lpips-vgg \("):  # lin: torchmetrics' copy
        with_preset_recipe(config, ReconConfig(lgm_preset="big"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.train.reconstructor"):  # tiny goes without LPIPS and says so
        with_preset_recipe(config, ReconConfig(lgm_preset="tiny"))
    assert [r.getMessage() for r in caplog.records] == [
        "LPIPS weights not given (--lpips-vgg): the tiny preset trains without the LPIPS term, "
        "on RGB and alpha MSE only"]
    finetune = load_job("finetune").build_parser()
    assert "AdamW learning rate (default: 3e-05)" in " ".join(finetune.format_help().split())
    assert config_from_args(TrainConfig, finetune.parse_args(JOBS["finetune"][1] + ["--data", "d"])).lr == 3e-5
    with pytest.raises(ValueError, match="--data .* or --latents"):
        config_from_args(TrainConfig, finetune.parse_args(JOBS["finetune"][1]))
    with pytest.raises(ValueError, match="one of them"):
        config_from_args(TrainConfig, finetune.parse_args(JOBS["finetune"][1] + ["--data", "d", "--latents", "l"]))
    for workers in ("0", "-1"):  # 0 had ended in a ZeroDivisionError deep in the data plan
        with pytest.raises(ValueError, match=f"num_workers must be at least 1, got {workers}"):
            config_from_args(TrainConfig, finetune.parse_args(JOBS["finetune"][1] + ["--data", "d", "--num-workers",
                                                                                      workers]))


@dataclasses.dataclass
class Inner:
    steps: int = option(3, "inner steps")

@dataclasses.dataclass
class Example:
    name: str = option(help="required")
    ratio: float = option(0.5, "a float")
    flag: bool = option(True, "a switch")
    pair: tuple[float, float] = option((1.0, 2.0), "two values")
    items: tuple[str, ...] = option((), "any number", choices=("a", "b"))
    resources: dict[str, float] = option({}, "NAME=AMOUNT items")
    maybe: int | None = option(None, "optional")
    inner: Inner = dataclasses.field(default_factory=Inner, metadata={"prefix": "inner_"})


def test_generated_flags_parse_every_type():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    config = config_from_args(Example, parser.parse_args(
        ["--name", "x", "--ratio", "0.25", "--no-flag", "--pair", "3", "4", "--items", "a", "b",
         "--resources", "render=1", "--maybe", "7", "--inner-steps", "9"]))
    assert config == Example("x", 0.25, False, (3.0, 4.0), ("a", "b"), {"render": 1.0}, 7, Inner(9))
    assert config_from_args(Example, parser.parse_args(["--name", "y"])) == Example("y")
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --name is required
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "x", "--items", "c"])  # not a choice
    with pytest.raises(ValueError, match="bad resource"):
        config_from_args(Example, parser.parse_args(["--name", "x", "--resources", "render"]))


def test_serve_application_arguments_are_the_serve_config():
    config = config_from_strings(ServeConfig, {"model_dir": "/m", "num_gpus": "0", "max_replicas": "3", "lgm": ""})
    assert config == ServeConfig(model_dir="/m", reconstructor=None, num_gpus=0.0, max_replicas=3)
    with pytest.raises(ValueError, match=r"unknown: \['colour'\], missing: \['model_dir'\]"):
        config_from_strings(ServeConfig, {"colour": "red"})


def test_serve_defaults_follow_the_cluster():
    """A GPU replica batches (a batch fills the device); a CPU replica does not (measured no gain
    there, only latency: docs/costs.md). Explicit values are kept."""
    config = ServeConfig(model_dir="/m")
    assert (config.resolved(cluster_has_gpus=True).num_gpus, config.resolved(True).max_batch_size) == (1.0, 4)
    assert (config.resolved(cluster_has_gpus=False).num_gpus, config.resolved(False).max_batch_size) == (0.0, 1)
    cpu_on_gpu_cluster = ServeConfig(model_dir="/m", num_gpus=0).resolved(True)
    assert (cpu_on_gpu_cluster.num_gpus, cpu_on_gpu_cluster.max_batch_size) == (0.0, 1)
    explicit = ServeConfig(model_dir="/m", num_gpus=0.5, max_batch_size=2, max_queued=3)
    assert explicit.resolved(False) == explicit
    # The queue holds what the replicas can batch, four times over.
    assert ServeConfig(model_dir="/m", max_replicas=2).resolved(True).max_queued == 4 * 4 * 2
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        ServeConfig(model_dir="/m", max_batch_size=0).resolved(True)


def test_the_client_defaults_are_the_servers():
    parser = load_job("generate").build_parser()
    # the client's flag -> the request's field (the HTTP API keeps its short name "steps")
    for flag, field in (("seed", "seed"), ("num_inference_steps", "steps")):
        assert parser.get_default(flag) == GenerateRequest.model_fields[field].default, f"--{flag} disagrees"


def test_a_cpu_replica_chosen_because_the_cluster_has_no_gpus_now_is_a_warning(caplog):
    """An autoscaling cluster whose GPU group is at zero nodes looks CPU-only: the choice is said."""
    with caplog.at_level("WARNING", logger="pipeline.serve.app"):
        assert ServeConfig(model_dir="/m").resolved(cluster_has_gpus=False).num_gpus == 0.0
    assert "set num_gpus=1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.serve.app"):
        ServeConfig(model_dir="/m", num_gpus=0).resolved(cluster_has_gpus=False)  # asked for: no warning
    assert caplog.text == ""


@pytest.mark.parametrize("location", ["s3://bucket/lgm/model_fp16_fixrot.safetensors", "models:/videomv-lgm/3"])
def test_train_recon_takes_remote_reconstructor_locations(monkeypatch, tmp_path, location):
    job = load_job("train_recon")
    seen = {}

    def run(config, recon):
        seen["lgm"] = recon.reconstructor
        raise ValueError("stopped before Ray")  # the job reports it as an error: the check passed

    monkeypatch.setattr("pipeline.train.reconstructor.run_train_recon", run)
    args = ["--data", "d", "--model", "m", "--output", str(tmp_path), "--name", "n", "--lgm", location]
    assert job.main(args) == 2 and seen == {"lgm": location}
    seen.clear()
    assert job.main([*args[:-1], str(tmp_path / "missing.safetensors")]) == 2 and seen == {}


def test_renamed_flags_keep_their_old_name_for_one_release_with_a_warning():
    """``--lgm`` became ``--reconstructor`` (serve and train_recon, as evaluate already named it):
    the old flag and application argument still work, and say what to use instead."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ServeConfig)
    assert parser.parse_args(["--model-dir", "m", "--reconstructor", "r"]).reconstructor == "r"
    assert "--lgm is its deprecated old name" in " ".join(parser.format_help().split())
    with pytest.warns(FutureWarning, match="--lgm is deprecated.*use --reconstructor"):
        assert config_from_args(ServeConfig, parser.parse_args(["--model-dir", "m", "--lgm", "r"])).reconstructor == "r"
    with pytest.warns(FutureWarning, match="lgm= is deprecated.*use reconstructor="):
        assert config_from_strings(ServeConfig, {"model_dir": "m", "lgm": "r"}).reconstructor == "r"
    with pytest.raises(ValueError, match="not both"):
        config_from_strings(ServeConfig, {"model_dir": "m", "lgm": "r", "reconstructor": "s"})


HEAVY_LIBRARIES = ("diffusers", "transformers", "mlflow", "ray.train", "ray.data", "ray.serve", "bpy")


@pytest.mark.parametrize("job", JOB_FILES)
def test_help_loads_no_model_or_cluster_library(job):
    """``--help`` parses before it imports what the job runs (benchmarks/cli_help.py times it: under
    2 s each on 2 idle cores), and prints nothing but the help."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['jobs/{job}.py', '--help']\n"
            "try:\n"
            f"    runpy.run_path('jobs/{job}.py', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print(sorted(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stderr.strip() == "[]", result.stderr
    assert result.stdout.startswith("usage: ")
    assert "  " not in " ".join(line.strip() for line in result.stdout.split("\n\n")[1].splitlines()), \
        "examples keep their line breaks (no backslash-newline joined into runs of spaces)"


def test_every_job_is_an_installed_command_and_every_command_a_job():
    """``[project.scripts]`` names one ``videomv-*`` command per file of jobs/, each its ``main``;
    installed by scripts/setup.sh, each answers --help as the file does."""
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts.values()) == {f"jobs.{job}:main" for job in JOB_FILES}
    assert set(scripts) == {"videomv-" + job.replace("_", "-") for job in JOB_FILES}
    for job in JOB_FILES:
        assert "\ndef main(" in (REPO_ROOT / "jobs" / f"{job}.py").read_text(), f"jobs/{job}.py has no main"
    installed = Path(sys.executable).parent / "videomv-render"
    assert installed.is_file(), "scripts/setup.sh installs the commands into the venv"
    done = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--resolution" in done.stdout, done.stderr[-2000:]


def test_a_jobs_way_out_is_one_line_and_an_exit_code(caplog):
    """``pipeline.entry.run_job``: bad input -> 2, a failure outside the job -> 1, each as one line;
    a bug keeps its traceback."""
    import errno
    import logging

    from pipeline.entry import run_job
    from pipeline.tracking import TrackingError

    logger = logging.getLogger("jobs.test")

    def raising(error: BaseException):
        def work():
            raise error
        return work

    assert run_job(lambda: None, logger) == 0 and run_job(lambda: 3, logger) == 3
    with caplog.at_level("ERROR", logger="jobs.test"):
        assert run_job(raising(ValueError("--resolution must be positive")), logger) == 2
        assert run_job(raising(FileNotFoundError("no such model: m")), logger) == 2
        assert run_job(raising(TrackingError("store x could not be opened")), logger) == 1
        full = OSError(errno.ENOSPC, "No space left on device")
        wrapper = RuntimeError("a Ray task failed")
        wrapper.__cause__ = full
        assert run_job(raising(wrapper), logger) == 1
    assert [record.getMessage().splitlines()[0][:30] for record in caplog.records][:3] == [
        "--resolution must be positive", "no such model: m", "store x could not be opened"]
    assert all(record.exc_info is None for record in caplog.records)
    with pytest.raises(KeyError):
        run_job(raising(KeyError("a bug")), logger)


@pytest.mark.parametrize("job, stage, argv", [
    ("encode", "pipeline.encode_stage.run_encode", ["--data", "d", "--model", "m", "--output", "o"]),
    ("run_all", "pipeline.local_run.run_local", []),
])
def test_a_job_whose_stage_returns_its_summary_exits_0(monkeypatch, job, stage, argv):
    """The stages return what they made (a summary, the paths); the job's exit code is 0 all the same
    (``sys.exit`` of anything but an int or None prints it and exits 1)."""
    monkeypatch.setattr(stage, lambda config: {"made": "something"})
    assert load_job(job).main(argv) == 0


# Numbers a config leaves unbounded on purpose: any seed, elevation or port number is a setting;
# the shares and decays are checked against both ends in their config's __post_init__.
UNBOUNDED = {"seed", "elevation", "input_elevation", "guidance_scale", "port", "image_ratio", "condition_dropout",
             "ema_decay"}


def job_configs(module, job: str) -> list[type]:
    """The config classes ``job``'s flags come from (``JOBS``), those its file defines from ``module``."""
    return [getattr(module, name) if isinstance(name, str) else name for name in JOBS[job][0]]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_count_and_size_flag_has_a_bound_and_a_value_below_it_is_refused_naming_it(job):
    """A count, size, interval or rate below its ``option(..., minimum=)`` (or at its
    ``exclusive_minimum``) is refused when the job's config is made, in one line naming the field:
    ``--log-every 0`` had ended in a ZeroDivisionError in a training worker, ``--num-workers 0`` in
    one deep in the data plan."""
    module = load_job(job)
    parser = module.build_parser()
    minimal = JOBS[job][1] + (["--data", "d"] if job in ("finetune", "train_recon") else [])
    flags = {action.dest for action in parser._actions}  # a job may leave some of a config's fields off
    for config in job_configs(module, job):  # their own fields; nested settings check their own (below)
        hints = typing.get_type_hints(config)
        for item in dataclasses.fields(config):
            name = item.name
            if hints[name] not in (int, float, int | None, float | None) or name not in flags:
                continue
            bounds = {key: item.metadata[key] for key in ("minimum", "exclusive_minimum") if key in item.metadata}
            assert bounds or name in UNBOUNDED, f"{job}: --{name.replace('_', '-')} has no bound (option(minimum=))"
            if not bounds:
                continue
            value = bounds["minimum"] - 1 if "minimum" in bounds else bounds["exclusive_minimum"]
            args = parser.parse_args(minimal + [f"--{name.replace('_', '-')}", str(value)])
            with pytest.raises(ValueError, match=rf"^{name} must be (at least|more than) .*, got {value}$"):
                config_from_args(config, args)


def test_check_minimums_passes_unset_options_and_the_bounds_themselves():
    from pipeline.cli import check_minimums

    check_minimums(TrainConfig(model="m", data="d", output="o", name="n", num_workers=1, cpus_per_worker=None,
                               sample_every=0, max_failures=-1))
    with pytest.raises(ValueError, match="^cpus_per_worker must be more than 0.0, got 0.0$"):
        TrainConfig(model="m", data="d", output="o", name="n", cpus_per_worker=0.0)


def test_the_nested_settings_refuse_what_would_fail_later():
    """The settings of render/ and models/ (flags too: --threads, --fit-num-gaussians, ...) check their own."""
    from models.distillation.config import DistillConfig
    from models.gaussians.fit import FitConfig
    from render.settings import RenderSettings

    for make, message in ((lambda: RenderSettings(threads=-1), "threads must be 0"),
                          (lambda: RenderSettings(max_assets_per_process=0), "max_assets_per_process must be at least 1"),
                          (lambda: FitConfig(num_gaussians=0), "num_gaussians must be at least 1, got 0"),
                          (lambda: FitConfig(steps=-1), "steps must be 0 or more"),
                          (lambda: FitConfig(lr_means=0.0), "lr_means must be positive"),
                          (lambda: DistillConfig(resolution=4), "resolution must be at least 8 pixels, got 4")):
        with pytest.raises(ValueError, match=message):
            make()
    assert FitConfig(steps=0).steps == 0  # the initial Gaussians: the fit's own control
