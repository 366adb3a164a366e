# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: kernel command-line arguments and their diff with the running kernel.

``rk_iommu_args``, ``rk_mitigations_args``, ``rk_kernel_args`` (both merged with free-form extra
arguments) and ``rk_cmdline_diff``. Data: ``POLICY['kernel']`` (rigkeeper_policy_data.py). Pure
Python; raises ``PolicyError``.
"""

from __future__ import annotations

import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY, _SRC_KERNEL
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import _as_bool, _as_list, _err


def rk_iommu_args(cpu_vendor, mode='unmanaged'):
    """Kernel arguments for an IOMMU mode on this CPU vendor.

    :param cpu_vendor: ``rigkeeper_host.cpu_vendor`` (``'amd'``/``'intel'``; ``'arm'``/``'unknown'``
        only with ``mode='unmanaged'``).
    :param mode: ``'off'`` (``amd_iommu=off`` / ``intel_iommu=off``: what fixed multi-GPU P2P
        deadlocks and corruption, pytorch#52142/#84803), ``'pt'`` (``iommu=pt`` alone: IOMMU kept,
        host DMA passed through), ``'on'`` (``amd_iommu=on`` / ``intel_iommu=on``, no ``iommu=``),
        ``'unmanaged'`` (nothing).
    :returns: ``{present: ['key=value'], absent: [...]}``. ``present`` args must be on the command
        line (an arg with the same key and another value is replaced); an ``absent`` entry
        ``'key'`` removes that key with any value, ``'key=value'`` only that value.
    """
    modes = POLICY['kernel']['iommu_modes']
    if mode not in modes:
        raise _err(f"IOMMU mode {mode!r} is not one of {', '.join(repr(m) for m in modes)}")
    if mode == 'unmanaged':
        return {'present': [], 'absent': []}
    if cpu_vendor not in ('amd', 'intel'):
        raise _err(f'IOMMU mode {mode!r} needs an amd or intel CPU; this host reports cpu_vendor '
                   f"{cpu_vendor!r} and rigkeeper knows no IOMMU arguments for it ({_SRC_KERNEL}): "
                   "use mode 'unmanaged'")
    row = modes[mode][cpu_vendor]
    return {'present': list(row['present']), 'absent': list(row['absent'])}


def rk_mitigations_args(enabled_off=False):
    """Kernel arguments for CPU vulnerability mitigations (``mitigations=off`` is opt-in).

    ``mitigations=off`` covers pti, spectre_v2, spec_store_bypass, l1tf and more on x86
    [FACTS.md: Kernel command line]: faster, less safe; only for trusted, single-tenant boxes.

    :param enabled_off: ``True`` -> ``mitigations=off`` present; ``False`` -> ``mitigations=off``
        absent (mitigations at the kernel default); ``None`` -> leave it alone.
    :returns: ``{present: [...], absent: [...]}`` (see :func:`rk_iommu_args`).
    """
    if enabled_off is None:
        return {'present': [], 'absent': []}
    arg = POLICY['kernel']['mitigations']['arg']
    if _as_bool(enabled_off, 'enabled_off'):
        return {'present': [arg], 'absent': []}
    return {'present': [], 'absent': [arg]}


def _arg_key(arg):
    return arg.split('=', 1)[0]


def rk_kernel_args(cpu_vendor, iommu_mode='unmanaged', mitigations_off=None, extra_args=()):
    """All kernel arguments rigkeeper manages: IOMMU preset + mitigations + free-form extras.

    :param cpu_vendor: ``rigkeeper_host.cpu_vendor``.
    :param iommu_mode: see :func:`rk_iommu_args`.
    :param mitigations_off: see :func:`rk_mitigations_args` (``None`` = leave alone).
    :param extra_args: free-form args (``['pcie_aspm=off', 'quiet']``), one per item. Refused:
        ``rcutree.rcu_idle_gp_delay`` (a no-op on current kernels: RCU_FAST_NO_HZ was removed,
        FACTS.md), whitespace, quotes, ``$``/backticks (GRUB's defaults file is shell), a key
        given twice, and keys a preset already manages (``iommu``, ``amd_iommu``,
        ``intel_iommu`` unless the IOMMU mode is unmanaged; ``mitigations`` unless
        ``mitigations_off`` is None).
    :returns: ``{present: [...], absent: [...]}`` (see :func:`rk_iommu_args`).
    """
    iommu = rk_iommu_args(cpu_vendor, iommu_mode)
    mitigations = rk_mitigations_args(mitigations_off)
    managed = {}
    if iommu_mode != 'unmanaged':
        managed.update({k: f'iommu_mode={iommu_mode}' for k in POLICY['kernel']['iommu_keys']['keys']})
    if mitigations_off is not None:
        managed.update({k: 'mitigations_off' for k in POLICY['kernel']['mitigations']['keys']})
    refused = POLICY['kernel']['refused_args']
    extras, seen = [], {}
    for pos, arg in enumerate(_as_list(extra_args, 'extra_args')):
        if not isinstance(arg, str) or not arg.strip():
            raise _err(f'extra_args[{pos}] must be a non-empty string like "pcie_aspm=off", got {arg!r}')
        arg = arg.strip()
        if re.search(r'\s', arg):
            raise _err(f'extra_args[{pos}] {arg!r} holds several arguments: give one per list item')
        if re.search(r'["\'`$\\]', arg):
            raise _err(f'extra_args[{pos}] {arg!r} contains quotes, $, ` or \\: GRUB\'s defaults file is '
                       'a shell script, so these break or change it; remove them')
        key = _arg_key(arg)
        if key in refused:
            raise _err(f'extra_args[{pos}] {arg!r}: {key} is not allowed, {refused[key]["why"]} '
                       f'({refused[key]["source"]}); remove it')
        if key in managed:
            raise _err(f'extra_args[{pos}] {arg!r}: {key} is managed by {managed[key]}; set it there, '
                       'or set that option to unmanaged/None to pass it here')
        if key in seen:
            raise _err(f'extra_args {seen[key]!r} and {arg!r} set {key} twice; the kernel takes the '
                       'last one: keep one')
        seen[key] = arg
        extras.append(arg)
    return {'present': iommu['present'] + mitigations['present'] + extras,
            'absent': iommu['absent'] + mitigations['absent']}


# Kernel parameters the kernel honours every time they appear (each console= adds a console);
# for all others the last occurrence is the one in effect.
_CMDLINE_MULTI_VALUED = frozenset({'console'})


def _parse_cmdline(cmdline):
    """{key: [values in order]} (None for a bare flag)."""
    if isinstance(cmdline, dict):
        return {str(k): [None if v is None else str(v)] for k, v in cmdline.items()}
    if isinstance(cmdline, str):
        args = {}
        for token in cmdline.split():
            key, sep, value = token.partition('=')
            args.setdefault(key, []).append(value if sep else None)
        return args
    raise _err('cmdline must be rigkeeper_host.cmdline_args (dict) or rigkeeper_host.cmdline (str), '
               f'got {type(cmdline).__name__}')


def _cmdline_has(args, key, value):
    """Whether `key=value` is in effect: any occurrence for multi-valued keys, else the last."""
    values = args.get(key)
    if not values:
        return False
    return value in values if key in _CMDLINE_MULTI_VALUED else values[-1] == value


def rk_cmdline_diff(cmdline, kernel_args):
    """Compare the running kernel command line with the wanted arguments.

    :param cmdline: the raw ``rigkeeper_host.cmdline`` string (preferred: it keeps repeated
        arguments such as two ``console=``), or ``rigkeeper_host.cmdline_args``
        (``{"amd_iommu": "off", "quiet": None}``, one value per key).
    :param kernel_args: ``{present, absent}`` from :func:`rk_kernel_args`.
    :returns: ``{in_sync: bool, missing: [present args not in effect], unwanted: [absent entries
        in effect]}``. Not in sync after GRUB was updated means a reboot is pending. A repeated key
        counts by its last value (the kernel's rule), except ``console``, where every value counts.
    """
    args = _parse_cmdline(cmdline)
    if not isinstance(kernel_args, dict):
        raise _err('kernel_args must be the {present, absent} dict from rk_kernel_args')
    missing, unwanted = [], []
    for arg in _as_list(kernel_args.get('present'), 'kernel_args.present'):
        key, sep, value = str(arg).partition('=')
        if key not in args or (sep and not _cmdline_has(args, key, value)):
            missing.append(arg)
    for arg in _as_list(kernel_args.get('absent'), 'kernel_args.absent'):
        key, sep, value = str(arg).partition('=')
        if sep:
            if _cmdline_has(args, key, value):
                unwanted.append(arg)
        elif key in args:
            last = args[key][-1]
            unwanted.append(arg if last is None else f'{key}={last}')
    return {'in_sync': not missing and not unwanted, 'missing': missing, 'unwanted': unwanted}
