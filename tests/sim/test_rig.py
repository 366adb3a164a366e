"""The simulator, tested in real rigs: what a container restart does, what the fake driver and kernel
packages and the boot layer do. These are the acceptance checks of the simulator itself, written as
the hardware's failure modes: nothing loads on demand, nouveau holds a fresh box's GPUs, DKMS builds
only for kernels with headers, Secure Boot refuses an unsigned build, a reboot resets power limits."""
import pytest

pytestmark = pytest.mark.sim

NO_DRIVER = "couldn't communicate with the NVIDIA driver"
K51, K60 = "6.8.0-51-generic", "6.8.0-60-generic"


def smi_versions(rig):
    res = rig.sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader", check=False)
    return res.returncode, res.stdout.split(), res.stdout + res.stderr


def test_fresh_rig_boots_its_kernel_with_nouveau_and_no_driver(rig):
    assert rig.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    assert rig.sh("cat /run/rigkeeper-sim/kernel-release").stdout.strip() == K51
    assert rig.sh("dpkg-query -W -f '${Version}' linux-image-6.8.0-51-generic").stdout == "6.8.0-51.52"
    assert rig.sh("test -d /run/rigkeeper-sim/sys/module/nouveau", check=False).returncode == 0
    # No driver package: no nvidia-smi, as on a fresh server.
    assert rig.sh("command -v nvidia-smi", check=False).returncode != 0


def test_installed_driver_waits_for_a_reboot_while_nouveau_holds_the_gpus(rig):
    rig.apt_install("linux-headers-generic", "nvidia-driver-580-open")
    # DKMS built the module for the running kernel (its headers are there) ...
    assert rig.sh(f"modinfo -k {K51} -F version nvidia").stdout.strip() == "580.95.05"
    # ... but it cannot load: nouveau holds the GPUs and the console runs on it.
    rc, _, out = smi_versions(rig)
    assert rc == 9 and NO_DRIVER in out
    res = rig.sh("modprobe nvidia", check=False)
    assert res.returncode != 0 and "could not insert 'nvidia': No such device" in res.stderr
    res = rig.sh("modprobe -r nouveau", check=False)
    assert res.returncode != 0 and "Module nouveau is in use" in res.stderr
    # Blacklisted but not in the initramfs: nouveau still wins at boot.
    rig.sh("printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' > /etc/modprobe.d/blacklist-nouveau.conf")
    rig.restart()
    assert smi_versions(rig)[0] == 9
    rig.sh("update-initramfs -u")
    rig.restart()
    rc, versions, out = smi_versions(rig)
    assert rc == 0 and versions == ["580.95.05", "580.95.05"], out
    # The driver's udev rule started nvidia-persistenced when the module loaded.
    assert rig.sh("systemctl is-active nvidia-persistenced", check=False).stdout.strip() == "active"


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
    # Every installed 580 package one version down (what an in-branch change installs), no reboot.
    rig.sh("apt-get install -y -qq --allow-downgrades nvidia-firmware-580-580.82.07 "
           "$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' 'nvidia-*580*' 'libnvidia-*580*' "
           "'xserver-xorg-video-nvidia-580' | awk '$1 == \"ii\" && $2 !~ /firmware/ "
           "{ print $2 \"=580.82.07-0ubuntu0.24.04.1\" }') >/dev/null")
    rc, _, out = smi_versions(rig)
    assert rc == 18 and "Driver/library version mismatch" in out
    rig.restart()
    rc, versions, out = smi_versions(rig)
    assert rc == 0 and versions == ["580.82.07", "580.82.07"], out


