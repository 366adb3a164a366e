# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: per-GPU power limits, range- and PSU-checked (``rk_power_plan``).

Data: ``POLICY['power']`` (rigkeeper_policy_data.py). Pure Python; raises ``PolicyError``.
"""

from __future__ import annotations

import math
import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import (
    _as_list, _err, _gpu_index, _gpu_label, _gpu_list, _number, _round_half_up, _tidy
)


_SELECTORS = ('uuid', 'bus_id', 'index', 'model')
_PRECEDENCE = {'uuid': 3, 'bus_id': 3, 'index': 2, 'model': 1}


def _norm_bus_id(value):
    """'00000000:01:00.0', '0000:01:00.0', '01:00.0' -> (0, 1, 0, 0); None if unparsable."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r'(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])',
                         value.strip())
    if not match:
        return None
    return tuple(int(g or '0', 16) for g in match.groups())


def _check_wants(limits):
    wants = _as_list(limits, 'limits')
    checked = []
    for pos, want in enumerate(wants):
        where = f'limits[{pos}]'
        if not isinstance(want, dict):
            raise _err(f'{where} must be a dict like {{model: "RTX 4090", watts: 350}}, got {want!r}')
        unknown = sorted(set(want) - set(_SELECTORS) - {'watts', 'percent'})
        if unknown:
            raise _err(f'{where} has unknown keys {unknown}: use one of {list(_SELECTORS)} and one of '
                       "['watts', 'percent']")
        selectors = [s for s in _SELECTORS if s in want]
        if len(selectors) != 1:
            raise _err(f'{where} {want!r} must have exactly one selector of {list(_SELECTORS)}, has '
                       f'{selectors or "none"}')
        amounts = [a for a in ('watts', 'percent') if a in want]
        if len(amounts) != 1:
            raise _err(f'{where} {want!r} must have exactly one of watts or percent, has '
                       f'{amounts or "none"}')
        selector, amount = selectors[0], amounts[0]
        value = want[selector]
        if selector == 'index':
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _err(f'{where}: index must be a GPU index (0, 1, ...), got {value!r}')
        elif selector == 'bus_id':
            if _norm_bus_id(value) is None:
                raise _err(f'{where}: bus_id {value!r} is not a PCI address like "00000000:01:00.0" '
                           'or "01:00.0"')
        elif not isinstance(value, str) or not value.strip():
            raise _err(f'{where}: {selector} must be a non-empty string, got {value!r}')
        number = _number(want[amount], f'{where}.{amount}')
        if number <= 0:
            raise _err(f'{where}.{amount} must be above 0, got {want[amount]!r}')
        checked.append({'pos': pos, 'want': want, 'selector': selector, 'value': value,
                        'amount': amount, 'number': number})
    return checked


def _want_matches(want, gpu, pos):
    selector, value = want['selector'], want['value']
    if selector == 'index':
        return _gpu_index(gpu, pos) == value
    if selector == 'uuid':
        return isinstance(gpu.get('uuid'), str) and gpu['uuid'].strip().lower() == value.strip().lower()
    if selector == 'bus_id':
        return _norm_bus_id(gpu.get('bus_id')) == _norm_bus_id(value)
    return value.strip().lower() in str(gpu.get('product_name') or '').lower()


def _describe_want(want):
    unit = ' W' if want['amount'] == 'watts' else '%'
    return f'limits[{want["pos"]}] {want["selector"]}={want["value"]!r}, {_tidy(want["number"])}{unit}'


