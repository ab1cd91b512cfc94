"""What a good mesh score is at this scale: meshes of Gaussians fitted to the truth, next to controls.

For each bundled asset: Blender renders its 24-view orbit (RGBA, 64 px, elevation 15, the main
job's cameras); Gaussians are fitted to the views and masks (``fit_gaussians``, the evaluation's
fit plus LGM's alpha loss, 300 steps); ``mesh_from_gaussians`` meshes them; the GLB, as a user
gets it, is scored against the asset's own mesh (``models.metrics.geometry``). Controls, each
scored against the same asset: every other asset's truth-fitted mesh, the sphere stretched to the
asset's bounding box, and the mesh of Gaussians fitted with cameras jittered by a few degrees
(azimuth and elevation, each view its own error: what an imperfect camera costs). Then the time
and peak memory of meshing alone, each in a fresh process: the main job's size (64 px views,
2K-8K Gaussians, the default options) and the full size (65K Gaussians, 256 px views, a 128^3
grid and 256 px depth maps).

    python benchmarks/mesh.py [--steps 300] [--jitter 3] [--json out/mesh.json]   # about 8 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import pipeline.entry  # noqa: E402,F401  (logging first: pipeline/entry.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import camera  # noqa: E402
from models.gaussians.fit import FitConfig, fit_gaussians  # noqa: E402
from models.gaussians.gaussians import Gaussians  # noqa: E402
from models.mesh.from_gaussians import glb_bytes, mesh_from_gaussians  # noqa: E402
from models.mesh.fusion import MeshOptions  # noqa: E402
from models.metrics.geometry import geometry_scores  # noqa: E402
from pipeline.data.rows import composite  # noqa: E402
from pipeline.data.sources import BUNDLED_ASSETS, captioned_assets  # noqa: E402
from pipeline.evaluation.ground_truth import render_rgba  # noqa: E402
from pipeline.evaluation.result_scores import reference_meshes  # noqa: E402
from render.process import BlenderProcess  # noqa: E402
from render.settings import RenderSettings  # noqa: E402

ELEVATION = 15.0
BACKGROUND = (0.5, 0.5, 0.5)


def jittered(c2w: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    """The orbit's cameras, each moved by up to ``degrees`` in azimuth and elevation (uniform)."""
    rng = np.random.default_rng(seed)
    azimuths = camera.orbit_azimuths(len(c2w)) + rng.uniform(-degrees, degrees, len(c2w))
    elevations = ELEVATION + rng.uniform(-degrees, degrees, len(c2w))
    distance = float(np.linalg.norm(c2w[0, :3, 3]))
    return np.stack([camera.orbit_c2w(e, [a], distance)[0] for e, a in zip(elevations, azimuths)])


def loaded_glb(mesh):
    """The GLB as a user gets it, read back."""
    import io

    import trimesh

    return trimesh.load(io.BytesIO(glb_bytes(mesh.textured)), file_type="glb", force="mesh")


def calibrate(steps: int, jitter: float) -> dict:
    assets = {name: path for name, (path, _) in captioned_assets(BUNDLED_ASSETS, os.path.join(
        BUNDLED_ASSETS, "captions.csv")).items()}
    truths = reference_meshes(assets)
    c2w = camera.orbit_c2w(ELEVATION)
    settings = RenderSettings(resolution=64, samples=8, threads=2)
    meshes, jitter_meshes, seconds = {}, {}, {}
    with BlenderProcess() as process:
        renders = {name: render_rgba(process, path, c2w, settings) for name, path in assets.items()}
    for name, rgba in renders.items():
        views, masks = composite(rgba, BACKGROUND), rgba[:, 3:]
        config = FitConfig(steps=steps)
        for cameras, store in ((c2w, meshes), (jittered(c2w, jitter), jitter_meshes)):
            cameras = torch.tensor(cameras, dtype=torch.float32)
            gaussians = fit_gaussians(views, cameras, camera.DEFAULT_FOV_DEG, BACKGROUND, config, masks=masks)
            start = time.perf_counter()
            mesh = mesh_from_gaussians(gaussians, views, cameras)
            if store is meshes:
                seconds[name] = time.perf_counter() - start
            store[name] = loaded_glb(mesh)
        print(f"  {name}: fitted and meshed ({len(meshes[name].faces)} faces, {seconds[name]:.1f} s meshing)",
              flush=True)
    import trimesh

    rows = {}
    for name, truth in truths.items():
        sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
        sphere.apply_scale(truth.extents)
        row = {"own": geometry_scores(meshes[name], truth), "jittered": geometry_scores(jitter_meshes[name], truth),
               "sphere": geometry_scores(sphere, truth)}
        for other in truths:
            if other != name:
                row[f"other:{other}"] = geometry_scores(meshes[other], truth)
        rows[name] = row
    return {"rows": rows, "meshing_seconds": seconds}


