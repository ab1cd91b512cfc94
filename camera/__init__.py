"""Camera math and conventions for the whole project (NumPy only).

Every stage (render, models, sampler, serve) takes its cameras from here, so there is exactly one
definition of each convention. Plücker rays and other torch code build on these functions.

Conventions
-----------
World frame ("world", Y-up, the glTF frame): +Y is up, the object's front faces +Z, and +X appears
on the right of the front view. Objects are normalised into the unit cube
[-0.5, 0.5]^3 centred at the origin. Blender's world is Z-up; ``blender_from_world`` maps a world
point (x, y, z) to Blender (x, -z, y), exactly what Blender's glTF and OBJ importers do, so an asset's
front stays in front.

Camera frames:
- OpenGL (the project's stored convention, also Blender's and LGM's): +X right, +Y up, the camera
  looks along -Z.
- OpenCV (gsplat, pixel projection): +X right, +Y down, the camera looks along +Z.
Converting between them flips the camera's Y and Z axes; the operation is its own inverse.

Pose matrices are 4x4 camera-to-world (``c2w``): columns 0-2 are the camera axes in world
coordinates, column 3 the camera centre. Stored flattened row-major as 16 numbers.

Orbit: azimuth 0 puts the camera on +Z (front view), azimuth 90 on +X, 180 on -Z (back), 270 on -X;
positive elevation puts the camera above the object (+Y). The camera always looks at the origin with
world +Y as up. This equals kiui/LGM ``orbit_camera(-elevation, azimuth, radius)`` (LGM counts
elevation negative upwards), so views 0, 6, 12, 18 of a 24-view orbit are LGM's four input views.

Intrinsics: pinhole ``K`` in pixels, OpenCV pixel convention (origin at the top-left corner of the
top-left pixel, so the image centre is (W/2, H/2)); ``fov`` is the vertical field of view in
degrees and pixels are square.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "NUM_VIEWS",
    "OPENGL_TO_OPENCV",
    "DEFAULT_FOV_DEG",
    "DEFAULT_DISTANCE",
    "ELEVATION_RANGE_DEG",
    "orbit_azimuths",
    "orbit_positions",
    "look_at",
    "orbit_c2w",
    "invert_pose",
    "opengl_to_opencv",
    "opencv_to_opengl",
    "blender_from_world",
    "world_from_blender",
    "intrinsics_from_fov",
    "fov_from_intrinsics",
    "project_points",
    "sample_elevation",
]

NUM_VIEWS = 24
"""Views per object; one orbit "video" frame per view."""

DEFAULT_FOV_DEG = 39.6
"""Vertical field of view: LGM's ``fovy`` (a 50 mm lens on a 36 mm sensor), shared with VideoMV."""

DEFAULT_DISTANCE = 2.0
"""Camera distance from the origin: the official VideoMV text-to-multi-view inference camera, so the
training renders match what the sampler is asked for. A unit-cube object spans ~70% of the frame."""

ELEVATION_RANGE_DEG = (5.0, 30.0)
"""One elevation per object is drawn uniformly from this range (paper 3.2)."""

