"""playbooks/upgrade_driver.yml 535 -> 580: one reboot, verified; refused under GPU jobs."""

import json

from driver_helpers import (PREFS, boot_id, boots_recorded, family, library_versions,
                            loaded_version, persistence, smi_versions, snapshot)

VERSION = "580.95.05-0ubuntu0.24.04.1"
APPS = "/run/rigkeeper-sim/compute-apps.json"
UPGRADE = "converge.yml"


def test_580_installed_pinned_held_and_535_gone(host):
    pkgs = family(host)
    assert pkgs["nvidia-driver-580-open"] == (VERSION, "hold")
    assert {s for _, s in pkgs.values()} == {"hold"}
    assert not [n for n in pkgs if "535" in n], pkgs
    assert library_versions(host) == ["580.95.05"]
    assert "Pin: version 580.95.05-0ubuntu0.24.04.1\nPin-Priority: 1001" in host.file(PREFS).content_string


def test_exactly_one_reboot_and_580_runs(host):
    boots = boots_recorded(host)
    assert len(boots) == 1, boots
    assert boots[0] == boot_id(host)
    assert loaded_version(host) == "580.95.05"
    assert smi_versions(host) == ["580.95.05", "580.95.05"]
    assert persistence(host) == ["Enabled", "Enabled"]


def test_power_limits_are_back_after_the_upgrade(host):
    out = host.check_output("nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits")
    assert out.split() == ["350.00", "350.00"]


def gpu_job(host, gpu):
    """A real process (so the reboot guard finds it alive) that the fake nvidia-smi lists on `gpu`."""
    pid = host.check_output("setsid sleep 600 >/dev/null 2>&1 < /dev/null & echo $!")
    apps = [{"gpu": gpu, "pid": int(pid), "process_name": "python3", "used_memory_mib": 20480}]
    host.run(f"echo '{json.dumps(apps)}' > {APPS}")
    return pid


def test_refused_while_a_gpu_job_runs(host, playbook):
    pid = gpu_job(host, 0)
    try:
        before = snapshot(host)
        run = playbook({"nvidia_driver_version": "580.82.07"}, name=UPGRADE)
        assert run.returncode != 0 and run.changed == 0
        assert "1 GPU compute process(es) run on" in run.output and f"{pid} sleep" in run.output
        assert "nvidia_driver_upgrade_force=true" in run.output
        assert snapshot(host) == before
        assert len(boots_recorded(host)) == 1
        assert host.run(f"kill -0 {pid}").rc == 0
    finally:
        host.run(f"kill {pid}; rm -f {APPS}")


def test_forced_under_a_gpu_job_and_nothing_to_do(host, playbook):
    pid = gpu_job(host, 1)
    try:
        before = snapshot(host)
        run = playbook({"nvidia_driver_upgrade_force": True}, name=UPGRADE)
        assert run.returncode == 0, run.output
        assert run.changed == 0, run.output
        assert "driver 580.95.05 (running 580.95.05) -> 580.95.05 (running 580.95.05)" in run.output
        assert snapshot(host) == before
        assert len(boots_recorded(host)) == 1
    finally:
        host.run(f"kill {pid}; rm -f {APPS}")


def firmware(host):
    return sorted(n for n in family(host) if n.startswith("nvidia-firmware-"))


def test_within_the_branch_down_and_up_with_version_named_firmware(host, playbook):
    """Ubuntu names the GSP firmware for its version (nvidia-firmware-580-580.95.05): a change within
    the branch installs the other version's and must remove the old one, or the installed driver is
    two versions and the verification fails half-way."""
    assert firmware(host) == ["nvidia-firmware-580-580.95.05"]
    run = playbook({"nvidia_driver_version": "580.82.07"}, name=UPGRADE)
    assert run.returncode == 0, run.output[-4000:]
    assert firmware(host) == ["nvidia-firmware-580-580.82.07"]
    assert smi_versions(host) == ["580.82.07", "580.82.07"]
    assert {s for _, s in family(host).values()} == {"hold"}
    run = playbook(name=UPGRADE)   # the newest of the branch (upgrade-driver moves within it)
    assert run.returncode == 0, run.output[-4000:]
    assert firmware(host) == ["nvidia-firmware-580-580.95.05"]
    assert smi_versions(host) == ["580.95.05", "580.95.05"]
    assert len(boots_recorded(host)) == 3
