# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Debian package logic shared by the nvidia_driver_apt_plan module (what to install, pin and hold)
and the probe (what is installed, pinned and held): dpkg's version order, the NVIDIA family's names
and branches, the apt preferences that pin it, and the parsers of dpkg/apt output.

Pure and standard library only (runs on managed hosts, Python 3.8+).
"""

from __future__ import annotations

import fnmatch
import re

# A family package's branch: the first all-digit dash-separated part after "nvidia-" and words
# that start with a letter; or cuda-drivers-<branch>.
_NAME_BRANCH_RE = re.compile(
    r'^(?:(?:lib|xserver-xorg-video-|linux-(?:modules|objects|signatures)-)?nvidia-'
    r'(?:[a-z][a-z0-9.+]*-)*|cuda-drivers-)(\d{3,4})(?:-.*)?$')
# A package named for one driver version: Ubuntu's firmware (nvidia-firmware-580-580.95.05).
_NAME_VERSION_RE = re.compile(r'-(\d{3,4}\.\d+(?:\.\d+)?)$')
_SIM_RE = re.compile(r'^(Inst|Remv|Purg) (\S+)(?: \[([^\]]+)\])?(?: \((\S+))?')


# ------------------------------------------------------------------------------------------
# Debian versions (dpkg's algorithm)
# ------------------------------------------------------------------------------------------
def split_version(version):
    """'1:580.95.05-0ubuntu1' -> (1, '580.95.05', '0ubuntu1'); no revision -> '' revision."""
    epoch, _sep, rest = version.partition(':') if ':' in version else ('0', '', version)
    if '-' in rest:
        upstream, _sep, revision = rest.rpartition('-')
    else:
        upstream, revision = rest, ''
    return int(epoch or 0), upstream, revision


def _order(char):
    if char == '~':
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a, b):
    while a or b:
        na = re.match(r'^[^0-9]*', a).group(0)
        nb = re.match(r'^[^0-9]*', b).group(0)
        for i in range(max(len(na), len(nb))):
            ca = _order(na[i]) if i < len(na) else 0
            cb = _order(nb[i]) if i < len(nb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(na):], b[len(nb):]
        da = re.match(r'^[0-9]*', a).group(0)
        db = re.match(r'^[0-9]*', b).group(0)
        ia, ib = int(da or 0), int(db or 0)
        if ia != ib:
            return -1 if ia < ib else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def compare_versions(a, b):
    """dpkg --compare-versions: -1, 0 or 1."""
    ea, ua, ra = split_version(a)
    eb, ub, rb = split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def sort_versions(versions):
    """Unique versions, newest first."""
    result = []
    for version in versions:
        if version not in result:
            result.append(version)
    # insertion sort with dpkg's comparison (lists are short)
    for pos in range(1, len(result)):
        item = result[pos]
        j = pos - 1
        while j >= 0 and compare_versions(result[j], item) < 0:
            result[j + 1] = result[j]
            j -= 1
        result[j + 1] = item
    return result


def upstream_of(version):
    return split_version(version)[1]


def version_branch(version):
    match = re.match(r'^(\d+)', upstream_of(version))
    return match.group(1) if match else None


def pin_glob(version):
    """The Pin: version glob: the upstream part with any Debian revision."""
    epoch, upstream, revision = split_version(version)
    prefix = '%d:' % epoch if ':' in version else ''
    return '%s%s-*' % (prefix, upstream) if revision else version


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------
def name_branch(name):
    """Branch carried by a family package name ('libnvidia-compute-580' -> '580'), or None."""
    match = _NAME_BRANCH_RE.match(name.split(':', 1)[0])
    return match.group(1) if match else None


def in_family(name, family, exclude):
    base = name.split(':', 1)[0]
    return (any(fnmatch.fnmatchcase(base, g) for g in family)
            and not any(fnmatch.fnmatchcase(base, g) for g in exclude))


def block_globs(family, other_branches):
    """Globs naming every family package of the other branches: for a family glob ``nvidia-*``
    and branch 535, ``nvidia-*-535`` and ``nvidia-*-535-*``. apt matches a glob list far faster than
    a regular expression over every package name (measured on the simulator: 3.4 s for a regex
    stanza on each apt command, a glob list 0.07 s), and users and unattended-upgrades pay that
    on every run."""
    globs = []
    for branch in other_branches:
        for pattern in family:
            stem = pattern.rstrip('*').rstrip('-')
            # nvidia-* and libnvidia-* carry a word before the branch (nvidia-driver-535,
            # libnvidia-compute-535); the others name it right away (cuda-drivers-535,
            # linux-modules-nvidia-535-generic, xserver-xorg-video-nvidia-535).
            head = stem + '-*' if stem in ('nvidia', 'libnvidia') else stem
            for glob in ('%s-%s' % (head, branch), '%s-%s-*' % (head, branch)):
                if glob not in globs:
                    globs.append(glob)
    return globs


def pin_names(names, family, exclude, branch, other_branches):
    """The exact names the pin lists, from the names apt knows (``apt-cache pkgnames``) and dpkg
    has installed: (this branch's and the unversioned family names, the other branches' names).

    Exact names, not globs: apt matches every glob or regex of a preferences file against every
    package name it knows, on every command (measured on the simulator, 63k names: a glob family
    stanza pinned to two versions costs 0.29 s per `apt-cache policy`, the other branches as a glob
    list 1.1 s; the same stanzas as exact names 0.00 s). Names that appear later (a new branch after
    `apt update`) are listed at the next run; the audit reports the pin as out of date until then."""
    others = set(str(b) for b in other_branches)
    keep, block = [], []
    for name in sorted(set(n.split(':', 1)[0] for n in names)):
        if not in_family(name, family, exclude):
            continue
        br = name_branch(name)
        if br in others:
            block.append(name)
        elif br is None or br == str(branch):
            keep.append(name)
    return keep, block


def render_preferences(family, versions, branch, other_branches, names, exclude=()):
    """The family pinned to exactly `versions` (one stanza each: every package version string of
    the install, e.g. 580.95.05-0ubuntu0.24.04.1; exact, so the same upstream version from another
    origin, NVIDIA's 580.95.05-0ubuntu1, does not win), every other branch's names at -1. Both
    stanzas list exact names (`pin_names`): `names` are the package names apt and dpkg know."""
    if isinstance(versions, str):
        versions = [versions]
    keep, block = pin_names(names, family, exclude, branch, other_branches)
    text = ('# The NVIDIA driver family at exactly this driver version (exact names: globs would cost\n'
            '# every apt command a match against every package name)...\n')
    if keep:
        text += '\n'.join('Package: %s\nPin: version %s\nPin-Priority: 1001\n' % (' '.join(keep), v)
                          for v in versions)
    if block:
        text += ('\n'
                 '# ...and no package named for another branch (transitional packages included).\n'
                 'Package: %s\n'
                 'Pin: version *\n'
                 'Pin-Priority: -1\n') % ' '.join(block)
    return text


# ------------------------------------------------------------------------------------------
# Probes
# ------------------------------------------------------------------------------------------
def parse_madison(text, origins=(), not_origins=()):
    """{package: [versions]} from `apt-cache madison` output, keeping only the versions a source
    line offers whose URI contains one of `origins` (when given) and none of `not_origins`: the
    Ubuntu archive's driver, not the CUDA repository's of the same name, when the source is
    ubuntu (and the reverse)."""
    result = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split('|')]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            continue
        where = parts[2] if len(parts) > 2 else ''
        if origins and not any(o in where for o in origins):
            continue
        if any(o in where for o in not_origins):
            continue
        result.setdefault(parts[0], [])
        if parts[1] not in result[parts[0]]:
            result[parts[0]].append(parts[1])
    return result


def parse_dpkg(text, native_arch=None):
    """[{name, version, want, status}] for installed (or half-installed) packages. Names carry
    their architecture only when it is a foreign one (libnvidia-compute-580:i386), as apt prints
    them."""
    result = []
    for line in text.splitlines():
        parts = line.split('\t')
        if len(parts) < 4:
            continue
        name, version, want, status = parts[:4]
        if native_arch and name.endswith(':' + native_arch):
            name = name[:-len(native_arch) - 1]
        if status in ('not-installed', 'config-files', ''):
            continue
        result.append({'name': name, 'version': version, 'want': want, 'status': status})
    return result


def already_installed(install, installed):
    """True when every `name=version` (or bare `name`) in install is installed and configured at
    that version (any version for a bare name)."""
    have = {p['name']: p['version'] for p in installed if p['status'] == 'installed'}
    for spec in install:
        name, sep, version = spec.partition('=')
        if name not in have or (sep and have[name] != version):
            return False
    return True


def parse_simulation(text):
    changes = []
    for line in text.splitlines():
        match = _SIM_RE.match(line)
        if not match:
            continue
        verb, name, old, new = match.groups()
        if verb in ('Remv', 'Purg'):
            changes.append({'action': 'remove', 'name': name, 'from': old, 'to': None})
            continue
        if old is None:
            action = 'install'
        else:
            cmp = compare_versions(new, old) if new else 0
            action = 'upgrade' if cmp > 0 else ('downgrade' if cmp < 0 else 'reinstall')
        changes.append({'action': action, 'name': name, 'from': old, 'to': new})
    return changes


def describe(change):
    """'install nvidia-utils-580 580.95.05-1', 'upgrade x 1 -> 2', 'remove y 545.29.06-1'."""
    if change['action'] == 'install':
        return 'install %s %s' % (change['name'], change['to'])
    if change['action'] == 'remove':
        return 'remove %s %s' % (change['name'], change['from'] or '')
    return '%s %s %s -> %s' % (change['action'], change['name'], change['from'], change['to'])


def unmet_lines(text):
    keep = []
    capture = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('The following packages have unmet dependencies'):
            capture = True
            continue
        if stripped.startswith(('E:', 'W:')) and not stripped.startswith('W: Unable to read'):
            keep.append(stripped)
            capture = False
            continue
        if capture and stripped:
            keep.append(stripped)
    return keep


_UNMET_NAME_RE = re.compile(r'(?:Depends|PreDepends|Pre-Depends|Recommends):\s*([a-z0-9][a-z0-9.+-]+)')


def unmet_other_branch(lines, branch):
    """Package names in apt's unmet-dependency lines that are named for another branch."""
    names = []
    for line in lines:
        for name in _UNMET_NAME_RE.findall(line):
            other = name_branch(name)
            if other is not None and other != branch and name not in names:
                names.append(name)
    return names


def _driver_like(version):
    return re.match(r'^\d{3,4}\.', upstream_of(version or '')) is not None


def off_branch(family_installed, branch, upstream, versioned_apart=()):
    """Installed family packages that do not belong to this driver: named for another branch, or
    on this branch (or unversioned, NVIDIA's 590+ names) at another driver version. Names in
    ``versioned_apart`` carry their own version (Debian's nvidia-persistenced) and never count."""
    result = []
    for pkg in family_installed:
        if pkg['name'].split(':', 1)[0] in versioned_apart:
            continue
        named = pkg['branch']
        up = upstream_of(pkg['version'])
        if named is None:
            if _driver_like(pkg['version']) and version_branch(pkg['version']) == branch and up != upstream:
                result.append('%s %s' % (pkg['name'], pkg['version']))
            continue
        if named != branch or (_driver_like(pkg['version']) and up != upstream):
            result.append('%s %s' % (pkg['name'], pkg['version']))
    return result


def version_named_leftovers(family_installed, branch, upstream):
    """Installed packages named for another version of this branch (nvidia-firmware-580-580.82.07
    once 580.95.05 is installed): nothing depends on them after the change, and they must go, or
    the installed driver is not one version."""
    names = []
    for pkg in family_installed:
        match = _NAME_VERSION_RE.search(pkg['name'])
        if match and pkg['branch'] == branch and match.group(1) != upstream:
            names.append(pkg['name'])
    return names


def parse_show(text):
    """[{Package, Version, Depends}] from `apt-cache show` stanzas."""
    stanzas, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
            continue
        if line[:1] in (' ', '\t'):
            continue
        key, sep, value = line.partition(':')
        if sep and key in ('Package', 'Version', 'Depends'):
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def kernel_following_version(name, stanzas, upstream):
    """Newest version of a kernel-following package (Canonical's linux-modules-nvidia-*) whose
    nvidia-kernel-common dependency names exactly this driver version (its build), or None."""
    wanted = re.compile(r'nvidia-kernel-common[^\s,(]*\s*\(>=\s*%s\)' % re.escape(upstream))
    versions = [st['Version'] for st in stanzas
                if st.get('Package') == name and st.get('Version') and wanted.search(st.get('Depends', ''))]
    return sort_versions(versions)[0] if versions else None


def released_status(status_text, names):
    """dpkg's status file with the holds of `names` released (the role releases them the same way
    before it installs), every other hold kept."""
    out, package = [], None
    for line in status_text.splitlines(True):
        if line.startswith('Package: '):
            package = line[len('Package: '):].strip()
        elif line.startswith('Status: hold ') and package in names:
            line = 'Status: install ' + line[len('Status: hold '):]
        out.append(line)
    return ''.join(out)


def family_after(family_installed, changes, family, exclude):
    current = dict((p['name'], p['selection']) for p in family_installed)
    for change in changes:
        name = change['name']
        if change['action'] == 'remove':
            current.pop(name, None)
        elif in_family(name, family, exclude):
            current.setdefault(name, 'install')
    return [dict(name=n, selection=current[n]) for n in sorted(current)]


# ------------------------------------------------------------------------------------------
# Resolution
# ------------------------------------------------------------------------------------------
class PlanError(Exception):
    pass


def resolve(packages, branch, version, keep_installed, offered, installed_versions):
    """(version, resolved_from, available) for the main package."""
    main = packages[0]
    every = sort_versions(offered.get(main, []))
    available = [v for v in every if version_branch(v) == branch]
    installed = installed_versions.get(main)
    if version:
        candidates = available + ([installed] if installed else [])
        for cand in candidates:
            if cand == version:
                return cand, 'variable', available
        same = [c for c in candidates if upstream_of(c) == version]
        if same:
            return sort_versions(same)[0], 'variable', available
        raise PlanError('%s has no version %s in the configured repositories (versions of branch '
                        '%s: %s; all: %s). Set nvidia_driver_version to one of them, or leave it '
                        'unset for the newest of the branch'
                        % (main, version, branch, ', '.join(available) or 'none',
                           ', '.join(every) or 'none'))
    if keep_installed and installed and version_branch(installed) == branch:
        return installed, 'installed', available
    if available:
        return available[0], 'newest', available
    raise PlanError('no version of %s on branch %s in the configured repositories (offered: %s). '
                    'Check the package source (nvidia_driver_source) and the repository, or pick '
                    'another branch' % (main, branch, ', '.join(every) or 'none'))


def companion_version(name, version, offered, installed_versions):
    versions = sort_versions(offered.get(name, []) + ([installed_versions[name]]
                                                      if name in installed_versions else []))
    if version in versions:
        return version
    same = [v for v in versions if upstream_of(v) == upstream_of(version)]
    if same:
        return same[0]
    raise PlanError('%s has no version with the driver version %s (offered: %s): it must match the '
                    'driver exactly' % (name, upstream_of(version), ', '.join(versions) or 'none'))


# ------------------------------------------------------------------------------------------
# The probe's view: is the family installed, at one version, held and pinned as the role leaves it?
# ------------------------------------------------------------------------------------------
def family_findings(res, packages, pin_text, names=()):
    """(status, reasons) of the NVIDIA family on a host, for the probe.

    ``res``: install (names, in the order the role installs them), version_from (the package whose
    version is the driver's; default install[0]), pre_install, version (the wanted upstream or exact
    version, or None: whatever is installed on the branch), branch, family/exclude (pin globs),
    kernel_following (globs, never held), other_branches, preferences_path.
    ``packages``: {name: {version, selection, status}} (dpkg); ``pin_text``: the preferences file or None;
    ``names``: the package names apt knows (``apt-cache pkgnames``).
    Same names and the same render_preferences as the role, so the probe checks what it sets."""
    installed = dict((n, p) for n, p in packages.items() if p.get('status') == 'installed')
    family, exclude = res.get('family') or [], res.get('exclude') or []
    following = res.get('kernel_following') or []

    def is_following(name):
        return any(fnmatch.fnmatchcase(name, g) for g in following)

    branch = str(res['branch'])
    install = list(res.get('install') or [])
    main = res.get('version_from') or (install[0] if install else None)
    reasons = []
    if main is None:
        return 'error', ['no driver package named']
    if main not in installed:
        missing = [n for n in install + (res.get('pre_install') or []) if n not in installed]
        return 'absent', ['NVIDIA driver not installed (%s missing)' % ', '.join(missing or [main])]
    version = installed[main]['version']
    upstream = upstream_of(version)
    if version_branch(version) != branch:
        reasons.append('%s %s is branch %s, wanted branch %s' % (main, version, version_branch(version), branch))
    wanted = res.get('version')
    if wanted and version != wanted and upstream != wanted:
        reasons.append('driver %s installed, wanted %s' % (version, wanted))
    for name in (res.get('pre_install') or []) + install:
        pkg = installed.get(name)
        if pkg is None:
            reasons.append('%s not installed' % name)
        elif not is_following(name) and name not in (res.get('pre_install') or []) \
                and _driver_like(pkg['version']) and upstream_of(pkg['version']) != upstream:
            reasons.append('%s %s is not driver %s' % (name, pkg['version'], upstream))
    family_installed = [dict(name=n, version=p['version'], branch=name_branch(n), selection=p.get('selection'))
                        for n, p in sorted(installed.items()) if in_family(n, family, exclude)]
    stray = off_branch(family_installed, branch, upstream, res.get('versioned_apart') or ())
    stray += ['%s (named for another version)' % n
              for n in version_named_leftovers(family_installed, branch, upstream)]
    if stray:
        reasons.append('left from another driver: %s' % ', '.join(stray))
    unheld = [p['name'] for p in family_installed if not is_following(p['name']) and p['selection'] != 'hold']
    if unheld:
        reasons.append('not held: %s (apt-mark hold; unattended upgrades could replace them)' % ', '.join(unheld))
    held = [p['name'] for p in family_installed if is_following(p['name']) and p['selection'] == 'hold']
    if held:
        reasons.append('held but must follow the kernel: %s' % ', '.join(held))
    pinned = [version]
    for name in install:
        pkg = installed.get(name)
        if pkg is not None and not is_following(name) and pkg['version'] not in pinned:
            pinned.append(pkg['version'])
    known = set(names) | set(installed)
    expected = render_preferences(family, pinned or [version], branch, res.get('other_branches') or [],
                                  known, exclude)
    path = res.get('preferences_path') or 'the apt pin'
    if pin_text is None:
        reasons.append('%s is missing: nothing pins the driver to %s' % (path, version))
    elif expected not in pin_text:
        have = re.findall(r'(?m)^Pin: version (\S+)\nPin-Priority: 1001$', pin_text)
        if have != list(pinned or [version]):
            reasons.append('%s does not pin exactly %s (pins %s)'
                           % (path, ', '.join(pinned or [version]), ', '.join(have) or 'nothing'))
        else:
            listed = set(w for ln in pin_text.splitlines() if ln.startswith('Package:') for w in ln.split()[1:])
            keep, block = pin_names(known, family, exclude, branch, res.get('other_branches') or [])
            new = sorted(set(keep + block) - listed)
            if not new:
                reasons.append('%s differs from what rigkeeper writes' % path)
            elif not reasons:
                # Names a source added since the pin was written (another repository, a new branch
                # after apt update): the pin still holds the driver; the role lists them when it
                # next applies. A warning, so a second run is not a change.
                return 'warn', ['%s does not list %s (apt offers them since the pin was written; the '
                                'role adds them when it next applies)'
                                % (path, ', '.join(new[:5]) + (' and %d more' % (len(new) - 5) if len(new) > 5 else ''))]
            else:
                reasons.append('%s does not list %d package name(s) apt offers now' % (path, len(new)))
    return ('drift' if reasons else 'ok'), reasons