def test_a_kernel_update_gets_its_module_from_dkms_and_boots_with_the_driver(rig):
    rig.sh("sed -i 's/^Suites: noble$/Suites: noble noble-updates/' /etc/apt/sources.list.d/ubuntu-archive-sim.sources")
    rig.sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-generic >/dev/null")
    assert rig.sh("cat /var/run/reboot-required").stdout == "*** System restart required ***\n"
    assert f"linux-image-{K60}" in rig.sh("cat /var/run/reboot-required.pkgs").stdout
    assert rig.sh(f"modinfo -k {K60} -F version nvidia").stdout.strip() == "580.82.07"
    assert f"vmlinuz-{K60}" in rig.sh("grep -m1 -E '^\\s*linux\\s' /boot/grub/grub.cfg").stdout
    rig.restart()
    assert rig.sh("cat /run/rigkeeper-sim/kernel-release").stdout.strip() == K60
    assert smi_versions(rig)[1] == ["580.82.07", "580.82.07"]
    assert rig.sh("test -e /var/run/reboot-required", check=False).returncode != 0


def test_update_grub_standin_evaluates_dropins_in_order(rig):
    rig.sh("mkdir -p /etc/default/grub.d && "
           "echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"console=ttyS0\"' > /etc/default/grub.d/50-cloudimg-settings.cfg && "
           "echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt\"' > /etc/default/grub.d/99-test.cfg && "
           "update-grub")
    line = rig.sh("grep -m1 -E '^\\s*linux\\s' /boot/grub/grub.cfg").stdout
    assert "console=ttyS0 iommu=pt" in line and "quiet splash" not in line
    # The running command line changes only with a reboot.
    assert "iommu=pt" not in rig.sh("cat /run/rigkeeper-sim/cmdline").stdout


def test_secure_boot_refuses_a_dkms_build_and_loads_canonicals_signed_modules(rig_factory):
    rig = rig_factory("2x4090-secureboot")
    assert rig.sh("mokutil --sb-state").stdout.strip() == "SecureBoot enabled"
    rig.apt_install("linux-headers-generic", "nvidia-driver-580-open")
    rig.sh("printf 'blacklist nouveau\\n' > /etc/modprobe.d/blacklist-nouveau.conf && update-initramfs -u")
    rig.restart()
    rc, _, out = smi_versions(rig)
    assert rc == 9 and NO_DRIVER in out
    res = rig.sh("modprobe nvidia", check=False)
    assert "Key was rejected by service" in res.stderr
    # Canonical's signed, precompiled modules with the headless userspace instead of DKMS.
    rig.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq nvidia-driver-580-open nvidia-dkms-580-open >/dev/null && "
           "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-headless-no-dkms-580-open nvidia-utils-580 "
           "linux-modules-nvidia-580-open-generic >/dev/null")
    assert "Canonical" in rig.sh(f"modinfo -k {K51} nvidia").stdout
    rig.restart()
    assert smi_versions(rig)[1] == ["580.95.05", "580.95.05"]


def test_a_590_driver_leaves_pascal_cards_out(rig_factory):
    rig = rig_factory("2xp100")
    rig.sh("install -m 0644 /srv/rigkeeper-sim/repo/key/rigkeeper-sim.gpg /usr/share/keyrings/rigkeeper-sim.gpg && "
           "echo 'deb [signed-by=/usr/share/keyrings/rigkeeper-sim.gpg] file:///srv/rigkeeper-sim/repo/cuda/ /' "
           "> /etc/apt/sources.list.d/cuda-sim.list")
    # The trap NVIDIA's guide warns of: the pinning package in the same transaction pins nothing yet,
    # and the unversioned names resolve to the newest branch.
    sim = rig.sh("apt-get update -qq && apt-get -s install nvidia-driver-pinning-590 cuda-drivers").stdout
    assert "Inst libnvidia-compute (620.36.04" in sim
    rig.apt_install("linux-headers-generic", "nvidia-driver-pinning-590")
    rig.apt_install("cuda-drivers")
    rig.sh("printf 'blacklist nouveau\\n' > /etc/modprobe.d/blacklist-nouveau.conf && update-initramfs -u")
    rig.restart()
    assert rig.sh("dpkg-query -W -f '${Version}' libnvidia-compute").stdout.startswith("590.")
    rc, _, out = smi_versions(rig)
    assert rc == 9 and NO_DRIVER in out
    assert "NVIDIA driver will ignore" in rig.sh("cat /run/rigkeeper-sim/dmesg").stdout
