"""545 installed by hand and held -> the role with the default policy -> 580, with one reboot."""

from driver_helpers import (DROPIN, INITRD, NOUVEAU, PREFS, family, library_versions,
                            loaded_version, persistence, smi_versions, snapshot, boot_id, boots_recorded)

VERSION = "580.95.05-0ubuntu0.24.04.1"


def test_ends_on_exact_580_held(host):
    pkgs = family(host)
    assert pkgs["nvidia-driver-580-open"] == (VERSION, "hold")
    assert {v for n, (v, _) in pkgs.items() if "-580" in n} == {VERSION}
    assert {s for _, s in pkgs.values()} == {"hold"}


def test_nothing_of_545_is_left(host):
    assert not [n for n in family(host) if "545" in n]
    assert "nvidia-driver-545" not in host.check_output("dpkg --get-selections")
    assert library_versions(host) == ["580.95.05"]


def test_pinned_to_580(host):
    assert "Pin: version 580.95.05-0ubuntu0.24.04.1\nPin-Priority: 1001" in host.file(PREFS).content_string
    run = host.run("apt-get -s install nvidia-driver-545")
    assert run.rc != 0 and "has no installation candidate" in run.stdout + run.stderr


def test_rebooted_once_and_runs_580(host):
    boots = boots_recorded(host)
    assert len(boots) == 1, boots
    assert boots[0] == boot_id(host)
    assert loaded_version(host) == "580.95.05"
    assert smi_versions(host) == ["580.95.05", "580.95.05"]


def test_nouveau_blacklisted(host):
    assert "blacklist nouveau" in host.file(NOUVEAU).content_string
    assert "blacklist nouveau" in host.file(INITRD).content_string


def test_persistence_on_after_the_reboot(host):
    assert "--persistence-mode" in host.file(DROPIN).content_string
    assert host.service("nvidia-persistenced").is_running
    assert persistence(host) == ["Enabled", "Enabled"]


def test_check_mode_reports_nothing_now(host, playbook):
    before = snapshot(host)
    run = playbook(check=True)
    assert run.returncode == 0 and run.changed == 0, run.output
    assert snapshot(host) == before
    assert len(boots_recorded(host)) == 1
