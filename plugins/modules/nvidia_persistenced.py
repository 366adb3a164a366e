#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nvidia_persistenced
short_description: Run nvidia-persistenced with persistence mode on, at boot and now
description:
  - Persistence mode through C(nvidia-persistenced) (C(nvidia-smi -pm 1) is deprecated). Ubuntu's
    unit passes C(--no-persistence-mode) and has no C([Install]) section (udev starts it when the
    module loads); a drop-in replaces C(ExecStart) with the packaged command line and
    C(--persistence-mode), and a C(multi-user.target.wants) link starts it at boot whatever udev does
    (a unit with an C([Install]) section is enabled instead).
  - Restarts the daemon when the drop-in changed and starts it when it is not running, only with
    O(start=true) (the installed driver is the loaded one); after a driver change it starts at the
    next boot.
  - The one interface for persistence shared by the nvidia_driver and gpu_power roles; the probe
    (C(rigkeeper_probe)) checks the same drop-in, link and running daemon.
version_added: 0.1.0
author:
  - rigkeeper developers (@rigkeeper)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
options:
  persistence_mode:
    description: V(true) writes the drop-in; V(false) removes it (the packaged command line runs).
    type: bool
    default: true
  start:
    description: Start (or restart after a change) the daemon now. Leave V(false) while the installed driver is not the loaded one.
    type: bool
    default: false
  unit:
    description: The daemon's unit.
    type: str
    default: nvidia-persistenced.service
  dropin:
    description: rigkeeper's drop-in.
    type: path
    default: /etc/systemd/system/nvidia-persistenced.service.d/50-rigkeeper-persistence.conf
  required:
    description: Fail when the unit is not installed (outside check mode); V(false) reports it instead.
    type: bool
    default: true
'''

EXAMPLES = r'''
- name: Persistence mode on (started now only when the installed driver is loaded)
  nvidia_persistenced:
    start: "{{ rigkeeper_host.driver_running_version is not none and not rigkeeper_host.driver_mismatch }}"
'''

RETURN = r'''
exec:
  description: The command line the drop-in sets.
  returned: when the unit is installed
  type: str
  sample: /usr/bin/nvidia-persistenced --persistence-mode --verbose
installed:
  description: The unit is installed.
  returned: always
  type: bool
restarted:
  description: The daemon was started or restarted.
  returned: always
  type: bool
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule

HEADER = '#\n# Ansible managed\n#\n'
WANTS_DIR = '/etc/systemd/system/multi-user.target.wants'


def dropin_content(exec_line):
    return (HEADER + "# Persistence mode on, whatever the packaged unit says (Ubuntu's passes --no-persistence-mode).\n"
            '[Service]\nExecStart=\nExecStart=%s\n' % exec_line)


def persistence_exec(exec_start):
    """The unit's ExecStart (systemctl show: "{ path=... ; argv[]=... ; ...}") with persistence on."""
    match = re.search(r'argv\[\]=([^;]*)', exec_start or '')
    command = (match.group(1) if match else '').strip() or '/usr/bin/nvidia-persistenced'
    command = re.sub(r' --(no-)?persistence-mode(?= |$)', '', command).strip()
    program, _sep, rest = command.partition(' ')
    return ('%s --persistence-mode %s' % (program, rest)).strip()


def show(module, unit):
    rc, out, err = module.run_command(['systemctl', 'show', unit,
                                       '--property=LoadState,FragmentPath,UnitFileState,ExecStart,ActiveState'])
    if rc != 0:
        module.fail_json(msg='systemctl show %s failed: %s' % (unit, (err or out).strip()))
    props = {}
    for line in out.splitlines():
        key, _sep, value = line.partition('=')
        props[key] = value
    return props


def main():
    module = AnsibleModule(
        argument_spec=dict(
            persistence_mode=dict(type='bool', default=True),
            start=dict(type='bool', default=False),
            unit=dict(type='str', default='nvidia-persistenced.service'),
            dropin=dict(type='path', default='/etc/systemd/system/nvidia-persistenced.service.d/50-rigkeeper-persistence.conf'),
            required=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    unit, dropin = p['unit'], p['dropin']
    result = dict(changed=False, installed=False, restarted=False)
    state = show(module, unit)
    if state.get('LoadState') != 'loaded':
        if p['required'] and not module.check_mode:
            module.fail_json(msg='%s is not installed (LoadState %s): the driver\'s packages provide it '
                                 '(Ubuntu: nvidia-compute-utils-<branch>; Debian: nvidia-persistenced).'
                                 % (unit, state.get('LoadState') or 'unknown'), **result)
        module.exit_json(msg='%s is not installed yet; a run after the driver install configures it' % unit, **result)
    result['installed'] = True
    before = None
    if os.path.exists(dropin):
        with open(dropin, encoding='utf-8', errors='replace') as handle:
            before = handle.read()
    after = None
    if p['persistence_mode']:
        result['exec'] = persistence_exec(state.get('ExecStart'))
        after = dropin_content(result['exec'])
    diffs = []
    dropin_changed = before != after
    if dropin_changed:
        diffs.append(dict(before=before or '', after=after or '', before_header=dropin, after_header=dropin))
        if not module.check_mode:
            if after is None:
                os.unlink(dropin)
            else:
                os.makedirs(os.path.dirname(dropin), mode=0o755, exist_ok=True)
                tmp = dropin + '.rigkeeper-tmp'
                with open(tmp, 'w', encoding='utf-8') as handle:
                    handle.write(after)
                os.chmod(tmp, 0o644)
                module.atomic_move(tmp, dropin)
    boot_changed = False
    file_state = state.get('UnitFileState', '')
    if file_state in ('static', 'indirect', ''):
        link = os.path.join(WANTS_DIR, unit)
        target = state.get('FragmentPath')
        if target and (not os.path.islink(link) or os.readlink(link) != target):
            boot_changed = True
            diffs.append(dict(before='', after='%s -> %s\n' % (link, target), before_header=link, after_header=link))
            if not module.check_mode:
                os.makedirs(WANTS_DIR, mode=0o755, exist_ok=True)
                if os.path.lexists(link):
                    os.unlink(link)
                os.symlink(target, link)
    elif file_state not in ('enabled', 'enabled-runtime', 'alias', 'linked'):
        boot_changed = True
        if not module.check_mode:
            rc, out, err = module.run_command(['systemctl', 'enable', unit])
            if rc != 0:
                module.fail_json(msg='systemctl enable %s failed: %s' % (unit, (err or out).strip()), **result)
    if (dropin_changed or boot_changed) and not module.check_mode:
        module.run_command(['systemctl', 'daemon-reload'], check_rc=True)
    if p['start']:
        verb = 'restart' if dropin_changed else ('start' if state.get('ActiveState') != 'active' else None)
        if verb:
            result['restarted'] = True
            if not module.check_mode:
                rc, out, err = module.run_command(['systemctl', verb, unit])
                if rc != 0:
                    module.fail_json(msg='systemctl %s %s failed: %s' % (verb, unit, (err or out).strip()), **result)
    result['changed'] = dropin_changed or boot_changed or result['restarted']
    if module._diff and diffs:
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
