#!/usr/bin/python3
"""rigkeeper simulator: the kernel's part of a GPU server.

A container shares its host's kernel, so the rig has none of its own: this program stands in for
what the kernel, the boot loader, the firmware and DKMS decide on a real GPU server. Subcommands:

  boot                         at power-on (rigkeeper-sim-boot.service): running kernel = GRUB's default
                               entry, nouveau binds the GPUs unless blacklisted in that kernel's
                               initramfs, the NVIDIA module loads only if one is built for that kernel,
                               its signature passes Secure Boot, its firmware is there and nouveau does
                               not hold the GPUs; GPUs the module's branch or flavour does not support
                               are left out, a GPU set to fall off the bus after a driver change does
  modprobe [-r] [-q] NAME...   the NVIDIA modules and nouveau (others: the real modprobe)
  rmmod NAME...                likewise
  modinfo [-k KERNEL] [-F FIELD] NAME|PATH
  mokutil --sb-state | --test-key FILE | --list-enrolled | --import FILE
  dkms-install --version V --type open|proprietary [--kernel K]...   (fake nvidia-dkms postinst)
  dkms-remove --version V                                            (its prerm)
  dkms-autoinstall KERNEL                                            (kernel/header postinst hooks)
  dkms status|add|build|install|remove ...                           (the `dkms` command: /usr/local/sbin/dkms)
  depmod [KERNEL]              rewrite the stand-in of modules.dep (module packages' postinst/postrm)
  kernel-postinst KERNEL / kernel-postrm KERNEL / headers-postinst KERNEL   (fake linux-image/-headers)

Nothing here loads a module on demand: the NVIDIA module is there at boot, or after an explicit
`modprobe nvidia` that a real kernel would accept; otherwise nvidia-smi fails as on hardware.

State: /run/rigkeeper-sim (tmpfs: a reboot wipes it) holds what the running kernel knows:
sys/module/<name>/ (loaded modules; nvidia/version, nvidia/gpus = the bus ids it drives,
nouveau/refcnt), kernel-release, cmdline, boot_id, dmesg. /var/lib/rigkeeper-sim persists: the
driver of the last boot (last-driver), GPUs that fell off the bus (lost-gpus), an enrolled MOK
(mok-enrolled). The machine's firmware and hardware are the preset's "platform" block
(/etc/rigkeeper-sim/gpus.json; tests/sim/README.md). A fake module file (.ko) is text:
key=value lines name, version, type, signer, kernel.

Real texts are quoted where they are printed, with their source; UNVERIFIED marks a wording no
source confirmed. RIGKEEPER_SIM_ROOT prefixes every path (unit tests).
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import uuid

REAL_MODPROBE = "/usr/sbin/modprobe"
REAL_MODINFO = "/usr/sbin/modinfo"
REAL_RMMOD = "/usr/sbin/rmmod"

NVIDIA_MODULES = ("nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm", "nvidia-peermem")
# Architectures dropped by the 590 branch (FACTS.md: 580 is the last branch for Maxwell, Pascal and
# Volta) and those the open kernel modules never drive (they need Turing or newer).
LEGACY_FROM_590 = ("Maxwell", "Pascal", "Volta")
PRE_TURING = ("Kepler", "Maxwell", "Pascal", "Volta")


def _root() -> str:
    return os.environ.get("RIGKEEPER_SIM_ROOT", "").rstrip("/")


def path(p: str) -> str:
    return _root() + p


RUN = "/run/rigkeeper-sim"
MODDIR = RUN + "/sys/module"
STATE = "/var/lib/rigkeeper-sim"
CONFIG = "/etc/rigkeeper-sim/gpus.json"
GRUB_CFG = "/boot/grub/grub.cfg"
MOK_DER = "/var/lib/shim-signed/mok/MOK.der"
DKMS_ROOT = "/var/lib/dkms"
DKMS = DKMS_ROOT + "/nvidia"
IOMMU_DIR = RUN + "/sys/class/iommu"
DKMS_MODULE_NAMES = ("nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm")

PLATFORM_DEFAULTS = {
    # Secure Boot: True (on), False (UEFI, off) or None (legacy BIOS boot: no EFI variables).
    "secure_boot": False,
    "mok_enrolled": False,
    # nouveau claims the GPUs at boot unless blacklisted (a fresh Ubuntu install).
    "nouveau": True,
    # The console's framebuffer runs on nouveau (a desktop board with no other VGA): nouveau is in
    # use and cannot be unloaded. A server's BMC VGA console leaves it unused.
    "console_on_gpu": True,
    # Bus id of a GPU that does not come back from the first boot with another driver version.
    "lose_gpu_after_driver_change": None,
    # The firmware's IOMMU (AMD-Vi / VT-d): "amd", "intel" or None (off in the firmware). On unless
    # the command line has amd_iommu=off / intel_iommu=off; iommu=pt keeps it on (passthrough).
    "iommu": None,
}


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------


def read(p: str) -> str | None:
    try:
        with open(path(p), encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def write(p: str, text: str) -> None:
    full = path(p)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    tmp = full + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, full)


def remove(p: str) -> None:
    try:
        os.unlink(path(p))
    except FileNotFoundError:
        pass


def dmesg(*lines: str) -> None:
    """Append to the simulated kernel log (`cat /run/rigkeeper-sim/dmesg`)."""
    full = path(RUN + "/dmesg")
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def version_key(text: str) -> list:
    """Sort key for kernel releases and driver versions: numbers compared as numbers."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text) if p]


