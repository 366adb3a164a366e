"""Fixtures that start real simulated rigs (Docker containers booting systemd). Marked `sim`."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simctl  # noqa: E402


class Rig:
    def __init__(self, name: str):
        self.name = name

    def sh(self, script: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess:
        res = simctl.docker_exec(self.name, "sh", "-c", script, check=False, user=user)
        if check and res.returncode != 0:
            raise AssertionError(f"rig command failed ({res.returncode}): {script}\n{res.stdout}\n{res.stderr}")
        return res

    def apt_install(self, *pkgs: str) -> None:
        self.sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                + " ".join(pkgs) + " >/dev/null")

    def restart(self) -> None:
        simctl.restart(self.name)

    def reboot_from_inside(self, timeout: float = 90) -> None:
        """`systemctl reboot` in the rig: PID 1 exits, Docker's restart policy boots it again."""
        before = self.sh("cat /run/rigkeeper-sim/boot_id").stdout
        self.sh("systemctl reboot", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.sh("cat /run/rigkeeper-sim/boot_id 2>/dev/null", check=False)
            if now.returncode == 0 and now.stdout and now.stdout != before:
                simctl.wait_booted(self.name)
                return
        raise AssertionError(f"rig {self.name} did not come back from `systemctl reboot`")


@pytest.fixture(scope="module")
def rig_factory():
    made = []

    def make(config: str = "2x4090") -> Rig:
        name = f"rk-pytest-{uuid.uuid4().hex[:8]}"
        simctl.up(name, config=config)
        made.append(name)
        return Rig(name)

    yield make
    simctl.down(made, quiet=True)


@pytest.fixture(scope="module")
def rig(rig_factory) -> Rig:
    return rig_factory()
