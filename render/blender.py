"""Everything that talks to Blender (``bpy``). Runs only inside the isolated worker process.

One object at a time: ``reset_scene`` -> ``import_asset`` -> ``normalise_scene`` ->
``configure_cycles`` -> ``render_orbit``. The scene is rebuilt from factory settings for every
object, since partial resets leak memory across thousands of assets.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

import camera
from trust import is_inside
from render.formats import ASSET_EXTENSIONS, UNSUPPORTED_REASONS
from render.settings import RenderSettings


class AssetError(RuntimeError):
    """The asset cannot be rendered (unsupported, unreadable or without geometry)."""


def _import_gltf(path: str) -> None:
    bpy.ops.import_scene.gltf(filepath=path)


def _import_fbx(path: str) -> None:
    bpy.ops.import_scene.fbx(filepath=path)


def _import_obj(path: str) -> None:
    # Defaults map OBJ's Y-up to Blender's Z-up like the glTF importer does.
    bpy.ops.wm.obj_import(filepath=path)


def _import_ply(path: str) -> None:
    bpy.ops.wm.ply_import(filepath=path)


def _import_stl(path: str) -> None:
    bpy.ops.wm.stl_import(filepath=path)


def _import_usd(path: str) -> None:
    bpy.ops.wm.usd_import(filepath=path)


def _import_alembic(path: str) -> None:
    bpy.ops.wm.alembic_import(filepath=path, as_background_job=False)


def _import_blend(path: str) -> None:
    # Append the file's objects into our factory scene (opening it would bring its render settings,
    # world and scripts along); parent links survive because all objects come together.
    with bpy.data.libraries.load(path, link=False) as (source, target):
        target.objects = list(source.objects)
    for obj in target.objects:
        if obj is not None:
            bpy.context.scene.collection.objects.link(obj)


IMPORTERS = {
    ".glb": _import_gltf,
    ".gltf": _import_gltf,
    ".fbx": _import_fbx,
    ".obj": _import_obj,
    ".ply": _import_ply,
    ".stl": _import_stl,
    ".usd": _import_usd,
    ".usda": _import_usd,
    ".usdc": _import_usd,
    ".usdz": _import_usd,
    ".abc": _import_alembic,
    ".blend": _import_blend,
}
SUPPORTED_EXTENSIONS = ASSET_EXTENSIONS
assert set(IMPORTERS) == set(ASSET_EXTENSIONS), "render/formats.py and the importers disagree"


def blender_version() -> str:
    return bpy.app.version_string


def reset_scene() -> None:
    """Empty factory scene. This also resets Cycles device and samples: configure after it."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    for module in ("io_scene_gltf2", "io_scene_fbx"):
        # Factory settings may leave the bundled importers disabled in the bpy module.
        if module not in bpy.context.preferences.addons:
            bpy.ops.preferences.addon_enable(module=module)


