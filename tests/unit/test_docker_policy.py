"""plugins/filter/rigkeeper_docker.py: engines, install plan, daemon.json merge, reload or restart,
the restart guard, the CDI mode. Table-driven; each case states the host and the wants."""
import json

import pytest
from ansible.errors import AnsibleFilterError

from rigkeeper_docker import (rk_docker_cdi_mode, rk_docker_daemon_plan, rk_docker_daemon_wanted,
                              rk_docker_engines, rk_docker_install_plan, rk_docker_restart_guard)

CE = "5:26.1.5-1~ubuntu.24.04~noble"
DPKG_CE = "\n".join([f"ii \tdocker-ce\t{CE}", f"ii \tdocker-ce-cli\t{CE}", "ii \tcontainerd.io\t1.7.24-1",
                     "ii \tdocker-buildx-plugin\t0.16.1-1~ubuntu.24.04~noble",
                     "ii \tdocker-compose-plugin\t2.29.1-1~ubuntu.24.04~noble", "ii \tgpg\t2.2.40-1.1"])
DPKG_IO = "ii \tdocker.io\t20.10.24+dfsg1-1+deb12u1+b6\nii \tcontainerd\t1.6.20~ds1-1+deb12u3\nii \trunc\t1.1.5"
DPKG_MOBY = "ii \tmoby-engine\t27.5.1-ubuntu24.04u1\nii \tmoby-cli\t27.5.1-ubuntu24.04u1"
DPKG_NONE = "ii \tgpg\t2.2.40-1.1\nrc \tdocker.io\t20.10.24+dfsg1-1+deb12u1+b6"  # removed, config left
DPKG_CE_HALF = f"ii \tdocker-ce\t{CE}\nii \tdocker-ce-cli\t{CE}\nii \tcontainerd.io\t1.7.24-1"
FIVE = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]
NVIDIA = {"path": "nvidia-container-runtime", "args": []}


# --- Engines and the install plan -------------------------------------------------------------

@pytest.mark.parametrize("dpkg, engines", [
    (DPKG_CE, [("docker-ce", CE, "docker")]),
    (DPKG_IO, [("docker.io", "20.10.24+dfsg1-1+deb12u1+b6", "distro")]),
    (DPKG_MOBY, [("moby-engine", "27.5.1-ubuntu24.04u1", "moby")]),
    (DPKG_NONE, []),
    ("", []),
    ("iU \tdocker-ce\t" + CE, []),  # unpacked, not configured: not an engine yet
])
def test_engines(dpkg, engines):
    assert [(e["package"], e["version"], e["source"]) for e in rk_docker_engines(dpkg)] == engines


@pytest.mark.parametrize("dpkg, source, replace, install, result_source, replaces, error", [
    # keep (the default): any engine is Docker present; none -> the distribution's.
    (DPKG_CE, "keep", False, [], "docker", [], None),
    (DPKG_IO, "keep", False, [], "distro", [], None),
    (DPKG_MOBY, "keep", False, [], "moby", [], None),
    (DPKG_NONE, "keep", False, ["docker.io"], "distro", [], None),
    (DPKG_CE_HALF, "keep", False, [], "docker", [], None),  # keep does not complete another's install
    # an explicit source on a host without Docker, or with the same source
    (DPKG_NONE, "distro", False, ["docker.io"], "distro", [], None),
    (DPKG_NONE, "docker", False, FIVE, "docker", [], None),
    (DPKG_CE, "docker", False, [], "docker", [], None),
    (DPKG_CE_HALF, "docker", False, ["docker-buildx-plugin", "docker-compose-plugin"], "docker", [], None),
    (DPKG_IO, "distro", False, [], "distro", [], None),
    # never swapped unless asked
    (DPKG_CE, "distro", False, [], "docker", [], "docker-ce " + CE),
    (DPKG_IO, "docker", False, [], "distro", [], "docker.io 20.10.24"),
    (DPKG_MOBY, "docker", False, [], "moby", [], "moby-engine"),
    # asked
    (DPKG_CE, "distro", True, ["docker.io"], "distro", ["docker-ce"], None),
    (DPKG_IO, "docker", True, FIVE, "docker", ["docker.io"], None),
])
def test_install_plan(dpkg, source, replace, install, result_source, replaces, error):
    plan = rk_docker_install_plan(dpkg, source, replace)
    assert plan["install"] == install
    assert plan["source"] == result_source
    assert plan["replaces"] == replaces
    if error is None:
        assert plan["error"] is None
    else:
        assert error in plan["error"] and "Nothing has been changed" in plan["error"]
        assert "container_toolkit_docker_replace" in plan["error"]


def test_install_plan_refuses_an_unknown_source():
    with pytest.raises(AnsibleFilterError, match="keep, distro, docker"):
        rk_docker_install_plan(DPKG_CE, "docker-ce")


# --- daemon.json ------------------------------------------------------------------------------

OWNER = {"log-driver": "journald", "data-root": "/var/lib/docker-rig", "storage-driver": "vfs",
         "registry-mirrors": ["https://mirror.example.org"],
         "runtimes": {"runc-debug": {"path": "runc", "runtimeArgs": ["--debug"]}}}


