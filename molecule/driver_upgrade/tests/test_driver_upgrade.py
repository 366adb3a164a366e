"""playbooks/upgrade-driver.yml 535 -> 580: one reboot, verified; refused under GPU jobs."""

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
    assert "Pin: version 580.95.05-*\nPin-Priority: 1001" in host.file(PREFS).content_string


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


def test_refused_while_a_gpu_job_runs(host, playbook):
    host.run(f"echo '{json.dumps([{'gpu': 0, 'pid': 4242, 'process_name': 'python3', 'used_memory_mib': 20480}])}' > {APPS}")
    try:
        before = snapshot(host)
        run = playbook({"nvidia_driver_version": "580.82.07"}, name=UPGRADE)
        assert run.returncode != 0 and run.changed == 0
        assert "1 GPU compute process(es) run on" in run.output and "python3" in run.output
        assert "nvidia_driver_upgrade_force=true" in run.output
        assert snapshot(host) == before
        assert len(boots_recorded(host)) == 1
    finally:
        host.run(f"rm -f {APPS}")


def test_forced_under_a_gpu_job_and_nothing_to_do(host, playbook):
    host.run(f"echo '{json.dumps([{'gpu': 1, 'pid': 4243, 'process_name': 'python3', 'used_memory_mib': 1024}])}' > {APPS}")
    try:
        before = snapshot(host)
        run = playbook({"nvidia_driver_upgrade_force": True}, name=UPGRADE)
        assert run.returncode == 0, run.output
        assert run.changed == 0, run.output
        assert "driver 580.95.05 (running 580.95.05) -> 580.95.05 (running 580.95.05)" in run.output
        assert snapshot(host) == before
        assert len(boots_recorded(host)) == 1
    finally:
        host.run(f"rm -f {APPS}")
