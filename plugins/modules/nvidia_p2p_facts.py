#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nvidia_p2p_facts
short_description: Read the GPU peer-to-peer matrices, BAR1 sizes and PCIe paths
description:
  - Reads C(nvidia-smi topo -m) and C(nvidia-smi topo -p2p r), C(w), C(n) and C(a), and returns one
    record per GPU pair (link, read, write, NVLink and atomics status), the inputs the P2P
    diagnosis needs per GPU (BAR1 and memory size from C(nvidia-smi -q -x), compute capability,
    PCIe generation and width, brand) and the PCI bridges between each pair (from the resolved
    C(/sys/bus/pci/devices/<bdf>) links), so ACS can be judged per path.
  - A host without C(nvidia-smi) or a driver is a normal case (RV(ansible_facts.nvidia_p2p.present=false)
    with the reason in RV(ansible_facts.nvidia_p2p.error)); the module does not fail for it.
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
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
options:
  nvidia_smi:
    description:
      - Path of the C(nvidia-smi) binary; searched in E(PATH) and the usual directories when not set.
    type: path
  sys_pci_dir:
    description:
      - Where the kernel lists PCI devices (links into C(/sys/devices)).
    type: path
    default: /sys/bus/pci/devices
notes:
  - Pairs are unordered (GPU0-GPU1 once); nvidia-smi prints symmetric matrices.
  - Commands run with C(LC_ALL=C).
requirements:
  - nvidia-smi (optional; its absence is reported, not an error)
'''

EXAMPLES = r'''
- name: Read the P2P matrices
  nvidia_p2p_facts:

- name: Show each pair
  ansible.builtin.debug:
    msg: "{{ item.labels | join('-') }} {{ item.link }} read={{ item.read }}"
  loop: "{{ ansible_facts.nvidia_p2p.pairs }}"
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    nvidia_p2p:
      description: P2P facts.
      returned: always
      type: dict
      contains:
        present:
          description: nvidia-smi answered with at least one GPU.
          type: bool
        error:
          description: Why not present; null when present.
          type: str
        count:
          description: Number of GPUs.
          type: int
        gpus:
          description: >-
            One dict per GPU - index, label (GPU0), bus_id, name, brand, architecture,
            memory_total_mib, bar1_total_mib, compute_cap, pcie_gen_current, pcie_gen_max,
            pcie_width_current, pcie_width_max, bridges (PCI bridges above it, root first; null
            when sysfs does not show it).
          type: list
          elements: dict
        topology:
          description: C(nvidia-smi topo -m) between GPUs; null when it fails.
          type: dict
          sample: {GPU0: {GPU0: X, GPU1: PHB}, GPU1: {GPU0: PHB, GPU1: X}}
        matrices:
          description: C(topo -p2p r|w|n|a) as read, write, nvlink, atomics; a failed probe is null.
          type: dict
        pairs:
          description: >-
            One dict per GPU pair - a, b (indices), labels, bus_ids, link (topo -m cell), read,
            write, nvlink, atomics (topo -p2p cells: OK, CNS, GNS, TNS, NS, U), bridges (on the path
            between them; null when unknown).
          type: list
          elements: dict
          sample:
            - {a: 0, b: 1, labels: [GPU0, GPU1], bus_ids: ["00000000:01:00.0", "00000000:02:00.0"],
               link: PHB, read: CNS, write: CNS, nvlink: NS, atomics: NS, bridges: ["0000:00:01.1", "0000:00:01.2"]}
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_nvsmi import NvsmiParseError, parse_p2p_matrix, parse_topo_matrix, parse_xml
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_p2p_facts import (
    P2P_KINDS,
    bar1_by_bus_id,
    bridge_chain,
    build_p2p_facts,
    compute_caps,
)

SEARCH_DIRS = ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/nvidia/bin']


def _run(module, args):
    rc, out, err = module.run_command(args)
    return rc, out or '', err or ''


def _probe(module, args, parser):
    """One read-only probe; any failure yields None (a probe never breaks the facts)."""
    try:
        rc, out, _err = _run(module, args)
        return parser(out) if rc == 0 else None
    except Exception:
        return None


def _sysfs_chain(sys_pci_dir, bus_id):
    """Bridges above a GPU, from /sys/bus/pci/devices/<0000:01:00.0> (nvidia-smi's 8-digit domain cut)."""
    short = bus_id[4:].lower() if bus_id and len(bus_id.split(':')[0]) == 8 else (bus_id or '').lower()
    link = os.path.join(sys_pci_dir, short)
    if not os.path.exists(link):
        return None
    return bridge_chain(os.path.realpath(link))


def gather(module):
    smi = module.params['nvidia_smi'] or module.get_bin_path('nvidia-smi', required=False) \
        or module.get_bin_path('nvidia-smi', required=False, opt_dirs=SEARCH_DIRS)
    if not smi:
        return build_p2p_facts([], None, {}, {}, {}, {}, error='nvidia-smi not found')
    rc, out, err = _run(module, [smi, '-q', '-x'])
    if rc != 0:
        text = '\n'.join(p.strip() for p in (out, err) if p.strip())
        return build_p2p_facts([], None, {}, {}, {}, {}, error=text or 'nvidia-smi -q -x exited with rc=%d' % rc)
    try:
        parsed = parse_xml(out)
    except NvsmiParseError as exc:
        return build_p2p_facts([], None, {}, {}, {}, {}, error=str(exc))
    gpus = parsed['gpus']
    bar1 = bar1_by_bus_id(out)
    caps = _probe(module, [smi, '--query-gpu=pci.bus_id,compute_cap', '--format=csv,noheader'], compute_caps) or {}
    topology = _probe(module, [smi, 'topo', '-m'], parse_topo_matrix)
    matrices = {}
    for letter, kind in P2P_KINDS:
        matrices[kind] = _probe(module, [smi, 'topo', '-p2p', letter], parse_p2p_matrix)
    chains = dict((g['bus_id'], _sysfs_chain(module.params['sys_pci_dir'], g['bus_id'])) for g in gpus)
    return build_p2p_facts(gpus, topology, matrices, bar1, caps, chains,
                           error=None if gpus else 'nvidia-smi lists no GPU')


def build_module():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type='path'),
            sys_pci_dir=dict(type='path', default='/sys/bus/pci/devices'),
        ),
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
    return module


def main():
    module = build_module()
    module.exit_json(changed=False, ansible_facts=dict(nvidia_p2p=gather(module)))


if __name__ == '__main__':
    main()
