# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Host facts from text inputs. Pure functions, standard library only (runs on target hosts, Python 3.8+).

Every function takes what the caller read (file contents, directory listings, command output) and
returns plain data; none of them touches the file system or runs a command, so each one is
unit-testable on captured text. ``None`` as input means "not available" (file missing, command
absent) and yields the "unknown" value of the fact.
"""

from __future__ import annotations

import re
import shlex

__all__ = [
    'acs_enabled_bridges',
    'boot_kernel',
    'modinfo_facts',
    'mok_enrolled_state',
    'owned_paths',
    'acs_facts',
    'build_host_facts',
    'cpu_vendor',
    'installed_driver_version',
    'iommu_cmdline_args',
    'iommu_facts',
    'mem_total_mib',
    'module_version',
    'parse_cmdline',
    'secure_boot_state',
]

_VERSION_RE = re.compile(r'\b(\d+\.\d+(?:\.\d+)?)\b')
_LIBNVML_RE = re.compile(r'^libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$')
_IOMMU_ARG_RE = re.compile(r'^(iommu|intel_iommu|amd_iommu)([._].*)?$')
_LSPCI_HEADER_RE = re.compile(
    r'^((?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+(.*)$')
_ARM_MACHINES = ('aarch64', 'arm64', 'armv7l', 'armv8l', 'armv6l')


def cpu_vendor(cpuinfo_text, machine=None):
    """``"amd"``, ``"intel"``, ``"arm"`` or ``"unknown"`` from /proc/cpuinfo text.

    ``vendor_id: AuthenticAMD`` (and Hygon's ``HygonGenuine``, which uses the AMD IOMMU driver) -> amd;
    ``GenuineIntel`` -> intel; arm64 cpuinfo has no vendor_id but ``CPU implementer`` lines -> arm.
    ``machine`` (``uname -m``), when given, decides for ARM machines.
    """
    if machine and str(machine).lower() in _ARM_MACHINES:
        return 'arm'
    for line in (cpuinfo_text or '').splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == 'vendor_id':
            if value in ('AuthenticAMD', 'HygonGenuine'):
                return 'amd'
            if value == 'GenuineIntel':
                return 'intel'
        elif key == 'cpu implementer':
            return 'arm'
    return 'unknown'


def mem_total_mib(meminfo_text):
    """``MemTotal`` from /proc/meminfo in MiB (int), or None."""
    for line in (meminfo_text or '').splitlines():
        match = re.match(r'^MemTotal:\s+(\d+)\s*(kB)?\s*$', line.strip())
        if match:
            return int(match.group(1)) // 1024
    return None


def parse_cmdline(cmdline_text):
    """Parse a kernel command line into ``{name: value}``; flags without ``=`` map to None.

    Quotes are honoured (``foo="a b"`` -> ``{'foo': 'a b'}``); a repeated parameter keeps its last
    value (what the kernel does for most parameters); arguments after ``--`` belong to init and
    are left out.
    """
    text = (cmdline_text or '').strip()
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    args = {}
    for token in tokens:
        if token == '--':
            break
        name, sep, value = token.partition('=')
        args[name] = value if sep else None
    return args


def iommu_cmdline_args(cmdline_args):
    """The IOMMU-related subset of parsed cmdline args (``iommu``, ``iommu.*``, ``intel_iommu``,
    ``amd_iommu``, ``amd_iommu_*``...)."""
    return dict((k, v) for k, v in (cmdline_args or {}).items() if _IOMMU_ARG_RE.match(k))


def iommu_facts(iommu_entries, group_entries, cmdline_args):
    """``{'enabled': bool, 'groups': int, 'cmdline': {...}}``.

    ``iommu_entries``: names in /sys/class/iommu (any entry means an IOMMU is active);
    ``group_entries``: names in /sys/kernel/iommu_groups; ``cmdline_args``: ``parse_cmdline`` output.
    """
    return {
        'enabled': bool(list(iommu_entries or ())),
        'groups': len(list(group_entries or ())),
        'cmdline': iommu_cmdline_args(cmdline_args),
    }


def _normalize_pci_address(address):
    """lspci prints ``0000:00:01.1`` with -D and ``00:01.1`` without; always return the -D form."""
    address = address.lower()
    if address.count(':') == 1:
        address = '0000:' + address
    return address


def acs_enabled_bridges(lspci_text):
    """PCI bridges whose ``ACSCtl:`` line shows ``SrcValid+`` in ``lspci -vvv`` (or ``-D -vvv``) text.

    Returns addresses in lspci's -D form (``0000:00:01.1``), in output order. Only devices whose
    class is a bridge count (root ports and switch ports, where ACS redirects P2P traffic).
    """
    bridges = []
    address = None
    is_bridge = False
    for line in (lspci_text or '').splitlines():
        header = _LSPCI_HEADER_RE.match(line)
        if header and not line[:1].isspace():
            address = _normalize_pci_address(header.group(1))
            is_bridge = 'bridge' in header.group(2).lower()
            continue
        if address is None or not is_bridge:
            continue
        stripped = line.strip()
        if stripped.startswith('ACSCtl:') and re.search(r'\bSrcValid\+', stripped):
            if address not in bridges:
                bridges.append(address)
    return bridges


def acs_facts(lspci_text):
    """``{'checked': bool, 'enabled_bridges': [...]}``.

    ``lspci_text`` is None when lspci is absent or failed. ``checked`` is also false when lspci
    could not read the capabilities (``Capabilities: <access denied>``: not run as root), because
    then an empty list would not mean "ACS off".
    """
    if lspci_text is None or '<access denied>' in lspci_text:
        return {'checked': False, 'enabled_bridges': []}
    return {'checked': True, 'enabled_bridges': acs_enabled_bridges(lspci_text)}


def secure_boot_state(mokutil_text):
    """Secure Boot from ``mokutil --sb-state`` output (stdout and stderr together).

    ``SecureBoot enabled`` -> True. ``SecureBoot disabled``, "This system doesn't support Secure
    Boot", "EFI variables are not supported on this system" (legacy BIOS boot) -> False.
    ``SecureBoot validation is disabled in shim`` -> False (the kernel will load unsigned modules).
    None or unrecognised text -> None.
    """
    if mokutil_text is None:
        return None
    text = mokutil_text.lower()
    if 'validation is disabled' in text:
        return False
    if 'secureboot enabled' in text:
        return True
    if ('secureboot disabled' in text or "doesn't support secure boot" in text
            or 'efi variables are not supported' in text):
        return False
    return None


def _version_key(version):
    return tuple(int(part) for part in version.split('.'))


def installed_driver_version(file_names):
    """The driver version installed on disk, from ``libnvidia-ml.so.<version>`` file names.

    ``libnvidia-ml.so`` and ``libnvidia-ml.so.1`` (links) are ignored; paths are accepted. When
    several versions are found (a leftover from a half-done upgrade) the highest one is returned.
    """
    versions = []
    for name in file_names or ():
        match = _LIBNVML_RE.match(str(name).rstrip('/').rsplit('/', 1)[-1])
        if match:
            versions.append(match.group(1))
    if not versions:
        return None
    return max(versions, key=_version_key)


def module_version(text):
    """The loaded kernel module's version from /sys/module/nvidia/version (``580.95.05``) or
    /proc/driver/nvidia/version (``NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05 ...``,
    or ``... Open Kernel Module for x86_64  580.95.05  Release Build ...``). None when unknown.
    """
    if not text:
        return None
    stripped = text.strip()
    if re.match(r'^\d+\.\d+(?:\.\d+)?$', stripped):
        return stripped
    for line in stripped.splitlines():
        if line.strip().startswith('NVRM version:'):
            match = _VERSION_RE.search(line.split(':', 1)[1])
            if match:
                return match.group(1)
    return None


def _kernel_key(release):
    return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', release) if p]


def boot_kernel(grub_cfg_text, installed=()):
    """The kernel release of GRUB's default (first) menu entry in grub.cfg text, or None.

    ``GRUB_DEFAULT=0`` (Ubuntu's default) boots the first entry, which grub-mkconfig's 10_linux
    makes the newest installed kernel. Without a readable grub.cfg the newest installed kernel
    (``installed``) is the best guess.
    """
    match = re.search(r'(?m)^\s*linux\s+\S*/vmlinuz-(\S+)', grub_cfg_text or '')
    if match:
        return match.group(1)
    kernels = sorted(installed or (), key=_kernel_key)
    return kernels[-1] if kernels else None


def modinfo_facts(text):
    """``{version, signer, filename}`` from ``modinfo -k <kernel> nvidia`` output, or None."""
    if not text or not text.strip():
        return None
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if sep and key.strip() in ('filename', 'version', 'signer', 'license'):
            info.setdefault(key.strip(), value.strip())
    if 'version' not in info:
        return None
    return {'version': info.get('version'), 'signer': info.get('signer'), 'filename': info.get('filename'),
            'license': info.get('license')}


def mok_enrolled_state(text):
    """From ``mokutil --test-key <MOK.der>``: True ("is already enrolled"), False ("is not
    enrolled"), None (no key file, no mokutil, or unrecognised text)."""
    if not text:
        return None
    low = text.lower()
    if 'is already enrolled' in low:
        return True
    if 'is not enrolled' in low:
        return False
    return None


def owned_paths(dpkg_search_text):
    """Paths dpkg owns, from ``dpkg-query -S <path>...`` output (``pkg[, pkg]: /path`` lines;
    "no path found matching pattern" lines are left out)."""
    owned = set()
    for line in (dpkg_search_text or '').splitlines():
        pkgs, sep, p = line.partition(': ')
        if sep and p.startswith('/') and not pkgs.startswith('dpkg-query'):
            owned.add(p.strip())
    return owned


def build_host_facts(cpuinfo=None, meminfo=None, cmdline=None, iommu_entries=(), iommu_groups=(),
                     lspci_text=None, mokutil_text=None, lib_names=(), module_version_text=None,
                     reboot_required_file=False, systemd=False, machine=None, kernel_release=None,
                     grub_cfg=None, kernels=(), boot_module_text=None, mok_test_text=None,
                     nouveau_loaded=False, nouveau_refcnt=None, lib_paths=None, owned=None,
                     uninstaller=False, reboot_required_pkgs=None, os_release=None):
    """The ``rigkeeper_host`` fact dict (docs/facts.md) from text already read by the caller.

    ``lib_paths`` (full paths of the libnvidia-ml.so.<version> files found) with ``owned`` (the
    paths dpkg owns; None when dpkg could not be asked) separate the installed driver from strays:
    a library no package owns (a .run installer's leftover) is never taken for the installed driver.
    """
    cmdline_text = (cmdline or '').strip()
    cmdline_args = parse_cmdline(cmdline_text)
    stray = []
    if lib_paths is not None and owned is not None:
        stray = sorted(p for p in lib_paths if p not in owned and _LIBNVML_RE.match(p.rsplit('/', 1)[-1]))
        installed = installed_driver_version([p for p in lib_paths if p in owned])
    else:
        installed = installed_driver_version(lib_names)
    running = module_version(module_version_text)
    mismatch = bool(installed and running and installed != running)
    refcnt = (nouveau_refcnt or '').strip()
    pkgs = [ln.strip() for ln in (reboot_required_pkgs or '').splitlines() if ln.strip()]
    return {
        'kernel_release': (kernel_release or '').strip() or None,
        'kernels': sorted(kernels or (), key=_kernel_key),
        'boot_kernel': boot_kernel(grub_cfg, kernels),
        'boot_kernel_module': modinfo_facts(boot_module_text),
        'nouveau': {'loaded': bool(nouveau_loaded), 'in_use': bool(nouveau_loaded) and refcnt not in ('', '0')},
        'mok_enrolled': mok_enrolled_state(mok_test_text),
        'runfile': {'uninstaller': bool(uninstaller), 'stray_libraries': stray},
        'reboot_required_file': bool(reboot_required_file),
        'reboot_required_pkgs': pkgs,
        'cpu_vendor': cpu_vendor(cpuinfo, machine),
        'mem_total_mib': mem_total_mib(meminfo),
        'cmdline': cmdline_text,
        'cmdline_args': cmdline_args,
        'iommu': iommu_facts(iommu_entries, iommu_groups, cmdline_args),
        'acs': acs_facts(lspci_text),
        'secure_boot': secure_boot_state(mokutil_text),
        'reboot_required': bool(reboot_required_file) or mismatch,
        'driver_installed_version': installed,
        'driver_running_version': running,
        'driver_mismatch': mismatch,
        'systemd': bool(systemd),
        'os': os_facts(os_release, machine),
    }


_OS_NAMES = {'ubuntu': 'Ubuntu', 'debian': 'Debian'}


def os_facts(os_release_text, machine=None):
    """The distribution from /etc/os-release: ``{id, name, version_id, codename, machine}`` and the
    same values under the names of Ansible's distribution facts (``distribution``: Ubuntu/Debian as
    the setup module names them, ``distribution_release``, ``distribution_version``,
    ``distribution_major_version``, ``architecture``), so a play needs no second fact gathering."""
    fields = {}
    for line in (os_release_text or '').splitlines():
        key, sep, value = line.partition('=')
        if sep:
            try:
                value = shlex.split(value)[0] if value.strip() else ''
            except ValueError:
                value = value.strip().strip('"')
            fields[key.strip()] = value
    ident = fields.get('ID', '').lower() or None
    version = fields.get('VERSION_ID') or None
    name = _OS_NAMES.get(ident or '', (fields.get('NAME') or '').split(' ')[0] or None)
    return {
        'id': ident,
        'name': name,
        'version_id': version,
        'codename': fields.get('VERSION_CODENAME') or fields.get('UBUNTU_CODENAME') or None,
        'machine': machine,
        'distribution': name,
        'distribution_release': fields.get('VERSION_CODENAME') or fields.get('UBUNTU_CODENAME') or None,
        'distribution_version': version,
        'distribution_major_version': version.split('.')[0] if version else None,
        'architecture': machine,
    }
