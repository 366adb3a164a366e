"""nvidia_driver on a fresh simulated rig (2x RTX 4090), default policy.

The simulated Ubuntu archive offers 535, 545, 550 and 580 with two versions each
(tests/sim/repo/catalog.py): the role must install the newest 580 exactly, pin it so that neither
`apt-get upgrade` nor `apt-get install nvidia-driver-550` moves it, hold it, blacklist nouveau and
run nvidia-persistenced with persistence on. Tests that run the playbook again or change the rig
come last; the very last ones change the rig.
"""

import re

from driver_helpers import (BOOTS, DROPIN, INITRD, NOUVEAU, PREFS, UNATTENDED, WANTS, boot_id, family,
                            library_versions, loaded_version, persistence, reboot_rig,
                            smi_versions, snapshot)

VERSION = "580.95.05-0ubuntu0.24.04.1"  # newest 580 in the simulated archive
OLDER = "580.82.07-0ubuntu0.24.04.1"
DRIVER = "nvidia-driver-580-open"  # the policy: open modules from 560 on (Ada)


def test_the_archive_offers_more_than_the_chosen_version(host):
    """The choice was a choice: two 580 versions and two 550 versions to pick from."""
    madison = host.check_output("apt-cache madison nvidia-driver-580-open nvidia-driver-550")
    assert VERSION in madison and OLDER in madison
    assert madison.count("nvidia-driver-550 |") == 2


def test_exact_newest_580_installed(host):
    pkgs = family(host)
    assert pkgs[DRIVER][0] == VERSION
    # Every package of the driver carries the very same version.
    named = {n: v for n, (v, _) in pkgs.items() if "-580" in n}
    assert len(named) >= 10 and set(named.values()) == {VERSION}, named
    assert not [n for n in pkgs if any(f"-{b}" in n for b in ("535", "545", "550"))]


def test_driver_runs_and_matches_the_installed_library(host):
    assert smi_versions(host) == ["580.95.05", "580.95.05"]
    assert library_versions(host) == ["580.95.05"]
    assert loaded_version(host) == "580.95.05"


def test_every_family_package_is_held(host):
    pkgs = family(host)
    assert pkgs and {sel for _, sel in pkgs.values()} == {"hold"}, pkgs


def test_preferences_pin_the_exact_version_and_forbid_other_branches(host):
    prefs = host.file(PREFS)
    assert prefs.user == "root" and prefs.mode == 0o644
    text = prefs.content_string
    assert "Pin: version 580.95.05-0ubuntu0.24.04.1\nPin-Priority: 1001" in text
    assert "Pin-Priority: -1" in text
    # Exact names only: apt matches each glob or regex against every package name on every command.
    names = " ".join(ln for ln in text.splitlines() if ln.startswith("Package:"))
    assert not set("*?[/") & set(names) and " nvidia-driver-550 " in names + " "
    policy = host.check_output("apt-cache policy nvidia-utils-580 nvidia-driver-550 nvidia-driver-580-server")
    # nvidia-utils-580: candidate is the pinned version although nothing newer exists...
    assert f"Candidate: {VERSION}" in policy.split("nvidia-driver-550:")[0]
    # ...and every other branch, even 580-server (another name of the same branch is fine), has none.
    assert policy.split("nvidia-driver-550:")[1].split("nvidia-driver-580-server:")[0].count("Candidate: (none)") == 1
    assert "Candidate: 580.95.05" in policy.split("nvidia-driver-580-server:")[1]


def test_older_version_of_the_branch_is_not_a_candidate(host):
    # 580.82.07 is in the archive but the pin gives the installed version 1001, the older one 500.
    policy = host.check_output("apt-cache policy nvidia-driver-580-open")
    assert f"*** {VERSION} 1001" in policy
    assert f"{OLDER} 500" in policy


