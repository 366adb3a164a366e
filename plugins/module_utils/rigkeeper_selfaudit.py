# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""The host's self-audit: the audit's probe, run on the host by a systemd timer, without Ansible.

Standard library only, Python 3.8+. The monitoring role ships this file and the probe's own
module_utils (rigkeeper_probe, rigkeeper_facts, rigkeeper_host, rigkeeper_nvsmi, rigkeeper_apt,
rigkeeper_grub, rigkeeper_metrics) into one directory on the host and runs::

    python3 rigkeeper_selfaudit.py --config /etc/rigkeeper/selfaudit.json

One run: read the compiled wanted state converge wrote (/etc/rigkeeper/wanted.json), gather the GPU
and host facts (one ``nvidia-smi -q -x``: the GPU health set comes from the same read), read every
host resource with the probe, judge the fact checks, sum up each role as playbooks/audit.yml does
(rigkeeper_probe.summarize), and write the Prometheus metrics atomically into node_exporter's
textfile directory, plus the findings as JSON for a person (``--show`` prints them).

It never changes the host: it writes only its metrics file and its own state file. A wanted state
it cannot read is a failed run (``rigkeeper_selfaudit_success 0``), never a crash without metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

try:
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_facts import gather
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_metrics import render
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import HOST_KINDS, Host, judge_fact, probe, summarize
except ImportError:  # on the host: the files beside this one
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from rigkeeper_facts import gather  # type: ignore
    from rigkeeper_metrics import render  # type: ignore
    from rigkeeper_probe import HOST_KINDS, Host, judge_fact, probe, summarize  # type: ignore

DEFAULTS = {
    'wanted_path': '/etc/rigkeeper/wanted.json',
    'metrics_path': '/var/lib/prometheus/node-exporter/rigkeeper.prom',
    'state_path': '/var/lib/rigkeeper/selfaudit.json',
    'p2p_path': '/var/lib/rigkeeper/p2p-check/last.json',
    'interval_s': 300,
    # The nvidia_gpu_facts module's options (the gpu_facts role's variables).
    'facts': {},
}
FACT_DEFAULTS = {
    'nvidia_smi': None,
    'cmdline_path': '/proc/cmdline',
    'module_version_path': ['/sys/module/nvidia/version'],
    'lib_dirs': ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'],
    'gather_topology': False,
    'sys_module_dir': '/sys/module',
    'kernel_release_path': '/proc/sys/kernel/osrelease',
    'grub_cfg_path': '/boot/grub/grub.cfg',
    'mok_key_path': '/var/lib/shim-signed/mok/MOK.der',
    'iommu_dir': None,
}


class WantedError(Exception):
    """The wanted state cannot be used."""


