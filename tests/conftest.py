"""Shared fixtures: the sample assets, generated test assets and a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ASSETS = REPO_ROOT.parent / "shared" / "assets"


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """The real sample assets (GLB, textured OBJ, PLY, STL, and a GLB without geometry)."""
    if not SHARED_ASSETS.is_dir():
        pytest.fail(f"sample assets not found at {SHARED_ASSETS} (CI and developers have ../shared)")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def pytest_configure(config) -> None:
    # Blender and Ray must not pick up a user's GPU or config in tests.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
