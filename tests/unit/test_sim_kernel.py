"""The simulator's kernel (tests/sim/image/rootfs/usr/lib/rigkeeper-sim/simkernel.py), run as a
subprocess on a host tree under tmp_path (RIGKEEPER_SIM_ROOT): what loads at boot and what does not.

Each case is a failure mode of real hardware first: nouveau holding the GPUs, a module built for
another kernel, Secure Boot refusing an unsigned build, the open module without its firmware, a
590+ driver on Pascal, a GPU that falls off the bus after a driver change.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIMKERNEL = REPO / "tests/sim/image/rootfs/usr/lib/rigkeeper-sim/simkernel.py"
CONFIGS = REPO / "tests/sim/configs"
K51, K60 = "6.8.0-51-generic", "6.8.0-60-generic"
BUSES = ["00000000:01:00.0", "00000000:02:00.0"]


class Host:
    def __init__(self, root: Path):
        self.root = root
        self.preset("2x4090.json")
        self.kernel(K51)
        self.grub(K51)

    # --- the machine ------------------------------------------------------------------------
    def preset(self, name: str, **platform) -> None:
        cfg = json.loads((CONFIGS / name).read_text())
        if platform:
            cfg["platform"] = dict(cfg.get("platform") or {}, **platform)
        self.write("etc/rigkeeper-sim/gpus.json", json.dumps(cfg))

    def kernel(self, release: str, headers: bool = False) -> None:
        self.write(f"boot/vmlinuz-{release}", "image\n")
        (self.root / f"lib/modules/{release}").mkdir(parents=True, exist_ok=True)
        if headers:
            (self.root / f"lib/modules/{release}/build").mkdir(exist_ok=True)

    def grub(self, release: str, extra: str = "quiet splash") -> None:
        self.write("boot/grub/grub.cfg", f"menuentry 'Ubuntu' {{\n\tlinux\t/boot/vmlinuz-{release} root=UUID=x ro {extra}\n}}\n")

    def initramfs(self, release: str, blacklist: bool) -> None:
        self.write(f"boot/initrd.img-{release}", "# update-initramfs\n" + ("blacklist nouveau\n" if blacklist else ""))

    def firmware(self, version: str) -> None:
        self.write(f"lib/firmware/nvidia/{version}/gsp_ga10x.bin", "fw\n")

    def precompiled(self, release: str, version: str, kind: str = "open") -> None:
        self.write(f"lib/modules/{release}/kernel/nvidia-580-open/nvidia.ko",
                   f"name=nvidia\nversion={version}\ntype={kind}\nsigner=canonical\nkernel={release}\n")

    # --- helpers ----------------------------------------------------------------------------
    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def read(self, rel: str) -> str | None:
        p = self.root / rel
        return p.read_text() if p.exists() else None

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, RIGKEEPER_SIM_ROOT=str(self.root))
        return subprocess.run([sys.executable, str(SIMKERNEL), *args], env=env, capture_output=True, text=True,
                              timeout=30)

    def boot(self) -> None:
        shutil.rmtree(self.root / "run", ignore_errors=True)  # /run is a tmpfs
        assert self.run("boot").returncode == 0

    def dkms(self, version: str, kind: str = "open") -> subprocess.CompletedProcess:
        return self.run("dkms-install", "--version", version, "--type", kind)

    @property
    def nvidia(self) -> str | None:
        v = self.read("run/rigkeeper-sim/sys/module/nvidia/version")
        return v.strip() if v else None

    @property
    def nouveau(self) -> bool:
        return (self.root / "run/rigkeeper-sim/sys/module/nouveau").is_dir()

    @property
    def driven(self) -> list[str]:
        return (self.read("run/rigkeeper-sim/sys/module/nvidia/gpus") or "").split()

    @property
    def dmesg(self) -> str:
        return self.read("run/rigkeeper-sim/dmesg") or ""


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_fresh_box_boots_with_nouveau_and_no_nvidia_module(host):
    host.boot()
    assert host.read("run/rigkeeper-sim/kernel-release") == K51 + "\n"
    assert host.read("run/rigkeeper-sim/cmdline").startswith(f"BOOT_IMAGE=/boot/vmlinuz-{K51} root=UUID=x")
    assert host.nouveau and host.nvidia is None


def test_dkms_builds_only_for_kernels_with_headers(host):
    host.kernel(K60, headers=True)
    r = host.dkms("580.95.05")
    assert f"Module build for kernel {K51} was skipped since the kernel headers" in r.stdout
    assert host.read(f"lib/modules/{K60}/updates/dkms/nvidia.ko") is not None
    assert host.read(f"lib/modules/{K51}/updates/dkms/nvidia.ko") is None
    # GRUB boots 51, which has no module: no driver after the reboot.
    host.firmware("580.95.05")
    host.initramfs(K51, blacklist=True)
    host.boot()
    assert host.nvidia is None
    # A kernel's headers arriving later: the kernel hook builds for it.
    host.kernel(K51, headers=True)
    assert host.run("dkms-autoinstall", K51).returncode == 0
    host.boot()
    assert host.nvidia == "580.95.05" and host.driven == BUSES


def test_nouveau_holds_the_gpus_until_blacklisted_in_the_booted_kernels_initramfs(host):
    host.kernel(K51, headers=True)
    host.dkms("580.95.05")
    host.firmware("580.95.05")
    host.write("etc/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\n")
    host.initramfs(K51, blacklist=False)     # blacklisted on disk, not in the initramfs yet
    host.boot()
    assert host.nouveau and host.nvidia is None
    assert "was loaded and obtained ownership of the NVIDIA device(s)" in host.dmesg
    host.initramfs(K51, blacklist=True)      # update-initramfs -u
    host.boot()
    assert not host.nouveau and host.nvidia == "580.95.05"
    assert "NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  580.95.05" in host.dmesg


def test_runtime_modprobe_needs_nouveau_gone_and_nouveau_in_use_stays(host):
    host.kernel(K51, headers=True)
    host.dkms("580.95.05")
    host.firmware("580.95.05")
    host.boot()
    r = host.run("modprobe", "nvidia")
    assert r.returncode == 1 and r.stderr.strip() == "modprobe: ERROR: could not insert 'nvidia': No such device"
    r = host.run("modprobe", "-r", "nouveau")      # the console runs on it
    assert r.returncode == 1 and r.stderr.strip() == "modprobe: FATAL: Module nouveau is in use."
    assert host.nvidia is None
    host.preset("2x4090.json", console_on_gpu=False)   # a BMC console: nothing uses nouveau
    host.boot()
    assert host.run("modprobe", "-r", "nouveau").returncode == 0 and not host.nouveau
    assert host.run("modprobe", "nvidia").returncode == 0
    assert host.nvidia == "580.95.05"


def test_secure_boot_rejects_dkms_builds_without_an_enrolled_mok(host):
    host.preset("2x4090-secureboot.json")
    host.kernel(K51, headers=True)
    host.dkms("580.95.05")
    host.firmware("580.95.05")
    host.initramfs(K51, blacklist=True)
    host.boot()
    assert host.nvidia is None
    r = host.run("modprobe", "nvidia")
    assert r.stderr.strip() == "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service"
    assert host.run("mokutil", "--sb-state").stdout == "SecureBoot enabled\n"
    # Canonical's signed precompiled module loads (DKMS's build in updates/ goes first: remove it).
    host.run("dkms-remove", "--version", "580.95.05")
    host.precompiled(K51, "580.95.05")
    host.boot()
    assert host.nvidia == "580.95.05"
    out = host.run("modinfo", "nvidia").stdout
    assert "signer:         Canonical Ltd. Kernel Module Signing" in out


def test_mok_signed_dkms_build_loads_once_the_mok_is_enrolled(host):
    host.preset("2x4090-secureboot.json")
    host.write("var/lib/shim-signed/mok/MOK.der", "key\n")
    host.kernel(K51, headers=True)
    host.dkms("580.95.05")
    host.firmware("580.95.05")
    host.initramfs(K51, blacklist=True)
    host.boot()
    assert host.nvidia is None
    assert "is not enrolled" in host.run("mokutil", "--test-key", "/var/lib/shim-signed/mok/MOK.der").stdout
    host.write("var/lib/rigkeeper-sim/mok-enrolled", "")
    host.boot()
    assert host.nvidia == "580.95.05"


def test_open_module_without_its_firmware_starts_no_gpu(host):
    host.kernel(K51, headers=True)
    host.dkms("580.95.05")
    host.initramfs(K51, blacklist=True)
    host.boot()
    assert host.nvidia is None
    assert "Direct firmware load for nvidia/580.95.05/gsp_ga10x.bin failed with error -2" in host.dmesg


def test_590_ignores_pascal_and_volta_and_keeps_the_others(host):
    cfg = json.loads((CONFIGS / "2x4090.json").read_text())
    cfg["gpus"][1]["architecture"] = "Pascal"
    cfg["gpus"][1]["name"] = "NVIDIA GeForce GTX 1080 Ti"
    host.write("etc/rigkeeper-sim/gpus.json", json.dumps(cfg))
    host.kernel(K51, headers=True)
    host.dkms("590.48.01", kind="proprietary")
    host.initramfs(K51, blacklist=True)
    host.boot()
    assert host.nvidia == "590.48.01" and host.driven == [BUSES[0]]
    assert "The 590.48.01 NVIDIA driver will ignore" in host.dmesg
    host.preset("2xp100.json")
    host.boot()
    assert host.nvidia is None


def test_a_gpu_lost_after_a_driver_change_stays_lost(host):
    host.preset("2x4090-gpu-loss.json")
    host.kernel(K51, headers=True)
    host.firmware("580.82.07")
    host.firmware("580.95.05")
    host.initramfs(K51, blacklist=True)
    host.dkms("580.82.07")
    host.boot()
    assert host.driven == BUSES                     # the first driver: both GPUs
    host.run("dkms-remove", "--version", "580.82.07")
    host.dkms("580.95.05")
    host.boot()
    assert host.nvidia == "580.95.05" and host.driven == [BUSES[0]]
    assert "79, pid=0, GPU has fallen off the bus." in host.dmesg
    host.boot()
    assert host.driven == [BUSES[0]]


def test_modinfo_names_the_module_grub_will_boot(host):
    host.kernel(K60, headers=True)
    host.dkms("580.95.05")
    assert host.run("modinfo", "-k", K60, "-F", "version", "nvidia").stdout == "580.95.05\n"
    r = host.run("modinfo", "-k", K51, "nvidia")
    assert r.returncode == 1 and r.stderr.strip() == "modinfo: ERROR: Module nvidia not found."


def test_grub_picks_the_kernel_that_boots(host):
    host.kernel(K60)
    host.grub(K60)
    host.boot()
    assert host.read("run/rigkeeper-sim/kernel-release") == K60 + "\n"


def test_kernel_postinst_flags_a_pending_reboot(host):
    assert host.run("kernel-postinst", K60).returncode == 0
    assert host.read("var/run/reboot-required") == "*** System restart required ***\n"
    assert host.read("var/run/reboot-required.pkgs") == f"linux-image-{K60}\n"


def test_mokutil_without_efi(host):
    host.preset("2x4090.json", secure_boot=None)
    r = host.run("mokutil", "--sb-state")
    assert r.stderr.strip() == "EFI variables are not supported on this system"
    host.preset("2x4090.json")
    assert host.run("mokutil", "--sb-state").stdout == "SecureBoot disabled\n"


def test_the_base_image_boots_the_archives_release_kernel():
    """build.sh installs the kernel packages the simulated archive's noble suite offers, at the same
    versions: apt sees the rig's kernel as the archive's."""
    import re
    sys.path.insert(0, str(REPO / "tests/sim/repo"))
    import catalog
    m = re.search(r"kernel_release=(\S+) kernel_version=(\S+) kernel_meta=(\S+)",
                  (REPO / "tests/sim/image/build.sh").read_text())
    assert m and m.groups() == catalog.KERNELS["noble"]


def test_an_injected_build_failure_fails_like_dkms(host):
    host.kernel(K51, headers=True)
    host.write("etc/rigkeeper-sim/faults", "dkms-build\n")
    r = host.dkms("580.95.05")
    assert r.returncode == 10
    assert f"Error! Bad return status for module build on kernel: {K51} (x86_64)" in r.stdout
