"""Helpers for the docker_ce verifier: the scenario's converge playbook run again with other
variables (a broken option, a restart-needing option, a swap nobody asked for)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _ansible_playbook():
    local = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return local if os.path.exists(local) else shutil.which("ansible-playbook")


def run_playbook(extra_vars=None, check=False, tags=None, name="converge.yml"):
    """Run a playbook of this scenario against the rig as Molecule does; returns the process with
    .output (no colours), .changed and .failed from the recap."""
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    cmd = [_ansible_playbook(), "-i", inventory, os.path.join(scenario, name)]
    if check:
        cmd += ["--check", "--diff"]
    if tags:
        cmd += ["--tags", tags]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    proc.output = ANSI.sub("", proc.stdout + proc.stderr)
    recap = RECAP.findall(proc.output)
    proc.changed = int(recap[-1][1]) if recap else None
    proc.failed = int(recap[-1][3]) if recap else None
    return proc


@pytest.fixture(scope="session")
def playbook():
    return run_playbook
