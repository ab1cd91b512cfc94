"""Test assets generated on the fly: a coloured-cubes OBJ with known geometry, and bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# name -> (RGB colour, centre in the OBJ's (= world's) Y-up frame); cubes of half-size 0.15.
CUBES = {
    "red": ((1.0, 0.0, 0.0), (0.35, 0.0, 0.0)),
    "blue": ((0.0, 0.0, 1.0), (-0.35, 0.0, 0.0)),
    "green": ((0.0, 1.0, 0.0), (0.0, 0.35, 0.0)),
}
HALF_SIZE = 0.15


def normalised_cube_centres() -> dict[str, np.ndarray]:
    """Cube centres after the render stage's normalisation (longest side 1, bbox centred)."""
    corners = np.array([np.array(c) + s * HALF_SIZE for _, c in CUBES.values() for s in (-1, 1)])
    low, high = corners.min(0), corners.max(0)
    scale = 1.0 / (high - low).max()
    return {name: scale * (np.array(centre) - (low + high) / 2) for name, (_, centre) in CUBES.items()}


def write_colour_cubes(folder: Path) -> Path:
    """Three coloured cubes (red +X, blue -X, green +Y) as OBJ + MTL; returns the OBJ path."""
    folder.mkdir(parents=True, exist_ok=True)
    mtl_lines, obj_lines = [], ["mtllib cubes.mtl"]
    faces = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    for index, (name, (colour, centre)) in enumerate(CUBES.items()):
        mtl_lines += [f"newmtl {name}", "Kd {} {} {}".format(*colour), "Ka 0 0 0", "Ks 0 0 0", "illum 1"]
        obj_lines += [f"o {name}", f"usemtl {name}"]
        for dx in (-1, 1):
            for dy in (-1, 1):
                for dz in (-1, 1):
                    x, y, z = np.array(centre) + HALF_SIZE * np.array([dx, dy, dz])
                    obj_lines.append(f"v {x:.6f} {y:.6f} {z:.6f}")
        base = 8 * index
        obj_lines += ["f " + " ".join(str(base + v) for v in face) for face in faces]
    (folder / "cubes.mtl").write_text("\n".join(mtl_lines) + "\n")
    path = folder / "cubes.obj"
    path.write_text("\n".join(obj_lines) + "\n")
    return path


def write_bad_assets(folder: Path, sample_assets: Path) -> dict[str, Path]:
    """A truncated GLB, random bytes named .glb, and a FIFO named .obj that blocks any reader."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.glb"
    truncated.write_bytes((sample_assets / "Duck.glb").read_bytes()[:2000])
    random_bytes = folder / "random.glb"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    hang = folder / "hang.obj"
    os.mkfifo(hang)  # Blender's importer blocks opening it: a real hang, like a stuck network mount
    return {"truncated": truncated, "random": random_bytes, "hang": hang}


EXPORT_SCRIPT = """
import sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cone_add(vertices=16, radius1=1.0, depth=2.0, location=(0.5, 0.0, 0.0))
bpy.ops.mesh.primitive_cube_add(size=0.8, location=(-1.0, 0.0, 0.0))
paths = dict(arg.split("=", 1) for arg in sys.argv[1:] if "=" in arg)
bpy.ops.export_scene.fbx(filepath=paths["fbx"])
bpy.ops.export_scene.gltf(filepath=paths["gltf"], export_format="GLTF_SEPARATE")
for key in ("usdc", "usda", "usdz"):
    bpy.ops.wm.usd_export(filepath=paths[key])
bpy.ops.wm.alembic_export(filepath=paths["abc"], as_background_job=False)
bpy.ops.wm.save_as_mainfile(filepath=paths["blend"])
"""


def export_with_blender(folder: Path) -> dict[str, Path]:
    """The same cone and cube exported by Blender itself, in a subprocess, in every other format
    it reads: FBX, separate-file glTF (.gltf + .bin), USD (binary, ASCII, zipped), Alembic, .blend."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"fbx": folder / "cone.fbx", "gltf": folder / "gltf" / "cone.gltf"}
    paths.update({key: folder / f"cone.{key}" for key in ("usdc", "usda", "usdz", "abc", "blend")})
    paths["gltf"].parent.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, *(f"{key}={path}" for key, path in paths.items())],
                   check=True, capture_output=True)
    return paths


def write_textured_quad_gltf(path: Path, image_uri: str) -> Path:
    """A glTF (JSON + embedded buffer) of one textured square whose base colour is the image at
    ``image_uri``, as written: relative, absolute, ``file://`` or a name that does not exist."""
    import base64
    import json

    positions = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float32)
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3], dtype=np.uint16)
    blob = positions.tobytes() + uvs.tobytes() + indices.tobytes()
    views = [(0, positions.nbytes), (positions.nbytes, uvs.nbytes), (positions.nbytes + uvs.nbytes, indices.nbytes)]
    document = {
        "asset": {"version": "2.0"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0}], "images": [{"uri": image_uri}],
        "buffers": [{"byteLength": len(blob),
                     "uri": "data:application/octet-stream;base64," + base64.b64encode(blob).decode()}],
        "bufferViews": [{"buffer": 0, "byteOffset": offset, "byteLength": length} for offset, length in views],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3",
             "min": [-1, -1, 0], "max": [1, 1, 0]},
            {"bufferView": 1, "componentType": 5126, "count": 4, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5123, "count": 6, "type": "SCALAR"},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path
