"""tests/hardware/guard.sh: the read-only guard for runs on a real GPU server refuses what changes the
machine and passes queries to the real tool. Real tools are stand-ins here that record each call, so
a call the guard let through is seen."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "tests/hardware/guard.sh"
TOOLS = ("nvidia-smi setpci modprobe rmmod insmod reboot shutdown poweroff halt kexec telinit "
         "nvidia-persistenced update-initramfs update-grub grub-install grub-mkconfig systemctl apt "
         "apt-get aptitude apt-mark dpkg snap pip pip3").split()


@pytest.fixture()
def guarded(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    calls = tmp_path / "calls"
    for tool in TOOLS:
        stub = real / tool
        stub.write_text('#!/bin/sh\necho "$(basename "$0") $*" >> %s\n' % calls)
        stub.chmod(0o755)
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % real)

    def run(cmd):
        script = 'source %s; rk_guard_install %s %s >/dev/null || exit 90; %s' % (
            GUARD, tmp_path / "g", tmp_path / "log", cmd)
        proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
        seen = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return proc.returncode, seen, (tmp_path / "log").read_text()
    return run


REFUSED = [
    "nvidia-smi -pl 300", "nvidia-smi -i 0 -pm 1", "nvidia-smi --power-limit=300", "nvidia-smi -r",
    "nvidia-smi -mig 1", "nvidia-smi -e 0", "nvidia-smi -lgc 1500", "nvidia-smi --gpu-reset",
    "setpci -s 01:00.0 ECAP_ACS+0x6.w=0000", "modprobe nvidia", "modprobe -r nouveau", "rmmod nvidia",
    "insmod x.ko", "reboot", "shutdown -r now", "poweroff", "nvidia-persistenced --persistence-mode",
    "update-initramfs -u -k all", "update-grub", "systemctl restart docker", "systemctl daemon-reload",
    "systemctl --no-block reboot", "apt-get install -y nvidia-driver-580", "apt-get -y upgrade",
    "apt install htop", "apt remove x", "aptitude install x", "apt-mark hold nvidia-driver-580",
    "apt-mark unhold x", "dpkg -i x.deb", "dpkg --purge x", "dpkg --set-selections", "dpkg --configure -a",
    "pip install x", "pip3 uninstall x", "snap install x",
]

PASSED = [
    "nvidia-smi -q -x", "nvidia-smi --query-gpu=name,power.limit --format=csv", "nvidia-smi topo -m",
    "nvidia-smi topo -p2p r", "setpci -s 01:00.0 ECAP_ACS+0x6.w", "modprobe -n nvidia",
    "modprobe --show-depends nvidia", "systemctl status docker", "systemctl is-active docker",
    "systemctl show -p ActiveState docker", "systemctl list-units", "apt-get -s install x",
    "apt list --installed", "apt-cache policy x", "apt-mark showhold", "dpkg -l", "dpkg -s bash",
    "dpkg -L bash", "dpkg --compare-versions 1 lt 2", "dpkg --print-architecture", "pip list",
]


@pytest.mark.parametrize("cmd", REFUSED)
def test_a_call_that_changes_the_machine_is_refused_and_never_reaches_the_tool(guarded, cmd):
    rc, seen, log = guarded(cmd)
    assert rc == 97
    assert seen == []
    assert "REFUSED: %s" % cmd in log


@pytest.mark.parametrize("cmd", PASSED)
def test_a_query_goes_to_the_real_tool_and_is_logged(guarded, cmd):
    rc, seen, log = guarded(cmd)
    if cmd.startswith("apt-cache"):  # not guarded: apt-cache only reads
        assert rc == 0
        return
    assert rc == 0
    assert seen == [cmd]
    assert "passed: %s" % cmd in log


def test_the_self_test_leaves_a_clean_log_and_reaches_no_tool(guarded):
    rc, seen, log = guarded("true")
    assert rc == 0
    assert seen == []
    assert log.startswith("self-test: ") and "REFUSED" not in log
