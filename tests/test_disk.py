"""A full disk (issue 40 F10): found whatever wraps it, said in one line, checked before a
checkpoint is staged, and never leaving staging copies or a truncated model behind."""

from __future__ import annotations

import errno
import os
import tempfile
import types

import pytest
import torch

from pipeline.disk import DiskFullError, disk_full_cause, disk_full_line, require_free_space
from pipeline.train.config import FINAL_MODEL, TrainConfig
from pipeline.train.worker import prepare_checkpoint_space, publish_final, report


def full(path: str = "/data/out/model.safetensors") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def test_a_full_disk_is_found_inside_what_wraps_it(ray_local):
    try:
        try:
            raise full()
        except OSError as inner:
            raise RuntimeError("the checkpoint could not be written") from inner
    except RuntimeError as outer:
        chained = outer
    assert disk_full_cause(chained).errno == errno.ENOSPC
    assert disk_full_cause(RuntimeError("something else")) is None
    assert disk_full_cause(OSError(errno.EACCES, "denied")) is None

    @ray_local.remote
    def write_on_a_full_disk() -> None:  # self-contained: the worker does not import this test module
        import errno

        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/model.safetensors")

    with pytest.raises(Exception) as caught:  # Ray's RayTaskError, from another process
        ray_local.get(write_on_a_full_disk.remote())
    line = disk_full_line(caught.value)
    assert line is not None and "\n" not in line
    assert line.startswith("the disk is full writing /data/out/model.safetensors: No space left on device")


def test_too_little_room_is_refused_before_writing_naming_the_folder_and_sizes(tmp_path):
    with pytest.raises(DiskFullError, match=r"a checkpoint needs about 1048576\.00 GB in .*, which has .* GB free"):
        require_free_space(str(tmp_path), 2**50, "a checkpoint")
    assert disk_full_line(DiskFullError("x needs 2 GB")) .startswith("the disk is full: x needs 2 GB")


def worker_state(name: str, rank: int = 0) -> types.SimpleNamespace:
    """What ``report`` and ``prepare_checkpoint_space`` read of a ``WorkerState`` (rank, role, the run)."""
    return types.SimpleNamespace(is_chief=rank == 0, rank=rank, world_size=1, train=types.SimpleNamespace(name=name),
                                 scaler=torch.amp.GradScaler("cpu", enabled=False))


def staged(name: str) -> list[str]:
    return [entry for entry in os.listdir(tempfile.gettempdir()) if entry.startswith(f"videomv-checkpoint-{name}-")]


def test_a_checkpoint_that_hits_a_full_disk_leaves_no_staging_copy():
    """A checkpoint write that fails (ENOSPC half-way) used to leave its full staging copy in /tmp
    on every retry."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(10))])

    def save_half_then_fail(directory: str) -> None:
        with open(os.path.join(directory, "weights.bin"), "wb") as handle:
            handle.write(b"\0" * 1000)
        raise full(os.path.join(directory, "weights.bin"))

    with pytest.raises(OSError) as caught:
        report(worker_state("disk-test-a"), 10, {"loss": 1.0}, save_half_then_fail, optimizer)
    assert caught.value.errno == errno.ENOSPC and staged("disk-test-a") == []

    # A checkpoint bigger than the free space is refused before anything is written.
    huge = torch.optim.AdamW([torch.nn.Parameter(torch.empty(2**48, device="meta"))])
    with pytest.raises(DiskFullError, match="a checkpoint's staging copy needs about"):
        report(worker_state("disk-test-a"), 10, {"loss": 1.0}, save_half_then_fail, huge)
    assert staged("disk-test-a") == []


def test_a_new_attempt_clears_its_runs_stale_staging_and_fails_at_once_on_a_full_disk():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(10))])
    mine = tempfile.mkdtemp(prefix="videomv-checkpoint-disk-test-b-rank0-")
    other_run = tempfile.mkdtemp(prefix="videomv-checkpoint-disk-test-c-rank0-")
    other_rank = tempfile.mkdtemp(prefix="videomv-checkpoint-disk-test-b-rank1-")
    try:
        prepare_checkpoint_space(worker_state("disk-test-b"), optimizer)
        assert not os.path.exists(mine) and os.path.isdir(other_run) and os.path.isdir(other_rank)
        huge = torch.optim.AdamW([torch.nn.Parameter(torch.empty(2**48, device="meta"))])
        with pytest.raises(DiskFullError):
            prepare_checkpoint_space(worker_state("disk-test-b"), huge)
    finally:
        for folder in (other_run, other_rank):
            os.rmdir(folder)


def test_a_final_model_that_hits_a_full_disk_keeps_the_previous_one_whole(tmp_path):
    config = TrainConfig(model="unused", data="unused", output=str(tmp_path), name="run")
    target = tmp_path / "run" / FINAL_MODEL
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"the previous model")

    def save_then_fail_copying(directory: str) -> None:
        with open(os.path.join(directory, "model.safetensors"), "wb") as handle:
            handle.write(b"new")
        raise full(os.path.join(directory, "model.safetensors"))

    with pytest.raises(OSError):
        publish_final(save_then_fail_copying, config, None)
    assert (target / "model.safetensors").read_bytes() == b"the previous model"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [FINAL_MODEL]

    def save(directory: str) -> None:
        with open(os.path.join(directory, "model.safetensors"), "wb") as handle:
            handle.write(b"the new model")

    assert publish_final(save, config, None) == str(target)
    assert (target / "model.safetensors").read_bytes() == b"the new model"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [FINAL_MODEL]