def rk_power_plan(gpus, limits=(), psu_watts=None, base_watts=250, psu_fraction=0.8,
                  transient_factor=None):
    """Power limit per GPU from the user's wants, checked against each card's range and the PSU.

    Usage: ``nvidia_gpu.gpus | rk_power_plan(gpu_power_limits, psu_watts=1600)``

    :param gpus: ``nvidia_gpu.gpus``.
    :param limits: list of wants; each has exactly one selector, ``model`` (case-insensitive
        substring of ``product_name``: ``"RTX 4090"``), ``index``, ``uuid`` or ``bus_id``
        (``"00000000:01:00.0"`` or ``"01:00.0"``), and exactly one of ``watts`` or ``percent``
        (of the card's default limit). The most specific want wins: uuid/bus_id > index > model.
        Two wants of the same rank on one GPU, a want matching no GPU, and a uuid matching several
        GPUs (masked/duplicated UUIDs: use bus_id) are refused.
    :param psu_watts: PSU rating in W; ``None`` skips the PSU check.
    :param base_watts: everything but the GPUs (CPU, board, drives, fans), in W.
    :param psu_fraction: share of the PSU rating sustained load may use. Rule of thumb (no cited
        source): keep sustained load at or below 80% of the rating (default 0.8); consumer
        Ampere/Ada cards spike well above board power for milliseconds, which the margin absorbs.
    :param transient_factor: optional multiplier for GPU power spikes; when set, GPU limits x factor
        + base must also fit the full PSU rating. No sourced value exists, so the default ``None``
        skips this check.
    :returns: list, one dict per GPU in ``gpus`` order: ``{index, bus_id, uuid, product_name,
        limit_w (int, rounded half up; None when the card reports no default and no want
        applies), default_w, min_w, max_w, source: 'default'|'model'|'index'|'uuid'|'bus_id',
        want (the winning want or None)}``.
    :raises PolicyError: malformed or conflicting wants, a want matching no GPU, a limit
        outside [min, max] (message names the GPU index, bus id, requested W and the range), a
        card without a settable range, or a total over the PSU budget.
    """
    gpus = _gpu_list(gpus)
    wants = _check_wants(limits)
    matched = {pos: [] for pos in range(len(gpus))}
    for want in wants:
        hits = [pos for pos, gpu in enumerate(gpus) if _want_matches(want, gpu, pos)]
        if not hits:
            present = ', '.join(_gpu_label(g, p) for p, g in enumerate(gpus)) or 'none'
            raise _err(f'{_describe_want(want)} matches no GPU (GPUs: {present}); fix the selector '
                       'or remove the want')
        if want['selector'] == 'uuid' and len(hits) > 1:
            raise _err(f'{_describe_want(want)} matches {len(hits)} GPUs (UUIDs are masked or '
                       'duplicated in this output): select by bus_id instead')
        for pos in hits:
            matched[pos].append(want)

    plan = []
    for pos, gpu in enumerate(gpus):
        label = _gpu_label(gpu, pos)
        default_w = _number(gpu.get('power_default_w'), f'{label} power_default_w', allow_none=True)
        min_w = _number(gpu.get('power_min_w'), f'{label} power_min_w', allow_none=True)
        max_w = _number(gpu.get('power_max_w'), f'{label} power_max_w', allow_none=True)
        entry = {'index': _gpu_index(gpu, pos), 'bus_id': gpu.get('bus_id'), 'uuid': gpu.get('uuid'),
                 'product_name': gpu.get('product_name'), 'limit_w': None,
                 'default_w': _tidy(default_w), 'min_w': _tidy(min_w), 'max_w': _tidy(max_w),
                 'source': 'default', 'want': None}
        candidates = matched[pos]
        if not candidates:
            entry['limit_w'] = None if default_w is None else _round_half_up(default_w)
            plan.append(entry)
            continue
        best = max(_PRECEDENCE[w['selector']] for w in candidates)
        winners = [w for w in candidates if _PRECEDENCE[w['selector']] == best]
        if len(winners) > 1:
            raise _err(f'{label}: {len(winners)} wants of equal precedence apply '
                       f'({"; ".join(_describe_want(w) for w in winners)}); keep one, or use a more '
                       'specific selector (uuid/bus_id > index > model)')
        want = winners[0]
        if want['amount'] == 'percent':
            if default_w is None:
                raise _err(f'{label}: {_describe_want(want)} is a percentage of the default limit, '
                           'but the card reports no default power limit; give watts instead')
            requested = default_w * want['number'] / 100.0
            shown = f'{_tidy(want["number"])}% of the {_tidy(default_w)} W default = {requested:g} W'
        else:
            requested = want['number']
            shown = f'{_tidy(requested)} W'
        limit = _round_half_up(requested)
        if min_w is None or max_w is None:
            raise _err(f'{label}: the card reports no power limit range (N/A), so nvidia-smi cannot '
                       f'set {shown} on it; remove the want ({_describe_want(want)})')
        if not min_w <= limit <= max_w:
            raise _err(f'{label}: requested {shown} ({_describe_want(want)}) is outside the card\'s '
                       f'range [{_tidy(min_w)} W, {_tidy(max_w)} W] (nvidia-smi -q: Min/Max Power '
                       f'Limit); choose a value in that range')
        entry.update(limit_w=limit, source=want['selector'], want=dict(want['want']))
        plan.append(entry)

    if psu_watts is not None:
        budget = _psu_budget(plan, gpus, psu_watts, base_watts, psu_fraction, transient_factor)
        if not budget['ok']:
            raise _err(budget['message'])
    return plan


