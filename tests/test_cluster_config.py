"""cluster.yaml is a valid Ray cluster-launcher config with the node groups the docs promise."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import REPO_ROOT


def load() -> dict:
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    config = load()
    validate_config(prepare_config(copy.deepcopy(config)))
    nodes = config["available_node_types"]
    assert nodes["a100"]["node_config"]["InstanceType"] == "p4d.24xlarge" and nodes["a100"]["resources"]["GPU"] == 8
    assert nodes["cpu-render"]["max_workers"] > nodes["cpu-render"]["min_workers"] == 0
    # Render tasks ask for the custom resource only the render group has (docs/scale.md).
    assert nodes["cpu-render"]["resources"]["render"] > 0 and "render" not in nodes["a100"]["resources"]
    assert any("pip install -e ." in command for command in nodes["a100"]["worker_setup_commands"])
    assert any("mlflow server" in command for command in config["head_start_ray_commands"])


def test_a_broken_config_is_rejected():
    config = load()
    config["available_node_types"]["a100"]["unknown_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))
