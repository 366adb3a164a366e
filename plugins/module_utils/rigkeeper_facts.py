# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Gathering the GPU and host facts: what the nvidia_gpu_facts module returns.

Standard library only (Python 3.8+). The functions take a ``module``: an AnsibleModule, or any
object with ``params`` (the module's options), ``run_command(argv)`` and ``get_bin_path(name,
required=False, opt_dirs=None)``: the host's own self-audit (no Ansible there) passes a small
stand-in. The parsing is in rigkeeper_host and rigkeeper_nvsmi; this file only reads the host.
"""

from __future__ import annotations

import glob
import os
import platform
from concurrent.futures import ThreadPoolExecutor

try:
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_host import boot_kernel, build_host_facts, owned_paths
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_nvsmi import (
        NvsmiParseError,
        nvswitch_from_devices,
        parse_compute_apps,
        parse_p2p_matrix,
        parse_topo_matrix,
        parse_xml,
    )
except ImportError:  # the host's self-audit, without Ansible: these files beside this one
    from rigkeeper_host import boot_kernel, build_host_facts, owned_paths  # type: ignore
    from rigkeeper_nvsmi import (
        NvsmiParseError,
        nvswitch_from_devices,
        parse_compute_apps,
        parse_p2p_matrix,
        parse_topo_matrix,
        parse_xml,
    )  # type: ignore

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
    'os_release': '/etc/os-release',
    'os_release_vendor': '/usr/lib/os-release',
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
    # GPU work that a reboot or a driver change would kill (the reboot guard reads it), and the
    # topology: independent reads, run side by side (each is a process start).
    jobs = {'compute_apps': ([smi, '--query-compute-apps=gpu_bus_id,pid,process_name,used_memory',
                              '--format=csv,noheader,nounits'], parse_compute_apps)}
    if module.params['gather_topology'] and parsed['count'] > 1:
        jobs['topology'] = ([smi, 'topo', '-m'], parse_topo_matrix)
        jobs['p2p_read'] = ([smi, 'topo', '-p2p', 'r'], parse_p2p_matrix)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = dict((key, pool.submit(_matrix, module, argv, parser)) for key, (argv, parser) in jobs.items())
    for key, future in futures.items():
        facts[key] = future.result()
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


def _mok_texts(module):
    mokutil_text = _mokutil_text(module)
    mok_test = None
    if mokutil_text and 'secureboot enabled' in mokutil_text.lower() and os.path.exists(module.params['mok_key_path']):
        mokutil = _tool(module, 'mokutil')
        _rc, out, err = _run(module, [mokutil, '--test-key', module.params['mok_key_path']])
        mok_test = _output(out, err)
    return mokutil_text, mok_test


def gather_host_facts(module):
    grub_cfg = _read(module.params['grub_cfg_path'])
    kernels = _kernels()
    lib_paths = _lib_paths(module)
    nouveau_dir = os.path.join(module.params['sys_module_dir'], 'nouveau')
    # The commands are independent reads, each a process start: side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        mok = pool.submit(_mok_texts, module)
        boot_module = pool.submit(_boot_module_text, module, boot_kernel(grub_cfg, kernels))
        owned = pool.submit(_owned, module, lib_paths)
        lspci = pool.submit(_lspci_text, module)
    mokutil_text, mok_test = mok.result()
    return build_host_facts(
        kernel_release=_read(module.params['kernel_release_path']),
        grub_cfg=grub_cfg,
        kernels=kernels,
        boot_module_text=boot_module.result(),
        mok_test_text=mok_test,
        nouveau_loaded=os.path.isdir(nouveau_dir),
        nouveau_refcnt=_read(os.path.join(nouveau_dir, 'refcnt')),
        lib_paths=lib_paths,
        owned=owned.result(),
        uninstaller=os.path.exists(HOST_PATHS['uninstaller']),
        reboot_required_pkgs=_read(HOST_PATHS['reboot_required_pkgs']),
        cpuinfo=_read(HOST_PATHS['cpuinfo']),
        meminfo=_read(HOST_PATHS['meminfo']),
        cmdline=_read(module.params['cmdline_path']),
        iommu_entries=_listdir(module.params.get('iommu_dir') or HOST_PATHS['iommu_dir']),
        iommu_groups=_listdir(HOST_PATHS['iommu_groups_dir']),
        lspci_text=lspci.result(),
        mokutil_text=mokutil_text,
        lib_names=_lib_names(module),
        module_version_text=_module_version_text(module),
        reboot_required_file=os.path.exists(HOST_PATHS['reboot_required']),
        systemd=os.path.isdir(HOST_PATHS['systemd_dir']),
        machine=platform.machine(),
        os_release=_read(HOST_PATHS['os_release']) or _read(HOST_PATHS['os_release_vendor']),
    )


def gather(module, nvswitch_devices=None):
    """{nvidia_gpu, rigkeeper_host}: the GPU and host facts, read side by side."""
    if nvswitch_devices is None:
        nvswitch_devices = sorted(glob.glob(HOST_PATHS['nvswitch_glob']))
    with ThreadPoolExecutor(max_workers=2) as pool:
        gpu = pool.submit(gather_gpu_facts, module, nvswitch_devices)
        host = pool.submit(gather_host_facts, module)
    return dict(nvidia_gpu=gpu.result(), rigkeeper_host=host.result())