@pytest.mark.parametrize("current, kwargs, wanted", [
    # the runtime added, every other key kept
    (OWNER, {}, {**OWNER, "runtimes": {**OWNER["runtimes"], "nvidia": NVIDIA}}),
    ({}, {}, {"runtimes": {"nvidia": NVIDIA}}),
    ({}, {"runtime_enabled": False}, {}),
    # a runtime the owner named nvidia with other arguments is ours to set
    ({"runtimes": {"nvidia": {"path": "/opt/nvidia-runtime"}}}, {}, {"runtimes": {"nvidia": NVIDIA}}),
    # default-runtime: set when asked, removed only when it names nvidia
    ({}, {"default_runtime": True}, {"runtimes": {"nvidia": NVIDIA}, "default-runtime": "nvidia"}),
    ({"default-runtime": "nvidia"}, {}, {"runtimes": {"nvidia": NVIDIA}}),
    ({"default-runtime": "crun"}, {}, {"runtimes": {"nvidia": NVIDIA}, "default-runtime": "crun"}),
    ({"default-runtime": "crun"}, {"default_runtime": True},
     {"runtimes": {"nvidia": NVIDIA}, "default-runtime": "nvidia"}),
    # ...unless the owner's options say so
    ({}, {"options": {"default-runtime": "nvidia"}}, {"runtimes": {"nvidia": NVIDIA}, "default-runtime": "nvidia"}),
    # exec-opts: cgroupfs replaces another cgroup driver, other options kept in order
    ({"exec-opts": ["native.cgroupdriver=systemd", "isolation=default"]}, {"runtime_enabled": False, "cgroupfs": True},
     {"exec-opts": ["isolation=default", "native.cgroupdriver=cgroupfs"]}),
    ({}, {"runtime_enabled": False, "cgroupfs": True}, {"exec-opts": ["native.cgroupdriver=cgroupfs"]}),
    # leaving cgroupfs keeps the entry (it may be the owner's)
    ({"exec-opts": ["native.cgroupdriver=cgroupfs"]}, {"runtime_enabled": False},
     {"exec-opts": ["native.cgroupdriver=cgroupfs"]}),
    # features: cdi added, other features kept; not removed when CDI is off
    ({"features": {"buildkit": True}}, {"runtime_enabled": False, "cdi": True}, {"features": {"buildkit": True, "cdi": True}}),
    ({"features": {"cdi": True}}, {"runtime_enabled": False}, {"features": {"cdi": True}}),
    # options: merged recursively, lists replaced, last word
    ({"log-opts": {"max-size": "10m", "max-file": "3"}}, {"runtime_enabled": False, "options": {"log-opts": {"max-size": "100m"}}},
     {"log-opts": {"max-size": "100m", "max-file": "3"}}),
    ({"registry-mirrors": ["a"]}, {"runtime_enabled": False, "options": {"registry-mirrors": ["b"]}}, {"registry-mirrors": ["b"]}),
])
def test_daemon_wanted(current, kwargs, wanted):
    before = json.dumps(current, sort_keys=True)
    assert rk_docker_daemon_wanted(current, runtime=NVIDIA, **kwargs) == wanted
    assert json.dumps(current, sort_keys=True) == before, "the input must not be modified"


@pytest.mark.parametrize("current, kwargs, match", [
    ([], {}, "JSON object"),
    ("{}", {}, "JSON object"),
    ({}, {"options": ["x"]}, "mapping"),
    ({"exec-opts": "native.cgroupdriver=systemd"}, {"cgroupfs": True}, "exec-opts"),
])
def test_daemon_wanted_refuses_bad_input(current, kwargs, match):
    with pytest.raises(AnsibleFilterError, match=match):
        rk_docker_daemon_wanted(current, **kwargs)


# --- Reload or restart ------------------------------------------------------------------------

def info(runtimes=("io.containerd.runc.v2", "runc"), default="runc", cgroup="cgroupfs", live_restore=False):
    return json.dumps({"Runtimes": {r: {"path": r} for r in runtimes}, "DefaultRuntime": default,
                       "CgroupDriver": cgroup, "LiveRestoreEnabled": live_restore})


WITH_NVIDIA = ("io.containerd.runc.v2", "nvidia", "runc")