def import_asset(path: str) -> None:
    """Import a GLB/GLTF, FBX, OBJ (+MTL), PLY, STL, USD (usd/usda/usdc/usdz), Alembic or .blend file.

    Cameras and lights that come with the asset are removed: the orbit camera and the even
    lighting are the same for every object.
    """
    extension = Path(path).suffix.lower()
    importer = IMPORTERS.get(extension)
    if extension in UNSUPPORTED_REASONS:
        raise AssetError(UNSUPPORTED_REASONS[extension])
    if importer is None:
        raise AssetError(f"unsupported file type {extension!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    if not os.path.exists(path):
        raise AssetError(f"asset file not found: {path}")
    try:
        importer(path)
    except Exception as error:  # bpy raises RuntimeError with the importer's report
        message = str(error).strip().splitlines()
        raise AssetError(f"{extension[1:].upper()} import failed: {' '.join(message)[-500:]}") from error
    for obj in list(bpy.context.scene.objects):
        if obj.type in {"CAMERA", "LIGHT"}:
            bpy.data.objects.remove(obj, do_unlink=True)


def check_textures(asset_path: str) -> list[str]:
    """The asset's images that did not load (missing or unreadable files), by reference.

    Every image read from a file must come from inside the asset's folder (``trust``'s rule):
    relative references with ``..``, absolute paths, an OBJ's ``map_Kd ../x`` or a glTF's external
    URI pointing elsewhere make the asset fail here, before a view is rendered, so no file from
    outside reaches the shards. (The glTF importer has already read such a file into memory: it
    never leaves the process.) Images embedded in the asset have no file reference.
    """
    folder = os.path.dirname(os.path.abspath(asset_path))
    missing = []
    for image in bpy.data.images:
        if image.source not in {"FILE", "SEQUENCE", "TILED", "MOVIE"}:
            continue
        reference = image.filepath_raw or image.filepath
        if reference:
            path = bpy.path.abspath(reference, start=folder, library=image.library)
            if not is_inside(folder, path):
                raise AssetError(f"texture {reference!r} is outside the asset's folder {folder}; "
                                 "textures are read only from there")
        if image.size[0] > 0:  # reading the size decodes the image: 0 when it could not
            continue
        if image.packed_file is None and not (reference and os.path.isfile(path)):
            missing.append(reference or image.name)
            continue
        raise AssetError(f"texture {reference or image.name!r} could not be decoded: {_undecodable(image, path)}")
    return missing


def _undecodable(image: "bpy.types.Image", path: str) -> str:
    """Why an image whose bytes are there did not decode: over the process's memory limit (the
    header's size says so), or a damaged file."""
    import io
    import resource

    from PIL import Image

    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    try:
        source = io.BytesIO(image.packed_file.data) if image.packed_file is not None else path
        with Image.open(source) as header:  # reads the header only
            width, height = header.size
    except Exception:
        return "the file is damaged or not an image"
    needed = width * height * 4  # Blender decodes to 8-bit RGBA (float images need 4x more)
    if limit != resource.RLIM_INFINITY and needed > limit / 4:
        return (f"{width}x{height} pixels need at least {needed / 2**30:.2f} GB decoded, too much under the "
                f"Blender process's memory limit of {limit / 2**30:.3g} GB (memory_limit_gb)")
    return f"a {width}x{height} image that Blender cannot read"


def _mesh_objects() -> list:
    return [obj for obj in bpy.context.scene.objects if obj.type == "MESH" and len(obj.data.polygons) > 0]


def _world_bounds(objects: list) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(
        [list(obj.matrix_world @ Vector(corner)) for obj in objects for corner in obj.bound_box]
    )
    return corners.min(axis=0), corners.max(axis=0)


def normalise_scene() -> tuple[float, np.ndarray]:
    """Scale and centre all meshes into the unit cube [-0.5, 0.5]^3 (longest side 1).

    Returns:
        (scale, offset) applied as ``x' = scale * x + offset`` in Blender world coordinates.
    """
    meshes = _mesh_objects()
    if not meshes:
        raise AssetError("asset contains no mesh geometry (no object with faces)")
    bpy.context.view_layer.update()
    low, high = _world_bounds(meshes)
    extent = float((high - low).max())
    if not math.isfinite(extent) or extent <= 0.0:
        raise AssetError(f"asset geometry is degenerate (bounding box extent {extent})")
    scale = 1.0 / extent
    offset = -scale * (low + high) / 2.0
    # Parent every root to one empty so hierarchies and instancing keep their relative transforms.
    pivot = bpy.data.objects.new("videomv_normalise", None)
    bpy.context.scene.collection.objects.link(pivot)
    for obj in list(bpy.context.scene.objects):
        if obj.parent is None and obj is not pivot:
            obj.parent = pivot
    pivot.matrix_world = Matrix.Translation(Vector(offset)) @ Matrix.Scale(scale, 4)
    bpy.context.view_layer.update()
    return scale, offset


def _add_vertex_colour_materials() -> None:
    """Meshes without materials but with a colour attribute (PLY scans) render their colours."""
    for obj in _mesh_objects():
        mesh = obj.data
        if mesh.materials or not mesh.color_attributes:
            continue
        material = bpy.data.materials.new("videomv_vertex_colour")
        material.use_nodes = True
        nodes = material.node_tree.nodes
        attribute = nodes.new("ShaderNodeAttribute")
        attribute.attribute_name = mesh.color_attributes[0].name
        shader = nodes.get("Principled BSDF")
        material.node_tree.links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
        mesh.materials.append(material)


def _choose_device(requested: str) -> str:
    """Enable Cycles GPU devices when asked ("gpu") or available ("auto"); returns "GPU" or "CPU"."""
    if requested == "cpu":
        return "CPU"
    preferences = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
        try:
            preferences.compute_device_type = backend
        except TypeError:  # backend not compiled into this build
            continue
        preferences.get_devices()
        gpus = [device for device in preferences.devices if device.type == backend]
        if gpus:
            for device in preferences.devices:
                device.use = device.type == backend
            return "GPU"
    if requested == "gpu":
        raise AssetError("device 'gpu' requested but Cycles found no GPU")
    return "CPU"


def configure_cycles(settings: RenderSettings) -> str:
    """Cycles, transparent film, faithful colours, even lighting. Returns the device used."""
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    device = _choose_device(settings.device)
    scene.cycles.device = device
    scene.cycles.samples = settings.samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.max_bounces = 4
    scene.render.resolution_x = settings.resolution
    scene.render.resolution_y = settings.resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.use_persistent_data = True  # keep the BVH between the views of one object
    if settings.threads > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = settings.threads
    # "Standard" keeps the asset's colours (the default AgX view transform desaturates them).
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    # A uniform white environment lights every side alike: surfaces show their albedo, shaded only
    # by ambient occlusion. The film stays transparent, so backgrounds are composited later.
    world = bpy.data.worlds.new("videomv_world")
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = 1.0
    scene.world = world
    view_layer = bpy.context.view_layer
    view_layer.use_pass_z = "depth" in settings.passes
    view_layer.use_pass_normal = "normal" in settings.passes
    _add_vertex_colour_materials()
    return device


def _add_camera(fov_deg: float):
    data = bpy.data.cameras.new("videomv_camera")
    data.sensor_fit = "VERTICAL"
    data.angle_y = math.radians(fov_deg)
    data.clip_start = 0.01
    data.clip_end = 100.0
    obj = bpy.data.objects.new("videomv_camera", data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.scene.camera = obj
    return obj


def _read_passes(exr_path: str) -> dict[str, np.ndarray]:
    """Depth and normal from a multilayer EXR: depth [H, W] float32 (0 where empty), normal [H, W, 3]."""
    import OpenEXR  # only needed for the optional passes

    with OpenEXR.File(exr_path, separate_channels=True) as exr:
        # Blender 5 writes one EXR part per pass; older versions one part with every channel.
        channels = {name: value for part in exr.parts for name, value in part.channels.items()}

        def channel(suffix: str) -> np.ndarray | None:
            for name, value in channels.items():
                if name.endswith(suffix):
                    return np.asarray(value.pixels, dtype=np.float32)
            return None

        result = {}
        depth = channel("Depth.Z")
        if depth is not None:
            result["depth"] = np.where(depth < 1e9, depth, 0.0).astype(np.float32)
        normal = [channel(f"Normal.{axis}") for axis in "XYZ"]
        if all(component is not None for component in normal):
            blender_normal = np.stack(normal, axis=-1)
            # Blender world (x, y, z) -> project world (x, z, -y).
            result["normal"] = np.stack(
                [blender_normal[..., 0], blender_normal[..., 2], -blender_normal[..., 1]], axis=-1
            )
        return result


def _set_multilayer_exr(image_settings, enabled: bool) -> None:
    """Switch the output between multilayer EXR (all passes) and 8-bit RGBA PNG."""
    if hasattr(image_settings, "media_type"):  # Blender 5 moved multilayer into a media type
        image_settings.media_type = "MULTI_LAYER_IMAGE" if enabled else "IMAGE"
    image_settings.file_format = "OPEN_EXR_MULTILAYER" if enabled else "PNG"
    image_settings.color_depth = "32" if enabled else "8"
    if not enabled:
        image_settings.color_mode = "RGBA"


def export_world_mesh(path: str) -> dict[str, int]:
    """Write the normalised scene's triangles, as rendered (modifiers applied), in the project's
    Y-up world frame to ``path`` (.npz: vertices [N, 3] float64, faces [F, 3] int64): the reference
    geometry the renders show, for the geometry metrics."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    world_from_blender = camera.world_from_blender(np.eye(4))[:3, :3]
    vertices, faces, offset = [], [], 0
    for obj in _mesh_objects():
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        try:
            mesh.calc_loop_triangles()
            local = np.array([vertex.co[:] for vertex in mesh.vertices], dtype=np.float64).reshape(-1, 3)
            matrix = np.array(obj.matrix_world, dtype=np.float64)
            blender = local @ matrix[:3, :3].T + matrix[:3, 3]
            vertices.append(blender @ world_from_blender.T)
            faces.append(np.array([tri.vertices[:] for tri in mesh.loop_triangles], dtype=np.int64).reshape(-1, 3) + offset)
            offset += len(local)
        finally:
            evaluated.to_mesh_clear()
    if not faces or sum(len(f) for f in faces) == 0:
        raise AssetError("asset contains no triangles")
    np.savez(path, vertices=np.concatenate(vertices), faces=np.concatenate(faces))
    return {"vertices": offset, "faces": int(sum(len(f) for f in faces))}


def render_orbit(c2w_world: np.ndarray, settings: RenderSettings, output_dir: str) -> dict[str, list[str]]:
    """Render one view per camera into ``output_dir``.

    Args:
        c2w_world: [V, 4, 4] OpenGL camera-to-world in the project's Y-up world (camera module).
        settings: render settings (fov, passes).
        output_dir: existing folder for the files.
    Returns:
        {"views": [V PNG paths, RGBA 8-bit]} plus "depth"/"normal": [V .npy paths] when requested
        (float32 [H, W] z-depth, 0 on empty pixels; float32 [H, W, 3] world-frame normals).
    """
    scene = bpy.context.scene
    cam = _add_camera(settings.fov)
    blender_c2w = camera.blender_from_world(np.asarray(c2w_world).reshape(-1, 4, 4))
    outputs: dict[str, list[str]] = {"views": []}
    for name in settings.passes:
        outputs[name] = []
    for index, pose in enumerate(blender_c2w):
        cam.matrix_world = Matrix(pose.tolist())
        view_path = os.path.join(output_dir, f"view_{index:03d}.png")
        scene.render.filepath = view_path
        bpy.ops.render.render(write_still=True)
        if not os.path.exists(view_path):
            raise AssetError(f"Blender produced no image for view {index}")
        outputs["views"].append(view_path)
        if settings.passes:
            exr_path = os.path.join(output_dir, f"passes_{index:03d}.exr")
            _set_multilayer_exr(scene.render.image_settings, True)
            bpy.data.images["Render Result"].save_render(exr_path, scene=scene)
            _set_multilayer_exr(scene.render.image_settings, False)
            for name, array in _read_passes(exr_path).items():
                path = os.path.join(output_dir, f"{name}_{index:03d}.npy")
                np.save(path, array)
                outputs[name].append(path)
            os.remove(exr_path)
    return outputs
