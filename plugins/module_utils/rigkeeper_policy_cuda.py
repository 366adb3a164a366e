# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: can this driver run this CUDA toolkit (``rk_cuda_check``).

Data: ``POLICY['cuda']`` (minimum drivers and minor-version compatibility floors from the CUDA
release notes, rigkeeper_policy_data.py). Pure Python; raises ``PolicyError``.
"""

from __future__ import annotations

import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import _err, _parse_version, _vkey


def _parse_cuda(value):
    """'12.4', '12.4.1', 12.4, '12-4' -> '12.4' (must be in the table)."""
    table = POLICY['cuda']
    if isinstance(value, bool) or not (isinstance(value, str) or isinstance(value, float)):
        raise _err(f'CUDA version {value!r} must be "major.minor", e.g. "12.4"')
    text = repr(value) if isinstance(value, float) else value.strip()
    match = re.fullmatch(r'(\d+)[.-](\d+)(?:[.-]\d+)*', text)
    if not match:
        raise _err(f'CUDA version {value!r} must be "major.minor", e.g. "12.4"')
    key = f'{int(match.group(1))}.{int(match.group(2))}'
    if key in table['missing']:
        missing = table['missing'][key]
        raise _err(f'CUDA {key} does not exist: {missing["note"]} ({missing["source"]}); use '
                   '12.6 or 12.8')
    if key not in table['min_driver']:
        raise _err(f"CUDA {key} is not in rigkeeper's CUDA table (known: "
                   f"{', '.join(table['min_driver'])}); pick one of those or add the row with its "
                   "minimum driver from NVIDIA's CUDA release notes")
    return key


def rk_cuda_check(cuda_version, driver):
    """Can this driver run this CUDA toolkit.

    :param cuda_version: ``'12.4'`` (``'12.4.1'`` is read as 12.4).
    :param driver: a full driver version ``'535.54.03'`` or a branch ``'535'``/``535``. A branch
        means "any version of that branch": its branch number is compared with the minimum's
        branch (the branch's lowest plausible version is assumed to meet a minimum inside it,
        e.g. branch 550 for CUDA 12.4's 550.54.14; verify the installed version against
        ``min_driver``).
    :returns: ``{ok: True, mode: 'full'|'minor-compat', warnings: [str], cuda: '12.4',
        driver: '535', min_driver: '550.54.14', source: str}``. ``minor-compat`` means the driver
        is below the table's minimum but at or above the CUDA major's minor-version-compatibility
        floor (11.x >= 450.80.02, 12.x >= 525, 13.x >= 580): it runs, with limits for PTX JIT.
    :raises PolicyError: unknown CUDA (12.7 does not exist), bad driver, or a driver below
        both the minimum and the floor (the message names the minimum and its source).
    """
    cuda = _parse_cuda(cuda_version)
    row = POLICY['cuda']['min_driver'][cuda]
    major = int(cuda.split('.', maxsplit=1)[0])
    compat = POLICY['cuda']['minor_compat'][major]
    minimum = _parse_version(row['min_driver'])
    floor = _parse_version(compat['floor'])
    version = _parse_version(driver, 'driver')
    text = str(driver).strip()  # as given: keeps '535.54.03', not '535.54.3'
    is_branch = len(version) == 1
    if is_branch:
        have, need, least = version[0], minimum[0], floor[0]
        shown = f'branch {version[0]}'
    else:
        have, need, least = _vkey(version), _vkey(minimum), _vkey(floor)
        shown = f'driver {text}'
    result = {'ok': True, 'mode': 'full', 'warnings': [], 'cuda': cuda, 'driver': text,
              'min_driver': row['min_driver'], 'source': row['source']}
    if have >= need:
        return result
    if have >= least:
        result['mode'] = 'minor-compat'
        result['warnings'].append(
            f'CUDA {cuda} runs on {shown} only through minor-version compatibility: full support '
            f'needs driver >= {row["min_driver"]} ({row["source"]}); {shown} is above the CUDA '
            f'{major}.x floor {compat["floor"]} ({compat["source"]}), with limits for PTX JIT and '
            f'newer features: use branch {minimum[0]} or newer for full support')
        return result
    raise _err(f'CUDA {cuda} needs NVIDIA driver >= {row["min_driver"]} ({row["source"]}), or '
               f'>= {compat["floor"]} under minor-version compatibility ({compat["source"]}); '
               f'{shown} is below both: use branch {minimum[0]} or newer, or an older CUDA')
