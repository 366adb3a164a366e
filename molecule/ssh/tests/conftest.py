"""Helpers for the ssh scenario's verifier: the real ssh client against the rig's published port,
and the scenario's playbooks run again with other variables."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
KEYS = os.path.join(EPHEMERAL, "keys")
INSTANCE = "rk-" + os.environ.get("MOLECULE_SCENARIO_NAME", "ssh")
CLIENT_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=10",
]


def _ansible_playbook():
    local = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return local if os.path.exists(local) else shutil.which("ansible-playbook")


def run_playbook(name="converge.yml", extra_vars=None, check=False, inventory=None, verbose=False):
    """Run a playbook of this scenario against the rig, as Molecule would (or through `inventory`)."""
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    inventory = inventory or os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    cmd = [_ansible_playbook(), "-i", inventory, os.path.join(scenario, name)]
    if check:
        cmd += ["--check", "--diff"]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if verbose:
        cmd += ["-v"]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    proc.output = ANSI.sub("", proc.stdout + proc.stderr)
    recap = RECAP.findall(proc.output)
    proc.changed = int(recap[-1][1]) if recap else None
    proc.failed = int(recap[-1][3]) if recap else None
    return proc


def fingerprint(name):
    """ssh-keygen's SHA256 fingerprint of one of the scenario's keys, computed on the controller."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", os.path.join(KEYS, name + ".pub")],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def over_ssh_inventory(directory, port, user="rkadmin", key=None, password=None, common_args=()):
    """An inventory that reaches the rig through its published sshd port, as a real one would:
    Ansible's ssh connection as `user` (sudo for root), with a key file or a password."""
    host = {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": user,
        "ansible_become": True,
        "ansible_ssh_common_args": " ".join(
            ["-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null"] + list(common_args)),
    }
    if key:
        host["ansible_ssh_private_key_file"] = os.path.join(KEYS, key)
    if password:
        host["ansible_password"] = password
    path = os.path.join(str(directory), "hosts.yml")
    with open(path, "w") as handle:
        yaml.safe_dump({"all": {"hosts": {"rig-over-ssh": host}}}, handle)
    return path


def public_key(name):
    with open(os.path.join(KEYS, name + ".pub")) as handle:
        return handle.read().strip()


@pytest.fixture(scope="session")
def playbook():
    return run_playbook


@pytest.fixture(scope="session")
def port():
    out = subprocess.run(["docker", "port", INSTANCE, "22/tcp"], capture_output=True, text=True, check=True)
    address = out.stdout.splitlines()[0]
    assert address.startswith("127.0.0.1:"), "sshd must be published on 127.0.0.1 only, not %s" % address
    return int(address.rsplit(":", 1)[1])


@pytest.fixture(scope="session")
def ssh(port):
    """ssh(user, *command, key=None, password=False, kbd=False, options=()) -> CompletedProcess."""

    def run(user, *command, key=None, password=False, kbd=False, options=()):
        cmd = ["ssh", "-p", str(port)] + CLIENT_OPTS + list(options)
        env = dict(os.environ)
        if key:
            cmd += ["-i", os.path.join(KEYS, key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                    "-o", "PreferredAuthentications=publickey"]
        else:
            # The right password, typed by an askpass helper (prepare.yml proved it logs in while
            # sshd still takes passwords).
            method = "keyboard-interactive" if kbd else "password"
            cmd += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=" + method,
                    "-o", "NumberOfPasswordPrompts=1"]
            env.update(SSH_ASKPASS=os.path.join(EPHEMERAL, "askpass"), SSH_ASKPASS_REQUIRE="force")
        cmd += ["%s@127.0.0.1" % user] + list(command)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                              timeout=60)

    return run
