# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""The host's self-audit as Prometheus text-format metrics (node_exporter's textfile collector).

Standard library only, Python 3.8+: it runs on the host without Ansible. ``render(audit)`` turns one
self-audit (``rigkeeper_selfaudit.run``'s result) into the exposition text: every family with its
``# HELP`` and ``# TYPE``, labels escaped as the format requires, families in a fixed order, samples
sorted, so two runs on an unchanged host write the same text except for the times. The names and
their meaning are documented in docs/monitoring.md; the alert rules in roles/monitoring/files use them.
"""
from __future__ import annotations

import math

# name: (type, help). Every metric is a gauge: each is a reading of the host now (the ECC counts are
# nvidia-smi's volatile counts, reset when the driver reloads, so a gauge too).
METRICS = (
    ('rigkeeper_selfaudit_last_run_timestamp_seconds', 'Unix time the last self-audit finished.'),
    ('rigkeeper_selfaudit_duration_seconds', 'Wall time of the last self-audit.'),
    ('rigkeeper_selfaudit_cpu_seconds', 'CPU time (user and system, with the commands it ran) of the last self-audit.'),
    ('rigkeeper_selfaudit_success', '1 when the last self-audit read the wanted state and probed the host, else 0.'),
    ('rigkeeper_selfaudit_interval_seconds', 'How often the self-audit timer runs.'),
    ('rigkeeper_wanted_state_info', 'The wanted state the host was converged to; version: the rigkeeper that wrote it.'),
    ('rigkeeper_role_drift', '1 when something a role wants differs on the host or is absent, else 0.'),
    ('rigkeeper_role_error', '1 when a check of the role could not be read, else 0.'),
    ('rigkeeper_check_drift', '1 when the check finds drift (or what it wants absent), else 0.'),
    ('rigkeeper_check_error', '1 when the check could not be read, else 0.'),
    ('rigkeeper_reboot_pending', "1 when a reboot is pending (rigkeeper's changes or the OS's request), else 0."),
    ('rigkeeper_reboot_pending_reason', '1 for each reason a reboot is pending (reason: the check id).'),
    ('rigkeeper_reboot_pending_since_timestamp_seconds', 'Unix time the pending reboot was first seen.'),
    ('rigkeeper_driver_info', 'The NVIDIA driver installed (packages or files) and running (the loaded module).'),
    ('rigkeeper_driver_mismatch', '1 when the installed driver is not the one running (a reboot is due), else 0.'),
    ('rigkeeper_gpus', 'GPUs that answer nvidia-smi.'),
    ('rigkeeper_gpus_expected', 'GPUs the wanted state expects.'),
    ('rigkeeper_gpu_info', 'A GPU that answers: its UUID and name.'),
    ('rigkeeper_gpu_power_limit_watts', 'The power limit the GPU runs with (nvidia-smi -pl), in watts.'),
    ('rigkeeper_gpu_power_limit_wanted_watts', 'The power limit the wanted state sets, in watts.'),
    ('rigkeeper_gpu_persistence_mode', '1 when persistence mode is on, else 0.'),
    ('rigkeeper_gpu_pcie_link_gen', 'Current PCIe link generation (lower at idle: links train down to save power).'),
    ('rigkeeper_gpu_pcie_link_gen_max', 'Maximum PCIe link generation of the GPU and its slot.'),
    ('rigkeeper_gpu_pcie_link_width', 'Current PCIe link width (lanes).'),
    ('rigkeeper_gpu_pcie_link_width_max', 'Maximum PCIe link width (lanes).'),
    ('rigkeeper_gpu_temperature_celsius', 'GPU core temperature.'),
    ('rigkeeper_gpu_power_draw_watts', 'GPU power draw, in watts.'),
    ('rigkeeper_gpu_utilization_ratio', 'GPU utilisation over the last sample period, 0 to 1.'),
    ('rigkeeper_gpu_memory_used_bytes', 'GPU memory in use.'),
    ('rigkeeper_gpu_memory_total_bytes', 'GPU memory in total.'),
    ('rigkeeper_gpu_ecc_enabled', '1 when ECC is on, 0 when off (cards without ECC report nothing).'),
    ('rigkeeper_gpu_ecc_errors_corrected_volatile', 'Corrected ECC errors since the driver loaded.'),
    ('rigkeeper_gpu_ecc_errors_uncorrected_volatile', 'Uncorrected ECC errors since the driver loaded.'),
    ('rigkeeper_gpu_clocks_event_reason_active', '1 when the clock event reason holds the clocks down now, else 0.'),
    ('rigkeeper_p2p_pair_ok', '1 when the last P2P check found the GPU pair OK, else 0.'),
    ('rigkeeper_p2p_check_timestamp_seconds', 'Unix time of the last P2P check.'),
)
NAMES = tuple(name for name, _help in METRICS)
MIB = 1024 * 1024


def escape_label(value):
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def escape_help(text):
    return str(text).replace('\\', '\\\\').replace('\n', '\\n')


def format_value(value):
    if value is True:
        return '1'
    if value is False:
        return '0'
    value = float(value)
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Families(object):
    """Samples by metric name; ``text()`` writes them in METRICS order."""

    def __init__(self):
        self.samples = dict((name, {}) for name in NAMES)

    def add(self, _metric, _value, **labels):
        if _metric not in self.samples:
            raise KeyError('unknown metric %s' % _metric)
        if _value is None:
            return
        key = tuple(sorted((k, str(v)) for k, v in labels.items() if v is not None))
        self.samples[_metric][key] = _value

    def text(self):
        out = []
        for name, help_text in METRICS:
            samples = self.samples[name]
            if not samples:
                continue
            out.append('# HELP %s %s' % (name, escape_help(help_text)))
            out.append('# TYPE %s gauge' % name)
            for key in sorted(samples):
                labels = ','.join('%s="%s"' % (k, escape_label(v)) for k, v in key)
                out.append('%s%s %s' % (name, '{%s}' % labels if labels else '', format_value(samples[key])))
        return '\n'.join(out) + '\n'


def _num(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def gpu_samples(m, gpu, wanted_limits):
    """The per-GPU families of one GPU fact dict (rigkeeper_nvsmi's GPU_KEYS)."""
    bus = gpu.get('bus_id')
    labels = dict(gpu=gpu.get('index'), pci_bus_id=bus)
    m.add('rigkeeper_gpu_info', 1, uuid=gpu.get('uuid') or '', name=gpu.get('product_name') or '', **labels)
    m.add('rigkeeper_gpu_power_limit_watts', _num(gpu.get('power_limit_w')), **labels)
    if bus and bus.upper() in wanted_limits:
        m.add('rigkeeper_gpu_power_limit_wanted_watts', _num(wanted_limits[bus.upper()]), **labels)
    if gpu.get('persistence_mode') is not None:
        m.add('rigkeeper_gpu_persistence_mode', bool(gpu['persistence_mode']), **labels)
    m.add('rigkeeper_gpu_pcie_link_gen', _num(gpu.get('pcie_gen_current')), **labels)
    m.add('rigkeeper_gpu_pcie_link_gen_max', _num(gpu.get('pcie_gen_max')), **labels)
    m.add('rigkeeper_gpu_pcie_link_width', _num(gpu.get('pcie_width_current')), **labels)
    m.add('rigkeeper_gpu_pcie_link_width_max', _num(gpu.get('pcie_width_max')), **labels)
    m.add('rigkeeper_gpu_temperature_celsius', _num(gpu.get('temperature_c')), **labels)
    m.add('rigkeeper_gpu_power_draw_watts', _num(gpu.get('power_draw_w')), **labels)
    util = _num(gpu.get('utilization_gpu_pct'))
    m.add('rigkeeper_gpu_utilization_ratio', None if util is None else util / 100.0, **labels)
    used, total = _num(gpu.get('memory_used_mib')), _num(gpu.get('memory_total_mib'))
    m.add('rigkeeper_gpu_memory_used_bytes', None if used is None else used * MIB, **labels)
    m.add('rigkeeper_gpu_memory_total_bytes', None if total is None else total * MIB, **labels)
    if gpu.get('ecc_enabled') is not None:
        m.add('rigkeeper_gpu_ecc_enabled', bool(gpu['ecc_enabled']), **labels)
    m.add('rigkeeper_gpu_ecc_errors_corrected_volatile', _num(gpu.get('ecc_corrected_volatile')), **labels)
    m.add('rigkeeper_gpu_ecc_errors_uncorrected_volatile', _num(gpu.get('ecc_uncorrected_volatile')), **labels)
    for reason, active in sorted((gpu.get('clocks_event_reasons') or {}).items()):
        m.add('rigkeeper_gpu_clocks_event_reason_active', bool(active), reason=reason, **labels)


def render(audit):
    """The exposition text of one self-audit.

    ``audit`` keys: ``finished`` (unix time), ``duration_s``, ``cpu_s``, ``success`` (bool),
    ``interval_s``, ``version`` (of the wanted state), ``roles`` ({role: {status, findings, counts}}
    from rigkeeper_probe.summarize, with each finding's ``id``), ``checks`` ({id: status} of every
    check), ``reboot`` (the reboot findings), ``reboot_since``, ``facts`` ({nvidia_gpu,
    rigkeeper_host}), ``wanted_limits`` ({bus id: watts}), ``expected_gpus``, ``p2p`` (the last P2P
    check's record or None). A failed run carries only the run's own families and success 0.
    """
    m = Families()
    m.add('rigkeeper_selfaudit_last_run_timestamp_seconds', audit.get('finished'))
    m.add('rigkeeper_selfaudit_duration_seconds', audit.get('duration_s'))
    m.add('rigkeeper_selfaudit_cpu_seconds', audit.get('cpu_s'))
    m.add('rigkeeper_selfaudit_success', bool(audit.get('success')))
    m.add('rigkeeper_selfaudit_interval_seconds', audit.get('interval_s'))
    if not audit.get('success'):
        return m.text()
    m.add('rigkeeper_wanted_state_info', 1, version=audit.get('version') or 'unknown')
    for role, state in sorted((audit.get('roles') or {}).items()):
        m.add('rigkeeper_role_drift', state['status'] in ('drift', 'absent'), role=role)
        m.add('rigkeeper_role_error', state['status'] == 'error' or bool((state.get('counts') or {}).get('error')),
              role=role)
    for check_id, status in sorted((audit.get('checks') or {}).items()):
        role, _sep, check = check_id.partition('/')
        m.add('rigkeeper_check_drift', status in ('drift', 'absent'), role=role, check=check)
        m.add('rigkeeper_check_error', status == 'error', role=role, check=check)
    reboot = audit.get('reboot') or []
    m.add('rigkeeper_reboot_pending', bool(reboot))
    for finding in reboot:
        m.add('rigkeeper_reboot_pending_reason', 1, reason=finding['id'])
    if reboot:
        m.add('rigkeeper_reboot_pending_since_timestamp_seconds', audit.get('reboot_since'))
    facts = audit.get('facts') or {}
    host, gpu = facts.get('rigkeeper_host') or {}, facts.get('nvidia_gpu') or {}
    installed = host.get('driver_installed_version')
    running = host.get('driver_running_version') or gpu.get('driver_version')
    m.add('rigkeeper_driver_info', 1, installed=installed or '', running=running or '')
    m.add('rigkeeper_driver_mismatch', bool(host.get('driver_mismatch')))
    m.add('rigkeeper_gpus', gpu.get('count') or 0)
    m.add('rigkeeper_gpus_expected', audit.get('expected_gpus'))
    limits = dict((str(k).upper(), v) for k, v in (audit.get('wanted_limits') or {}).items())
    for one in gpu.get('gpus') or []:
        gpu_samples(m, one, limits)
    p2p = audit.get('p2p')
    if p2p:
        m.add('rigkeeper_p2p_check_timestamp_seconds', p2p.get('time'))
        for pair in p2p.get('pairs') or []:
            bus = list(pair.get('bus_ids') or []) + [None, None]
            m.add('rigkeeper_p2p_pair_ok', pair.get('status') == 'ok', gpu_a=pair.get('a'), gpu_b=pair.get('b'),
                  pci_bus_id_a=bus[0], pci_bus_id_b=bus[1])
    return m.text()