class Runner(object):
    """What rigkeeper_facts needs of an AnsibleModule: params, run_command, get_bin_path."""

    def __init__(self, params):
        self.params = dict(FACT_DEFAULTS, **(params or {}))
        self.env = dict(os.environ, LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')

    def run_command(self, args):
        try:
            proc = subprocess.run(list(args), check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                  stdin=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, '', str(exc)
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')

    def get_bin_path(self, name, required=False, opt_dirs=None):
        path = shutil.which(name)
        if path is None and opt_dirs:
            path = shutil.which(name, path=os.pathsep.join(opt_dirs))
        if path is None and required:
            raise OSError('%s not found' % name)
        return path


def load_json(path, what):
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except OSError as exc:
        raise WantedError('%s %s cannot be read: %s' % (what, path, exc.strerror or exc))
    except ValueError as exc:
        raise WantedError('%s %s is not JSON: %s' % (what, path, exc))


def load_wanted(path):
    wanted = load_json(path, 'the wanted state')
    if not isinstance(wanted, dict) or wanted.get('writer') != 'rigkeeper' or not isinstance(wanted.get('resources'), list):
        raise WantedError('%s was not written by rigkeeper (no writer/resources): run playbooks/site.yml' % path)
    bad = [r for r in wanted['resources'] if not isinstance(r, dict) or not r.get('id') or not r.get('kind')]
    if bad:
        raise WantedError('%s holds %d resource(s) without id or kind' % (path, len(bad)))
    return wanted


def load_p2p(path):
    """The last P2P check's record (the p2p_check role writes it), or None."""
    try:
        record = load_json(path, 'the P2P record')
    except WantedError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get('pairs'), list) else None


def fact_param(resources, check, key):
    for r in resources:
        if r.get('kind') == 'fact' and r.get('check') == check:
            return (r.get('params') or {}).get(key)
    return None


def audit(config, now=time.time):
    """One self-audit: the dict rigkeeper_metrics.render takes, plus the findings."""
    wanted = load_wanted(config['wanted_path'])
    resources = wanted['resources']
    facts = gather(Runner(config.get('facts')))
    host_res = [r for r in resources if r['kind'] in HOST_KINDS]
    results = probe(host_res, Host())
    for r in resources:
        if r['kind'] == 'fact':
            try:
                results[r['id']] = judge_fact(r, facts)
            except Exception as exc:  # one check's failure never stops the others
                results[r['id']] = {'status': 'error', 'reasons': ['%s: %s' % (r.get('label'), exc)]}
    compiled = {}
    for r in resources:
        compiled.setdefault(r.get('role') or r['id'].split('/', 1)[0], []).append(r)
    compiled.pop('record', None)  # the record is the wanted state itself
    roles, reboot = summarize(compiled, results)
    reboot_ids = set(f['id'] for f in reboot)
    checks = dict((r['id'], results.get(r['id'], {}).get('status', 'error')) for rs in compiled.values() for r in rs
                  if r['id'] not in reboot_ids)
    return {
        'version': wanted.get('version'),
        'roles': roles,
        'checks': checks,
        'reboot': reboot,
        'facts': facts,
        'wanted_limits': fact_param(resources, 'power_limits', 'limits') or {},
        'expected_gpus': fact_param(resources, 'gpu_count', 'count'),
        'p2p': load_p2p(config['p2p_path']),
    }


def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path`` through a temporary file in its directory and a rename, so a
    reader (node_exporter) sees the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(config, now=time.time):
    """One run: audit, then the metrics and the state file. Returns (exit code, state)."""
    config = dict(DEFAULTS, **config)
    started, cpu0 = now(), cpu_seconds()
    previous = {}
    try:
        previous = load_json(config['state_path'], 'the last state')
    except WantedError:
        pass
    try:
        result = audit(config)
        result['success'], error = True, None
    except Exception as exc:  # a failed run still writes metrics: success 0 is the alert
        result, error = {'success': False}, '%s: %s' % (type(exc).__name__, exc)
    if result.get('reboot'):
        # Since when the reboot is pending: kept from the run that first saw it.
        result['reboot_since'] = previous.get('reboot_since') if previous.get('reboot') else None
        result['reboot_since'] = result['reboot_since'] or started
    result.update(finished=now(), duration_s=round(now() - started, 3), cpu_s=round(cpu_seconds() - cpu0, 3),
                  interval_s=config['interval_s'])
    write_atomic(config['metrics_path'], render(result))
    state = {
        'finished': result['finished'], 'duration_s': result['duration_s'], 'cpu_s': result['cpu_s'],
        'success': result['success'], 'error': error, 'version': result.get('version'),
        'reboot': [dict((k, f[k]) for k in ('id', 'label', 'reasons')) for f in result.get('reboot') or []],
        'reboot_since': result.get('reboot_since'),
        'roles': dict((role, {'status': s['status'],
                              'findings': [dict((k, f[k]) for k in ('id', 'label', 'status', 'reasons'))
                                           for f in s['findings']]})
                      for role, s in (result.get('roles') or {}).items()),
    }
    os.makedirs(os.path.dirname(config['state_path']), mode=0o755, exist_ok=True)
    write_atomic(config['state_path'], json.dumps(state, indent=1, sort_keys=True) + '\n', mode=0o600)
    return (0 if result['success'] else 1), state


def show(state):
    lines = ['self-audit at %s: %s (%.2f s, %.2f s CPU)' % (
        time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['finished'])),
        'ok' if state['success'] else 'FAILED: %s' % state['error'], state['duration_s'], state['cpu_s'])]
    for role, s in sorted((state.get('roles') or {}).items()):
        lines.append('  %-18s %s' % (role, s['status']))
        for f in s['findings']:
            lines.append('    %s %s: %s' % (f['status'], f['label'], '; '.join(f['reasons'])))
    for f in state.get('reboot') or []:
        lines.append('  reboot pending: %s: %s' % (f['label'], '; '.join(f['reasons'])))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="rigkeeper's self-audit: the host against its wanted state.")
    parser.add_argument('--config', default='/etc/rigkeeper/selfaudit.json')
    parser.add_argument('--show', action='store_true', help='print the findings of this run')
    args = parser.parse_args(argv)
    try:
        config = load_json(args.config, 'the self-audit configuration')
    except WantedError as exc:
        sys.stderr.write('rigkeeper-selfaudit: %s\n' % exc)
        return 2
    rc, state = run(config)
    if args.show or rc:
        (sys.stdout if rc == 0 else sys.stderr).write(show(state) + '\n')
    return rc


if __name__ == '__main__':
    raise SystemExit(main())
