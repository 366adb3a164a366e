# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: which driver branch and kernel-module flavour, and how the modules get in.

``rk_driver_decision`` (branch: requested or the default by data, GPU architecture limits, known
P2P issues, end of life, CUDA; flavour: open or proprietary), ``rk_module_plan`` (DKMS or
Canonical's signed precompiled modules under Secure Boot), ``rk_version_on_branch`` and
``rk_gpu_architecture`` (the product-name fallback). Inputs follow docs/facts.md. Data:
rigkeeper_policy_data.py. Pure Python; raises ``PolicyError``.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import (
    PolicyError, _BRANCHES, _DEB_VERSION_RE, _as_bool, _as_list, _eol_passed, _err, _gpu_label, _gpu_list,
    _is_number, _month_index, _month_text, _months_left, _parse_branch, _parse_today
)
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_cuda import _parse_cuda, rk_cuda_check


_ARCH_ORDER = POLICY['module_flavors']['architectures']


def _current_ltsb(day):
    """Newest LTSB branch not past end of life on ``day``, or None."""
    candidates = [b for b, e in _BRANCHES.items() if e['type'] == 'LTSB' and not _eol_passed(e, day)]
    return max(candidates) if candidates else None


_TYPE_TEXT = {'feature': 'new feature branch'}


def _type_text(branch_type):
    return _TYPE_TEXT.get(branch_type, branch_type)


def _canonical_arch(value):
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in ('', 'unknown', 'n/a', 'none'):
        return None
    if text in ('ada', 'ada lovelace', 'lovelace'):
        return 'Ada Lovelace'
    for arch in _ARCH_ORDER:
        if text == arch.lower():
            return arch
    return value.strip()  # an architecture newer than the table: kept, ranked as unknown


def rk_gpu_architecture(product_name):
    """GPU architecture guessed from its product name; a fallback only.

    nvidia-smi reports ``product_architecture`` on current drivers and the facts module passes it
    on; this covers older drivers and XML without it.

    :param product_name: e.g. ``"NVIDIA GeForce RTX 3090"``.
    :returns: ``'Kepler'``, ``'Maxwell'``, ``'Pascal'``, ``'Volta'``, ``'Turing'``, ``'Ampere'``,
        ``'Ada Lovelace'``, ``'Hopper'``, ``'Blackwell'`` or ``None`` when the name is not
        recognised (e.g. ``"Graphics Device"``).
    """
    if product_name is None:
        return None
    if not isinstance(product_name, str):
        raise _err(f'product_name must be a string, got {type(product_name).__name__}')
    name = product_name.lower()
    for row in POLICY['architecture_names']:
        if any(re.search(p, name) for p in row['patterns']):
            return row['architecture']
    return None


def _gpu_arch(gpu):
    return _canonical_arch(gpu.get('architecture')) or rk_gpu_architecture(gpu.get('product_name'))


def _arch_rank(arch):
    return _ARCH_ORDER.index(arch) if arch in _ARCH_ORDER else None


def _branch_limits(gpus):
    """GPUs whose architecture has a last branch: [{label, arch, last, verified, source}]."""
    table = POLICY['architecture_last_branch']
    rows = []
    for pos, gpu in enumerate(gpus):
        arch = _gpu_arch(gpu)
        row = table.get(arch)
        if row:
            rows.append({'label': _gpu_label(gpu, pos), 'arch': arch, 'last': row['last_branch'],
                         'verified': bool(row['verified']) and 'UNVERIFIED' not in row['source'],
                         'source': row['source']})
    return rows


def _limit_text(rows):
    """'GPU 0 (bus, model), GPU 1 (...) are Pascal, whose last driver branch is 580 (source)'."""
    groups = {}
    for row in rows:
        groups.setdefault((row['arch'], row['last'], row['source']), []).append(row['label'])
    parts = []
    for (arch, last, source), labels in groups.items():
        verb = 'is' if len(labels) == 1 else 'are'
        parts.append(f'{", ".join(labels)} {verb} {arch}, whose last driver branch is {last} ({source})')
    return '; '.join(parts)


def _limit_todo(limit, day):
    """What to do when the GPUs stop at branch ``limit``."""
    fitting = [b for b in _BRANCHES if b <= limit]
    if not fitting:
        return (f"no branch in rigkeeper's table drives them (their last branch, {limit}, is not in it and "
                'NVIDIA no longer maintains it): move those cards to another host')
    live = [b for b in fitting if not _eol_passed(_BRANCHES[b], day)]
    ltsb = [b for b in live if _BRANCHES[b]['type'] == 'LTSB']
    if ltsb or live:
        best = max(ltsb or live)
        entry = _BRANCHES[best]
        until = f' until {entry["eol"]}' if entry['eol'] else ''
        return (f'set nvidia_driver_branch: {best} ({_type_text(entry["type"])}{until}), or move those cards '
                'to another host')
    best = max(fitting)
    return (f'set nvidia_driver_branch: {best} (past end of life: no more fixes), or move those cards to '
            'another host')


def _gpu_segment(gpu):
    """'consumer' (GeForce/TITAN), 'workstation' (Quadro / NVIDIA RTX) or 'datacenter'."""
    name = str(gpu.get('product_name') or '').lower()
    brand = str(gpu.get('product_brand') or '').lower()
    if 'geforce' in name or 'titan' in name or brand.startswith(('geforce', 'titan')):
        return 'consumer'
    if (brand.startswith(('quadro', 'nvidia rtx')) or 'quadro' in name
            or re.search(r'\brtx (a\d{3,4}|pro|\d{4}\b.*\bada)', name)):
        return 'workstation'
    return 'datacenter'


def _issue_matches(issue, gpu):
    if issue['architectures'] is not None and _gpu_arch(gpu) not in issue['architectures']:
        return False
    if issue['segments'] is not None and _gpu_segment(gpu) not in issue['segments']:
        return False
    if issue['models'] is not None:
        name = str(gpu.get('product_name') or '').lower()
        if not any(m.lower() in name for m in issue['models']):
            return False
    return True


def _issue_findings(branch, gpus, day, branch_specific_only=False):
    """Known issues for ``branch`` on these GPUs: [{id, action, message}], action refuse|warn."""
    ltsb = _advised_ltsb(gpus, day)
    findings = []
    for issue in POLICY['known_issues']:
        if issue['branches'] is None:
            if branch_specific_only:
                continue
        elif branch not in issue['branches']:
            continue
        advice = issue['advice'].format(ltsb=ltsb)
        if not gpus:
            if issue['warn_without_gpu_facts']:
                findings.append({
                    'id': issue['id'], 'action': 'warn',
                    'message': (f'driver branch {branch}: {issue["summary"]} ({issue["source"]}); '
                                'no GPU facts yet, so rigkeeper cannot tell whether your GPUs are '
                                f'affected: {advice}'),
                })
            continue
        affected = [_gpu_label(g, p) for p, g in enumerate(gpus) if _issue_matches(issue, g)]
        if not affected:
            continue
        count = len(gpus)
        if issue['refuse_min_gpus'] and count >= issue['refuse_min_gpus']:
            action = 'refuse'
            head = f'driver branch {branch} is refused for {", ".join(affected)}'
        elif count >= issue['warn_min_gpus']:
            action = 'warn'
            scope = ' (single GPU: no P2P, but multi-GPU use would be affected)' if count == 1 else ''
            head = f'driver branch {branch} is known bad for {", ".join(affected)}{scope}'
            if issue['branches'] is None:
                head = f'{", ".join(affected)}'
        else:
            continue
        findings.append({
            'id': issue['id'], 'action': action,
            'message': f'{head}: {issue["summary"]} ({issue["source"]}); {advice}',
        })
    return findings


def _cuda_mode(cuda, branch):
    """'full', 'minor-compat' or None (cannot run) for every version of ``branch``."""
    try:
        return rk_cuda_check(cuda, str(branch))['mode']
    except PolicyError:
        return None


def _cuda_need(cudas, branches):
    """'CUDA 13.1 needs driver >= 590.44.01 (source)' for each CUDA one of ``branches`` cannot run in full."""
    table = POLICY['cuda']['min_driver']
    return '; '.join(f'CUDA {c} needs driver >= {table[c]["min_driver"]} ({table[c]["source"]})'
                     for c in cudas if any(_cuda_mode(c, b) != 'full' for b in branches))


def _pick_default(candidates, day, need):
    """(branch, 'oldest'|'newest') per POLICY['default_branch'] among eligible LTSB branches."""
    lefts = {b: _months_left(_BRANCHES[b], day) for b in candidates}
    long_enough = [b for b in candidates if lefts[b] is not None and lefts[b] >= need]
    if long_enough:
        return min(long_enough), 'oldest'
    return max(candidates), 'newest'


def _default_branch(gpus, cudas, day):
    """The default branch for these GPUs and CUDA versions on ``day``: (branch, reasons, warnings).

    The rule (data in POLICY['default_branch'], rationale recorded there): among LTSB branches
    not past end of life on ``day`` that drive every GPU of the host (no GPU's architecture has
    a last branch below it, POLICY['architecture_last_branch']) and run every wanted CUDA version
    in full (its minimum driver, not minor-version compatibility), take the OLDEST that still has
    at least ``min_support_months`` (12) months of support left, counted in calendar months from
    ``day``'s month to the end-of-life month; when none has that much, the NEWEST of them.

    Why: a mature LTSB is preferred over the newest because new branches repeatedly broke
    consumer-card P2P (545, 555, 560: FACTS.md), and 12 months of support leave a year of fixes
    before the next planned change. With the 2026 table: 580 (EOL 2028-06) until 2027-06, 620
    (EOL 2029-09) from 2027-07; on a host with a Maxwell, Pascal or Volta card 580 for as long as
    580 is supported (it is their last branch); a CUDA version whose minimum driver is above
    580 (13.1 needs 590.44.01) picks 620. No eligible LTSB is a refusal that says why and what
    to do: set the branch explicitly (580 runs CUDA 13.1 under minor-version compatibility), use
    an older CUDA, or move the cards.
    """
    cfg = POLICY['default_branch']
    need = cfg['min_support_months']
    hard = [r for r in _branch_limits(gpus) if r['verified']]
    limit = min((r['last'] for r in hard), default=None)
    live = sorted(b for b, e in _BRANCHES.items() if e['type'] == cfg['type'] and not _eol_passed(e, day))
    if not live:
        raise _err(f"no LTSB branch in rigkeeper's table is still supported on {day}: set the branch "
                   "explicitly and update POLICY['driver_branches'] from NVIDIA's Supported Drivers and "
                   'CUDA Toolkit Versions page')
    fits = [b for b in live if limit is None or b <= limit]
    if not fits:
        raise _err(f'no LTSB branch still supported on {day} ({", ".join(map(str, live))}) drives every '
                   f'GPU: {_limit_text([r for r in hard if r["last"] < min(live)])}. To do: '
                   f'{_limit_todo(limit, day)}')
    runs = [b for b in fits if all(_cuda_mode(c, b) == 'full' for c in cudas)]
    if not runs:
        newest = max(fits)
        gpu_text = f' (the GPUs stop at {limit}: {_limit_text(hard)})' if limit is not None else ''
        todo = []
        if all(_cuda_mode(c, newest) is not None for c in cudas):
            todo.append(f'set nvidia_driver_branch explicitly ({newest} runs it only under minor-version '
                        'compatibility, with limits for PTX JIT)')
        todo += ['use an older CUDA', 'move those cards to another host' if limit is not None else
                 "add a newer LTSB to POLICY['driver_branches'] once NVIDIA publishes one"]
        raise _err(f'no LTSB branch runs the wanted CUDA in full: {_cuda_need(cudas, fits)}; the LTSB '
                   f'branches that drive every GPU are {", ".join(map(str, fits))}{gpu_text}. To do: '
                   f'{", or ".join(todo)}')

    chosen, how = _pick_default(runs, day, need)
    entry = _BRANCHES[chosen]
    left = _months_left(entry, day)
    scope = ((' that drives every GPU' if gpus else '')
             + (f' and runs CUDA {", ".join(cudas)} in full' if cudas else ''))
    reasons, warnings = [], []
    if how == 'oldest':
        # The month the chosen branch drops below min_support_months, and the default from then on.
        switch = _month_index(*(int(p) for p in entry['eol'].split('-'))) - need + 1
        later = datetime.date(switch // 12, switch % 12 + 1, 1)
        still = [b for b in runs if not _eol_passed(_BRANCHES[b], later)]
        successor = _pick_default(still, later, need)[0] if still else None
        if successor is not None and successor != chosen:
            nxt = (f'{successor} (EOL {_BRANCHES[successor]["eol"]}) becomes the default once {chosen} has '
                   f'less than {need} months left (from {_month_text(switch)})')
        else:
            nxt = (f'{chosen} stays the default until its end of life ({entry["eol"]}): no newer LTSB is '
                   'eligible')
        reasons.append(f'branch {chosen}: none requested; {chosen}: oldest LTSB with >= {need} months of '
                       f'support (EOL {entry["eol"]}, {left} months left on {day}){scope}; {nxt} '
                       f'({cfg["source"]})')
    else:
        reasons.append(f'branch {chosen}: none requested; no eligible LTSB has >= {need} months of support '
                       f'left on {day}, so the newest{scope}: {chosen} (EOL {entry["eol"]}, {left} months '
                       f'left) ({cfg["source"]})')
        warnings.append(f'driver branch {chosen} has {left} months of support left (EOL {entry["eol"]}, '
                        f'{entry["source"]}) and no eligible LTSB lasts longer: plan the move (newer cards, '
                        'or a newer LTSB once NVIDIA publishes one)')
    excluded = [b for b in live if b not in fits]
    if excluded:
        reasons.append(f'{", ".join(map(str, excluded))} not eligible: {_limit_text(hard)}')
    partial = [b for b in fits if b not in runs]
    if partial:
        reasons.append(f'{", ".join(map(str, partial))} not eligible: {_cuda_need(cudas, partial)}')
    return chosen, reasons, warnings


def _advised_ltsb(gpus, day, fallback=True):
    """The branch to advise in messages: the default for these GPUs; when there is none, the
    newest LTSB not past end of life (else the newest LTSB) with ``fallback``, else None."""
    try:
        return _default_branch(gpus, [], day)[0]
    except PolicyError:
        if not fallback:
            return None
        return _current_ltsb(day) or max(b for b, e in _BRANCHES.items() if e['type'] == 'LTSB')


def _check_branch_limits(chosen, gpus, day, warnings):
    """Refuse a branch newer than the last branch of a GPU's architecture (warn when UNVERIFIED)."""
    over = [r for r in _branch_limits(gpus) if chosen > r['last']]
    soft = [r for r in over if not r['verified']]
    hard = [r for r in over if r['verified']]
    if soft:
        limit = min(r['last'] for r in soft)
        warnings.append(f'driver branch {chosen} may not drive these GPUs: {_limit_text(soft)}; if the '
                        f'driver does not load: {_limit_todo(limit, day)}')
    if hard:
        limit = min(r['last'] for r in hard)
        raise _err(f'driver branch {chosen} does not drive these GPUs (its kernel modules refuse them): '
                   f'{_limit_text(hard)}. To do: {_limit_todo(limit, day)}')


def rk_driver_decision(gpus, branch=None, cuda_versions=(), module_flavor='auto',
                       allow_known_bad=False, today=None):
    """Driver branch and kernel-module flavour for these GPUs.

    Usage: ``nvidia_gpu.gpus | rk_driver_decision(branch=nvidia_driver_branch, cuda_versions=['12.4'])``

    :param gpus: ``nvidia_gpu.gpus`` (the whole ``nvidia_gpu`` dict works too), or a list of model
        names (a fresh box without a driver: the inventory's expected models; the architecture then
        comes from the name). May be empty: then GPU-specific checks become warnings.
    :param branch: wanted branch, ``580``/``'580'``/``'R580'``; ``None`` picks the default by data
        (see :func:`_default_branch`): the oldest LTSB not past end of life that drives every GPU,
        runs every wanted CUDA in full and has >= 12 months of support left on ``today``, else the
        newest such LTSB (580 until 2027-06, then 620; 580 on Maxwell/Pascal/Volta hosts).
    :param cuda_versions: CUDA versions (``'12.4'``) the host must run; each is checked against the
        branch with :func:`rk_cuda_check` (branch = its lowest plausible version); a CUDA the branch
        cannot run is refused, one it runs under minor-version compatibility is a warning.
    :param module_flavor: ``'auto'``, ``'open'`` or ``'proprietary'``. ``auto``: open when a Blackwell
        GPU is present (required), proprietary when a pre-Turing GPU is present (open is not
        supported), else open from branch 560 on and proprietary before it.
    :param allow_known_bad: turn a known-bad refusal (545 on 2+ GPUs with consumer/workstation
        Ampere/Ada) into a warning.
    :param today: ``'YYYY-MM-DD'`` (or a date) for the end-of-life checks; ``None`` = today.
    :returns: ``{branch: '580', flavor: 'open'|'proprietary', type: 'LTSB'|'production'|'feature'|
        'short-lived'|None, eol: 'YYYY-MM'|None, warnings: [str], reasons: [str]}``.
    :raises PolicyError: garbage or unknown branch, a branch newer than the last branch of a
        GPU's architecture (590+ on Maxwell/Pascal/Volta, anything in the table on Kepler; the
        message names each GPU, its architecture, the last branch, the source and what to do),
        no eligible default, known-bad branch for these GPUs, impossible flavour, CUDA the branch
        cannot run.
    """
    gpus = _gpu_list(gpus)
    day = _parse_today(today)
    allow_known_bad = _as_bool(allow_known_bad, 'allow_known_bad')
    if module_flavor not in ('auto', 'open', 'proprietary'):
        raise _err(f"module_flavor {module_flavor!r} is not one of 'auto', 'open', 'proprietary'")
    cudas = [_parse_cuda(c) for c in _as_list(cuda_versions, 'cuda_versions')]
    warnings, reasons = [], []

    # Branch
    if branch is None:
        chosen, why, warned = _default_branch(gpus, cudas, day)
        reasons.extend(why)
        warnings.extend(warned)
    else:
        chosen = _parse_branch(branch)
        reasons.append(f'branch {chosen}: requested')
    _check_branch_limits(chosen, gpus, day, warnings)
    entry = _BRANCHES[chosen]

    advised = _advised_ltsb(gpus, day, fallback=False)
    if advised is None:
        move_to = ('no LTSB still supported drives every GPU of this host (see rk_driver_decision with no '
                   'branch): plan to replace those cards')
    elif advised != chosen:
        move_to = f'move to {advised} (LTSB until {_BRANCHES[advised]["eol"]})'
    else:
        move_to = "check NVIDIA's Supported Drivers and CUDA Toolkit Versions page for a supported branch"
    if entry['type'] is None:
        warnings.append(f'driver branch {chosen}: its type and end of life are not recorded '
                        f'({entry["source"]}); check NVIDIA\'s supported drivers page, or {move_to}')
    elif _eol_passed(entry, day):
        when = f'reached end of life in {entry["eol"]}' if entry.get('eol') else 'is past end of life'
        warnings.append(f'driver branch {chosen} ({_type_text(entry["type"])}) {when} '
                        f'({entry["source"]}) and gets no more fixes: {move_to}')
    elif entry['type'] == 'feature':
        until = (f'end of life {entry["eol"]}' if entry['eol'] else
                 'NVIDIA publishes no end of life for it')
        warnings.append(f'driver branch {chosen} is a new feature branch, short-lived ({until}; '
                        f'{entry["source"]}): for a rig that must stay stable, {move_to}')

    # Known issues
    refusals = []
    for finding in _issue_findings(chosen, gpus, day):
        if finding['action'] == 'refuse' and not allow_known_bad:
            refusals.append(finding['message'])
        elif finding['action'] == 'refuse':
            warnings.append(finding['message'].replace(' is refused for ', ' is known bad for ', 1)
                            + ' (allowed by allow_known_bad)')
        else:
            warnings.append(finding['message'])
    if refusals:
        raise _err(' | '.join(refusals))

    # Flavour
    flavor = _decide_flavor(chosen, gpus, module_flavor, warnings, reasons)

    # CUDA
    for cuda in cudas:
        result = rk_cuda_check(cuda, str(chosen))
        warnings.extend(result['warnings'])
        reasons.append(f'CUDA {result["cuda"]}: branch {chosen} runs it ({result["mode"]}; minimum '
                       f'driver {result["min_driver"]}, {result["source"]})')

    return {'branch': str(chosen), 'flavor': flavor, 'type': entry['type'], 'eol': entry['eol'],
            'warnings': warnings, 'reasons': reasons}


def _decide_flavor(branch, gpus, wanted, warnings, reasons):
    table = POLICY['module_flavors']
    src = table['source']
    open_min = _arch_rank(table['open_min_architecture'])
    labelled = [(_gpu_label(g, p), _gpu_arch(g)) for p, g in enumerate(gpus)]
    need_open = [f'{label} is {arch}' for label, arch in labelled if arch in table['open_required']]
    no_open = [f'{label} is {arch}' for label, arch in labelled
               if _arch_rank(arch) is not None and _arch_rank(arch) < open_min]
    unknown = [label for label, arch in labelled if _arch_rank(arch) is None]

    if need_open and no_open:
        raise _err(f'no kernel-module flavour drives all these GPUs: {"; ".join(need_open)} (needs '
                   f'open modules) while {"; ".join(no_open)} (open modules need '
                   f'{table["open_min_architecture"]} or newer) ({src}); split them across hosts')
    if wanted == 'open':
        if no_open:
            raise _err(f'module_flavor open: open kernel modules support {table["open_min_architecture"]} '
                       f'and newer, but {"; ".join(no_open)} ({src}); use module_flavor '
                       "'proprietary' (or 'auto')")
        flavor = 'open'
        reasons.append('flavor open: requested')
    elif wanted == 'proprietary':
        if need_open:
            raise _err(f'module_flavor proprietary: {"; ".join(need_open)} and Blackwell GPUs need the '
                       f"open kernel modules ({src}); use module_flavor 'open' (or 'auto')")
        flavor = 'proprietary'
        reasons.append('flavor proprietary: requested')
    elif need_open:
        flavor = 'open'
        reasons.append(f'flavor open: {"; ".join(need_open)}, which needs open modules ({src})')
    elif no_open:
        flavor = 'proprietary'
        reasons.append(f'flavor proprietary: {"; ".join(no_open)}; open modules need '
                       f'{table["open_min_architecture"]} or newer ({src})')
    elif branch >= table['open_default_from_branch']:
        flavor = 'open'
        reasons.append(f'flavor open: the default from branch {table["open_default_from_branch"]} '
                       f'on for Turing and newer ({src})')
    else:
        flavor = 'proprietary'
        reasons.append(f'flavor proprietary: the default before branch '
                       f'{table["open_default_from_branch"]} ({src})')
    if flavor == 'open' and wanted == 'auto' and (unknown or not gpus):
        which = ', '.join(unknown) if unknown else 'no GPU facts yet'
        warnings.append(f'architecture unknown ({which}); open kernel modules need '
                        f'{table["open_min_architecture"]} or newer: set module_flavor '
                        "'proprietary' for Pascal, Volta or older GPUs")
    return flavor


def _as_tristate(value, what):
    if value is None or isinstance(value, bool):
        return value
    raise _err(f'{what} must be true, false or null (unknown), got {value!r}')


def rk_module_plan(secure_boot, mok_enrolled, source, modules='auto'):
    """How the NVIDIA kernel modules get onto the host, given Secure Boot: DKMS or precompiled.

    Usage: ``rigkeeper_host.secure_boot | rk_module_plan(mok_enrolled, nvidia_driver_source,
    modules='auto')``, then ``rk_driver_packages(..., modules=plan.modules)``.

    With Secure Boot on, the kernel loads only signed modules: a DKMS-built module loads only when
    it is signed with a Machine Owner Key enrolled in shim (the enrolment is confirmed at the console
    on the next boot), else the boot ends without a driver (``modprobe: ERROR: could not insert
    'nvidia': Key was rejected by service``). Canonical's precompiled
    ``linux-modules-nvidia-*`` packages (Ubuntu archive only) are signed and load without a MOK
    [FACTS.md: Headless; Driver branches].

    :param secure_boot: ``rigkeeper_host.secure_boot``: ``True``, ``False``, or ``None`` (unknown:
        no mokutil).
    :param mok_enrolled: whether the DKMS signing key (``/var/lib/shim-signed/mok/MOK.der`` on
        Ubuntu) is enrolled: ``True``, ``False`` or ``None`` (unknown); read with ``mokutil
        --test-key /var/lib/shim-signed/mok/MOK.der``. Only consulted for DKMS with Secure Boot on.
    :param source: the driver package source, ``'ubuntu'``, ``'cuda'`` or ``'debian'``.
    :param modules: ``'auto'``, ``'dkms'`` or ``'precompiled'``. ``auto``: precompiled for the
        Ubuntu source with Secure Boot on (Canonical signs them), else dkms.
    :returns: ``{modules: 'dkms'|'precompiled', reasons: [str], warnings: [str]}``.
    :raises PolicyError: precompiled for a source other than ubuntu; DKMS with Secure Boot
        on and no MOK known to be enrolled (``mok_enrolled`` false or unknown): the message says
        what to do (Ubuntu: modules precompiled; enrol a MOK with ``mokutil --import
        /var/lib/shim-signed/mok/MOK.der`` and confirm it at the console on the next boot; or turn
        Secure Boot off in the firmware); garbage input.
    """
    secure_boot = _as_tristate(secure_boot, 'secure_boot')
    mok_enrolled = _as_tristate(mok_enrolled, 'mok_enrolled')
    if source not in ('ubuntu', 'cuda', 'debian'):
        raise _err(f"source {source!r} is not 'ubuntu' (Ubuntu archive), 'cuda' (NVIDIA CUDA repo) "
                   "or 'debian' (Debian non-free)")
    if modules not in ('auto', 'dkms', 'precompiled'):
        raise _err(f"modules {modules!r} is not one of 'auto', 'dkms', 'precompiled'")
    sb = POLICY['modules']['secure_boot']
    precompiled_sources = POLICY['packages']['ubuntu_precompiled']['sources']
    reasons, warnings = [], []
    state = {True: 'on', False: 'off', None: 'unknown'}[secure_boot]

    if modules == 'precompiled':
        if source not in precompiled_sources:
            raise _err(f"modules 'precompiled': Canonical's signed linux-modules-nvidia-* packages exist "
                       f"only in the Ubuntu archive ({sb['source']}), not for source {source!r}: use "
                       "nvidia_driver_source: ubuntu, or modules: dkms"
                       + (' with an enrolled MOK' if secure_boot else ''))
        reasons.append(f"modules precompiled: requested (Canonical's signed modules; Secure Boot {state})")
        return {'modules': 'precompiled', 'reasons': reasons, 'warnings': warnings}

    if modules == 'auto' and secure_boot and source in precompiled_sources:
        reasons.append("modules precompiled: Secure Boot is on and the Ubuntu archive has Canonical's "
                       f"signed linux-modules-nvidia-* packages, which load without a MOK ({sb['source']})")
        return {'modules': 'precompiled', 'reasons': reasons, 'warnings': warnings}

    how = 'requested' if modules == 'dkms' else 'auto'
    if secure_boot is True and mok_enrolled is not True:
        known = 'no MOK is enrolled' if mok_enrolled is False else 'no enrolled MOK is known'
        options = []
        if source in precompiled_sources:
            options.append("modules: precompiled (Canonical's signed linux-modules-nvidia-* packages)")
        else:
            options.append("use nvidia_driver_source: ubuntu with Canonical's signed precompiled modules "
                           '(Ubuntu hosts only)')
        options.append(f'enrol a MOK: `{sb["mok_import"]}`, then confirm it at the console (MOK manager) on '
                       f'the next boot; check it with `{sb["mok_test"]}`, then rerun')
        options.append('turn Secure Boot off in the firmware')
        raise _err(f'modules dkms ({how}) refused: Secure Boot is on and {known}, so the kernel would refuse '
                   f"the DKMS-built module at boot (\"{sb['kernel_error']}\": {sb['kernel_error_source']}) "
                   f'and the host would come up without a driver ({sb["source"]}). To do, one of: '
                   f'{"; or ".join(options)}')
    if secure_boot is True:
        reasons.append(f'modules dkms ({how}): Secure Boot is on and a MOK is enrolled: DKMS signs the '
                       'modules with it')
    elif secure_boot is False:
        reasons.append(f'modules dkms ({how}): Secure Boot is off, so unsigned DKMS-built modules load')
    else:
        reasons.append(f'modules dkms ({how}): Secure Boot state unknown')
        warnings.append('Secure Boot state unknown (no mokutil on the host): if Secure Boot is on, the '
                        f"kernel refuses a DKMS module no enrolled MOK signed (\"{sb['kernel_error']}\"), "
                        'and the host comes up without a driver; install mokutil so rigkeeper can check'
                        + (', or set modules: precompiled' if source in precompiled_sources
                           else ''))
    return {'modules': 'dkms', 'reasons': reasons, 'warnings': warnings}


def rk_version_on_branch(version, branch):
    """Whether a driver or package version belongs to a branch.

    Handles nvidia-smi versions (``580.95.05``, ``570.26``) and Debian package versions with
    epoch and revision (``1:580.95.05-1``, ``535.309.01-0ubuntu0.24.04.2``): the branch is the
    first number of the upstream part.

    Note: a transitional package can carry a 535 version yet pull 580 [FACTS.md: Packages,
    pitfall]; check the *driver* version (``rigkeeper_host.driver_installed_version``), not the
    metapackage's.

    :param version: the version string.
    :param branch: ``580`` or ``'580'``.
    :returns: bool.
    :raises PolicyError: ``None``/empty/garbage version or branch (guard unknown versions
        with ``is not none``).
    """
    br = _parse_branch(branch, known=False)
    if isinstance(version, bool) or not (isinstance(version, str) or _is_number(version)):
        raise _err(f'version {version!r} is not a driver version string (e.g. "580.95.05" or '
                   '"535.309.01-0ubuntu0.24.04.2"); guard unknown versions with "is not none"')
    text = str(version).strip()
    match = _DEB_VERSION_RE.fullmatch(text)
    if not match:
        raise _err(f'version {version!r} is not a driver version string (e.g. "580.95.05" or '
                   '"535.309.01-0ubuntu0.24.04.2")')
    return int(match.group(2)) == br
