"""NVSwitch rig: the fabric manager at exactly the driver's version, held, running."""

from driver_helpers import family, snapshot

VERSION = "580.95.05-0ubuntu0.24.04.1"


def test_headless_server_driver_and_fabric_manager_at_the_same_version(host):
    pkgs = family(host)
    assert pkgs["nvidia-headless-580-server-open"] == (VERSION, "hold")
    assert pkgs["nvidia-fabricmanager-580"] == (VERSION, "hold")
    assert {s for _, s in pkgs.values()} == {"hold"}


def test_fabric_manager_runs_and_the_fabric_is_up(host):
    fm = host.service("nvidia-fabricmanager")
    assert fm.is_enabled and fm.is_running
    out = host.check_output("nvidia-smi --query-gpu=fabric.state --format=csv,noheader")
    assert out.split() == ["Completed"] * 8


def test_other_fabric_managers_have_no_candidate(host):
    run = host.run("apt-get -s install nvidia-fabricmanager-550")
    assert run.rc != 0 and "has no installation candidate" in run.stdout + run.stderr


def test_auto_now_sees_the_nvswitch_and_changes_nothing(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_fabricmanager": "auto"})
    assert run.returncode == 0 and run.changed == 0, run.output
    assert "nvidia-fabricmanager-580" in run.output  # still in the package set
    assert snapshot(host) == before
