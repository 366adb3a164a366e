"""The simulator, tested in real rigs: what a container restart does, what the fake driver packages
and the boot layer do. These are the acceptance checks of the simulator itself."""
import pytest

pytestmark = pytest.mark.sim


def test_rig_boots_systemd_without_driver(rig):
    assert rig.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    # No driver package: no nvidia-smi, as on a fresh server.
    assert rig.sh("command -v nvidia-smi", check=False).returncode != 0


def test_driver_545_package_reports_545(rig):
    rig.apt_install("nvidia-driver-545")
    out = rig.sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader").stdout.split()
    assert out and all(v.startswith("545.") for v in out), out
    assert rig.sh("dpkg-query -W -f '${Version}' nvidia-utils-545").stdout.startswith("545.")


def test_out_of_range_limit_fails_with_real_message_and_changes_nothing(rig):
    before = rig.sh("nvidia-smi -i 1 --query-gpu=power.limit --format=csv,noheader,nounits").stdout.strip()
    res = rig.sh("nvidia-smi -i 1 -pl 700", check=False)
    assert res.returncode != 0
    assert ("Provided power limit 700.00 W is not a valid power limit which should be between "
            "150.00 W and 600.00 W for GPU 00000000:02:00.0") in res.stdout + res.stderr
    after = rig.sh("nvidia-smi -i 1 --query-gpu=power.limit --format=csv,noheader,nounits").stdout.strip()
    assert before == after == "450.00"


def test_power_limit_is_gone_after_reboot(rig):
    rig.sh("nvidia-smi -i 0 -pl 300")
    limit = rig.sh("nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits").stdout.strip()
    assert limit == "300.00"
    boot_before = rig.sh("cat /run/rigkeeper-sim/boot_id").stdout
    rig.restart()
    assert rig.sh("cat /run/rigkeeper-sim/boot_id").stdout != boot_before
    limit = rig.sh("nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits").stdout.strip()
    assert limit == "450.00"


def test_new_driver_without_reboot_is_a_version_mismatch(rig):
    rig.apt_install("nvidia-driver-580")
    res = rig.sh("nvidia-smi", check=False)
    assert res.returncode != 0
    assert "Driver/library version mismatch" in res.stdout + res.stderr
    rig.restart()
    out = rig.sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader").stdout.split()
    assert out and all(v.startswith("580.") for v in out), out


def test_update_grub_standin_evaluates_dropins_in_order(rig):
    rig.sh("mkdir -p /etc/default/grub.d && "
           "echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"console=ttyS0\"' > /etc/default/grub.d/50-cloudimg-settings.cfg && "
           "echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt\"' > /etc/default/grub.d/99-test.cfg && "
           "update-grub")
    line = rig.sh("grep -E '^\\s*linux\\s' /boot/grub/grub.cfg").stdout
    assert "console=ttyS0 iommu=pt" in line and "quiet splash" not in line
    # The running command line changes only with a reboot.
    assert "iommu=pt" not in rig.sh("cat /run/rigkeeper-sim/cmdline").stdout
    rig.reboot_from_inside()
    assert "console=ttyS0 iommu=pt" in rig.sh("cat /run/rigkeeper-sim/cmdline").stdout
