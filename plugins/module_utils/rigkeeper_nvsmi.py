# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Parsers for nvidia-smi output. Pure functions, standard library only.

This file runs on target hosts (it is shipped with the ``nvidia_gpu_facts`` module), so it must stay
importable on Python 3.8 and must not depend on anything outside the standard library.

Conventions shared by every function here:

* Unknown values are ``None``. nvidia-smi spells "unknown" many ways: ``N/A``, ``[N/A]``,
  ``Not Supported``, ``[Not Supported]``, ``Requested functionality has been deprecated``,
  ``Unknown Error``, ``Insufficient Permissions``, ``Not Found`` (see ``NA_VALUES``). In CSV output
  every bracketed value (``[...]``) is an error marker, so any bracketed value is ``None`` too.
* Numbers are numbers: ``"450.00 W"`` -> ``450.0``, ``"24564 MiB"`` -> ``24564``, ``"16x"`` -> ``16``.
* PCI bus ids are normalised to the form nvidia-smi prints in ``<gpu id="...">``:
  an 8-hex-digit domain, then bus, device and function, hex digits UPPER case:
  ``00000000:01:00.0`` (``0000:c1:00.0`` from lspci/sysfs becomes ``00000000:C1:00.0``).
  The bus id is the key to use for a GPU: UUIDs are masked or duplicated in some real outputs.

Per-GPU dicts returned by ``parse_xml`` and ``gpus_from_query`` have exactly the keys of
``GPU_KEYS`` (the contract in docs/facts.md).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET

__all__ = [
    'parse_compute_apps',
    'GPU_KEYS',
    'NA_VALUES',
    'NvsmiParseError',
    'architecture_from_name',
    'clean_value',
    'gpus_from_query',
    'index_by_bus_id',
    'normalize_bus_id',
    'nvswitch_from_devices',
    'parse_p2p_matrix',
    'parse_q_text',
    'parse_query_csv',
    'parse_topo_matrix',
    'parse_xml',
    'strip_ansi',
    'to_bool',
    'to_float',
    'to_int',
    'to_number',
    'version_text',
]

# Keys of one GPU dict, in contract order (docs/facts.md).
GPU_KEYS = (
    'index', 'minor_number', 'bus_id', 'product_name', 'product_brand', 'architecture', 'uuid',
    'serial', 'vbios_version', 'memory_total_mib', 'persistence_mode', 'compute_mode', 'mig_mode',
    'power_draw_w', 'power_limit_w', 'power_default_w', 'power_min_w', 'power_max_w',
    'power_enforced_w', 'pcie_gen_current', 'pcie_gen_max', 'pcie_width_current', 'pcie_width_max',
    # The health set (the host's self-audit exports it): read from the same one query.
    'temperature_c', 'utilization_gpu_pct', 'memory_used_mib', 'ecc_enabled', 'ecc_corrected_volatile',
    'ecc_uncorrected_volatile', 'clocks_event_reasons',
)

# Values that mean "unknown" (compared case-insensitively, after stripping brackets).
NA_VALUES = frozenset(v.lower() for v in (
    'N/A',
    'Not Supported',
    'Requested functionality has been deprecated',
    'Unknown Error',
    'Insufficient Permissions',
    'Not Available',
    'Not Found',
    'GPU is lost',
    'GPU requires reset',
))

_TRUE = frozenset(('enabled', 'yes', 'on', 'true', 'active', '1'))
_FALSE = frozenset(('disabled', 'no', 'off', 'false', 'not active', '0'))

_NUMBER_RE = re.compile(r'^([-+]?\d+(?:\.\d+)?)\s*([A-Za-z%/]*)$')
_VERSION_RE = re.compile(r'^\s*(\d+(?:\.\d+)+)')
_ANSI_RE = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')
_BUS_ID_RE = re.compile(
    r'^(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])$')
_TOPO_LABEL_RE = re.compile(r'^(GPU\d+|NIC\d+)$')
_GPU_LABEL_RE = re.compile(r'^GPU\d+$')


class NvsmiParseError(ValueError):
    """nvidia-smi output could not be parsed at all."""


# --------------------------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------------------------

