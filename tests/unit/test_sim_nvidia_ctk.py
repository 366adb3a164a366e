"""The simulator's fake nvidia-ctk (tests/sim/pkgsrc/nvidia_ctk.py), run as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CTK = REPO / "tests" / "sim" / "pkgsrc" / "nvidia_ctk.py"


@pytest.fixture
def ctk(tmp_path):
    # The loaded module (what the simulator's kernel writes at boot).
    (tmp_path / "run/rigkeeper-sim/sys/module/nvidia").mkdir(parents=True)
    (tmp_path / "run/rigkeeper-sim/sys/module/nvidia/version").write_text("580.95.05\n")

    def run(*args: str):
        env = dict(os.environ, RIGKEEPER_SIM_ROOT=str(tmp_path))
        return subprocess.run([sys.executable, str(CTK), *args], env=env, capture_output=True, text=True,
                              timeout=30)
    run.root = tmp_path
    return run


def test_version(ctk):
    r = ctk("--version")
    assert r.returncode == 0 and r.stdout.startswith("NVIDIA Container Toolkit CLI version 1.17.8\ncommit: ")


def test_runtime_configure_creates_missing_file(ctk):
    r = ctk("runtime", "configure", "--runtime=docker")
    assert r.returncode == 0, r.stderr
    assert 'level=info msg="Config file does not exist; using empty config"' in r.stderr
    assert 'msg="Wrote updated config to /etc/docker/daemon.json"' in r.stderr
    assert 'msg="It is recommended that docker daemon be restarted."' in r.stderr
    text = (ctk.root / "etc/docker/daemon.json").read_text()
    assert text == '{\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n' \
                   '            "path": "nvidia-container-runtime"\n        }\n    }\n}'


def test_runtime_configure_keeps_user_keys_and_sets_default_only_when_asked(ctk):
    cfg = ctk.root / "etc/docker/daemon.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"log-driver": "journald", "exec-opts": ["native.cgroupdriver=cgroupfs"],
                               "runtimes": {"crun": {"path": "/usr/bin/crun"}}}))
    assert ctk("runtime", "configure", "--runtime=docker", "--config=/etc/docker/daemon.json").returncode == 0
    data = json.loads(cfg.read_text())
    assert data == {"log-driver": "journald", "exec-opts": ["native.cgroupdriver=cgroupfs"],
                    "runtimes": {"crun": {"path": "/usr/bin/crun"},
                                 "nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    assert ctk("runtime", "configure", "--runtime=docker", "--set-as-default").returncode == 0
    assert json.loads(cfg.read_text())["default-runtime"] == "nvidia"


def test_runtime_configure_empty_and_invalid_files(ctk):
    cfg = ctk.root / "etc/docker/daemon.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("")
    assert ctk("runtime", "configure", "--runtime=docker").returncode == 0
    assert "nvidia" in json.loads(cfg.read_text())["runtimes"]
    cfg.write_text("{not json")
    r = ctk("runtime", "configure", "--runtime=docker")
    assert r.returncode == 1 and "unable to load config for runtime docker" in r.stderr
    assert cfg.read_text() == "{not json"


def test_cdi_generate(ctk):
    r = ctk("cdi", "generate", "--output=/etc/cdi/nvidia.yaml")
    assert r.returncode == 0, r.stderr
    spec = (ctk.root / "etc/cdi/nvidia.yaml").read_text()
    assert spec.startswith("---\ncdiVersion: 0.5.0\n")
    assert "kind: nvidia.com/gpu\n" in spec
    for name in ('name: "0"', 'name: "1"', "name: all"):
        assert name in spec
    assert "- path: /dev/nvidia1\n" in spec and "- NVIDIA_VISIBLE_DEVICES=void\n" in spec
    as_json = json.loads(ctk("cdi", "generate", "--format=json").stdout)
    assert [d["name"] for d in as_json["devices"]] == ["0", "1", "all"]


def test_cdi_generate_needs_a_loaded_driver(ctk):
    """An installed driver waiting for its reboot is not enough: NVML needs the loaded module."""
    (ctk.root / "run/rigkeeper-sim/sys/module/nvidia/version").unlink()
    (ctk.root / "usr/lib/rigkeeper-sim").mkdir(parents=True)
    r = ctk("cdi", "generate")
    assert r.returncode == 1 and "ERROR_DRIVER_NOT_LOADED" in r.stderr + r.stdout


def test_cdi_generate_lists_only_the_driven_gpus(ctk):
    (ctk.root / "run/rigkeeper-sim/sys/module/nvidia/gpus").write_text("00000000:01:00.0\n")
    spec = json.loads(ctk("cdi", "generate", "--format=json").stdout)
    assert [d["name"] for d in spec["devices"]] == ["0", "all"]


def test_create_dev_char_symlinks(ctk):
    r = ctk("system", "create-dev-char-symlinks")
    assert r.returncode == 0 and "No NVIDIA device nodes found" in r.stderr
    assert not (ctk.root / "dev/char").exists()
    r = ctk("system", "create-dev-char-symlinks", "--create-all")
    assert r.returncode == 0, r.stderr
    links = {p.name: os.readlink(p) for p in (ctk.root / "dev/char").iterdir()}
    assert links == {"195:0": "../nvidia0", "195:1": "../nvidia1", "195:255": "../nvidiactl",
                     "195:254": "../nvidia-modeset"}


def test_unknown_flag(ctk):
    r = ctk("runtime", "configure", "--bogus")
    assert r.returncode == 1 and "flag provided but not defined: -bogus" in r.stderr