def test_unattended_upgrades_blacklist(host):
    """unattended-upgrades applies each entry with re.match to package names: the driver family is
    blacklisted; the container toolkit (it keeps its security updates) and the kernel-following
    precompiled modules (they move with kernel updates) are not."""
    assert host.file(UNATTENDED).exists
    dump = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    patterns = re.findall(r'Package-Blacklist::\s+"(.*)";', dump)
    assert patterns, dump
    for name in (DRIVER, "libnvidia-compute-580", "nvidia-firmware-580-580.95.05", "cuda-drivers-580",
                 "xserver-xorg-video-nvidia-580", "cuda-toolkit-12-4"):
        assert any(re.match(p, name) for p in patterns), (name, dump)
    for name in ("nvidia-container-toolkit", "libnvidia-container1", "linux-modules-nvidia-580-open-generic"):
        assert not any(re.match(p, name) for p in patterns), (name, dump)


def test_index_refreshes_are_stamped_and_the_next_run_skips_the_refresh(host, playbook):
    """apt touches the update-success stamp after each refresh (the hook rigkeeper adds), so a run
    within nvidia_driver_apt_cache_valid_time finds the index fresh and leaves apt alone."""
    dump = host.check_output("apt-config dump APT::Update::Post-Invoke-Success")
    assert "touch /var/lib/apt/periodic/update-success-stamp" in dump, dump
    host.run_expect([0], "rm -f /var/lib/apt/periodic/update-success-stamp && apt-get -qq update")
    assert host.file("/var/lib/apt/periodic/update-success-stamp").exists
    # A drift, so the role runs its apply tasks (on a converged host it ends after the probe).
    host.run_expect([0], "rm /etc/apt/apt.conf.d/51rigkeeper-nvidia-unattended")
    stamp = host.check_output("stat -c %Y /var/lib/apt/periodic/update-success-stamp")
    run = playbook()
    assert run.returncode == 0, run.output
    assert host.file("/etc/apt/apt.conf.d/51rigkeeper-nvidia-unattended").exists
    refresh = run.output.split("TASK [rigkeeper.gpu.nvidia_driver : Refresh the package index")[1].split("TASK [")[0]
    assert "skipping:" in refresh, refresh
    assert host.check_output("stat -c %Y /var/lib/apt/periodic/update-success-stamp") == stamp


def test_nouveau_blacklisted_and_in_the_initramfs(host):
    text = host.file(NOUVEAU).content_string
    assert "blacklist nouveau" in text and "options nouveau modeset=0" in text
    initrd = host.file(INITRD).content_string
    assert "# update-initramfs -u" in initrd and "blacklist nouveau" in initrd


def test_persistenced_runs_with_persistence_mode(host):
    dropin = host.file(DROPIN).content_string
    assert "ExecStart=\nExecStart=/usr/bin/nvidia-persistenced --persistence-mode" in dropin
    assert "--no-persistence-mode" not in dropin.split("ExecStart=\n")[1]
    assert host.service("nvidia-persistenced").is_running
    assert host.file(WANTS).is_symlink
    assert persistence(host) == ["Enabled", "Enabled"]


def test_one_reboot_took_the_fresh_box_from_nouveau_to_the_driver(host):
    """A fresh box: nouveau held the GPUs and the console runs on it, so the module could not load
    without a reboot; the policy when_needed rebooted exactly once (one boot before, one after)."""
    boots = host.file(BOOTS).content_string.split()
    assert len(boots) == 2, boots
    assert not host.file("/run/rigkeeper-sim/sys/module/nouveau").exists
    assert loaded_version(host) == "580.95.05"
    # DKMS built the module for the kernel GRUB boots, against the headers the role installed.
    assert host.check_output("modinfo -k 6.8.0-51-generic -F version nvidia") == "580.95.05"
    assert host.package("linux-headers-generic").is_installed


# --- The playbook again -----------------------------------------------------------------------

def test_check_mode_on_the_converged_rig_reports_nothing(host, playbook):
    before = snapshot(host)
    run = playbook(check=True)
    assert run.returncode == 0, run.output
    assert run.changed == 0, run.output
    assert snapshot(host) == before