def config() -> dict:
    raw = read(CONFIG)
    return json.loads(raw) if raw else {"gpus": []}


def platform() -> dict:
    merged = dict(PLATFORM_DEFAULTS)
    merged.update(config().get("platform") or {})
    return merged


def installed_kernels() -> list[str]:
    """Kernels with an image and a module tree, oldest first."""
    found = []
    for d in glob.glob(path("/lib/modules/*")):
        k = os.path.basename(d)
        if os.path.exists(path(f"/boot/vmlinuz-{k}")):
            found.append(k)
    return sorted(found, key=version_key)


def grub_kernel() -> str | None:
    """The kernel of GRUB's default (first) menu entry."""
    text = read(GRUB_CFG) or ""
    m = re.search(r"(?m)^\s*linux\s+/boot/vmlinuz-(\S+)", text)
    return m.group(1) if m else None


def running_kernel() -> str | None:
    text = read(RUN + "/kernel-release")
    return text.strip() if text else None


def loaded(name: str) -> bool:
    return os.path.isdir(path(f"{MODDIR}/{name.replace('-', '_')}"))


def loaded_nvidia_version() -> str | None:
    text = read(MODDIR + "/nvidia/version")
    return text.strip() if text and text.strip() else None


def parse_ko(p: str) -> dict | None:
    text = read(p)
    if text is None:
        return None
    info = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            info[k.strip()] = v.strip()
    info["filename"] = p
    return info


def find_module(kernel: str, name: str = "nvidia") -> dict | None:
    """The module file depmod would pick for `kernel`: updates/ (DKMS) before kernel/ (packaged)."""
    candidates = [f"/lib/modules/{kernel}/updates/dkms/{name}.ko"]
    candidates += sorted(p[len(_root()):] for p in glob.glob(path(f"/lib/modules/{kernel}/kernel/nvidia-*/{name}.ko")))
    for c in candidates:
        info = parse_ko(c)
        if info is not None:
            return info
    return None


def mok_enrolled() -> bool:
    return bool(platform().get("mok_enrolled")) or os.path.exists(path(STATE + "/mok-enrolled"))


def signature_ok(ko: dict) -> bool:
    """Whether Secure Boot lets this module in: Canonical's key is built into Ubuntu's kernels; a
    DKMS module signed with the local MOK only once that MOK is enrolled; unsigned never."""
    if platform().get("secure_boot") is not True:
        return True
    signer = ko.get("signer", "")
    if signer == "canonical":
        return True
    if signer == "mok":
        return mok_enrolled()
    return False


def nouveau_blacklisted(kernel: str, cmdline: str) -> bool:
    if re.search(r"(^|\s)(modprobe\.blacklist|rd\.driver\.blacklist)=\S*\bnouveau\b", cmdline):
        return True
    initrd = read(f"/boot/initrd.img-{kernel}")
    text = initrd if initrd is not None else "\n".join(
        read(p[len(_root()):]) or "" for p in sorted(glob.glob(path("/etc/modprobe.d/*.conf"))))
    return re.search(r"(?m)^\s*blacklist\s+nouveau\s*$", text) is not None


def lost_gpus() -> set[str]:
    text = read(STATE + "/lost-gpus") or ""
    return {ln.strip().upper() for ln in text.splitlines() if ln.strip()}


def short_bus(bus: str) -> str:
    """00000000:01:00.0 -> 0000:01:00.0 (the kernel's form)."""
    return bus[4:].lower() if len(bus.split(":")[0]) == 8 else bus.lower()


def pci_id(gpu: dict) -> str:
    dev = gpu.get("pci_device_id", "0x000010DE")
    return f"10de:{dev[2:6].lower()}"


# ------------------------------------------------------------------------------------------------
# Loading the NVIDIA module
# ------------------------------------------------------------------------------------------------


class LoadError(Exception):
    """A module that does not load: `message` is modprobe's line, dmesg lines are logged already."""


def _probe(ko: dict) -> list[str]:
    """The bus ids this module drives; logs why the others are left out (as NVRM does)."""
    cfg = config()
    version = ko.get("version", "")
    branch = int(version.split(".")[0]) if version[:3].isdigit() else 0
    kind = ko.get("type", "proprietary")
    lost = lost_gpus()
    driven = []
    for g in cfg.get("gpus", []):
        bus = g["pci_bus_id"].upper()
        arch = g.get("architecture", "")
        if bus in lost:
            continue
        if branch >= 590 and arch in LEGACY_FROM_590:
            # The legacy-GPU probe message of the NVIDIA module (shape of the real dmesg lines for
            # cards moved to a legacy branch; exact wording UNVERIFIED).
            dmesg(f"NVRM: The NVIDIA {g['name']} GPU installed in this system is",
                  "NVRM:  supported through the NVIDIA 580.xx Legacy drivers. Please",
                  "NVRM:  visit http://www.nvidia.com/object/unix.html for more",
                  f"NVRM:  information.  The {version} NVIDIA driver will ignore",
                  "NVRM:  this GPU.  Continuing probe...")
            continue
        if kind == "open" and arch in PRE_TURING:
            # UNVERIFIED wording: the open modules refuse GPUs older than Turing.
            dmesg(f"NVRM: The NVIDIA GPU {short_bus(bus)} (PCI ID: {pci_id(g)})",
                  "NVRM: installed in this system requires use of the NVIDIA proprietary driver.")
            continue
        driven.append(bus)
    if kind == "open" and driven:
        # GSP firmware of exactly this version (nvidia-firmware-<branch>-<version>): the open
        # module cannot start a GPU without it. Texts: the kernel's firmware loader ("Direct
        # firmware load for ... failed with error -2") and NVRM's "RmFetchGspRmImages: No firmware
        # image found" (reported with missing firmware packages).
        fw = f"/lib/firmware/nvidia/{version}"
        if not glob.glob(path(fw + "/gsp_*.bin")):
            for bus in driven:
                dmesg(f"nvidia {short_bus(bus)}: Direct firmware load for nvidia/{version}/gsp_ga10x.bin failed with error -2",
                      "NVRM: RmFetchGspRmImages: No firmware image found",
                      f"NVRM: GPU {short_bus(bus)}: RmInitAdapter failed! (0x61:0x56:1594)")
            driven = []
    if not driven:
        # Real: "NVRM: No NVIDIA GPU found." / "NVRM: None of the NVIDIA devices were initialized."
        dmesg("NVRM: None of the NVIDIA devices were initialized.")
    return driven


