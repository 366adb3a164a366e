"""Helpers for the ssh_socket scenario's verifier: the real ssh client against the rig's published
ports, and the scenario's converge run again with other variables."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
INSTANCE = "rk-" + os.environ.get("MOLECULE_SCENARIO_NAME", "ssh_socket")


def published(container_port):
    """The 127.0.0.1 port Docker publishes the rig's `container_port` on."""
    out = subprocess.run(["docker", "port", INSTANCE, "%d/tcp" % container_port],
                         capture_output=True, text=True, check=True)
    address = out.stdout.splitlines()[0]
    assert address.startswith("127.0.0.1:"), "sshd must be published on 127.0.0.1 only, not %s" % address
    return int(address.rsplit(":", 1)[1])


def login(container_port, *command):
    """ssh as rkadmin with the scenario's key, from outside the rig, to one of its ports."""
    cmd = ["ssh", "-p", str(published(container_port)), "-i", os.path.join(EPHEMERAL, "keys", "admin"),
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "rkadmin@127.0.0.1"] + list(command)
    return subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def run_converge(extra_vars=None):
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    local = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    cmd = [local if os.path.exists(local) else shutil.which("ansible-playbook"), "-i", inventory,
           os.path.join(scenario, "converge.yml")]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    proc.output = ANSI.sub("", proc.stdout + proc.stderr)
    recap = RECAP.findall(proc.output)
    proc.failed = int(recap[-1][3]) if recap else None
    return proc


@pytest.fixture(scope="session")
def converge():
    return run_converge
