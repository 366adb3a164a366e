# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""P2P facts from text inputs: BAR1 and memory per GPU, compute capabilities, the PCIe bridges
between two GPUs, and one record per GPU pair from the topology and P2P matrices.

Pure functions, standard library only: this file runs on target hosts (shipped with the
``nvidia_p2p_facts`` module), so it stays importable on Python 3.8. The matrices themselves are
parsed by ``rigkeeper_nvsmi.parse_topo_matrix`` / ``parse_p2p_matrix``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

__all__ = [
    'P2P_KINDS',
    'bar1_by_bus_id',
    'bridge_chain',
    'build_p2p_facts',
    'compute_caps',
    'p2p_pairs',
    'path_bridges',
]

# `nvidia-smi topo -p2p <letter>`: the capability each letter asks about.
P2P_KINDS = (('r', 'read'), ('w', 'write'), ('n', 'nvlink'), ('a', 'atomics'))

_PCI_RE = re.compile(r'^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$')


def _bus_id(value):
    """``0000:01:00.0`` / ``00000000:01:00.0`` -> ``00000000:01:00.0`` (nvidia-smi's form)."""
    match = _PCI_RE.match((value or '').strip())
    if not match:
        return None
    domain, bus, dev, fn = match.groups()
    return '%08X:%02X:%02X.%s' % (int(domain, 16), int(bus, 16), int(dev, 16), fn)


def _mib(text):
    match = re.match(r'^\s*(\d+)\s*MiB\s*$', text or '')
    return int(match.group(1)) if match else None


def bar1_by_bus_id(xml_text):
    """``{bus_id: {'bar1_total_mib', 'memory_total_mib'}}`` from ``nvidia-smi -q -x``.

    BAR1 is the window through which a peer (or the host) reaches the GPU's memory; smaller than
    the memory means Resizable BAR is off. Values nvidia-smi does not report are None; text that
    is not nvidia-smi's XML gives ``{}``.
    """
    try:
        root = ET.fromstring((xml_text or '').strip().encode('utf-8'))
    except ET.ParseError:
        return {}
    out = {}
    for gpu in root.findall('gpu'):
        bus = _bus_id(gpu.get('id') or '') or _bus_id(gpu.findtext('pci/pci_bus_id') or '')
        if bus is None:
            continue
        out[bus] = {'bar1_total_mib': _mib(gpu.findtext('bar1_memory_usage/total')),
                    'memory_total_mib': _mib(gpu.findtext('fb_memory_usage/total'))}
    return out


def compute_caps(csv_text):
    """``{bus_id: '8.9'}`` from ``nvidia-smi --query-gpu=pci.bus_id,compute_cap --format=csv,noheader``."""
    out = {}
    for line in (csv_text or '').splitlines():
        parts = [p.strip() for p in line.split(',')]
        if len(parts) == 2 and re.match(r'^\d+\.\d+$', parts[1]):
            bus = _bus_id(parts[0])
            if bus:
                out[bus] = parts[1]
    return out


def bridge_chain(sysfs_path):
    """The PCI bridges above a device, root first, from the resolved sysfs path of its
    ``/sys/bus/pci/devices/<bdf>`` link (``/sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0`` ->
    ``['0000:00:01.1']``), in lspci's ``-D`` form. None when the path is not a PCI device path."""
    parts = [p for p in (sysfs_path or '').split('/') if p]
    devices = [p.lower() for p in parts if re.match(r'^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$', p)]
    if not devices:
        return None
    return [d[-12:] if len(d) > 12 else d for d in devices[:-1]]


def path_bridges(chain_a, chain_b):
    """The bridges P2P traffic between two devices crosses: below their lowest common ancestor on
    each side, and that ancestor itself when it is a bridge (a switch port). None when a chain is
    unknown. Two GPUs on different root ports share no bridge: traffic goes through the root
    complex, and every bridge of both chains is on the path."""
    if chain_a is None or chain_b is None:
        return None
    common = 0
    while common < len(chain_a) and common < len(chain_b) and chain_a[common] == chain_b[common]:
        common += 1
    path = list(chain_a[common:]) + [b for b in chain_b[common:] if b not in chain_a[common:]]
    if common:
        path.insert(0, chain_a[common - 1])
    return path


def p2p_pairs(labels, topology, matrices):
    """One record per unordered GPU pair: ``{a, b, labels, link, read, write, nvlink, atomics}``.

    ``labels``: ``['GPU0', 'GPU1', ...]`` (index order); ``topology``: ``parse_topo_matrix``'s
    ``matrix`` (or None); ``matrices``: ``{'read': parse_p2p_matrix(...), ...}`` (values may be
    None). A cell nvidia-smi did not print is None.
    """
    pairs = []
    for i, a in enumerate(labels):
        for j in range(i + 1, len(labels)):
            b = labels[j]
            entry = {'a': i, 'b': j, 'labels': [a, b],
                     'link': ((topology or {}).get(a) or {}).get(b)}
            for _letter, kind in P2P_KINDS:
                entry[kind] = ((matrices.get(kind) or {}).get(a) or {}).get(b)
            pairs.append(entry)
    return pairs


def build_p2p_facts(gpus, topology, matrices, bar1, caps, chains, error=None):
    """The ``nvidia_p2p`` fact dict.

    ``gpus``: ``parse_xml``'s GPU dicts; ``topology``: ``parse_topo_matrix`` output or None;
    ``matrices``: ``{kind: parse_p2p_matrix output or None}``; ``bar1``: ``bar1_by_bus_id``;
    ``caps``: ``compute_caps``; ``chains``: ``{bus_id: bridge_chain or None}``.
    """
    labels = ['GPU%d' % g['index'] for g in gpus]
    out_gpus = []
    for g in gpus:
        bus = g.get('bus_id')
        extra = bar1.get(bus) or {}
        out_gpus.append({
            'index': g.get('index'), 'label': 'GPU%d' % g.get('index'), 'bus_id': bus,
            'name': g.get('product_name'), 'brand': g.get('product_brand'),
            'architecture': g.get('architecture'),
            'memory_total_mib': g.get('memory_total_mib') if g.get('memory_total_mib') is not None
            else extra.get('memory_total_mib'),
            'bar1_total_mib': extra.get('bar1_total_mib'),
            'compute_cap': caps.get(bus),
            'pcie_gen_current': g.get('pcie_gen_current'), 'pcie_gen_max': g.get('pcie_gen_max'),
            'pcie_width_current': g.get('pcie_width_current'), 'pcie_width_max': g.get('pcie_width_max'),
            'bridges': chains.get(bus),
        })
    by_label = dict((g['label'], g) for g in out_gpus)
    pairs = p2p_pairs(labels, (topology or {}).get('matrix'), matrices)
    for pair in pairs:
        a, b = (by_label[label] for label in pair['labels'])
        pair['bus_ids'] = [a['bus_id'], b['bus_id']]
        pair['bridges'] = path_bridges(a['bridges'], b['bridges'])
    return {
        'present': error is None and bool(gpus),
        'error': error,
        'count': len(gpus),
        'gpus': out_gpus,
        'topology': (topology or {}).get('matrix'),
        'matrices': dict((kind, matrices.get(kind)) for _letter, kind in P2P_KINDS),
        'pairs': pairs,
    }