def load_nvidia(kernel: str, at_boot: bool) -> str:
    """Load the NVIDIA module for `kernel`; returns its version or raises LoadError."""
    if loaded("nvidia"):
        return loaded_nvidia_version() or ""
    ko = find_module(kernel)
    if ko is None:
        # kmod's text: "modprobe: FATAL: Module nvidia not found in directory /lib/modules/<k>".
        raise LoadError(f"modprobe: FATAL: Module nvidia not found in directory /lib/modules/{kernel}")
    if not signature_ok(ko):
        # The kernel refuses a module Secure Boot cannot verify: "Loading of unsigned module is
        # rejected" / "Key was rejected by service" (modprobe's text; reported with DKMS builds
        # and no enrolled MOK).
        dmesg("Loading of module with unavailable key is rejected" if ko.get("signer") else
              "Lockdown: modprobe: unsigned module loading is restricted; see man kernel_lockdown.7")
        raise LoadError("modprobe: ERROR: could not insert 'nvidia': Key was rejected by service")
    if loaded("nouveau"):
        # NVRM's text when another driver holds the devices (seen in many dmesg logs):
        dmesg("NVRM: The NVIDIA probe routine was not called for "
              f"{len(config().get('gpus', []))} device(s).",
              "NVRM: This can occur when a driver such as:",
              "NVRM: nouveau, rivafb, nvidiafb or rivatv",
              "NVRM: was loaded and obtained ownership of the NVIDIA device(s).",
              "NVRM: No NVIDIA devices probed.")
        raise LoadError("modprobe: ERROR: could not insert 'nvidia': No such device")
    version = ko.get("version", "")
    plat = platform()
    last = (read(STATE + "/last-driver") or "").strip()
    drop = plat.get("lose_gpu_after_driver_change")
    if drop and last and last != version and drop.upper() not in lost_gpus():
        # The GPU stays gone (a card that falls off the bus after a driver change; Xid 79 text).
        with open(path(STATE + "/lost-gpus"), "a", encoding="utf-8") as f:
            f.write(drop.upper() + "\n")
        dmesg(f"NVRM: Xid (PCI:{short_bus(drop)[:7]}): 79, pid=0, GPU has fallen off the bus.")
    driven = _probe(ko)
    if not driven:
        raise LoadError("modprobe: ERROR: could not insert 'nvidia': No such device")
    write(MODDIR + "/nvidia/version", version + "\n")
    write(MODDIR + "/nvidia/type", ko.get("type", "proprietary") + "\n")
    write(MODDIR + "/nvidia/gpus", "".join(b + "\n" for b in driven))
    write(MODDIR + "/nvidia/filename", ko["filename"] + "\n")
    # What the P2P model in nvsim.py reads: a module built from a P2P fork (see dkms_build), and the
    # module's source hash (/sys/module/nvidia/srcversion on a real kernel).
    write(MODDIR + "/nvidia/p2p", ko.get("p2p", "0") + "\n")
    write(MODDIR + "/nvidia/srcversion", ko.get("srcversion", "") + "\n")
    write(STATE + "/last-driver", version + "\n")
    # What the driver logs when it loads (real shape: "NVRM: loading NVIDIA UNIX [Open Kernel
    # Module for] x86_64 Kernel Module  580.95.05 ...").
    kind = "Open Kernel Module for x86_64" if ko.get("type") == "open" else "x86_64 Kernel Module"
    dmesg(f"NVRM: loading NVIDIA UNIX {kind}  {version}  Release Build  (rigkeeper-sim)")
    return version


def udev_after_load() -> None:
    """What the driver's udev rule does when the module loads (Ubuntu's 71-nvidia.rules starts
    nvidia-persistenced); the driver package ships the helper."""
    helper = path("/usr/lib/rigkeeper-sim/sim-modprobe")
    if not _root() and os.access(helper, os.X_OK):
        subprocess.run([helper], check=False)


# ------------------------------------------------------------------------------------------------
# boot
# ------------------------------------------------------------------------------------------------


