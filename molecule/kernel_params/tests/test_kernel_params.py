"""kernel_params on the simulated rig: GRUB defaults, grub.cfg, the running command line after a reboot,
the ACS-disable unit. Every assertion reads the rig's real state."""
import os
import subprocess
import sys

import pytest

SCENARIO_DIR = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
PROJECT_DIR = os.environ["MOLECULE_PROJECT_DIRECTORY"]
RIG = "rk-" + os.environ["MOLECULE_SCENARIO_NAME"]
sys.path.insert(0, os.path.join(PROJECT_DIR, "tests", "sim"))
import simctl  # noqa: E402  (the simulator's reboot: container restart, wait for systemd)

USER_ARG = "nvme_core.default_ps_max_latency_us=0"
CLOUD_ARGS = ["console=tty1", "console=ttyS0"]
ACS_UNIT = "rigkeeper-acs-disable.service"


def cpu_vendor(host):
    text = host.file("/proc/cpuinfo").content_string
    if "AuthenticAMD" in text:
        return "amd"
    if "GenuineIntel" in text:
        return "intel"
    pytest.skip("IOMMU presets need an AMD or Intel CPU")


def wanted_args(host):
    return [USER_ARG] + CLOUD_ARGS + [f"{cpu_vendor(host)}_iommu=off", "mitigations=off", "pcie_aspm=off"]


def grub_values(host):
    """What grub-mkconfig computes: /etc/default/grub, then grub.d/*.cfg, later assignments winning."""
    out = host.check_output(
        "bash -c '. /etc/default/grub; for f in /etc/default/grub.d/*.cfg; do . \"$f\"; done; "
        "printf \"%s\\n%s\\n\" \"$GRUB_CMDLINE_LINUX\" \"$GRUB_CMDLINE_LINUX_DEFAULT\"'")
    linux, default = (out.split("\n") + ["", ""])[:2]
    return linux.split(), default.split()


def boot_args(line):
    """Arguments after 'ro' on a kernel line (grub.cfg 'linux' line or the running command line)."""
    tokens = line.split()
    return tokens[tokens.index("ro") + 1:]


def grub_cfg_line(host):
    for line in host.file("/boot/grub/grub.cfg").content_string.splitlines():
        if line.strip().startswith("linux"):
            return line
    raise AssertionError("no linux line in /boot/grub/grub.cfg")


def playbook(name, *args):
    """Run a playbook of this scenario against the rig; returns (stdout, changed count from the recap)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
           "-i", os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory"),
           os.path.join(SCENARIO_DIR, name), *args]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    recap = [line for line in res.stdout.splitlines() if line.startswith(RIG) and "changed=" in line]
    assert recap, res.stdout[-2000:]
    return res.stdout, int(recap[-1].split("changed=")[1].split()[0])


def probe(expect_pending):
    """The role in check mode: asserts kernel_params_reboot_pending against the running command line."""
    _, changed = playbook("probe.yml", "--check", "-e", f"expect_pending={expect_pending}")
    assert changed == 0, "check mode on a converged rig must report nothing"


def test_grub_defaults_merge_cloud_image_user_and_managed_args(host):
    linux, default = grub_values(host)
    assert linux == [USER_ARG], "nomodeset removed from GRUB_CMDLINE_LINUX, the user's argument kept"
    assert default == CLOUD_ARGS + wanted_args(host)[3:]


def test_dropin_sorts_last_and_user_files_untouched(host):
    dropins = host.check_output("ls /etc/default/grub.d").split()
    assert [d for d in dropins if d.endswith(".cfg")][-1] == "99-rigkeeper.cfg"
    assert 'GRUB_CMDLINE_LINUX="nvme_core.default_ps_max_latency_us=0 nomodeset"' in \
        host.file("/etc/default/grub").content_string
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"' in \
        host.file("/etc/default/grub.d/50-cloudimg-settings.cfg").content_string


def test_grub_cfg_boots_the_merged_line(host):
    args = boot_args(grub_cfg_line(host))
    assert args == wanted_args(host)
    assert not any(a.startswith("rcutree.rcu_idle_gp_delay") for a in args)
    assert "nomodeset" not in args and "quiet" not in args


def test_acs_unit_enabled_ordered_and_ran(host):
    assert host.package("pciutils").is_installed
    unit = host.service(ACS_UNIT)
    assert unit.is_enabled
    props = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show {ACS_UNIT} -p ActiveState -p Result -p ExecMainStatus -p Before").splitlines())
    assert props["ActiveState"] == "active" and props["Result"] == "success", props
    assert props["ExecMainStatus"] == "0"
    before = props["Before"].split()
    assert "nvidia-persistenced.service" in before and "rigkeeper-gpu-power.service" in before


def test_acs_script_with_no_acs_bridge(host):
    bridges = host.run("setpci_count=0; for b in $(lspci -D -n -d ::0604 | awk '{print $1}'); do "
                       "setpci -s $b ECAP_ACS+0x6.w >/dev/null 2>&1 && setpci_count=$((setpci_count+1)); done; "
                       "echo $setpci_count").stdout.strip()
    if bridges != "0":
        pytest.skip(f"this machine exposes {bridges} ACS bridge(s) to containers (read-only sysfs)")
    res = host.run("/usr/local/sbin/rigkeeper-acs-disable")
    assert res.rc == 0, res.stderr
    assert "no PCI bridge with the ACS capability" in res.stdout


def test_reboot_pending_until_reboot_then_running_line_changes(host):
    running = host.file("/run/rigkeeper-sim/cmdline").content_string
    assert "pcie_aspm=off" not in running, "the rig has not rebooted since converge"
    probe(expect_pending=True)

    simctl.restart(RIG)

    running = host.file("/run/rigkeeper-sim/cmdline").content_string.strip()
    assert running.startswith("BOOT_IMAGE=")
    assert boot_args(running) == wanted_args(host)
    probe(expect_pending=False)


def test_acs_unit_runs_at_boot(host):
    # After the reboot in the test above: the unit ran at boot, not from the handler.
    props = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show {ACS_UNIT} -p ActiveState -p Result").splitlines())
    assert props == {"ActiveState": "active", "Result": "success"}
    # Its log from this run only: the rig's journal spans the container's restarts.
    invocation = host.check_output(f"systemctl show {ACS_UNIT} -p InvocationID --value")
    journal = host.check_output(f"journalctl _SYSTEMD_INVOCATION_ID={invocation} --no-pager -o cat")
    assert "rigkeeper-acs-disable:" in journal


def test_stale_grub_cfg_is_drift_then_regenerated_and_acs_unit_removed(host):
    # An update-grub that never ran (failed play) or a grub.cfg generated from other settings.
    host.check_output("sed -i 's/ pcie_aspm=off//' /boot/grub/grub.cfg")
    out, changed = playbook("converge.yml", "--check")
    assert changed == 1 and "Regenerate grub.cfg" in out
    assert "pcie_aspm=off" not in grub_cfg_line(host), "check mode must not regenerate grub.cfg"

    # A real run regenerates it; kernel_params_acs_disable=false takes the unit away again.
    playbook("converge.yml", "-e", "kernel_params_acs_disable=false")
    assert boot_args(grub_cfg_line(host)) == wanted_args(host)
    assert not host.file("/etc/systemd/system/" + ACS_UNIT).exists
    assert not host.file("/usr/local/sbin/rigkeeper-acs-disable").exists
    assert host.run(f"systemctl cat {ACS_UNIT}").rc != 0
