"""Which asset files the render stage reads: one list, used by the sources (no bpy) and by Blender.

- ``ASSET_EXTENSIONS``: files rendered as one object each (every format bpy imports that
  Objaverse / Objaverse-XL ships: glTF, FBX, OBJ, PLY, STL, USD, Alembic, .blend).
- ``UNSUPPORTED_REASONS``: formats a user may expect, with why they are not read.
- ``COMPANION_EXTENSIONS``: files that travel with assets (textures, materials, glTF buffers) or
  describe them (README, captions, licences): not assets, not worth a warning.
Anything else found beside the assets is reported as unsupported, never dropped without a word.
"""

from __future__ import annotations

ASSET_EXTENSIONS = (".glb", ".gltf", ".fbx", ".obj", ".ply", ".stl",
                    ".usd", ".usda", ".usdc", ".usdz", ".abc", ".blend")
UNSUPPORTED_REASONS = {
    ".dae": "Collada (.dae) import was removed in Blender 5; convert it to glTF (.glb) first",
}
COMPANION_EXTENSIONS = (
    ".mtl", ".bin",  # OBJ materials, glTF buffers
    ".png", ".jpg", ".jpeg", ".tga", ".bmp", ".tif", ".tiff", ".exr", ".hdr", ".webp", ".dds", ".ktx2",
    ".md", ".txt", ".csv", ".json", ".license",
)