def boot() -> int:
    os.makedirs(path(MODDIR), exist_ok=True)
    boot_id = str(uuid.uuid4())
    write(RUN + "/boot_id", boot_id + "\n")
    # Every boot, in order (tests count reboots with it; the real boot_id lives in /proc).
    os.makedirs(path(STATE), exist_ok=True)
    with open(path(STATE + "/boots"), "a", encoding="utf-8") as f:
        f.write(boot_id + "\n")
    text = read(GRUB_CFG) or ""
    m = re.search(r"(?m)^\s*linux\s+(\S+)\s+(.*)$", text)
    cmdline = f"BOOT_IMAGE={m.group(1)} {m.group(2)}" if m else ""
    cmdline = " ".join(cmdline.split())
    write(RUN + "/cmdline", cmdline + "\n")
    kernel = grub_kernel()
    kernels = installed_kernels()
    if kernel not in kernels:
        kernel = kernels[-1] if kernels else None
    if kernel is None:
        dmesg("rigkeeper-sim: no kernel installed (no /boot/vmlinuz-*): nothing to boot")
        return 0
    write(RUN + "/kernel-release", kernel + "\n")
    dmesg(f"Linux version {kernel} (rigkeeper-sim) #1 SMP PREEMPT_DYNAMIC",
          f"Command line: {cmdline}")
    plat = platform()
    iommu = plat.get("iommu")
    if iommu in ("amd", "intel"):
        args = cmdline.split()
        if f"{iommu}_iommu=off" in args:
            dmesg(f"rigkeeper-sim: {iommu}_iommu=off on the command line: the IOMMU stays off")
        else:
            os.makedirs(path(IOMMU_DIR + ("/ivhd0" if iommu == "amd" else "/dmar0")), exist_ok=True)
            # The kernel's lines ("iommu: Default domain type: Translated", "... Passthrough (set via
            # kernel command line)"); the vendor line is shortened.
            dmesg("AMD-Vi: Found IOMMU at 0000:00:00.2 cap 0x40" if iommu == "amd" else "DMAR: IOMMU enabled",
                  "iommu: Default domain type: " + ("Passthrough (set via kernel command line)"
                                                    if "iommu=pt" in args else "Translated"))
    if plat.get("secure_boot") is True:
        dmesg("secureboot: Secure boot enabled", "Kernel is locked down from EFI Secure Boot mode; see man kernel_lockdown.7")
    gpus = config().get("gpus", [])
    if gpus and plat.get("nouveau", True) and not nouveau_blacklisted(kernel, cmdline):
        write(MODDIR + "/nouveau/refcnt", ("1" if plat.get("console_on_gpu", True) else "0") + "\n")
        dmesg("nouveau: detected PCI card(s); nouveau bound " + ", ".join(short_bus(g["pci_bus_id"]) for g in gpus))
    try:
        load_nvidia(kernel, at_boot=True)
    except LoadError as e:
        if find_module(kernel) is not None:
            dmesg(f"rigkeeper-sim: {e}")
    if loaded("nvidia"):
        for name in ("nvidia_uvm", "nvidia_modeset"):
            write(f"{MODDIR}/{name}/refcnt", "0\n")
        udev_after_load()
    return 0


# ------------------------------------------------------------------------------------------------
# modprobe, rmmod, modinfo
# ------------------------------------------------------------------------------------------------


def _in_use(name: str) -> bool:
    if name == "nouveau":
        return (read(MODDIR + "/nouveau/refcnt") or "0").strip() not in ("", "0")
    if name == "nvidia":
        pid = (read("/var/run/nvidia-persistenced/nvidia-persistenced.pid") or "").strip()
        if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            return True
        apps = (read(RUN + "/compute-apps.json") or "").strip()
        return apps not in ("", "[]")
    return False


def _unload(name: str, tool: str) -> int:
    key = name.replace("-", "_")
    if not loaded(key):
        if tool == "rmmod":
            print(f"rmmod: ERROR: Module {key} is not currently loaded", file=sys.stderr)
            return 1
        return 0  # modprobe -r of a module that is not loaded says nothing (UNVERIFIED)
    if _in_use(key):
        # kmod's texts: "modprobe: FATAL: Module nouveau is in use." / "rmmod: ERROR: Module
        # nouveau is in use".
        print(f"modprobe: FATAL: Module {key} is in use." if tool == "modprobe" else
              f"rmmod: ERROR: Module {key} is in use", file=sys.stderr)
        return 1
    victims = [key] + (["nvidia_uvm", "nvidia_modeset", "nvidia_drm"] if key == "nvidia" else [])
    for v in victims:
        d = path(f"{MODDIR}/{v}")
        if os.path.isdir(d):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)
    if key == "nouveau":
        dmesg("nouveau: unloaded; the GPUs have no driver")
    return 0


def modprobe(argv: list[str]) -> int:
    remove_ = quiet = False
    names = []
    for a in argv:
        if a in ("-r", "--remove"):
            remove_ = True
        elif a in ("-q", "--quiet"):
            quiet = True
        elif a.startswith("-"):
            continue
        else:
            names.append(a)
    ours = [n for n in names if n.replace("_", "-") in NVIDIA_MODULES or n == "nouveau"]
    others = [n for n in names if n not in ours]
    status = 0
    for n in ours:
        if remove_:
            status |= _unload(n, "modprobe")
            continue
        if n == "nouveau":
            if loaded("nouveau"):
                continue
            write(MODDIR + "/nouveau/refcnt", "0\n")
            continue
        kernel = running_kernel() or ""
        try:
            load_nvidia(kernel, at_boot=False)
        except LoadError as e:
            if not quiet or "Key was rejected" in str(e) or "No such device" in str(e):
                print(str(e), file=sys.stderr)
            status = 1
            continue
        if n != "nvidia":
            write(f"{MODDIR}/{n.replace('-', '_')}/refcnt", "0\n")
        udev_after_load()
    if others:
        real = [REAL_MODPROBE] + [a for a in argv if a.startswith("-")] + others
        status |= subprocess.call(real) if os.path.exists(REAL_MODPROBE) else 1
    return status