# Maps world (Y-up) coordinates to Blender (Z-up): (x, y, z) -> (x, -z, y).
_BLENDER_FROM_WORLD = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiply a c2w by this to flip the camera's Y and Z axes (OpenGL <-> OpenCV); torch code
uses the same constant."""


def orbit_azimuths(num_views: int = NUM_VIEWS) -> np.ndarray:
    """Azimuths in degrees, uniformly spaced from 0: shape [num_views] (0, 15, ..., 345 for 24)."""
    return np.arange(num_views, dtype=np.float64) * (360.0 / num_views)


def orbit_positions(
    elevation_deg: float | np.ndarray, azimuth_deg: float | np.ndarray, distance: float
) -> np.ndarray:
    """Camera centres on an orbit around the origin, world frame.

    Args:
        elevation_deg: scalar or [N]; positive is above the object.
        azimuth_deg: scalar or [N]; 0 is the front (+Z), 90 is +X.
        distance: radius of the orbit.
    Returns:
        [..., 3] positions (broadcast shape of the inputs).
    """
    elevation = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64))
    azimuth = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    x = distance * np.cos(elevation) * np.sin(azimuth)
    y = distance * np.sin(elevation) * np.ones_like(azimuth)
    z = distance * np.cos(elevation) * np.cos(azimuth)
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> np.ndarray:
    """OpenGL camera-to-world poses looking from ``eye`` at ``target``.

    Args:
        eye: [..., 3] camera centres.
        target: [3] point looked at (default origin).
        up: [3] world up (default +Y). Must not be parallel to the viewing direction.
    Returns:
        [..., 4, 4] c2w matrices (camera looks along its -Z axis, +Y is up in the image).
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    backward = eye - target  # camera +Z points away from what it looks at
    backward = backward / np.linalg.norm(backward, axis=-1, keepdims=True)
    right = np.cross(up, backward)
    norm = np.linalg.norm(right, axis=-1, keepdims=True)
    if np.any(norm < 1e-8):
        raise ValueError("look_at: the viewing direction is parallel to the up vector")
    right = right / norm
    true_up = np.cross(backward, right)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = true_up
    c2w[..., :3, 2] = backward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_c2w(
    elevation_deg: float,
    azimuths_deg: np.ndarray | None = None,
    distance: float = DEFAULT_DISTANCE,
) -> np.ndarray:
    """OpenGL camera-to-world poses of an orbit at one elevation.

    Args:
        elevation_deg: elevation of every view, degrees (positive above).
        azimuths_deg: [V] azimuths in degrees; default ``orbit_azimuths()`` (24 views).
        distance: orbit radius.
    Returns:
        [V, 4, 4] c2w, world frame, OpenGL camera convention.
    """
    azimuths = orbit_azimuths() if azimuths_deg is None else np.asarray(azimuths_deg, dtype=np.float64)
    return look_at(orbit_positions(elevation_deg, azimuths, distance))


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of rigid 4x4 transforms ([..., 4, 4]): c2w <-> w2c."""
    pose = np.asarray(pose, dtype=np.float64)
    rotation = pose[..., :3, :3]
    translation = pose[..., :3, 3:]
    inverse = np.zeros_like(pose)
    inverse[..., :3, :3] = np.swapaxes(rotation, -1, -2)
    inverse[..., :3, 3:] = -np.swapaxes(rotation, -1, -2) @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """[..., 4, 4] c2w with OpenGL camera axes -> the same cameras with OpenCV axes."""
    return np.asarray(c2w, dtype=np.float64) @ OPENGL_TO_OPENCV


opencv_to_opengl = opengl_to_opencv  # the axis flip is its own inverse


def blender_from_world(matrix: np.ndarray) -> np.ndarray:
    """[..., 4, 4] transforms expressed in the Y-up world -> the same in Blender's Z-up world.

    A camera-to-world matrix keeps its camera convention: Blender cameras are OpenGL-style, so an
    OpenGL c2w from ``orbit_c2w`` becomes a Blender camera ``matrix_world`` directly.
    """
    return _BLENDER_FROM_WORLD @ np.asarray(matrix, dtype=np.float64)


def world_from_blender(matrix: np.ndarray) -> np.ndarray:
    """Inverse of ``blender_from_world``."""
    return _BLENDER_FROM_WORLD.T @ np.asarray(matrix, dtype=np.float64)


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics [3, 3] in pixels from the vertical field of view (square pixels)."""
    focal = 0.5 * height / np.tan(0.5 * np.deg2rad(fov_deg))
    return np.array([[focal, 0.0, 0.5 * width], [0.0, focal, 0.5 * height], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(intrinsics: np.ndarray, height: int) -> float:
    """Vertical field of view in degrees of a pinhole ``K`` [3, 3] for an image ``height`` pixels tall."""
    return float(np.rad2deg(2.0 * np.arctan(0.5 * height / np.asarray(intrinsics)[1, 1])))


def project_points(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into OpenGL cameras.

    Args:
        points: [N, 3] world points.
        c2w: [V, 4, 4] OpenGL camera-to-world.
        intrinsics: [3, 3] pinhole K (OpenCV pixel convention).
    Returns:
        pixels [V, N, 2] as (x right, y down) and depth [V, N] along the viewing direction
        (positive in front of the camera).
    """
    points = np.asarray(points, dtype=np.float64)
    w2c_cv = invert_pose(opengl_to_opencv(np.asarray(c2w).reshape(-1, 4, 4)))
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=-1)
    in_camera = np.einsum("vij,nj->vni", w2c_cv, homogeneous)[..., :3]
    depth = in_camera[..., 2]
    projected = np.einsum("ij,vnj->vni", np.asarray(intrinsics, dtype=np.float64), in_camera)
    return projected[..., :2] / projected[..., 2:3], depth


def sample_elevation(
    uid: str, seed: int, elevation_range_deg: tuple[float, float] = ELEVATION_RANGE_DEG
) -> float:
    """The object's orbit elevation in degrees, uniform in the range, reproducible from (uid, seed).

    Uses a cryptographic hash rather than Python's ``hash`` so it is stable across processes.
    """
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    low, high = elevation_range_deg
    return float(rng.uniform(low, high))
