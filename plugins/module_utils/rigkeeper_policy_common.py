# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: the parsers and validators every policy concern shares.

``PolicyError`` is what the policy raises on bad input or a refusal; its message names what is
wrong and what to do. The filter plugin (plugins/filter/rigkeeper_policy.py) turns it into
``AnsibleFilterError`` with the same message. Pure Python, no Ansible imports (module_utils).

Here: numbers, lists and booleans from user input, driver branches and versions, dates and
end-of-life months, and the ``gpus`` list of docs/facts.md.
"""

from __future__ import annotations

import datetime
import math
import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY


_BRANCHES = POLICY['driver_branches']


class PolicyError(ValueError):
    """Bad input or a refusal: the message says what is wrong and what to do about it."""


def _err(msg):
    return PolicyError('rigkeeper: ' + msg)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, what, allow_none=False):
    """Number from an int/float or a numeric string; None passes when allow_none."""
    if value is None and allow_none:
        return None
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise _err(f'{what} must be a finite number, got {value!r}')
        return value
    if isinstance(value, str) and re.fullmatch(r'\s*\d+(\.\d+)?\s*', value):
        text = value.strip()
        return float(text) if '.' in text else int(text)
    raise _err(f'{what} must be a number (watts without a unit, e.g. 300), got {value!r}')


def _tidy(value):
    """450.0 -> 450; 12.5 stays 12.5; None stays None."""
    if _is_number(value) and float(value).is_integer():
        return int(value)
    return value


def _round_half_up(value):
    return int(math.floor(value + 0.5))


def _as_list(value, what):
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or isinstance(value, dict):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _err(f'{what} must be a list, got {type(value).__name__}')


def _as_bool(value, what):
    if isinstance(value, bool):
        return value
    raise _err(f'{what} must be true or false, got {value!r}')


def _parse_branch(value, what='driver branch', known=True):
    """580, '580' or 'R580' -> 580; garbage raises."""
    text = None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    match = re.fullmatch(r'[Rr]?(\d{3,4})', text) if text is not None else None
    if not match:
        hint = ''
        if text and re.fullmatch(r'\d{3,4}\.\d[\d.]*', text):
            hint = f" (that looks like a full version: give only its branch, {text.split('.')[0]})"
        raise _err(f'{what} {value!r} is not a driver branch{hint}: use the branch number as an '
                   f"integer or string, e.g. 580 or '580'; known branches: {_known_branches()}")
    branch = int(match.group(1))
    if known and branch not in _BRANCHES:
        raise _err(f"{what} {branch} is not in rigkeeper's branch table (known: {_known_branches()}); "
                   "pick one of those, or add the branch with its source to POLICY['driver_branches']")
    return branch


def _known_branches():
    return ', '.join(str(b) for b in sorted(_BRANCHES))


def _parse_version(value, what='driver version'):
    """'535.54.03' -> (535, 54, 3); '535' -> (535,). Accepts int/float by their text."""
    if isinstance(value, bool) or value is None:
        raise _err(f'{what} {value!r} is not a driver version: use e.g. "580.95.05" or a branch "580"')
    text = str(value).strip() if _is_number(value) or isinstance(value, str) else None
    if text is None or not re.fullmatch(r'\d{3,4}(\.\d+){0,2}', text):
        raise _err(f'{what} {value!r} is not a driver version: use e.g. "580.95.05" or a branch "580"')
    return tuple(int(p) for p in text.split('.'))


def _vkey(version):
    return tuple(version) + (0,) * (3 - len(version))


def _parse_today(today):
    if today is None:
        return datetime.date.today()
    if isinstance(today, datetime.datetime):
        return today.date()
    if isinstance(today, datetime.date):
        return today
    if isinstance(today, str):
        try:
            return datetime.date.fromisoformat(today.strip())
        except ValueError:
            pass
    raise _err(f"today {today!r} is not a date: use 'YYYY-MM-DD' or leave it unset for today")


def _eol_passed(entry, day):
    if entry.get('ended'):
        return True
    eol = entry.get('eol')
    if not eol:
        return False
    year, month = (int(p) for p in eol.split('-'))
    return (day.year, day.month) > (year, month)


def _month_index(year, month):
    return year * 12 + (month - 1)


def _months_left(entry, day):
    """Calendar months from ``day``'s month to the EOL month (580, EOL 2028-06, on 2026-12-01: 18);
    None without an EOL date."""
    eol = entry.get('eol')
    if not eol:
        return None
    year, month = (int(p) for p in eol.split('-'))
    return _month_index(year, month) - _month_index(day.year, day.month)


def _month_text(index):
    return f'{index // 12:04d}-{index % 12 + 1:02d}'


def _gpu_list(gpus, what='gpus'):
    """The ``gpus`` list; the whole ``nvidia_gpu`` dict is accepted too."""
    if isinstance(gpus, dict) and 'gpus' in gpus:
        gpus = gpus.get('gpus')
    if gpus is None:
        return []
    if not isinstance(gpus, (list, tuple)):
        raise _err(f'{what} must be the list nvidia_gpu.gpus (one dict per GPU), got '
                   f'{type(gpus).__name__}')
    out = []
    for pos, gpu in enumerate(gpus):
        if isinstance(gpu, str) and gpu.strip():
            # A bare model name (inventory's expected GPUs on a box with no driver yet).
            gpu = {'index': pos, 'product_name': gpu.strip()}
        if not isinstance(gpu, dict):
            raise _err(f'{what}[{pos}] must be a dict of GPU facts (docs/facts.md) or a model name, got '
                       f'{type(gpu).__name__}')
        out.append(gpu)
    return out


def _gpu_index(gpu, pos):
    index = gpu.get('index')
    return index if isinstance(index, int) and not isinstance(index, bool) else pos


def _gpu_label(gpu, pos):
    parts = [p for p in (gpu.get('bus_id'), gpu.get('product_name')) if p]
    return f"GPU {_gpu_index(gpu, pos)}" + (f" ({', '.join(parts)})" if parts else '')


_DEB_VERSION_RE = re.compile(r'(?:(\d+):)?(\d+)(?:[.-][0-9A-Za-z.+~:-]*)?')
