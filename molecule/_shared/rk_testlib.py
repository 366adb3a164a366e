"""Helpers for Molecule verify tests: run this repo's playbooks against the scenario's instance."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))


def ephemeral() -> Path:
    return Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def playbook(path: str, *extra: str, report_dir: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """ansible-playbook with the project's wiring against the Molecule inventory."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               RIGKEEPER_REPORT_DIR=str(report_dir or ephemeral() / "reports"))
    inv = os.environ["MOLECULE_INVENTORY_FILE"]
    cmd = ["ansible-playbook", "-i", inv, str(ROOT / path), *extra]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)


def instance() -> str:
    return "rk-" + os.environ["MOLECULE_SCENARIO_NAME"]


def reboot(host, timeout: float = 120) -> None:
    """The simulator's reboot: restart the container, wait for systemd and a new boot id."""
    before = host.file("/run/rigkeeper-sim/boot_id").content_string
    subprocess.run(["docker", "restart", "-t", "10", instance()], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = subprocess.run(["docker", "exec", instance(), "systemctl", "is-system-running"],
                             capture_output=True, text=True)
        if res.stdout.strip() in ("running", "degraded"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the rig did not come back from its reboot")
    assert host.file("/run/rigkeeper-sim/boot_id").content_string != before


def report(report_dir: Path, name: str) -> dict:
    return json.loads((report_dir / f"{name}.json").read_text())