@pytest.mark.parametrize("current, wanted, live, action, restart_keys", [
    # the runtime keys: a reload (moby daemon/reload_unix.go reloadPlatform)
    (OWNER, {**OWNER, "runtimes": {**OWNER["runtimes"], "nvidia": NVIDIA}}, info(), "reload", []),
    ({}, {"runtimes": {"nvidia": NVIDIA}, "default-runtime": "nvidia"}, info(), "reload", []),
    ({"runtimes": {"nvidia": NVIDIA}}, {"runtimes": {"nvidia": NVIDIA}, "registry-mirrors": ["m"], "debug": True},
     info(WITH_NVIDIA), "reload", []),
    # removing the default runtime: a reload keeps the old default ("if conf.DefaultRuntime != \"\"")
    ({"runtimes": {"nvidia": NVIDIA}, "default-runtime": "nvidia"}, {"runtimes": {"nvidia": NVIDIA}},
     info(WITH_NVIDIA, default="nvidia"), "restart", ["default-runtime"]),
    # keys a reload does not apply
    ({}, {"exec-opts": ["native.cgroupdriver=cgroupfs"]}, info(), "restart", ["exec-opts"]),
    ({}, {"features": {"cdi": True}}, info(), "restart", ["features"]),
    ({"data-root": "/a"}, {"data-root": "/b"}, info(), "restart", ["data-root"]),
    ({}, {"storage-driver": "vfs", "runtimes": {"nvidia": NVIDIA}}, info(), "restart", ["storage-driver"]),
    # a removed reloadable key is not reset by a reload
    ({"registry-mirrors": ["m"]}, {}, info(), "restart", ["registry-mirrors"]),
    # nothing to do
    ({"runtimes": {"nvidia": NVIDIA}}, {"runtimes": {"nvidia": NVIDIA}}, info(WITH_NVIDIA), "none", []),
    # the file is right but the daemon never read it (a run failed after the write)
    ({"runtimes": {"nvidia": NVIDIA}}, {"runtimes": {"nvidia": NVIDIA}}, info(), "reload", []),
    ({"default-runtime": "nvidia", "runtimes": {"nvidia": NVIDIA}}, {"default-runtime": "nvidia", "runtimes": {"nvidia": NVIDIA}},
     info(WITH_NVIDIA), "reload", []),
    ({"runtimes": {"nvidia": NVIDIA}}, {"runtimes": {"nvidia": NVIDIA}}, info(WITH_NVIDIA, default="nvidia"), "restart", []),
    ({"exec-opts": ["native.cgroupdriver=cgroupfs"]}, {"exec-opts": ["native.cgroupdriver=cgroupfs"]},
     info(cgroup="systemd"), "restart", []),
    # Docker not running: the file is written, Docker reads it when it starts
    ({}, {"exec-opts": ["native.cgroupdriver=cgroupfs"]}, None, "none", ["exec-opts"]),
    ({}, {}, "", "none", []),
])
def test_daemon_plan(current, wanted, live, action, restart_keys):
    plan = rk_docker_daemon_plan(current, wanted, live)
    assert plan["action"] == action, plan["reasons"]
    assert plan["restart_keys"] == restart_keys
    assert plan["write"] == (current != wanted)
    if action != "none":
        assert plan["reasons"]


def test_daemon_plan_reads_live_restore_from_the_running_daemon():
    assert rk_docker_daemon_plan({}, {"data-root": "/b"}, info(live_restore=True))["live_restore"] is True
    assert rk_docker_daemon_plan({"live-restore": True}, {"live-restore": True, "data-root": "/b"}, info())["live_restore"] is False


def test_daemon_plan_refuses_text_that_is_not_docker_info():
    with pytest.raises(AnsibleFilterError, match="not JSON"):
        rk_docker_daemon_plan({}, {}, "Client: Docker Engine")


# --- The restart guard ------------------------------------------------------------------------

PS = "\n".join(json.dumps(c) for c in [
    {"ID": "0123456789abcdef", "Names": "trainer", "Image": "rk-busybox", "Status": "Up 3 hours"},
    {"ID": "fedcba9876543210", "Names": "notebook", "Image": "jupyter", "Status": "Up 2 days"}])
RESTART = {"action": "restart", "restart_keys": ["exec-opts"], "reasons": ["exec-opts changed (needs a restart)"],
           "live_restore": False}


@pytest.mark.parametrize("plan, running, force, allowed", [
    (RESTART, PS, False, False),
    (RESTART, PS, True, True),
    ({**RESTART, "live_restore": True}, PS, False, True),
    (RESTART, "", False, True),
    (RESTART, [], False, True),
    ({**RESTART, "action": "reload"}, PS, False, True),
    ({**RESTART, "action": "none"}, PS, False, True),
])
def test_restart_guard(plan, running, force, allowed):
    assert rk_docker_restart_guard(plan, running, force)["allowed"] is allowed


def test_restart_guard_names_the_containers_and_the_ways_out():
    msg = rk_docker_restart_guard(RESTART, PS)["msg"]
    for part in ("trainer (0123456789ab, image rk-busybox, Up 3 hours)", "notebook", "2 running container(s)",
                 "exec-opts", "live-restore", "container_toolkit_docker_restart_force", "Nothing has been changed"):
        assert part in msg


# --- CDI --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, mode", [
    ("1.17.8-1", "generate"), ("1.18.0-1", "refresh"), ("1.18.0~rc.1-1", "refresh"), ("1.19.1-1", "refresh"),
    ("1.9.0-1", "generate"), ("2.0.0-1", "refresh"), ("1.14.6-1", "generate"),
])
def test_cdi_mode(version, mode):
    assert rk_docker_cdi_mode(version) == mode


@pytest.mark.parametrize("version", ["", None, "latest"])
def test_cdi_mode_refuses_what_is_not_a_version(version):
    with pytest.raises(AnsibleFilterError):
        rk_docker_cdi_mode(version)
