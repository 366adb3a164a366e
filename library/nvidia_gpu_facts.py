#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nvidia_gpu_facts
short_description: Gather NVIDIA GPU and GPU-host facts
description:
  - Reads C(nvidia-smi -q -x) once and returns one fact dict per GPU (name, architecture, UUID, bus id,
    power default/min/max/current, persistence, PCIe generation and width, memory, MIG mode), plus
    the GPU topology (C(nvidia-smi topo -m)) and the P2P read matrix (C(nvidia-smi topo -p2p r))
    on hosts with more than one GPU.
  - Also returns host facts that GPU provisioning decisions need - CPU vendor, RAM, the running
    kernel command line, IOMMU and PCIe ACS state, Secure Boot, installed versus running driver
    version, pending reboot, systemd.
  - A host without C(nvidia-smi), without a driver, or with a driver/library version mismatch is
    a normal case, described by RV(ansible_facts.nvidia_gpu.present=false) and
    RV(ansible_facts.nvidia_gpu.error); the module does not fail for it.
  - The keys returned are the contract in C(docs/facts.md).
  - Never changes anything on the host.
version_added: 0.1.0
author:
  - rigkeeper contributors
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
options:
  nvidia_smi:
    description:
      - Path of the C(nvidia-smi) binary.
      - When not set, C(nvidia-smi) is searched in E(PATH) and the usual system directories.
    type: path
  cmdline_path:
    description:
      - File holding the running kernel's command line.
    type: path
    default: /proc/cmdline
  module_version_path:
    description:
      - Files tried in order for the loaded C(nvidia) kernel module's version. The first one that
        exists and holds a version wins.
      - When none does, C(/proc/driver/nvidia/version) is parsed as a fallback.
    type: list
    elements: path
    default: [/sys/module/nvidia/version]
  lib_dirs:
    description:
      - Directories searched for C(libnvidia-ml.so.<version>), whose name gives the driver version
        installed on disk.
    type: list
    elements: path
    default:
      - /usr/lib/x86_64-linux-gnu
      - /usr/lib/aarch64-linux-gnu
      - /usr/lib64
      - /usr/lib
  sys_module_dir:
    description:
      - Where the kernel lists its loaded modules (nouveau's presence and use count are read there).
    type: path
    default: /sys/module
  kernel_release_path:
    description:
      - File holding the running kernel's release (what C(uname -r) prints).
    type: path
    default: /proc/sys/kernel/osrelease
  iommu_dir:
    description:
      - Where the kernel lists its active IOMMUs (any entry means the IOMMU is on). Unset - C(/sys/class/iommu).
    type: path
  grub_cfg_path:
    description:
      - GRUB's generated configuration; its first menu entry is the kernel the next boot runs.
    type: path
    default: /boot/grub/grub.cfg
  mok_key_path:
    description:
      - The local Machine Owner Key DKMS signs modules with (Ubuntu's shim-signed); with Secure
        Boot on, C(mokutil --test-key) tells whether it is enrolled.
    type: path
    default: /var/lib/shim-signed/mok/MOK.der
  gather_topology:
    description:
      - Run C(nvidia-smi topo -m) and C(nvidia-smi topo -p2p r) when the host has more than one GPU.
      - A failure of either yields V(null) for that fact, not a module failure.
    type: bool
    default: true
notes:
  - Bus ids are normalised to the form nvidia-smi prints, C(00000000:01:00.0) (8-digit domain,
    upper-case hex). Use them, not UUIDs, as GPU keys - UUIDs are masked or duplicated in some
    real outputs.
  - C(lspci -D -vvv) needs root to show the ACS capability; without it
    RV(ansible_facts.rigkeeper_host.acs.checked) is V(false).
  - Commands run with C(LC_ALL=C).
requirements:
  - nvidia-smi (optional; its absence is reported, not an error)
  - lspci from pciutils (optional, for ACS)
  - mokutil (optional, for Secure Boot)
  - modinfo from kmod (optional, for the NVIDIA module of the kernel GRUB boots)
  - dpkg-query (optional, tells the driver's own libraries from a .run installer's leftovers)
'''

EXAMPLES = r'''
- name: Gather GPU facts
  nvidia_gpu_facts:

- name: Show the power range of each GPU
  ansible.builtin.debug:
    msg: "{{ item.bus_id }} {{ item.product_name }}: {{ item.power_min_w }}-{{ item.power_max_w }} W"
  loop: "{{ ansible_facts.nvidia_gpu.gpus }}"

- name: Use a specific nvidia-smi and skip the topology probes
  nvidia_gpu_facts:
    nvidia_smi: /usr/local/nvidia/bin/nvidia-smi
    gather_topology: false

- name: Stop when the driver is broken
  ansible.builtin.fail:
    msg: "nvidia-smi does not answer: {{ ansible_facts.nvidia_gpu.error }}"
  when: not ansible_facts.nvidia_gpu.present
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    nvidia_gpu:
      description: GPU facts. See C(docs/facts.md) for every key.
      returned: always
      type: dict
      contains:
        present:
          description: C(nvidia-smi) exists and answered.
          type: bool
        error:
          description: Why not present (no C(nvidia-smi), NVML error text such as C(Driver/library version mismatch)); null when present.
          type: str
        nvidia_smi:
          description: Path of the binary used.
          type: str
        driver_version:
          description: Driver version as nvidia-smi reports it.
          type: str
          sample: "580.95.05"
        cuda_version:
          description: Highest CUDA version the driver supports.
          type: str
          sample: "13.0"
        count:
          description: Number of GPUs listed.
          type: int
        nvswitch:
          description: NVSwitch fabric present (a GPU reports a fabric state, or C(/dev/nvidia-nvswitch<N>) exists).
          type: bool
        gpus:
          description: One dict per GPU in nvidia-smi order.
          type: list
          elements: dict
          sample:
            - index: 0
              minor_number: 0
              bus_id: "00000000:01:00.0"
              product_name: NVIDIA GeForce RTX 4090
              product_brand: GeForce
              architecture: Ada Lovelace
              uuid: GPU-71d1acc2-662d-2166-bf9f-65272d2fc437
              serial: null
              vbios_version: 95.02.18.80.5F
              memory_total_mib: 24564
              persistence_mode: true
              compute_mode: Default
              mig_mode: null
              power_draw_w: 26.84
              power_limit_w: 450.0
              power_default_w: 450.0
              power_min_w: 10.0
              power_max_w: 600.0
              power_enforced_w: 450.0
              pcie_gen_current: 1
              pcie_gen_max: 3
              pcie_width_current: 16
              pcie_width_max: 16
        topology:
          description: C(nvidia-smi topo -m) between GPUs; null with one GPU or when the probe fails.
          type: dict
          sample: {labels: [GPU0, GPU1], matrix: {GPU0: {GPU0: X, GPU1: PHB}, GPU1: {GPU0: PHB, GPU1: X}}}
        p2p_read:
          description: C(nvidia-smi topo -p2p r); null with one GPU or when the probe fails.
          type: dict
          sample: {GPU0: {GPU0: X, GPU1: OK}, GPU1: {GPU0: OK, GPU1: X}}
        compute_apps:
          description: GPU compute processes (C(nvidia-smi --query-compute-apps)); null when nvidia-smi does not answer.
          type: list
          elements: dict
          sample: [{gpu_bus_id: "00000000:01:00.0", pid: 4242, process_name: python3, used_memory_mib: 20480}]
    rigkeeper_host:
      description: Host facts. See C(docs/facts.md) for every key.
      returned: always
      type: dict
      contains:
        cpu_vendor:
          description: C(amd), C(intel), C(arm) or C(unknown).
          type: str
        mem_total_mib:
          description: Memory from C(/proc/meminfo), MiB.
          type: int
        cmdline:
          description: The running kernel's command line.
          type: str
        cmdline_args:
          description: Parsed command line; flags map to null.
          type: dict
          sample: {amd_iommu: "off", quiet: null}
        iommu:
          description: C(enabled) (any C(/sys/class/iommu) entry), C(groups) (count), C(cmdline) (IOMMU arguments).
          type: dict
        acs:
          description: C(checked) (lspci ran and could read capabilities), C(enabled_bridges) (bridges with C(SrcValid+)).
          type: dict
        secure_boot:
          description: From C(mokutil --sb-state); null when mokutil is absent.
          type: bool
        reboot_required:
          description: C(/var/run/reboot-required) exists, or the running driver differs from the installed one.
          type: bool
        driver_installed_version:
          description: From the C(libnvidia-ml.so.<version>) file on disk.
          type: str
        driver_running_version:
          description: Loaded kernel module version.
          type: str
        driver_mismatch:
          description: Both versions known and different.
          type: bool
        systemd:
          description: C(/run/systemd/system) exists.
          type: bool
        kernel_release:
          description: The running kernel (C(uname -r)).
          type: str
        kernels:
          description: Installed kernels (C(/lib/modules/<release>) with a C(/boot/vmlinuz-<release>)), oldest first.
          type: list
          elements: str
        boot_kernel:
          description: The kernel GRUB's default entry boots next.
          type: str
        boot_kernel_module:
          description: C(modinfo -k <boot_kernel> nvidia) (version, signer, filename), null when that kernel has no NVIDIA module.
          type: dict
        nouveau:
          description: C(loaded) (nouveau holds the GPUs), C(in_use) (its use count is above 0, e.g. the console runs on it).
          type: dict
        mok_enrolled:
          description: With Secure Boot on, whether the local MOK (O(mok_key_path)) is enrolled; null when unknown.
          type: bool
        runfile:
          description: Leftovers of NVIDIA's .run installer, C(uninstaller) (C(/usr/bin/nvidia-uninstall) exists) and C(stray_libraries) (libnvidia-ml files no package owns).
          type: dict
        reboot_required_file:
          description: C(/var/run/reboot-required) exists (the OS asks for a reboot, e.g. after a kernel update).
          type: bool
        reboot_required_pkgs:
          description: The packages C(/var/run/reboot-required.pkgs) names.
          type: list
          elements: str
'''

import glob
import os
import platform

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.rigkeeper_host import boot_kernel, build_host_facts, owned_paths
from ansible.module_utils.rigkeeper_nvsmi import (
    NvsmiParseError,
    nvswitch_from_devices,
    parse_compute_apps,
    parse_p2p_matrix,
    parse_topo_matrix,
    parse_xml,
)

DEFAULT_LIB_DIRS = [
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
]

# Fixed host paths. Kept in one place so tests can point them at a temporary tree.
HOST_PATHS = {
    'cpuinfo': '/proc/cpuinfo',
    'meminfo': '/proc/meminfo',
    'proc_driver_version': '/proc/driver/nvidia/version',
    'iommu_dir': '/sys/class/iommu',
    'iommu_groups_dir': '/sys/kernel/iommu_groups',
    'reboot_required': '/var/run/reboot-required',
    'reboot_required_pkgs': '/var/run/reboot-required.pkgs',
    'lib_modules': '/lib/modules',
    'boot': '/boot',
    'uninstaller': '/usr/bin/nvidia-uninstall',
    'systemd_dir': '/run/systemd/system',
    'nvswitch_glob': '/dev/nvidia-nvswitch*',
}

# Directories searched for tools that are often outside a non-login PATH.
SEARCH_DIRS = ['/usr/bin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/local/nvidia/bin']


def _read(path):
    """File contents as text, or None when it cannot be read."""
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return None


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except (IOError, OSError):
        return []


def _output(out, err):
    """stdout and stderr joined and stripped (nvidia-smi prints NVML errors on stdout)."""
    return '\n'.join(part.strip() for part in (out or '', err or '') if part and part.strip())


def _run(module, args):
    rc, out, err = module.run_command(args)
    return rc, out or '', err or ''


def find_nvidia_smi(module):
    """(path, error): the binary to use, or None with the reason."""
    wanted = module.params['nvidia_smi']
    if wanted:
        if os.path.isfile(wanted) and os.access(wanted, os.X_OK):
            return wanted, None
        return None, 'nvidia-smi not found at %s' % wanted
    # PATH first (an operator's wrapper, such as tests/hardware's read-only guard, must win), then
    # the usual install locations for hosts whose PATH lacks them.
    path = module.get_bin_path('nvidia-smi', required=False)
    if not path:
        path = module.get_bin_path('nvidia-smi', required=False, opt_dirs=SEARCH_DIRS)
    if not path:
        return None, 'nvidia-smi not found'
    return path, None


def _tool(module, name):
    """A tool's path: PATH first (an operator's wrapper, or the simulator's stand-ins in
    /usr/local/sbin, must win over the system's), then the usual directories."""
    return (module.get_bin_path(name, required=False)
            or module.get_bin_path(name, required=False, opt_dirs=SEARCH_DIRS))


def _matrix(module, args, parser):
    """Run one topology probe; any failure yields None."""
    try:
        rc, out, _err = _run(module, args)
        if rc != 0:
            return None
        return parser(out)
    except Exception:  # a probe must never break fact gathering
        return None


def gather_gpu_facts(module, nvswitch_devices):
    facts = {
        'present': False,
        'error': None,
        'nvidia_smi': None,
        'driver_version': None,
        'cuda_version': None,
        'count': 0,
        'nvswitch': nvswitch_from_devices(nvswitch_devices),
        'gpus': [],
        'topology': None,
        'p2p_read': None,
        'compute_apps': None,
    }
    smi, error = find_nvidia_smi(module)
    facts['nvidia_smi'] = smi
    if smi is None:
        facts['error'] = error
        return facts

    rc, out, err = _run(module, [smi, '-q', '-x'])
    if rc != 0:
        facts['error'] = _output(out, err) or 'nvidia-smi -q -x exited with rc=%d' % rc
        return facts
    try:
        parsed = parse_xml(out)
    except NvsmiParseError as exc:
        facts['error'] = '%s: %s' % (exc, _output(out, err)[:500])
        return facts

    facts.update(
        present=True,
        driver_version=parsed['driver_version'],
        cuda_version=parsed['cuda_version'],
        count=parsed['count'],
        nvswitch=parsed['nvswitch'] or facts['nvswitch'],
        gpus=parsed['gpus'],
    )
    # GPU work that a reboot or a driver change would kill (the reboot guard reads it).
    facts['compute_apps'] = _matrix(module, [smi, '--query-compute-apps=gpu_bus_id,pid,process_name,used_memory',
                                             '--format=csv,noheader,nounits'], parse_compute_apps)
    if module.params['gather_topology'] and parsed['count'] > 1:
        facts['topology'] = _matrix(module, [smi, 'topo', '-m'], parse_topo_matrix)
        facts['p2p_read'] = _matrix(module, [smi, 'topo', '-p2p', 'r'], parse_p2p_matrix)
    return facts


def _lspci_text(module):
    lspci = _tool(module, 'lspci')
    if not lspci:
        return None
    rc, out, _err = _run(module, [lspci, '-D', '-vvv'])
    return out if rc == 0 else None


def _mokutil_text(module):
    mokutil = _tool(module, 'mokutil')
    if not mokutil:
        return None
    # rc is non-zero on systems without EFI variables; the message itself is the answer.
    _rc, out, err = _run(module, [mokutil, '--sb-state'])
    return _output(out, err)


def _module_version_text(module):
    for path in module.params['module_version_path'] + [HOST_PATHS['proc_driver_version']]:
        text = _read(path)
        if text and text.strip():
            return text
    return None


def _lib_paths(module):
    """Full paths of the libnvidia-ml.so.<version> files in lib_dirs, links resolved to their
    targets (a distribution may keep only the libnvidia-ml.so.1 link in the usual directory)."""
    paths = []
    for directory in module.params['lib_dirs']:
        for name in _listdir(directory):
            if not name.startswith('libnvidia-ml.so.'):
                continue
            full = os.path.join(directory, name)
            target = os.path.realpath(full) if os.path.islink(full) else full
            base = os.path.basename(target)
            if base.startswith('libnvidia-ml.so.') and base.count('.') >= 4 and target not in paths:
                paths.append(target)
    return paths


def _owned(module, paths):
    """Paths dpkg owns among `paths` (one dpkg-query call), or None when dpkg cannot be asked."""
    if not paths:
        return set()
    dpkg_query = _tool(module, 'dpkg-query')
    if not dpkg_query:
        return None
    # Exit 1 when some path has no owner: that is the answer, not an error.
    _rc, out, _err = _run(module, [dpkg_query, '-S'] + paths)
    # dpkg records paths as installed (usrmerge: /usr/lib and /lib alias); compare real paths too.
    owned = owned_paths(out)
    return owned | set(p for p in paths if os.path.realpath(p) in set(os.path.realpath(o) for o in owned))


def _kernels():
    found = []
    for release in _listdir(HOST_PATHS['lib_modules']):
        if os.path.exists(os.path.join(HOST_PATHS['boot'], 'vmlinuz-' + release)):
            found.append(release)
    return found


def _boot_module_text(module, kernel):
    if not kernel:
        return None
    modinfo = _tool(module, 'modinfo')
    if not modinfo:
        return None
    rc, out, _err = _run(module, [modinfo, '-k', kernel, 'nvidia'])
    return out if rc == 0 else None


def _lib_names(module):
    """libnvidia-ml.so.* names in lib_dirs, plus the targets of links among them (a distribution
    may keep only the libnvidia-ml.so.1 link in the usual directory)."""
    names = []
    for directory in module.params['lib_dirs']:
        for name in _listdir(directory):
            if not name.startswith('libnvidia-ml.so.'):
                continue
            names.append(name)
            full = os.path.join(directory, name)
            if os.path.islink(full):
                names.append(os.path.basename(os.path.realpath(full)))
    return names


def gather_host_facts(module):
    grub_cfg = _read(module.params['grub_cfg_path'])
    kernels = _kernels()
    mokutil_text = _mokutil_text(module)
    mok_test = None
    if mokutil_text and 'secureboot enabled' in mokutil_text.lower() and os.path.exists(module.params['mok_key_path']):
        mokutil = _tool(module, 'mokutil')
        _rc, out, err = _run(module, [mokutil, '--test-key', module.params['mok_key_path']])
        mok_test = _output(out, err)
    lib_paths = _lib_paths(module)
    nouveau_dir = os.path.join(module.params['sys_module_dir'], 'nouveau')
    return build_host_facts(
        kernel_release=_read(module.params['kernel_release_path']),
        grub_cfg=grub_cfg,
        kernels=kernels,
        boot_module_text=_boot_module_text(module, boot_kernel(grub_cfg, kernels)),
        mok_test_text=mok_test,
        nouveau_loaded=os.path.isdir(nouveau_dir),
        nouveau_refcnt=_read(os.path.join(nouveau_dir, 'refcnt')),
        lib_paths=lib_paths,
        owned=_owned(module, lib_paths),
        uninstaller=os.path.exists(HOST_PATHS['uninstaller']),
        reboot_required_pkgs=_read(HOST_PATHS['reboot_required_pkgs']),
        cpuinfo=_read(HOST_PATHS['cpuinfo']),
        meminfo=_read(HOST_PATHS['meminfo']),
        cmdline=_read(module.params['cmdline_path']),
        iommu_entries=_listdir(module.params['iommu_dir'] or HOST_PATHS['iommu_dir']),
        iommu_groups=_listdir(HOST_PATHS['iommu_groups_dir']),
        lspci_text=_lspci_text(module),
        mokutil_text=mokutil_text,
        lib_names=_lib_names(module),
        module_version_text=_module_version_text(module),
        reboot_required_file=os.path.exists(HOST_PATHS['reboot_required']),
        systemd=os.path.isdir(HOST_PATHS['systemd_dir']),
        machine=platform.machine(),
    )


def build_module():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type='path'),
            cmdline_path=dict(type='path', default='/proc/cmdline'),
            module_version_path=dict(type='list', elements='path',
                                     default=['/sys/module/nvidia/version']),
            lib_dirs=dict(type='list', elements='path', default=list(DEFAULT_LIB_DIRS)),
            gather_topology=dict(type='bool', default=True),
            sys_module_dir=dict(type='path', default='/sys/module'),
            kernel_release_path=dict(type='path', default='/proc/sys/kernel/osrelease'),
            grub_cfg_path=dict(type='path', default='/boot/grub/grub.cfg'),
            mok_key_path=dict(type='path', default='/var/lib/shim-signed/mok/MOK.der'),
            iommu_dir=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
    return module


def main():
    module = build_module()
    nvswitch_devices = sorted(glob.glob(HOST_PATHS['nvswitch_glob']))
    module.exit_json(
        changed=False,
        ansible_facts=dict(
            nvidia_gpu=gather_gpu_facts(module, nvswitch_devices),
            rigkeeper_host=gather_host_facts(module),
        ),
    )


if __name__ == '__main__':
    main()
