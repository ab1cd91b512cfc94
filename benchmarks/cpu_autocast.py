"""A training step on this CPU in fp32 against bf16 autocast: why ``--precision fp16`` (the default)
trains in fp32 on a CPU without bf16 instructions (``models.precision.training_autocast``).

The tiny text-to-multi-view model's ``diffusion_loss`` and backward, the step the workers take, on
one thread (a Ray Train worker's default share), warmed up, then the median of ``--repeat`` steps
in each precision. Prints the two times, their ratio and what ``training_autocast`` chooses here.

    python benchmarks/cpu_autocast.py [--repeat 3] [--threads 1]
Target: the precision chosen for fp16 is the faster of the two.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import torch  # noqa: E402

import camera  # noqa: E402
from models.generator.objective import MultiViewBatch, diffusion_loss  # noqa: E402
from models.precision import cpu_has_fast_bf16, training_autocast  # noqa: E402
from models.toy.tiny import build_tiny  # noqa: E402


def step_seconds(model: torch.nn.Module, batch: MultiViewBatch, dtype: torch.dtype | None, repeat: int) -> float:
    times = []
    for index in range(repeat + 1):  # the first is the warm-up
        start = time.perf_counter()
        diffusion_loss(model, batch, torch.Generator().manual_seed(index), autocast_dtype=dtype).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_tiny("t2v")
    model.freeze_encoders()
    views = torch.rand(1, camera.NUM_VIEWS, 3, model.resolution, model.resolution) * 2 - 1
    c2w = torch.from_numpy(camera.orbit_c2w(15.0)).float()[None]
    batch = MultiViewBatch(views, c2w, ["a chair, 3d asset"])
    fp32 = step_seconds(model, batch, None, args.repeat)
    bf16 = step_seconds(model, batch, torch.bfloat16, args.repeat)
    chosen = training_autocast("fp16", "cpu")
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, fast bf16: {cpu_has_fast_bf16()}, "
          f"{args.threads} thread(s)")
    print(f"step: fp32 {fp32:.2f} s, bf16 autocast {bf16:.2f} s, bf16/fp32 {bf16 / fp32:.2f}")
    faster = None if fp32 <= bf16 else torch.bfloat16
    print(f"--precision fp16 on this CPU: {'bf16' if chosen else 'fp32'}; "
          f"{'the faster' if chosen == faster else 'NOT the faster'} of the two")


if __name__ == "__main__":
    main()
