# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: the preflight findings for a host (``rk_preflight_checks``).

Each check reads the facts (docs/facts.md) and the other concerns' decisions (known driver issues,
the PSU budget); its default severity and source are in ``POLICY['preflight']``
(rigkeeper_policy_data.py). Pure Python; raises ``PolicyError`` on bad input.
"""

from __future__ import annotations

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import (
    POLICY, _SRC_ACS, _SRC_IOMMU_P2P, _SRC_RAM
)
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import (
    PolicyError, _DEB_VERSION_RE, _as_bool, _err, _gpu_label, _gpu_list, _is_number, _number, _parse_today, _tidy
)
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_driver import _issue_findings
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_power import _psu_budget, rk_power_plan


_PREFLIGHT_CONFIG_KEYS = ('p2p_wanted', 'expected_gpu_count', 'severities', 'psu_watts', 'base_watts',
                          'psu_fraction', 'transient_factor', 'power_limits', 'ram_vram_factor',
                          'allow_known_bad', 'today')


def _finding(check_id, ok, severity, message):
    return {'id': check_id, 'severity': 'info' if ok else severity, 'ok': ok, 'message': message}


def rk_preflight_checks(nvidia_gpu, rigkeeper_host, config=None):
    """Preflight findings for a host.

    :param nvidia_gpu: the ``nvidia_gpu`` fact dict (docs/facts.md).
    :param rigkeeper_host: the ``rigkeeper_host`` fact dict.
    :param config: dict, all keys optional: ``p2p_wanted`` (bool, default False),
        ``expected_gpu_count`` (int), ``psu_watts``, ``base_watts`` (250), ``psu_fraction`` (0.8),
        ``transient_factor``, ``power_limits`` (wants as for :func:`rk_power_plan`),
        ``ram_vram_factor`` (2), ``allow_known_bad`` (bool), ``today`` ('YYYY-MM-DD'), and
        ``severities``: ``{check_id: 'fail'|'warn'|'off'}`` ('off' drops the check).
    :returns: list of ``{id, severity: 'fail'|'warn'|'info', ok: bool, message}``, one per check in
        this order: ``pcie_link``, ``ram_vs_vram``, ``psu_budget``, ``p2p_iommu``,
        ``known_bad_driver``, ``gpu_count``, ``runfile``. A passing, skipped or informational result
        has ``ok: True`` and severity ``'info'``; a failing one has the check's severity (defaults:
        pcie_link, ram_vs_vram, psu_budget, p2p_iommu 'warn'; known_bad_driver, gpu_count,
        runfile 'fail'). Fail the play on ``not ok and severity == 'fail'``.
    """
    if not isinstance(nvidia_gpu, dict):
        raise _err('nvidia_gpu must be the nvidia_gpu fact dict (docs/facts.md)')
    if not isinstance(rigkeeper_host, dict):
        raise _err('rigkeeper_host must be the rigkeeper_host fact dict (docs/facts.md)')
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise _err(f'config must be a dict, got {type(config).__name__}')
    unknown = sorted(set(config) - set(_PREFLIGHT_CONFIG_KEYS))
    if unknown:
        raise _err(f'preflight config has unknown keys {unknown}; known: {list(_PREFLIGHT_CONFIG_KEYS)}')
    checks = POLICY['preflight']['checks']
    severities = {cid: row['severity'] for cid, row in checks.items()}
    overrides = config.get('severities') or {}
    if not isinstance(overrides, dict):
        raise _err('config.severities must be a dict {check_id: fail|warn|off}')
    for cid, sev in overrides.items():
        if cid not in checks:
            raise _err(f'config.severities: unknown check {cid!r}; known: {list(checks)}')
        if sev not in ('fail', 'warn', 'off'):
            raise _err(f"config.severities.{cid}: {sev!r} is not 'fail', 'warn' or 'off'")
        severities[cid] = sev

    present = bool(nvidia_gpu.get('present'))
    gpus = _gpu_list(nvidia_gpu.get('gpus'), 'nvidia_gpu.gpus')
    why_absent = nvidia_gpu.get('error') or 'nvidia-smi not available (driver not installed yet?)'
    runners = {
        'pcie_link': lambda sev: _check_pcie(gpus, sev),
        'ram_vs_vram': lambda sev: _check_ram(gpus, rigkeeper_host, config, sev),
        'psu_budget': lambda sev: _check_psu(gpus, config, sev),
        'p2p_iommu': lambda sev: _check_p2p_iommu(gpus, rigkeeper_host, config, sev),
        'known_bad_driver': lambda sev: _check_known_bad(nvidia_gpu, gpus, rigkeeper_host, config, sev),
        'gpu_count': lambda sev: _check_gpu_count(present, why_absent, gpus, nvidia_gpu, config, sev),
        'runfile': lambda sev: _check_runfile(rigkeeper_host, sev),
    }
    results = []
    for cid in checks:
        if severities[cid] == 'off':
            continue
        if cid not in ('gpu_count', 'runfile') and not present and not gpus:
            results.append(_finding(cid, True, severities[cid],
                                    f'not checked: no GPU facts ({why_absent}); rerun preflight '
                                    'after the driver is installed'))
            continue
        results.append(runners[cid](severities[cid]))
    return results


def _check_runfile(host, severity):
    runfile = host.get('runfile') or {}
    stray = runfile.get('stray_libraries') or []
    found = (['/usr/bin/nvidia-uninstall (NVIDIA\'s .run installer was used)'] if runfile.get('uninstaller') else []) + \
        [f'{p} (no package owns it)' for p in stray]
    if not found:
        return _finding('runfile', True, severity, 'no leftovers of NVIDIA\'s .run installer')
    # /usr/local/nvidia is where a container host mounts its driver in (the lent H200 server's
    # sandbox): no installer ran there, and no package may be installed over it either.
    where = ('a driver installed outside apt (NVIDIA\'s .run installer, or a container host\'s driver '
             'mounted in)' if any(p.startswith('/usr/local/nvidia/') for p in stray)
             else 'leftovers of NVIDIA\'s .run installer')
    return _finding('runfile', False, severity,
                    f'{where}: {"; ".join(found)}. They shadow the packaged driver '
                    '("Driver/library version mismatch", a library of another version loaded first) '
                    f'({POLICY["preflight"]["checks"]["runfile"]["source"]}). To do: run '
                    '`sudo nvidia-uninstall` (or remove the listed files), then run again; or accept it with '
                    'preflight_severities: {runfile: warn}')


def _check_pcie(gpus, severity):
    narrow, slow = [], []
    for pos, gpu in enumerate(gpus):
        label = _gpu_label(gpu, pos)
        wc, wm = gpu.get('pcie_width_current'), gpu.get('pcie_width_max')
        gc, gm = gpu.get('pcie_gen_current'), gpu.get('pcie_gen_max')
        if _is_number(wc) and _is_number(wm) and wc < wm:
            narrow.append(f'{label} links at x{wc} of x{wm}')
        elif _is_number(gc) and _is_number(gm) and gc < gm:
            slow.append(f'{label} at PCIe gen {gc} of {gm}')
    if narrow:
        return _finding('pcie_link', False, severity,
                        f'{"; ".join(narrow)}: the "x16 + x2 trap" (a slot wired x2/x4 or sharing '
                        'lanes through the chipset) throttles transfers and P2P. Move the card to a '
                        'CPU-attached x16 slot, check BIOS bifurcation and riser cables, then rerun')
    if slow:
        return _finding('pcie_link', True, severity,
                        f'{"; ".join(slow)}: normal at idle (GPUs lower the link generation to save '
                        'power; width is full). If it stays low under load, check BIOS PCIe '
                        'speed and risers (nvidia-smi --query-gpu=pcie.link.gen.current under load)')
    return _finding('pcie_link', True, severity, 'every GPU links at its maximum width')


def _check_ram(gpus, host, config, severity):
    factor = _number(config.get('ram_vram_factor', POLICY['preflight']['checks']['ram_vs_vram']['factor']),
                     'config.ram_vram_factor')
    ram = host.get('mem_total_mib')
    vram_parts = [g.get('memory_total_mib') for g in gpus]
    if not _is_number(ram) or not vram_parts or not all(_is_number(v) for v in vram_parts):
        return _finding('ram_vs_vram', True, severity,
                        'not checked: RAM or GPU memory size unknown in the facts')
    vram = sum(vram_parts)

    def gib(mib):
        return f'{mib / 1024:.1f} GiB'

    if ram < factor * vram:
        return _finding('ram_vs_vram', False, severity,
                        f'RAM {gib(ram)} is below {_tidy(factor)}x total GPU memory {gib(vram)} '
                        f'({_SRC_RAM}): loading and checkpointing models stages through host memory '
                        f'and will swap or OOM. Add RAM (>= {gib(factor * vram)}) or accept it with '
                        'severities.ram_vs_vram: off')
    return _finding('ram_vs_vram', True, severity,
                    f'RAM {gib(ram)} >= {_tidy(factor)}x total GPU memory {gib(vram)}')


def _check_psu(gpus, config, severity):
    if config.get('psu_watts') is None:
        return _finding('psu_budget', True, severity,
                        'not checked: set psu_watts (the PSU rating) to check the power budget')
    defaults = POLICY['power']
    base = config.get('base_watts', defaults['base_watts'])
    fraction = config.get('psu_fraction', defaults['psu_sustained_fraction'])
    factor = config.get('transient_factor')
    try:
        plan = rk_power_plan(gpus, config.get('power_limits') or [], psu_watts=None)
        budget = _psu_budget(plan, gpus, config['psu_watts'], base, fraction, factor)
    except PolicyError as exc:
        return _finding('psu_budget', False, severity, str(exc))
    return _finding('psu_budget', budget['ok'], severity, budget['message'])


def _check_p2p_iommu(gpus, host, config, severity):
    p2p = config.get('p2p_wanted', False)
    _as_bool(p2p, 'config.p2p_wanted')
    if not p2p or len(gpus) < 2:
        why = 'p2p_wanted is false' if not p2p else 'fewer than 2 GPUs'
        return _finding('p2p_iommu', True, severity, f'not relevant: {why}')
    iommu = host.get('iommu') or {}
    acs = host.get('acs') or {}
    problems, todo = [], []
    if iommu.get('enabled'):
        cmd = iommu.get('cmdline') or {}
        pt = ' (iommu=pt is set; the reported fixes disabled the IOMMU)' if cmd.get('iommu') == 'pt' else ''
        problems.append(f'the IOMMU is enabled{pt} ({_SRC_IOMMU_P2P}: deadlocks, IO_PAGE_FAULT, silent '
                        'corruption)')
        todo.append("set the kernel_params IOMMU mode to 'off' (amd_iommu=off / intel_iommu=off) and "
                    'reboot')
    bridges = acs.get('enabled_bridges') or []
    if bridges:
        problems.append(f'ACS is on for bridge(s) {", ".join(bridges)} ({_SRC_ACS}: P2P is routed '
                        'through the root complex, slow or hanging)')
        todo.append('enable the ACS-disable boot unit (setpci -s <bdf> ECAP_ACS+0x6.w=0000 on every '
                    'boot)')
    if problems:
        return _finding('p2p_iommu', False, severity,
                        f'multi-GPU P2P is wanted but {"; and ".join(problems)}. To do: '
                        f'{"; ".join(todo)}; or run NCCL with NCCL_P2P_DISABLE=1 (no P2P, slower)')
    note = '' if acs.get('checked') else ' (ACS not checked: lspci unavailable)'
    return _finding('p2p_iommu', True, severity, f'IOMMU off and no ACS-enabled bridge{note}')


def _check_known_bad(nvidia_gpu, gpus, host, config, severity):
    version = host.get('driver_running_version') or nvidia_gpu.get('driver_version')
    if not version:
        return _finding('known_bad_driver', True, severity, 'not checked: no NVIDIA driver running')
    match = _DEB_VERSION_RE.fullmatch(str(version).strip())
    if not match:
        return _finding('known_bad_driver', True, severity,
                        f'not checked: driver version {version!r} not understood')
    branch = int(match.group(2))
    allow = _as_bool(config.get('allow_known_bad', False), 'config.allow_known_bad')
    day = _parse_today(config.get('today'))
    findings = _issue_findings(branch, gpus, day, branch_specific_only=True)
    if not findings:
        return _finding('known_bad_driver', True, severity,
                        f'running driver {version} (branch {branch}) has no known issue for these GPUs')
    refused = [f for f in findings if f['action'] == 'refuse']
    level = severity if refused and not allow else ('warn' if severity == 'fail' else severity)
    todo = ('install another branch: ansible-playbook playbooks/upgrade_driver.yml '
            '-e nvidia_driver_branch=<branch>')
    return _finding('known_bad_driver', False, level,
                    f'running driver {version}: {" | ".join(f["message"] for f in findings)}. To do: {todo}')


def _check_gpu_count(present, why_absent, gpus, nvidia_gpu, config, severity):
    expected = config.get('expected_gpu_count')
    if expected is None:
        return _finding('gpu_count', True, severity, 'not checked: set expected_gpu_count')
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise _err(f'config.expected_gpu_count must be a whole number, got {expected!r}')
    if not present:
        return _finding('gpu_count', True, severity,
                        f'not checked: {why_absent}; rerun preflight after the driver is installed')
    count = nvidia_gpu.get('count')
    count = count if isinstance(count, int) and not isinstance(count, bool) else len(gpus)
    if count < expected:
        return _finding('gpu_count', False, severity,
                        f'nvidia-smi lists {count} GPU(s), expected {expected}: check seating and power '
                        'cables, `lspci | grep -i nvidia` (a card lspci sees but nvidia-smi does not '
                        'points to the driver) and `dmesg | grep -iE "NVRM|Xid"`; fix it or lower '
                        'expected_gpu_count')
    extra = f' (more than the {expected} expected)' if count > expected else ''
    return _finding('gpu_count', True, severity, f'nvidia-smi lists {count} GPU(s){extra}')