def _psu_budget(plan, gpus, psu_watts, base_watts, psu_fraction, transient_factor):
    """{ok, gpu_w, total_w, budget_w, message} for a plan; raises on bad numbers."""
    psu = _number(psu_watts, 'psu_watts')
    base = _number(base_watts, 'base_watts')
    fraction = _number(psu_fraction, 'psu_fraction')
    factor = _number(transient_factor, 'transient_factor', allow_none=True)
    if psu <= 0:
        raise _err(f'psu_watts must be above 0, got {psu_watts!r}')
    if base < 0:
        raise _err(f'base_watts must be 0 or more, got {base_watts!r}')
    if not 0 < fraction <= 1:
        raise _err(f'psu_fraction must be in (0, 1] (e.g. 0.8), got {psu_fraction!r}')
    if factor is not None and factor < 1:
        raise _err(f'transient_factor must be 1 or more (or unset), got {transient_factor!r}')
    gpu_w = 0
    for pos, entry in enumerate(plan):
        watts = entry['limit_w']
        if watts is None:
            watts = _number(gpus[pos].get('power_limit_w'), 'power_limit_w', allow_none=True)
        if watts is None:
            watts = entry['max_w']
        if watts is None:
            raise _err(f'{_gpu_label(gpus[pos], pos)} reports no power limit, so the PSU budget '
                       'cannot be checked: set a watts want for it, or psu_watts: null')
        gpu_w += watts
    gpu_w = _tidy(gpu_w)
    total = _tidy(gpu_w + base)
    budget = psu * fraction
    pct = _tidy(round(fraction * 100, 2))
    rule = (f'Rule of thumb (no cited source): keep sustained load at or below {pct}% of the PSU '
            'rating; consumer Ampere/Ada cards also spike well above board power for milliseconds')
    result = {'ok': True, 'gpu_w': gpu_w, 'total_w': total, 'budget_w': _tidy(round(budget, 1)),
              'psu_watts': _tidy(psu), 'message': ''}
    n = len(plan)
    if total > budget:
        per_gpu = math.floor((budget - base) / n) if n else 0
        fits = (f'{n} GPUs fit at <= {per_gpu} W each' if per_gpu > 0 else
                f'base_watts {_tidy(base)} W alone exceeds it')
        result.update(ok=False, message=(
            f'PSU budget exceeded: GPU limits {gpu_w} W + base {_tidy(base)} W = {total} W is over '
            f'{pct}% of the {_tidy(psu)} W PSU ({result["budget_w"]} W). {rule}. Lower the power '
            f'limits ({fits}), or correct psu_watts / base_watts'))
    elif factor is not None and gpu_w * factor + base > psu:
        peak = _tidy(round(gpu_w * factor + base, 1))
        result.update(ok=False, message=(
            f'PSU transient budget exceeded: GPU limits {gpu_w} W x transient_factor {_tidy(factor)} '
            f'+ base {_tidy(base)} W = {peak} W is over the {_tidy(psu)} W PSU rating. {rule}. Lower '
            'the power limits or use a larger PSU'))
    else:
        result['message'] = (f'PSU budget ok: GPU limits {gpu_w} W + base {_tidy(base)} W = {total} W '
                             f'is within {pct}% of the {_tidy(psu)} W PSU ({result["budget_w"]} W)')
    return result
