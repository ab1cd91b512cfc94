import numpy as np
import pytest

import camera


def test_orbit_has_24_views_15_degrees_apart():
    azimuths = camera.orbit_azimuths()
    assert azimuths.shape == (24,)
    np.testing.assert_allclose(azimuths, np.arange(0, 360, 15))


@pytest.mark.parametrize(
    "azimuth, position",
    [(0, (0, 0, 2)), (90, (2, 0, 0)), (180, (0, 0, -2)), (270, (-2, 0, 0))],
)
def test_azimuth_positions_match_the_documentation(azimuth, position):
    c2w = camera.orbit_c2w(0.0, [azimuth], distance=2.0)[0]
    np.testing.assert_allclose(c2w[:3, 3], position, atol=1e-12)
    # OpenGL: the camera looks along its -Z axis, towards the origin, with world +Y up.
    forward = -c2w[:3, 2]
    np.testing.assert_allclose(forward, -np.asarray(position) / 2.0, atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 1], (0, 1, 0), atol=1e-12)


def test_positive_elevation_is_above():
    c2w = camera.orbit_c2w(30.0, [0.0], distance=2.0)[0]
    np.testing.assert_allclose(c2w[:3, 3], (0, 2 * np.sin(np.pi / 6), 2 * np.cos(np.pi / 6)), atol=1e-12)


def test_poses_are_rigid_and_right_handed():
    c2w = camera.orbit_c2w(17.0)
    rotation = c2w[:, :3, :3]
    np.testing.assert_allclose(rotation @ rotation.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotation.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-12)


def test_round_trips():
    c2w = camera.orbit_c2w(12.0, distance=1.7)
    np.testing.assert_allclose(camera.opencv_to_opengl(camera.opengl_to_opencv(c2w)), c2w, atol=1e-12)
    np.testing.assert_allclose(camera.world_from_blender(camera.blender_from_world(c2w)), c2w, atol=1e-12)
    np.testing.assert_allclose(camera.invert_pose(camera.invert_pose(c2w)), c2w, atol=1e-12)
    np.testing.assert_allclose(camera.invert_pose(c2w) @ c2w, np.broadcast_to(np.eye(4), c2w.shape), atol=1e-12)
    K = camera.intrinsics_from_fov(39.6, 256, 256)
    assert camera.fov_from_intrinsics(K, 256) == pytest.approx(39.6)


def test_blender_frame_is_z_up_with_front_at_minus_y():
    # The front camera (+Z in the world) sits at Blender -Y, world up (+Y) is Blender +Z.
    c2w = camera.orbit_c2w(0.0, [0.0], distance=2.0)[0]
    blender = camera.blender_from_world(c2w)
    np.testing.assert_allclose(blender[:3, 3], (0, -2, 0), atol=1e-12)
    np.testing.assert_allclose(blender[:3, 1], (0, 0, 1), atol=1e-12)


def test_origin_projects_to_image_centre_in_every_view():
    c2w = camera.orbit_c2w(23.0)
    K = camera.intrinsics_from_fov(39.6, 128, 96)
    pixels, depth = camera.project_points(np.zeros((1, 3)), c2w, K)
    np.testing.assert_allclose(pixels[:, 0], np.broadcast_to([64.0, 48.0], (24, 2)), atol=1e-9)
    np.testing.assert_allclose(depth, 2.0, atol=1e-12)


def test_projection_orientation():
    # From the front camera, world +X is on the image's right and world +Y is up (smaller row).
    c2w = camera.orbit_c2w(0.0, [0.0])
    K = camera.intrinsics_from_fov(40.0, 100, 100)
    pixels, _ = camera.project_points(np.array([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0]]), c2w, K)
    assert pixels[0, 0, 0] > 50 and pixels[0, 0, 1] == pytest.approx(50)
    assert pixels[0, 1, 1] < 50 and pixels[0, 1, 0] == pytest.approx(50)
    # The edge of the vertical field of view lands on the image border.
    edge = 2.0 * np.tan(np.deg2rad(20.0))
    pixels, _ = camera.project_points(np.array([[0.0, edge, 0.0]]), c2w, K)
    assert pixels[0, 0, 1] == pytest.approx(0.0, abs=1e-9)


def test_elevation_is_reproducible_from_uid_and_seed():
    first = camera.sample_elevation("abc", 0)
    assert first == camera.sample_elevation("abc", 0)
    assert first != camera.sample_elevation("abc", 1)
    values = [camera.sample_elevation(f"uid{i}", 0) for i in range(500)]
    assert min(values) >= 5.0 and max(values) <= 30.0
    assert np.std(values) > 5.0  # spread over the range, not constant


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError, match="parallel"):
        camera.look_at(np.array([0.0, 2.0, 0.0]))