def test_545_refused_before_any_change_on_4090s(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_branch": "545"})
    assert run.returncode != 0
    assert run.changed == 0
    assert "driver branch 545 is refused for GPU 0 (00000000:01:00.0, NVIDIA GeForce RTX 4090)" in run.output
    assert "reports P2P capability incorrectly" in run.output and "vllm-project/vllm#1801" in run.output
    assert "nvidia_driver_allow_known_bad" in run.output
    assert snapshot(host) == before


def test_unknown_version_refused_with_the_available_ones(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_version": "580.1.2"})
    assert run.returncode != 0
    assert "has no version 580.1.2" in run.output and OLDER in run.output
    assert snapshot(host) == before


# --- Last: these change the rig ---------------------------------------------------------------

def test_reboot_policy_never_reports_and_when_needed_reboots(host, playbook):
    """/var/run/reboot-required and another role's reason: policy never reports them pending and
    does not reboot; the OS's flag alone is never a reboot; when_needed reboots once for the role's
    reason, and the reboot clears both."""
    host.run("touch /var/run/reboot-required")
    boot = boot_id(host)
    run = playbook()
    assert run.returncode == 0 and boot_id(host) == boot, run.output
    assert "the OS asks for a reboot (/var/run/reboot-required)" in run.output
    reasons = {"rigkeeper_reboot_reasons": ["kernel command line changed (test)"]}
    run = playbook(dict(reasons, nvidia_driver_reboot="never"))
    assert run.returncode == 0, run.output
    assert ("REBOOT PENDING on rk-nvidia_driver: kernel command line changed (test); the OS asks for a reboot "
            "(/var/run/reboot-required)") in run.output
    assert "nvidia_driver_reboot is never" in run.output
    assert boot_id(host) == boot
    run = playbook(reasons)
    assert run.returncode == 0, run.output
    assert run.changed == 1, run.output  # the reboot, nothing else
    assert boot_id(host) != boot
    assert not host.file("/var/run/reboot-required").exists
    assert "Running driver 580.95.05 = installed." in run.output
    assert persistence(host) == ["Enabled", "Enabled"]


def test_apt_get_upgrade_does_not_move_the_driver(host):
    before = family(host)
    run = host.run("DEBIAN_FRONTEND=noninteractive apt-get -y upgrade")
    assert run.rc == 0, run.stderr
    assert family(host) == before


def test_apt_get_install_nvidia_driver_550_is_refused(host):
    before = family(host)
    run = host.run("DEBIAN_FRONTEND=noninteractive apt-get -y install nvidia-driver-550")
    assert run.rc != 0
    assert "nvidia-driver-550' has no installation candidate" in run.stdout + run.stderr
    assert family(host) == before
    assert smi_versions(host) == ["580.95.05", "580.95.05"]


def test_persistence_comes_back_after_a_reboot(host, rig_name):
    reboot_rig(host, rig_name)
    assert loaded_version(host) == "580.95.05"
    assert host.service("nvidia-persistenced").is_running
    assert persistence(host) == ["Enabled", "Enabled"]


def held(host):
    """Every package dpkg holds, whatever its state (a half-configured one included)."""
    return sorted(line.split()[0].split(":")[0] for line in host.check_output("dpkg --get-selections").splitlines()
                  if line.split()[-1] == "hold")


def test_a_failing_install_puts_the_pin_and_holds_back_and_the_next_run_heals(host, playbook):
    """A postinst that fails half-way (DKMS cannot build the module: the simulator injects DKMS's
    real error): the previous pin and holds come back, the failure names dpkg's unfinished work,
    and a run after the cause is fixed finishes the change."""
    pin_before, holds_before = host.file(PREFS).content_string, held(host)
    host.run("echo dkms-build > /etc/rigkeeper-sim/faults")
    try:
        run = playbook({"nvidia_driver_version": "580.82.07"})
        assert run.returncode != 0
        assert "Bad return status for module build on kernel: 6.8.0-51-generic" in run.output
        assert "The previous apt pin and dpkg holds were put back" in run.output
        assert host.file(PREFS).content_string == pin_before
        assert set(holds_before) <= set(held(host)), (holds_before, held(host))
        assert "nvidia-dkms-580-open" in host.run("dpkg --audit").stdout
    finally:
        host.run("rm -f /etc/rigkeeper-sim/faults")
    run = playbook({"nvidia_driver_version": "580.82.07"})
    assert run.returncode == 0, run.output[-4000:]
    assert host.run("dpkg --audit").stdout.strip() == ""
    pkgs = family(host)
    assert pkgs["nvidia-driver-580-open"] == (OLDER, "hold")
    assert smi_versions(host) == ["580.82.07", "580.82.07"]