def measure(case: str) -> dict:
    """Time and peak resident memory of one ``mesh_from_gaussians`` (run in a fresh process)."""
    count, size = {"main": (8192, 64), "full": (65536, 256)}[case]
    options = MeshOptions() if case == "main" else MeshOptions(resolution=128, depth_size=256, max_faces=50000,
                                                               texture_size=1024)
    import trimesh

    # Gaussians on the Duck's surface (as a fitted scene has them), coloured by position.
    duck = trimesh.load(os.path.join(BUNDLED_ASSETS, "Duck.glb"), force="mesh")
    duck.apply_translation(-duck.bounds.mean(0))
    duck.apply_scale(1 / duck.extents.max())
    points, _ = trimesh.sample.sample_surface(duck, count, seed=0)
    points = torch.tensor(points, dtype=torch.float32)
    spacing = float(np.sqrt(duck.area / count))
    gaussians = Gaussians(means=points, quats=torch.tensor([[1.0, 0, 0, 0]]).expand(count, 4).clone(),
                          scales=torch.full((count, 3), spacing), opacities=torch.full((count,), 0.9),
                          colors=(points + 0.5).clamp(0, 1))
    c2w = torch.tensor(camera.orbit_c2w(ELEVATION), dtype=torch.float32)
    from models.gaussians.rendering import render_gaussians

    K = torch.tensor(camera.intrinsics_from_fov(camera.DEFAULT_FOV_DEG, size, size), dtype=torch.float32)
    with torch.no_grad():
        views = render_gaussians(gaussians, c2w, K, size, size, BACKGROUND).colors
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    mesh = mesh_from_gaussians(gaussians, views, c2w, options)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": case, "gaussians": count, "views_px": size, "grid": options.resolution,
            "seconds": seconds, "peak_rss_mb": peak / 1024, "growth_mb": (peak - before) / 1024,
            "faces": len(mesh.textured.faces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="Gaussian fitting steps per asset")
    parser.add_argument("--jitter", type=float, default=3.0, help="camera error of the jittered control, degrees")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--measure", choices=("main", "full"), help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    torch.manual_seed(0)
    began = time.perf_counter()
    print(f"calibration: Gaussians fitted to Blender renders ({args.steps} steps), meshed, scored against the asset")
    result = calibrate(args.steps, args.jitter)
    print("\n| asset | own mesh: Chamfer / F-score / IoU | jittered cameras | stretched sphere | closest other asset |")
    print("|---|---|---|---|---|")
    for name, row in result["rows"].items():
        others = {key: value for key, value in row.items() if key.startswith("other:")}
        closest = min(others, key=lambda key: others[key]["chamfer"])

        def cell(scores):
            return f"{scores['chamfer']:.4f} / {scores['fscore']:.3f} / {scores['volume_iou']:.3f}"

        print(f"| {name} | {cell(row['own'])} | {cell(row['jittered'])} | {cell(row['sphere'])} | "
              f"{cell(others[closest])} ({closest.removeprefix('other:')}) |")
    print("\nmeshing alone (fresh process each):")
    result["cost"] = []
    for case in ("main", "full"):
        output = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", case], capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1]
        figures = json.loads(output)
        result["cost"].append(figures)
        print(f"  {case}: {figures['gaussians']} Gaussians, {figures['views_px']} px views, {figures['grid']}^3 grid: "
              f"{figures['seconds']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB "
              f"(+{figures['growth_mb']:.0f} MB while meshing), {figures['faces']} faces")
    print(f"\nin {time.perf_counter() - began:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