def clean_value(value):
    """Return ``value`` stripped, or ``None`` when it is empty or one of nvidia-smi's "unknown" words.

    Non-string values (numbers, bools, None) are returned unchanged.
    """
    if value is None or not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if text.startswith('[') and text.endswith(']'):
        # nvidia-smi only brackets error markers ([N/A], [Not Supported], [Unknown Error], ...).
        return None
    if text.lower() in NA_VALUES:
        return None
    return text


def to_number(value):
    """``"450.00 W"`` -> ``450.0``; ``"24564 MiB"`` -> ``24564``; ``"16x"`` -> ``16``; unknown -> None.

    Integers stay ``int``; anything with a decimal point is a ``float``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    text = clean_value(value)
    if text is None:
        return None
    match = _NUMBER_RE.match(text)
    if not match:
        return None
    number = match.group(1)
    return float(number) if '.' in number else int(number)


def to_int(value):
    """Like ``to_number`` but always an ``int`` (or None)."""
    number = to_number(value)
    return None if number is None else int(number)


def to_float(value):
    """Like ``to_number`` but always a ``float`` (or None)."""
    number = to_number(value)
    return None if number is None else float(number)


def to_bool(value):
    """``Enabled``/``Yes``/``On``/``Active`` -> True, ``Disabled``/``No``/``Off``/``Not Active`` -> False,
    anything else (including N/A) -> None."""
    if isinstance(value, bool):
        return value
    text = clean_value(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def version_text(value):
    """The leading dotted version of ``value``, else the cleaned text.

    Driver 610 prints ``610.57.04 [Deprecated; will be removed in CUDA 14.0. Use KMD Version instead]``.
    """
    text = clean_value(value)
    if text is None:
        return None
    match = _VERSION_RE.match(text)
    return match.group(1) if match else text


def normalize_bus_id(value):
    """Normalise a PCI address to ``00000000:01:00.0`` (8-digit domain, upper-case hex).

    Accepts the nvidia-smi form, the lspci/sysfs form (``0000:01:00.0``) and a bare ``01:00.0``.
    Anything else is returned stripped (or None when empty/unknown).
    """
    text = clean_value(value)
    if text is None:
        return None
    match = _BUS_ID_RE.match(text)
    if not match:
        return text
    domain, bus, device, function = match.groups()
    return '%08X:%02X:%02X.%X' % (int(domain or '0', 16), int(bus, 16), int(device, 16), int(function))


def strip_ansi(text):
    """Remove terminal escape sequences (``topo -m`` underlines its header)."""
    return _ANSI_RE.sub('', text or '')


# --------------------------------------------------------------------------------------------
# Architecture from the product name (used when the XML has no <product_architecture>)
# --------------------------------------------------------------------------------------------

# Ordered: the first match wins, so the specific patterns come first ("RTX 6000 Ada" before
# "Quadro RTX"/"RTX A6000", "RTX PRO ... Blackwell" before anything else).
ARCHITECTURE_PATTERNS = (
    # Blackwell
    (r'\bBlackwell\b', 'Blackwell'),
    (r'\bRTX PRO\b', 'Blackwell'),
    (r'\bRTX 50[5-9]0\b', 'Blackwell'),
    (r'\bG?B(100|200|300)\b', 'Blackwell'),
    # Ada Lovelace
    (r'\bAda\b', 'Ada Lovelace'),
    (r'\bRTX 40[5-9]0\b', 'Ada Lovelace'),
    (r'\bL(4|20|40|40S|40G)\b', 'Ada Lovelace'),
    # Hopper
    (r'\bG?H(100|200|800|20)\b', 'Hopper'),
    # Turing (before the generic "RTX <n>000" patterns: "Quadro RTX 6000" is Turing)
    (r'\bQuadro RTX\b', 'Turing'),
    (r'\bTITAN RTX\b', 'Turing'),
    (r'\bRTX 20[6-8]0\b', 'Turing'),
    (r'\bGTX 16[3-6]0\b', 'Turing'),
    (r'\bT(4|400|600|1000|1200)\b', 'Turing'),
    # Ampere (the RTX 2050 is an Ampere chip despite its name)
    (r'\bRTX 2050\b', 'Ampere'),
    (r'\bRTX 30[5-9]0\b', 'Ampere'),
    (r'\bRTX A\d{3,4}\b', 'Ampere'),
    (r'\bA(2|10|10G|10M|16|30|40|100|800|100X|30X)\b', 'Ampere'),
    (r'\bA[2-6]000\b', 'Ampere'),
    # Volta
    (r'\bG?V100\b', 'Volta'),
    (r'\bTITAN V\b', 'Volta'),
    # Pascal
    (r'\bGTX 10[5-8]0\b', 'Pascal'),
    (r'\bGT 10[1-3]0\b', 'Pascal'),
    (r'\bTITAN Xp\b', 'Pascal'),
    (r'\bQuadro G?P\d+\b', 'Pascal'),
    (r'\bP(4|6|40|100|102|104)\b', 'Pascal'),
    # Maxwell
    (r'\bGTX (9[5-8]0|750)\b', 'Maxwell'),
    (r'\bQuadro M\d+\b', 'Maxwell'),
    (r'\bM(4|6|10|40|60)\b', 'Maxwell'),
    # Kepler
    (r'\bK(10|20|20X|20m|40|80|520)\b', 'Kepler'),
    (r'\bQuadro K\d+\b', 'Kepler'),
    (r'\bGTX (6[5-9]0|7[6-8]0)\b', 'Kepler'),
)
_ARCHITECTURE_RES = tuple((re.compile(p, re.IGNORECASE), a) for p, a in ARCHITECTURE_PATTERNS)


def architecture_from_name(name):
    """GPU architecture from a product name, e.g. ``"NVIDIA GeForce RTX 4090"`` -> ``"Ada Lovelace"``.

    Returns None for names it does not know (e.g. the ``"Graphics Device"`` placeholder of old drivers).
    """
    text = clean_value(name)
    if text is None:
        return None
    for regex, architecture in _ARCHITECTURE_RES:
        if regex.search(text):
            return architecture
    return None


# --------------------------------------------------------------------------------------------
# nvidia-smi -q -x
# --------------------------------------------------------------------------------------------

def _text(element, path):
    """Cleaned text at ``path`` under ``element`` (direct path only), or None."""
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return clean_value(found.text)


def _first(element, paths):
    """First non-None cleaned text among ``paths``."""
    for path in paths:
        value = _text(element, path)
        if value is not None:
            return value
    return None


def _power_section(gpu):
    """The GPU power element: ``<gpu_power_readings>`` (schema v12+) or ``<power_readings>`` (older)."""
    for tag in ('gpu_power_readings', 'power_readings'):
        section = gpu.find(tag)
        if section is not None:
            return section
    return None


def _ecc_mode(value):
    value = clean_value(value)
    return {'Enabled': True, 'Disabled': False}.get(value) if value else None


def _gpu_from_xml(gpu, index):
    power = _power_section(gpu)
    link = gpu.find('pci/pci_gpu_link_info')
    name = _text(gpu, 'product_name')
    architecture = _text(gpu, 'product_architecture') or architecture_from_name(name)
    bus_id = normalize_bus_id(gpu.get('id')) or normalize_bus_id(_text(gpu, 'pci/pci_bus_id'))
    ecc = _ecc_volatile(gpu)
    return {
        'index': index,
        'minor_number': to_int(_text(gpu, 'minor_number')),
        'bus_id': bus_id,
        'product_name': name,
        'product_brand': _text(gpu, 'product_brand'),
        'architecture': architecture,
        'uuid': _text(gpu, 'uuid'),
        'serial': _text(gpu, 'serial'),
        'vbios_version': _text(gpu, 'vbios_version'),
        # Direct child only: MIG devices carry their own <fb_memory_usage>.
        'memory_total_mib': to_int(_text(gpu, 'fb_memory_usage/total')),
        'persistence_mode': to_bool(_text(gpu, 'persistence_mode')),
        'compute_mode': _text(gpu, 'compute_mode'),
        'mig_mode': to_bool(_text(gpu, 'mig_mode/current_mig')),
        # power_draw (<= v12) is what --query-gpu calls power.draw; v13 splits it into an average
        # (same as power.draw) and an instant reading; the average can be N/A, then use the instant.
        'power_draw_w': to_float(_first(power, ('power_draw', 'average_power_draw', 'instant_power_draw'))),
        # The limit that `nvidia-smi -pl` sets (--query-gpu power.limit): <power_limit> up to v12,
        # <requested_power_limit> from the 535-era schema on.
        'power_limit_w': to_float(_first(power, ('requested_power_limit', 'power_limit', 'current_power_limit'))),
        'power_default_w': to_float(_text(power, 'default_power_limit')),
        'power_min_w': to_float(_text(power, 'min_power_limit')),
        'power_max_w': to_float(_text(power, 'max_power_limit')),
        # The limit actually enforced (--query-gpu enforced.power.limit): <enforced_power_limit>
        # up to v12, <current_power_limit> after.
        'power_enforced_w': to_float(_first(power, ('enforced_power_limit', 'current_power_limit'))),
        'pcie_gen_current': to_int(_text(link, 'pcie_gen/current_link_gen')),
        'pcie_gen_max': to_int(_text(link, 'pcie_gen/max_link_gen')),
        'pcie_width_current': to_int(_text(link, 'link_widths/current_link_width')),
        'pcie_width_max': to_int(_text(link, 'link_widths/max_link_width')),
        'temperature_c': to_float(_text(gpu, 'temperature/gpu_temp')),
        'utilization_gpu_pct': to_float(_text(gpu, 'utilization/gpu_util')),
        'memory_used_mib': to_int(_text(gpu, 'fb_memory_usage/used')),
        'ecc_enabled': _ecc_mode(_text(gpu, 'ecc_mode/current_ecc')),
        'ecc_corrected_volatile': ecc[0],
        'ecc_uncorrected_volatile': ecc[1],
        'clocks_event_reasons': _clock_event_reasons(gpu),
    }


def _ecc_volatile(gpu):
    """(corrected, uncorrected) volatile ECC error counts, each None where the card reports none.

    Schema v12/v13 (and v11 on datacenter cards): ``sram_correctable``, ``dram_correctable`` and the
    uncorrectable counts (v13 splits SRAM's into ``_parity`` and ``_secded``); v10 and older:
    ``single_bit/total`` and ``double_bit/total``. GeForce cards print N/A everywhere."""
    volatile = gpu.find('ecc_errors/volatile')
    if volatile is None:
        return None, None
    if volatile.find('single_bit') is not None or volatile.find('double_bit') is not None:
        return (to_int(_text(volatile, 'single_bit/total')), to_int(_text(volatile, 'double_bit/total')))
    corrected, uncorrected = [], []
    for child in volatile:
        value = to_int(child.text)
        if value is None or len(child):
            continue
        if child.tag.endswith('_uncorrectable') or '_uncorrectable_' in child.tag:
            uncorrected.append(value)
        elif child.tag.endswith('_correctable'):
            corrected.append(value)
    return (sum(corrected) if corrected else None, sum(uncorrected) if uncorrected else None)


def _clock_event_reasons(gpu):
    """{reason: active} from ``<clocks_event_reasons>`` (535+) or ``<clocks_throttle_reasons>``
    (older); None when neither is there. Reasons the card reports N/A are left out."""
    for tag, prefix in (('clocks_event_reasons', 'clocks_event_reason_'),
                        ('clocks_throttle_reasons', 'clocks_throttle_reason_')):
        section = gpu.find(tag)
        if section is None:
            continue
        reasons = {}
        for child in section:
            value = clean_value(child.text)
            if value in ('Active', 'Not Active') and child.tag.startswith(prefix):
                reasons[child.tag[len(prefix):]] = value == 'Active'
        return reasons
    return None


def _fabric_state_xml(gpu):
    return _text(gpu, 'fabric/state')


def parse_xml(text):
    """Parse ``nvidia-smi -q -x`` output (schemas v9 to v13, with or without DOCTYPE, any indentation).

    Returns::

        {'driver_version': '580.95.05' or None,   # <kmd_version> preferred when present (610+)
         'cuda_version': '13.0' or None,          # <cuda_umd_version> preferred when present
         'attached_gpus': int or None,            # as printed; may exceed the <gpu> count
         'count': int,                            # number of <gpu> elements
         'nvswitch': bool,                        # any GPU reports an NVLink fabric state
         'gpus': [ {GPU_KEYS...}, ... ]}          # in nvidia-smi order; 'index' = position

    Raises ``NvsmiParseError`` when the text is not an ``<nvidia_smi_log>`` document.
    """
    if isinstance(text, bytes):
        data = text
    else:
        data = (text or '').encode('utf-8')
    data = data.strip()
    if not data:
        raise NvsmiParseError('empty nvidia-smi XML output')
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise NvsmiParseError('nvidia-smi XML output does not parse: %s' % exc)
    if root.tag != 'nvidia_smi_log':
        raise NvsmiParseError('unexpected XML root element <%s>' % root.tag)

    gpus = [_gpu_from_xml(gpu, index) for index, gpu in enumerate(root.findall('gpu'))]
    # A fabric state (anything but N/A: "Not Started", "In Progress", "Completed") is only
    # reported by GPUs attached to an NVLink fabric, i.e. NVSwitch systems.
    nvswitch = any(_fabric_state_xml(gpu) is not None for gpu in root.findall('gpu'))
    return {
        'driver_version': version_text(_first(root, ('kmd_version', 'driver_version'))),
        'cuda_version': version_text(_first(root, ('cuda_umd_version', 'cuda_version'))),
        'attached_gpus': to_int(_text(root, 'attached_gpus')),
        'count': len(gpus),
        'nvswitch': nvswitch,
        'gpus': gpus,
    }


def index_by_bus_id(gpus):
    """``{bus_id: gpu}`` for a list of GPU dicts (bus ids are unique where UUIDs may not be)."""
    return dict((gpu['bus_id'], gpu) for gpu in gpus)


def nvswitch_from_devices(paths):
    """True when any path is an NVSwitch device node (``/dev/nvidia-nvswitch<N>``).

    ``/dev/nvidia-nvswitchctl`` alone does not count.
    """
    for path in paths or ():
        name = str(path).rstrip('/').rsplit('/', 1)[-1]
        if re.match(r'^nvidia-nvswitch\d+$', name):
            return True
    return False


# --------------------------------------------------------------------------------------------
# nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]
# --------------------------------------------------------------------------------------------

_HEADER_UNIT_RE = re.compile(r'^(.*?)\s*\[([^\]]*)\]$')


def _split_header(cell):
    match = _HEADER_UNIT_RE.match(cell.strip())
    if match:
        return match.group(1).strip(), match.group(2).strip()
    return cell.strip(), None


def parse_query_csv(text, fields=None):
    """Parse ``--query-gpu`` CSV output into one dict per GPU, keyed by query field name.

    ``fields`` is the list passed to ``--query-gpu``; it is required for ``noheader`` output and
    otherwise taken from the header line (units in the header, ``power.limit [W]``, are dropped
    from the key). Values: unknown markers -> None; a value with a unit (``"450.00 W"``) or in a
    column whose header names a unit -> a number; anything else -> the stripped string.

    Raises ``NvsmiParseError`` when a row does not have one value per field.
    """
    rows = [row for row in csv.reader((text or '').splitlines(), skipinitialspace=True) if row
            and any(cell.strip() for cell in row)]
    if not rows:
        return []
    units = None
    first = [_split_header(cell) for cell in rows[0]]
    first_names = [name for name, _unit in first]
    if fields is None:
        fields = first_names
        units = [unit for _name, unit in first]
        rows = rows[1:]
    else:
        fields = [f.strip() for f in fields]
        if first_names == fields:
            units = [unit for _name, unit in first]
            rows = rows[1:]
    if units is None:
        units = [None] * len(fields)

    result = []
    for row in rows:
        if len(row) != len(fields):
            raise NvsmiParseError('CSV row has %d values for %d fields' % (len(row), len(fields)))
        entry = {}
        for field, unit, raw in zip(fields, units, row):
            value = clean_value(raw)
            if value is not None:
                match = _NUMBER_RE.match(value)
                if match and (unit or match.group(2)):
                    value = to_number(value)
            entry[field] = value
        result.append(entry)
    return result


def gpus_from_query(rows):
    """GPU dicts (``GPU_KEYS``) from ``parse_query_csv`` rows; fields not queried are None.

    The useful query fields are ``index, pci.bus_id, name, uuid, serial, vbios_version, memory.total,
    persistence_mode, compute_mode, mig.mode.current, power.draw, power.limit, enforced.power.limit,
    power.default_limit, power.min_limit, power.max_limit, pcie.link.gen.current, pcie.link.gen.max,
    pcie.link.width.current, pcie.link.width.max``. ``--query-gpu`` has no minor number, brand or
    architecture field: minor_number/product_brand are None and the architecture is derived from
    the name.
    """
    gpus = []
    for position, row in enumerate(rows):
        name = clean_value(row.get('name'))
        index = to_int(row.get('index'))
        gpus.append({
            'index': position if index is None else index,
            'minor_number': None,
            'bus_id': normalize_bus_id(row.get('pci.bus_id')),
            'product_name': name,
            'product_brand': None,
            'architecture': architecture_from_name(name),
            'uuid': clean_value(row.get('uuid')),
            'serial': clean_value(row.get('serial')),
            'vbios_version': clean_value(row.get('vbios_version')),
            'memory_total_mib': to_int(row.get('memory.total')),
            'persistence_mode': to_bool(row.get('persistence_mode')),
            'compute_mode': clean_value(row.get('compute_mode')),
            'mig_mode': to_bool(row.get('mig.mode.current')),
            'power_draw_w': to_float(row.get('power.draw')),
            'power_limit_w': to_float(row.get('power.limit')),
            'power_default_w': to_float(row.get('power.default_limit')),
            'power_min_w': to_float(row.get('power.min_limit')),
            'power_max_w': to_float(row.get('power.max_limit')),
            'power_enforced_w': to_float(row.get('enforced.power.limit')),
            'pcie_gen_current': to_int(row.get('pcie.link.gen.current')),
            'pcie_gen_max': to_int(row.get('pcie.link.gen.max')),
            'pcie_width_current': to_int(row.get('pcie.link.width.current')),
            'pcie_width_max': to_int(row.get('pcie.link.width.max')),
            'temperature_c': to_float(row.get('temperature.gpu')),
            'utilization_gpu_pct': to_float(row.get('utilization.gpu')),
            'memory_used_mib': to_int(row.get('memory.used')),
            'ecc_enabled': _ecc_mode(row.get('ecc.mode.current')),
            'ecc_corrected_volatile': to_int(row.get('ecc.errors.corrected.volatile.total')),
            'ecc_uncorrected_volatile': to_int(row.get('ecc.errors.uncorrected.volatile.total')),
            # --query-gpu reports clocks_event_reasons as one bitmask: not decoded here.
            'clocks_event_reasons': None,
        })
    return gpus


# --------------------------------------------------------------------------------------------
# nvidia-smi topo -m / topo -p2p r
# --------------------------------------------------------------------------------------------

def _parse_matrix(text):
    """Shared parser for the two topology matrices.

    The header is the first line whose first token is a device label (``GPU0``, ``NIC0``); its
    leading run of device labels names the columns. Each later line whose first token is one of
    those labels is a row; its next len(columns) tokens are the cells. Works with tab- or
    space-separated output and ignores the legend, affinity columns and terminal escapes.
    """
    columns = None
    rows = {}
    for line in strip_ansi(text).splitlines():
        tokens = line.split()
        if not tokens or not _TOPO_LABEL_RE.match(tokens[0]):
            continue
        if columns is None:
            columns = []
            for token in tokens:
                if not _TOPO_LABEL_RE.match(token):
                    break
                columns.append(token)
            continue
        label = tokens[0]
        if label in columns and len(tokens) > len(columns):
            rows[label] = dict(zip(columns, tokens[1:1 + len(columns)]))
    if not columns or not rows:
        return None
    return columns, rows


def _gpu_matrix(text):
    parsed = _parse_matrix(text)
    if parsed is None:
        return None
    columns, rows = parsed
    labels = [label for label in columns if _GPU_LABEL_RE.match(label)]
    if not labels:
        return None
    matrix = {}
    for row in labels:
        if row not in rows:
            return None
        matrix[row] = dict((column, rows[row][column]) for column in labels)
    return labels, matrix


def parse_topo_matrix(text):
    """Parse ``nvidia-smi topo -m``.

    Returns ``{'labels': ['GPU0', 'GPU1'], 'matrix': {'GPU0': {'GPU0': 'X', 'GPU1': 'PIX'}, ...}}``
    restricted to GPUs (NIC rows/columns and the CPU/NUMA affinity columns are dropped); the
    diagonal is kept as ``'X'``. Returns None when the text holds no matrix (e.g. an error message).
    """
    parsed = _gpu_matrix(text)
    if parsed is None:
        return None
    labels, matrix = parsed
    return {'labels': labels, 'matrix': matrix}


def parse_p2p_matrix(text):
    """Parse ``nvidia-smi topo -p2p r`` (or w/n/a/p): ``{'GPU0': {'GPU0': 'X', 'GPU1': 'OK'}, ...}``.

    Cell values as printed: ``X`` (self), ``OK``, ``NS``, ``CNS``, ``GNS``, ``TNS``, ``U``.
    Returns None when the text holds no matrix.
    """
    parsed = _gpu_matrix(text)
    if parsed is None:
        return None
    return parsed[1]


# --------------------------------------------------------------------------------------------
# nvidia-smi -q (text)
# --------------------------------------------------------------------------------------------

_Q_PAIR_RE = re.compile(r'^(\S.*?)\s+:\s?(.*)$')


def parse_q_text(text):
    """Parse ``nvidia-smi -q`` text into nested dicts, for checks where XML is not at hand.

    Returns ``{'driver_version', 'cuda_version', 'attached_gpus', 'nvswitch', 'gpus'}`` where each
    GPU is ``{'bus_id': '00000000:01:00.0', <section or key as printed>: <dict or raw string>}``,
    e.g. ``gpu['GPU Power Readings']['Max Power Limit'] == '700.00 W'``. Values are the raw strings
    (use the ``to_*`` helpers). A repeated key in one section keeps the last value; lines indented
    under a key that has a value are attached to the enclosing section.
    """
    header = {}
    gpus = []
    stack = [(-1, header)]
    for raw in (text or '').splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith('='):
            continue
        indent = len(line) - len(line.lstrip(' '))
        body = line.strip()
        if indent == 0 and re.match(r'^GPU [0-9A-Fa-f:.]+$', body):
            gpu = {'bus_id': normalize_bus_id(body.split(None, 1)[1])}
            gpus.append(gpu)
            stack = [(-1, header), (0, gpu)]
            continue
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        match = _Q_PAIR_RE.match(body)
        if match:
            parent[match.group(1).strip()] = match.group(2).strip()
        else:
            section = {}
            parent[body] = section
            stack.append((indent, section))

    def fabric_state(gpu):
        fabric = gpu.get('Fabric')
        return clean_value(fabric.get('State')) if isinstance(fabric, dict) else None

    return {
        'driver_version': version_text(header.get('KMD Version') or header.get('Driver Version')),
        'cuda_version': version_text(header.get('CUDA UMD Version') or header.get('CUDA Version')),
        'attached_gpus': to_int(header.get('Attached GPUs')),
        'nvswitch': any(fabric_state(gpu) is not None for gpu in gpus),
        'gpus': gpus,
    }


def parse_compute_apps(text):
    """``[{gpu_bus_id, pid, process_name, used_memory_mib}]`` from
    ``nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name,used_memory --format=csv,noheader,nounits``.
    Lines that are not four comma-separated values (a message such as "No running processes found")
    are left out."""
    apps = []
    for line in (text or '').splitlines():
        parts = [p.strip() for p in line.split(',')]
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        apps.append({'gpu_bus_id': normalize_bus_id(parts[0]) or parts[0], 'pid': int(parts[1]),
                     'process_name': parts[2], 'used_memory_mib': to_int(parts[3])})
    return apps
