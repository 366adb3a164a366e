"""Helpers shared by the nvidia_driver scenarios (nvidia_driver, driver_*, real_driver): read the
rig's real state (packages, selections, pins, the simulated driver), run a scenario's playbook
again with other variables, reboot the rig."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

PREFS = "/etc/apt/preferences.d/rigkeeper-nvidia"
UNATTENDED = "/etc/apt/apt.conf.d/51rigkeeper-nvidia-unattended"
NOUVEAU = "/etc/modprobe.d/blacklist-nouveau.conf"
DROPIN = "/etc/systemd/system/nvidia-persistenced.service.d/50-rigkeeper-persistence.conf"
WANTS = "/etc/systemd/system/multi-user.target.wants/nvidia-persistenced.service"
INITRD = "/boot/initrd.img-6.8.0-51-generic"
BOOTS = "/var/lib/rigkeeper-sim/boots"
LOADED = "/run/rigkeeper-sim/sys/module/nvidia/version"
MANAGED = [PREFS, UNATTENDED, NOUVEAU, DROPIN]
FAMILY = ("nvidia-", "libnvidia-", "cuda-drivers", "xserver-xorg-video-nvidia", "linux-modules-nvidia-",
          "linux-objects-nvidia-", "linux-signatures-nvidia-")
NOT_FAMILY = ("nvidia-container", "libnvidia-container")


def _ansible_playbook():
    local = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return local if os.path.exists(local) else shutil.which("ansible-playbook")


def run_playbook(extra_vars=None, check=False, tags=None, name="converge.yml", timeout=900):
    """Run a playbook of this scenario (or a path) against the rig as Molecule does; returns the
    process with .output (no colours), .changed and .failed from the last recap."""
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    playbook = name if os.path.isabs(name) else os.path.join(scenario, name)
    cmd = [_ansible_playbook(), "-i", inventory, playbook]
    if check:
        cmd += ["--check", "--diff"]
    if tags:
        cmd += ["--tags", tags]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    proc.output = ANSI.sub("", proc.stdout + proc.stderr)
    recap = RECAP.findall(proc.output)
    proc.changed = int(recap[-1][1]) if recap else None
    proc.failed = int(recap[-1][3]) if recap else None
    return proc


def family(host):
    """{name: (version, selection)} of the installed NVIDIA driver family."""
    out = host.check_output(
        "dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Want}\\t${db:Status-Status}\\n'")
    result = {}
    for line in out.splitlines():
        name, version, want, status = line.split("\t")
        if status != "installed" or not name.startswith(FAMILY) or name.startswith(NOT_FAMILY):
            continue
        result[name] = (version, want)
    return result


def snapshot(host):
    """Everything the role manages, as it is now on the rig."""
    files = {p: hashlib.sha256(host.file(p).content).hexdigest() if host.file(p).exists else None
             for p in MANAGED}
    return {
        "files": files,
        "packages": host.check_output("dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n'"),
        "selections": host.check_output("dpkg --get-selections"),
    }


def smi_versions(host):
    """Driver version per GPU as nvidia-smi reports it."""
    out = host.run("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    assert out.rc == 0, out.stdout + out.stderr
    return out.stdout.split()


def persistence(host):
    out = host.run("nvidia-smi --query-gpu=persistence_mode --format=csv,noheader")
    assert out.rc == 0, out.stdout + out.stderr
    return out.stdout.split()


def loaded_version(host):
    f = host.file(LOADED)
    return f.content_string.strip() if f.exists else None


def library_versions(host):
    out = host.check_output("ls /usr/lib/x86_64-linux-gnu")
    return sorted(n[len("libnvidia-ml.so."):] for n in out.split()
                  if n.startswith("libnvidia-ml.so.") and n.count(".") >= 4)


def boot_id(host):
    return host.file("/run/rigkeeper-sim/boot_id").content_string.strip()


def boots_recorded(host):
    """Boot ids the scenario's boot recorder (prepare) logged since prepare ended."""
    f = host.file("/var/lib/rk-test/boots")
    return f.content_string.split() if f.exists else []


def reboot_rig(host, name):
    """The simulator's reboot (a container restart), then wait for systemd."""
    before = boot_id(host)
    subprocess.run(["docker", "restart", "-t", "10", name], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        res = subprocess.run(["docker", "exec", name, "systemctl", "is-system-running"],
                             capture_output=True, text=True)
        if res.stdout.strip() in ("running", "degraded"):
            break
        time.sleep(1)
    assert boot_id(host) != before


# --- Fixtures (imported by each scenario's conftest.py) ---------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def playbook():
    return run_playbook


@pytest.fixture(scope="session")
def rig_name():
    return "rk-" + os.environ["MOLECULE_SCENARIO_NAME"]
