#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: rigkeeper_probe
short_description: Compare a host with rigkeeper's compiled wanted state, every resource in one call
description:
  - Takes the resources the roles want (files with their rendered content, owner and mode, packages
    with version and hold, the NVIDIA driver family with its pin, systemd units, links, the GRUB
    drop-in, JSON settings, commands whose output must say something) and reads each one on the
    host, in one module call. Returns one result per resource, C(ok), C(drift) (with the reasons
    and, for a file, the diff), C(absent), C(warn) or C(error) (the reason it could not be read).
  - A resource that cannot be read is that resource's error; the others are still read.
  - Reads in batches (one C(dpkg-query) for every package, one C(systemctl show) for every unit)
    and runs commands concurrently. Without systemd as PID 1 the units are judged from their files
    (enabled links, masks) and are not running. Without C(python3-apt).
  - Normally called by the C(rigkeeper_probe) action plugin, which compiles the resources on the
    controller from the roles' variables and the host's facts, adds the checks that read facts
    (running kernel command line, power limits, running driver), and returns per-role results.
    Called directly it only judges the resources it is given.
  - Never changes anything on the host.
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
  resources:
    description:
      - The resources to read, each a dict with C(id), C(kind) and the kind's keys (see docs/probe.md).
      - Kinds C(file), C(directory), C(link), C(package), C(unit), C(command), C(json_file), C(grub),
        C(apt_sources) and C(nvidia_family) are read here.
    type: list
    elements: dict
    required: true
  parallel:
    description: Run the resources that start a process concurrently.
    type: bool
    default: true
notes:
  - Commands run with C(LC_ALL=C).
'''

EXAMPLES = r'''
- name: Is the sshd drop-in as wanted, and does sshd use it?
  rigkeeper_probe:
    resources:
      - id: ssh/dropin
        kind: file
        path: /etc/ssh/sshd_config.d/00-rigkeeper.conf
        content: "PasswordAuthentication no\n"
        owner: root
        mode: "0644"
      - id: ssh/effective
        kind: command
        argv: [sshd, -T, -C, "user=root,host=localhost,addr=127.0.0.1"]
        parse: kv
        expect: {passwordauthentication: "no"}
  register: probe
'''

RETURN = r'''
resources:
  description: One result per resource id.
  returned: always
  type: dict
  sample:
    ssh/dropin: {status: drift, reasons: ["/etc/ssh/sshd_config.d/00-rigkeeper.conf differs ..."],
                 diff: {before: "...", after: "...", before_header: "...", after_header: "..."}}
    ssh/effective: {status: ok, reasons: []}
counts:
  description: Resources per status.
  returned: always
  type: dict
  sample: {ok: 41, drift: 1}
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import HOST_KINDS, Host, probe


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            resources=dict(type='list', elements='dict', required=True),
            parallel=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    started = time.time()
    resources = [r for r in module.params['resources'] if r.get('kind') in HOST_KINDS]
    bad = [r for r in module.params['resources'] if r.get('kind') not in HOST_KINDS or not r.get('id')]
    results = probe(resources, Host(), parallel=module.params['parallel'])
    for r in bad:
        results[r.get('id') or repr(r)] = {'status': 'error', 'reasons': ['not a host resource: kind %r' % r.get('kind')]}
    if not module._diff:
        for res in results.values():
            res.pop('diff', None)
    counts = {}
    for res in results.values():
        counts[res['status']] = counts.get(res['status'], 0) + 1
    module.exit_json(changed=False, resources=results, counts=counts, elapsed_s=round(time.time() - started, 3))


if __name__ == '__main__':
    main()
