"""The one rule for paths made from untrusted input (``trust.inside``), on its own."""

from __future__ import annotations

import os

import pytest

from trust import OutsideRootError, inside, is_inside


@pytest.mark.parametrize("relative", ["a.png", "tex/a.png", "tex/../a.png", "./a.png", "tex//a.png"])
def test_paths_that_stay_inside_resolve_under_the_root(tmp_path, relative):
    assert inside(str(tmp_path), relative) == os.path.realpath(os.path.join(tmp_path, relative))


@pytest.mark.parametrize("relative, reason", [
    ("../a.png", "resolves outside"), ("tex/../../a.png", "resolves outside"), ("/etc/passwd", "is absolute"),
    ("//server/share", "is absolute"), ("", "is not a path"), ("a\x00b", "is not a path"),
])
def test_paths_that_leave_are_refused_naming_the_input(tmp_path, relative, reason):
    with pytest.raises(OutsideRootError, match=f"texture of duck.glb: .*{reason}"):
        inside(str(tmp_path), relative, "texture of duck.glb")


def test_a_link_pointing_out_is_outside_and_one_pointing_in_is_inside(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "out").symlink_to(elsewhere)
    (root / "in").symlink_to(root)
    with pytest.raises(OutsideRootError, match="resolves outside"):
        inside(str(root), "out/a.png")
    assert inside(str(root), "in/a.png") == str(root / "a.png")
    assert is_inside(str(root), str(root)) and not is_inside(str(root), str(tmp_path / "rootless"))