def rmmod(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")]
    status = 0
    for n in names:
        if n.replace("_", "-") in NVIDIA_MODULES or n == "nouveau":
            status |= _unload(n, "rmmod")
        elif os.path.exists(REAL_RMMOD):
            status |= subprocess.call([REAL_RMMOD, n])
    return status


def modinfo(argv: list[str]) -> int:
    kernel = running_kernel() or ""
    field = None
    target = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-k", "--set-version") and i + 1 < len(argv):
            kernel = argv[i + 1]
            i += 2
            continue
        if a in ("-F", "--field") and i + 1 < len(argv):
            field = argv[i + 1]
            i += 2
            continue
        if not a.startswith("-"):
            target = a
        i += 1
    if target is None:
        print("modinfo: ERROR: missing module or filename.", file=sys.stderr)
        return 1
    if target.endswith(".ko"):
        ko = parse_ko(target[len(_root()):] if target.startswith(_root()) and _root() else target)
    elif target.replace("_", "-") in NVIDIA_MODULES:
        ko = find_module(kernel, target.replace("_", "-"))
        if ko is None and target != "nvidia":
            base = find_module(kernel)
            ko = dict(base, filename=base["filename"].replace("/nvidia.ko", f"/{target}.ko")) if base else None
    else:
        if os.path.exists(REAL_MODINFO):
            return subprocess.call([REAL_MODINFO] + argv)
        ko = None
    if ko is None:
        # kmod's text: "modinfo: ERROR: Module nvidia not found."
        print(f"modinfo: ERROR: Module {target} not found.", file=sys.stderr)
        return 1
    signer = {"canonical": "Canonical Ltd. Kernel Module Signing", "mok": "rigkeeper-sim Secure Boot Module Signature key"}
    fields = [("filename", ko["filename"]),
              ("version", ko.get("version", "")),
              ("license", "Dual MIT/GPL" if ko.get("type") == "open" else "NVIDIA"),
              ("srcversion", ko.get("srcversion", "")),
              ("name", ko.get("name", "nvidia")),
              ("vermagic", f"{ko.get('kernel', kernel)} SMP preempt mod_unload modversions")]
    if ko.get("signer"):
        fields += [("sig_id", "PKCS#7"), ("signer", signer.get(ko["signer"], ko["signer"])),
                   ("sig_hashalgo", "sha512")]
    if field:
        for k, v in fields:
            if k == field:
                print(v)
        return 0
    for k, v in fields:
        print(f"{k + ':':<16}{v}")
    return 0


# ------------------------------------------------------------------------------------------------
# mokutil (Secure Boot state of the simulated firmware)
# ------------------------------------------------------------------------------------------------


def mokutil(argv: list[str]) -> int:
    sb = platform().get("secure_boot")
    if sb is None:
        # mokutil's text on a legacy-BIOS boot: "EFI variables are not supported on this system".
        print("EFI variables are not supported on this system", file=sys.stderr)
        return 255
    if "--sb-state" in argv:
        print("SecureBoot enabled" if sb else "SecureBoot disabled")
        return 0
    if "--test-key" in argv:
        f = argv[argv.index("--test-key") + 1] if argv.index("--test-key") + 1 < len(argv) else ""
        if not os.path.exists(path(f)):
            print(f"Failed to open {f}", file=sys.stderr)
            return 255
        if mok_enrolled():
            print(f"{f} is already enrolled")
            return 1
        print(f"{f} is not enrolled")
        return 0
    if "--list-enrolled" in argv:
        if mok_enrolled():
            print("[key 1]\nSubject: CN=rigkeeper-sim Secure Boot Module Signature key")
        else:
            print("MokListRT is empty")
        return 0
    if "--import" in argv:
        # Enrolment needs a person at the console at the next boot (MokManager): not modelled.
        print("rigkeeper-sim: mokutil --import needs the MokManager at the console (not simulated)", file=sys.stderr)
        return 1
    print("mokutil (rigkeeper simulator): --sb-state, --test-key FILE, --list-enrolled", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------------
# DKMS and the kernel packages' scripts
# ------------------------------------------------------------------------------------------------


def _headers(kernel: str) -> bool:
    return os.path.isdir(path(f"/lib/modules/{kernel}/build"))


def fault(name: str) -> bool:
    """A failure a test injects (/etc/rigkeeper-sim/faults, one name a line): dkms-build."""
    return name in (read("/etc/rigkeeper-sim/faults") or "").split()


def dkms_build(version: str, kind: str, kernel: str) -> bool:
    """Build the module for one kernel, as DKMS would: only with that kernel's headers."""
    if fault("dkms-build") and _headers(kernel):
        # DKMS's text for a module that does not compile against a kernel (a new kernel's API
        # change is the usual cause), which fails the package's postinst.
        print(f"Error! Bad return status for module build on kernel: {kernel} (x86_64)\n"
              f"Consult /var/lib/dkms/nvidia/{version}/build/make.log for more information.")
        raise SystemExit(10)
    if not _headers(kernel):
        # dkms 3's text for a kernel without headers.
        print(f"Module build for kernel {kernel} was skipped since the kernel headers for this kernel "
              "do not seem to be installed.")
        return False
    signer = "mok" if os.path.exists(path(MOK_DER)) else ""
    body = (f"name=nvidia\nversion={version}\ntype={kind}\nsigner={signer}\nkernel={kernel}\n"
            f"dkms=nvidia/{version}\np2p=0\nsrcversion={_srcversion('stock ' + version + ' ' + kind)}\n")
    for name in DKMS_MODULE_NAMES:
        write(f"/lib/modules/{kernel}/updates/dkms/{name}.ko", body.replace("name=nvidia", f"name={name}"))
        write(f"{DKMS}/{version}/{kernel}/x86_64/module/{name}.ko", body)
    depmod(kernel)
    print(f"nvidia/{version}: built and installed for {kernel} ({kind}{', signed with the MOK' if signer else ''})")
    return True


def _srcversion(text: str) -> str:
    """A module's srcversion (23 upper-case hex digits on real modules: a hash of its sources)."""
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()[:23].upper()


def depmod(kernel: str) -> None:
    """What depmod's rewrite of /lib/modules/<kernel>/modules.dep tells a watcher (NVIDIA's
    nvidia-cdi-refresh.path watches that file of the running kernel): the rig's kernels are
    simulated, so the module lists of every kernel go to one file, STATE/modules.dep, rewritten
    whenever a DKMS build or removal would run depmod."""
    lines = []
    for k in installed_kernels():
        for p in sorted(glob.glob(path(f"/lib/modules/{k}/updates/dkms/*.ko")) +
                        glob.glob(path(f"/lib/modules/{k}/kernel/nvidia-*/*.ko"))):
            lines.append(f"{k}: {p[len(_root()):]}")
    write(STATE + "/modules.dep", "\n".join(lines) + ("\n" if lines else ""))


def dkms_install(argv: list[str]) -> int:
    args = _opts(argv, {"--version": None, "--type": "proprietary"}, multi={"--kernel"})
    version, kind = args["--version"], args["--type"]
    write(f"{DKMS}/{version}/source/dkms.conf", f'PACKAGE_NAME="nvidia"\nPACKAGE_VERSION="{version}"\nTYPE="{kind}"\n')
    for k in args["--kernel"] or installed_kernels():
        dkms_build(version, kind, k)
    return 0


def _owned_by(ko: dict | None, module: str, version: str) -> bool:
    """Whether an installed module file belongs to DKMS module/version (files of older builds
    carry no owner: the stock module of that version)."""
    return bool(ko) and ko.get("dkms", f"nvidia/{ko.get('version')}") == f"{module}/{version}"


def _uninstall(module: str, version: str, kernels: list[str]) -> None:
    for k in kernels:
        for name in DKMS_MODULE_NAMES:
            f = f"/lib/modules/{k}/updates/dkms/{name}.ko"
            if _owned_by(parse_ko(f), module, version):
                remove(f)
        depmod(k)


def dkms_remove(argv: list[str]) -> int:
    version = _opts(argv, {"--version": None})["--version"]
    _uninstall("nvidia", version, installed_kernels())
    subprocess.run(["rm", "-rf", path(f"{DKMS}/{version}")], check=False)
    return 0


def dkms_autoinstall(argv: list[str]) -> int:
    """What DKMS's kernel hooks do for a new kernel: build and install every module that asks for
    it (the stock driver's, and any other in /var/lib/dkms with AUTOINSTALL="yes")."""
    kernel = argv[0] if argv else (running_kernel() or "")
    for conf in sorted(glob.glob(path(DKMS_ROOT + "/*/*/source/dkms.conf"))):
        fields = _dkms_conf(open(conf, encoding="utf-8").read())
        module, version = fields.get("PACKAGE_NAME", "nvidia"), fields.get("PACKAGE_VERSION", "")
        if module == "nvidia" and "TYPE" in fields:
            dkms_build(version, fields["TYPE"], kernel)
        elif fields.get("AUTOINSTALL", "").lower() == "yes":
            _dkms_cli_install(module, version, kernel, force=False)
    return 0


# ------------------------------------------------------------------------------------------------
# The `dkms` command (/usr/local/sbin/dkms): status, add, build, install, remove
# ------------------------------------------------------------------------------------------------
#
# For modules other than the stock driver's (which its package builds and installs in one step,
# above): a source tree in /usr/src/<module>-<version> with its dkms.conf, added, built per kernel
# into /var/lib/dkms/<module>/<version>/<kernel>/x86_64/module/, installed into
# /lib/modules/<kernel>/updates/dkms/ (Ubuntu's DKMS installs there whatever DEST_MODULE_LOCATION
# says). Texts are dkms 3's (Ubuntu 24.04 ships 3.0.x) where noted; nothing is compiled. A tree
# whose README's first line names P2P (the tinygrad fork's "NVIDIA Linux Open GPU with P2P
# support") builds P2P-enabled modules; the module version is the tree's version.mk NVIDIA_VERSION,
# as the real build bakes it, whatever dkms.conf claims.


def _dkms_conf(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        m = re.match(r'^\s*([A-Z_]+(?:\[\d+\])?)=(["\']?)(.*)\2\s*$', line)
        if m:
            out[m.group(1)] = m.group(3)
    return out


def _source(module: str, version: str) -> str:
    return f"/usr/src/{module}-{version}"


def _tree_text(src: str) -> str:
    """Names and contents of a source tree's files (its srcversion is a hash of this)."""
    parts = []
    for dirpath, _dirs, files in sorted(os.walk(path(src))):
        for f in sorted(files):
            full = os.path.join(dirpath, f)
            try:
                with open(full, "rb") as fh:
                    parts.append(full[len(path(src)):] + "\0" + fh.read().decode("utf-8", "replace"))
            except OSError:
                continue
    return "\n".join(parts)


def _dkms_added(module: str, version: str) -> dict | None:
    text = read(f"{DKMS_ROOT}/{module}/{version}/source/dkms.conf")
    return _dkms_conf(text) if text is not None else None


def _dkms_built(module: str, version: str, kernel: str) -> dict | None:
    return parse_ko(f"{DKMS_ROOT}/{module}/{version}/{kernel}/x86_64/module/nvidia.ko")


def _dkms_cli_build(module: str, version: str, kernel: str, force: bool) -> int:
    conf = _dkms_added(module, version)
    if conf is None:
        # dkms 3's text when the module/version was never added.
        print(f"Error! Could not locate dkms.conf file.\nFile: {DKMS_ROOT}/{module}/{version}/source/dkms.conf "
              "does not exist.")
        return 4
    if _dkms_built(module, version, kernel) and not force:
        print(f"Module {module}/{version} already built for kernel {kernel} (x86_64), skip. "
              "You may override by specifying --force.")
        return 0
    if not _headers(kernel):
        print(f"Error! Your kernel headers for kernel {kernel} cannot be found at /lib/modules/{kernel}/build "
              f"or /lib/modules/{kernel}/source.\nPlease install the linux-headers-{kernel} package or use the "
              "--kernelsourcedir option to tell DKMS where it's located.")
        return 1
    if fault("dkms-build"):
        print(f"Error! Bad return status for module build on kernel: {kernel} (x86_64)\n"
              f"Consult {DKMS_ROOT}/{module}/{version}/build/make.log for more information.")
        return 10
    src = _source(module, version)
    vmk = read(src + "/version.mk") or ""
    m = re.search(r"(?m)^\s*NVIDIA_VERSION\s*=\s*(\S+)", vmk)
    if not m:
        # The real build fails when the tree is not NVIDIA's module source (UNVERIFIED wording).
        print(f"Error! Bad return status for module build on kernel: {kernel} (x86_64)\n"
              f"Consult {DKMS_ROOT}/{module}/{version}/build/make.log for more information.")
        return 10
    readme = (read(src + "/README.md") or "").splitlines()
    p2p = "1" if readme and "P2P" in readme[0] else "0"
    signer = "mok" if os.path.exists(path(MOK_DER)) else ""
    names = [v for k, v in sorted(conf.items()) if k.startswith("BUILT_MODULE_NAME")] or ["nvidia"]
    srcv = _srcversion(_tree_text(src))
    print(f"Building module(s)... done. ({module}/{version} for {kernel})")
    for name in names:
        body = (f"name={name}\nversion={m.group(1)}\ntype=open\nsigner={signer}\nkernel={kernel}\n"
                f"dkms={module}/{version}\np2p={p2p}\nsrcversion={srcv}\n")
        write(f"{DKMS_ROOT}/{module}/{version}/{kernel}/x86_64/module/{name}.ko", body)
    return 0


def _dkms_cli_install(module: str, version: str, kernel: str, force: bool) -> int:
    if _dkms_built(module, version, kernel) is None:
        rc = _dkms_cli_build(module, version, kernel, force=False)
        if rc or _dkms_built(module, version, kernel) is None:
            return rc or 1
    built_dir = f"{DKMS_ROOT}/{module}/{version}/{kernel}/x86_64/module"
    names = sorted(os.listdir(path(built_dir)))
    for f in names:
        new = parse_ko(f"{built_dir}/{f}")
        dest = f"/lib/modules/{kernel}/updates/dkms/{f}"
        old = parse_ko(dest)
        if old and not _owned_by(old, module, version) and old.get("version") == new.get("version") and not force:
            # dkms's version sanity check (dkms 2.x/3.x wording).
            print(f"Error! Module version {new.get('version')} for {f}\nexactly matches what is already found in "
                  f"kernel {kernel}.\nDKMS will not replace this module.\nYou may override by specifying --force.")
            return 6
    for f in names:
        write(f"/lib/modules/{kernel}/updates/dkms/{f}", read(f"{built_dir}/{f}") or "")
    depmod(kernel)
    print(f"Installing /lib/modules/{kernel}/updates/dkms/{{{','.join(n[:-3] for n in names)}}}.ko\nRunning depmod... done.")
    return 0


def dkms_cli(argv: list[str]) -> int:
    if not argv:
        print("Error! No action was specified.")
        return 1
    action, rest = argv[0], argv[1:]
    module = version = kernel = None
    force = all_kernels = False
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("-m", "-v", "-k") and i + 1 < len(rest):
            module, version, kernel = ((rest[i + 1], version, kernel) if a == "-m" else
                                       (module, rest[i + 1], kernel) if a == "-v" else (module, version, rest[i + 1]))
            i += 2
            continue
        if a == "--force":
            force = True
        elif a == "--all":
            all_kernels = True
        elif a.startswith("/usr/src/") and module is None:
            module, _, version = os.path.basename(a.rstrip("/")).rpartition("-")
        elif not a.startswith("-") and "/" in a and module is None:
            module, _, version = a.partition("/")
        i += 1
    if module and "/" in module:  # -m module/version
        module, _, version = module.partition("/")
    kernel = kernel or running_kernel() or ""
    if action == "status":
        return _dkms_status(module, version)
    if not module or not version:
        print(f"Error! Invalid number of arguments passed.\nUsage: {action} <module>/<module-version> or\n"
              f"       {action} -m <module>/<module-version>")
        return 1
    if action == "add":
        if _dkms_added(module, version) is not None:
            print(f"Error! DKMS tree already contains: {module}/{version}\n"
                  "You cannot add the same module/version combo more than once.")
            return 3
        src = _source(module, version)
        if read(src + "/dkms.conf") is None:
            print(f"Error! Could not find module source directory.\nDirectory: {src} does not exist.")
            return 2
        os.makedirs(path(f"{DKMS_ROOT}/{module}/{version}"), exist_ok=True)
        os.symlink(path(src), path(f"{DKMS_ROOT}/{module}/{version}/source"))
        print(f"Creating symlink {DKMS_ROOT}/{module}/{version}/source -> {src}")
        return 0
    if action == "build":
        return _dkms_cli_build(module, version, kernel, force)
    if action == "install":
        return _dkms_cli_install(module, version, kernel, force)
    if action == "remove":
        if not os.path.isdir(path(f"{DKMS_ROOT}/{module}/{version}")):
            print(f"Error! There are no instances of module: {module}\n{version} located in the DKMS tree.")
            return 3
        kernels = installed_kernels() if all_kernels else [kernel]
        _uninstall(module, version, kernels)
        if all_kernels:
            subprocess.run(["rm", "-rf", path(f"{DKMS_ROOT}/{module}/{version}")], check=False)
            print(f"Deleting module {module}/{version} completely from the DKMS tree.")
        else:
            subprocess.run(["rm", "-rf", path(f"{DKMS_ROOT}/{module}/{version}/{kernel}")], check=False)
            print(f"Module {module}/{version} for kernel {kernel} (x86_64).\nDeleting from the DKMS tree.")
        return 0
    print(f"Error! Unknown action specified: {action}")
    return 1


def _dkms_status(module: str | None, version: str | None) -> int:
    """dkms 3's status lines: 'nvidia/580.95.05, 6.8.0-51-generic, x86_64: installed'."""
    for mod_dir in sorted(glob.glob(path(DKMS_ROOT + "/*"))):
        mod = os.path.basename(mod_dir)
        if module and mod != module:
            continue
        for ver_dir in sorted(glob.glob(mod_dir + "/*")):
            ver = os.path.basename(ver_dir)
            if version and ver != version:
                continue
            kernels = sorted(k for k in os.listdir(ver_dir) if k != "source" and
                             os.path.isdir(os.path.join(ver_dir, k)))
            if not kernels:
                print(f"{mod}/{ver}: added")
            for k in kernels:
                built = parse_ko(f"{DKMS_ROOT}/{mod}/{ver}/{k}/x86_64/module/nvidia.ko")
                inst = parse_ko(f"/lib/modules/{k}/updates/dkms/nvidia.ko")
                state = "installed" if inst and built and inst.get("srcversion") == built.get("srcversion") \
                    and _owned_by(inst, mod, ver) else "built"
                print(f"{mod}/{ver}, {k}, x86_64: {state}")
    return 0


def kernel_postinst(argv: list[str]) -> int:
    """A kernel image's postinst on Ubuntu: /etc/kernel/postinst.d (DKMS builds), the initramfs,
    GRUB, and the reboot-required flag (update-notifier's hook)."""
    kernel = argv[0]
    if not _root():
        subprocess.run(["run-parts", "--report", f"--arg={kernel}", f"--arg=/boot/vmlinuz-{kernel}",
                        "/etc/kernel/postinst.d"], check=False)
        subprocess.run(["update-initramfs", "-c", "-k", kernel], check=False)
        subprocess.run(["update-grub"], check=False)
    # /usr/share/update-notifier/notify-reboot-required writes both files.
    write("/var/run/reboot-required", "*** System restart required ***\n")
    pkgs = read("/var/run/reboot-required.pkgs") or ""
    if f"linux-image-{kernel}\n" not in pkgs:
        write("/var/run/reboot-required.pkgs", pkgs + f"linux-image-{kernel}\n")
    return 0


def kernel_postrm(argv: list[str]) -> int:
    kernel = argv[0]
    remove(f"/boot/initrd.img-{kernel}")
    if not _root():
        subprocess.run(["update-grub"], check=False)
    return 0


def headers_postinst(argv: list[str]) -> int:
    kernel = argv[0]
    if not _root():
        subprocess.run(["run-parts", "--report", f"--arg={kernel}", "/etc/kernel/header_postinst.d"], check=False)
    return 0


def _opts(argv: list[str], single: dict, multi: set | None = None) -> dict:
    out = dict(single)
    for m in multi or ():
        out[m] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if i + 1 < len(argv) and (a in single or a in (multi or ())):
            if a in (multi or ()):
                out[a].append(argv[i + 1])
            else:
                out[a] = argv[i + 1]
            i += 2
            continue
        i += 1
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise SystemExit(f"simkernel: missing {', '.join(missing)}")
    return out


COMMANDS = {
    "boot": lambda argv: boot(),
    "modprobe": modprobe,
    "rmmod": rmmod,
    "modinfo": modinfo,
    "mokutil": mokutil,
    "dkms-install": dkms_install,
    "dkms-remove": dkms_remove,
    "dkms-autoinstall": dkms_autoinstall,
    "dkms": dkms_cli,
    "depmod": lambda argv: depmod(argv[0] if argv else running_kernel() or "") or 0,
    "kernel-postinst": kernel_postinst,
    "kernel-postrm": kernel_postrm,
    "headers-postinst": headers_postinst,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
