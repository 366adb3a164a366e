#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nvidia_driver_apt_plan
short_description: Resolve the exact NVIDIA driver version to pin and simulate installing it
description:
  - Read-only. Resolves the exact package version of a driver branch (the wanted version, the
    installed one, or the newest one the configured repositories offer), renders the apt
    preferences that pin the whole NVIDIA family to it, and asks C(apt-get --simulate) what
    installing the package set with those preferences would change, ignoring dpkg holds.
  - Reports the installed NVIDIA family packages with their dpkg selection (hold or not), the
    packages of other branches that would be left over (to remove), and the unmet dependencies
    apt reports. A transitional package that depends on another branch's packages shows up as
    an unmet dependency, because the preferences forbid every other branch (priority -1).
  - The preferences are written to the module's private temporary directory for the
    simulation only; nothing on the host changes.
version_added: 0.1.0
author:
  - rigkeeper contributors
attributes:
  check_mode:
    description: Can run in check_mode; it never changes anything.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  packages:
    description:
      - Packages to install, the driver's main package first. Its version is the one resolved;
        every other package gets the same version, or failing that the newest version with the
        same upstream part (for example a fabric manager packaged with another revision).
    type: list
    elements: str
    required: true
  pre_packages:
    description:
      - Packages installed before the others, at the newest version offered (NVIDIA's
        C(nvidia-driver-pinning-<branch>) from 590 on).
    type: list
    elements: str
    default: []
  version_from:
    description:
      - The package whose version is the driver version (from 590 on, NVIDIA's unversioned
        C(libnvidia-compute)); by default the first of O(packages). Never the pinning package.
    type: str
  kernel_following:
    description:
      - Globs of packages versioned with the kernel, not the driver (Canonical's
        C(linux-modules-nvidia-*)). Their version is the newest build whose C(nvidia-kernel-common)
        dependency names exactly the driver version; they are never held.
    type: list
    elements: str
    default: []
  origins:
    description:
      - Take versions only from sources whose URI contains one of these (madison's third column);
        empty - any. The role passes the package source's repository.
    type: list
    elements: str
    default: []
  not_origins:
    description:
      - Never take versions from sources whose URI contains one of these (the CUDA repository when
        the source is the Ubuntu archive, so the same upstream version rebuilt by NVIDIA does not win).
    type: list
    elements: str
    default: []
  other_branches:
    description:
      - The other driver branches; the preferences forbid packages named for any of them
        (priority -1, one glob list, cheap for apt).
    type: list
    elements: str
    default: []
  preferences_path:
    description: Rigkeeper's own preferences file, replaced in the simulation by the new one.
    type: path
    default: /etc/apt/preferences.d/rigkeeper-nvidia
  version_named:
    description:
      - Packages named for one driver version (C({upstream}) is replaced by it, 580.95.05), installed
        at the driver's version when the repositories offer them (the GSP firmware,
        C(nvidia-firmware-580-{upstream})). One more C(apt-cache madison) call once the version is known.
    type: list
    elements: str
    default: []
  extra_packages:
    description:
      - Packages of the family installed at the version the repositories offer, not the driver's
        (Debian's C(nvidia-persistenced) is versioned apart from its driver).
    type: list
    elements: str
    default: []
  branch:
    description: The driver branch, for example C(580).
    type: str
    required: true
  version:
    description:
      - Exact version of the main package (C(580.95.05-0ubuntu0.24.04.1)) or its upstream part
        (C(580.95.05)). When unset, see O(keep_installed).
    type: str
  keep_installed:
    description:
      - With O(version) unset, keep the installed version of the main package when it is on
        O(branch); otherwise (or when not installed) use the newest version of the branch the
        repositories offer.
    type: bool
    default: true
  family:
    description: Globs naming the NVIDIA package family (apt preferences, holds).
    type: list
    elements: str
    required: true
  exclude:
    description: Globs the O(family) globs catch that are versioned apart from the driver.
    type: list
    elements: str
    default: []
  remove_other_branches:
    description: Plan the removal of installed family packages named for another branch.
    type: bool
    default: true
  install_recommends:
    description: Simulate with recommended packages, as the install will run.
    type: bool
    default: false
  simulate:
    description: Run C(apt-get --simulate); when false only the resolution is returned.
    type: bool
    default: true
notes:
  - The package and branch names follow Ubuntu's, NVIDIA's CUDA repository's and Debian's
    naming. A name carries a branch when one of its dash-separated parts, after C(nvidia-) and
    words starting with a letter, is a 3 or 4 digit number (C(libnvidia-compute-580),
    C(nvidia-driver-535-server), C(linux-modules-nvidia-580-generic), C(cuda-drivers-580),
    C(nvidia-tesla-535-driver)).
  - Commands run with C(LC_ALL=C).
requirements:
  - apt-get, apt-cache and dpkg-query (Debian and Ubuntu)
'''

EXAMPLES = r'''
- name: Resolve and simulate the driver change
  nvidia_driver_apt_plan:
    packages: [nvidia-driver-580-open]
    branch: "580"
    family: [nvidia-*, libnvidia-*, cuda-drivers*, xserver-xorg-video-nvidia*]
    exclude: [nvidia-container-*, libnvidia-container*]
  register: plan
'''

RETURN = r'''
version:
  description: Exact version of the main package that will be pinned.
  returned: success
  type: str
  sample: 580.95.05-0ubuntu0.24.04.1
upstream:
  description: Upstream part of RV(version) (the driver version nvidia-smi reports).
  returned: success
  type: str
  sample: 580.95.05
pinned_versions:
  description: The exact versions the preferences pin the family to (one stanza each).
  returned: success
  type: list
  elements: str
pin_version:
  description: RV(upstream) with any revision (for messages; the preferences pin exact versions).
  returned: success
  type: str
  sample: 580.95.05-*
resolved_from:
  description: C(variable), C(installed) or C(newest).
  returned: success
  type: str
available:
  description: Versions of the main package on the branch that the repositories offer, newest first.
  returned: success
  type: list
  elements: str
install:
  description: C(name=version) for each package, in the form the apt module takes.
  returned: success
  type: list
  elements: str
preferences:
  description: The apt preferences stanzas (without a header comment).
  returned: success
  type: str
block_globs:
  description: The globs of the names of other branches (the preferences' priority -1 stanza).
  returned: success
  type: list
  elements: str
installed_family:
  description: Installed family packages (excludes left out) with version, branch from the name, and selection.
  returned: success
  type: list
  elements: dict
  sample: [{name: nvidia-utils-545, version: 545.29.06-0ubuntu0.24.04.1, branch: "545", selection: hold}]
installed_driver:
  description: The installed version of the main package, or null.
  returned: success
  type: str
remove:
  description: >-
    Installed family packages named for another branch, or named for another version of this one
    (Ubuntu's version-named firmware, nvidia-firmware-580-580.82.07), to remove with the install.
  returned: success
  type: list
  elements: str
family_after:
  description: Family packages installed once the change is made, with their current selection (C(hold), C(install)).
  returned: success
  type: list
  elements: dict
holdable_after:
  description: RV(family_after) without the kernel-following packages (what the role holds).
  returned: success
  type: list
  elements: dict
off_branch:
  description: Installed family packages named for another branch, or named for this branch at another driver version.
  returned: success
  type: list
  elements: str
unmet_branches:
  description: Other branches named by the packages in the unmet dependencies (a transitional package pulling them).
  returned: success
  type: list
  elements: str
unmet_packages:
  description: Packages named in the unmet dependencies that belong to another branch.
  returned: success
  type: list
  elements: str
summary:
  description: RV(changes) as one line each (C(install nvidia-utils-580 580.95.05-1), C(upgrade x 1 -> 2)).
  returned: success
  type: list
  elements: str
simulation_skipped:
  description: >-
    True when apt was not asked: every package to install is installed at exactly its version and
    nothing is to be removed, so C(changes) is empty without a simulation.
  returned: when simulate is true and nothing is to change
  type: bool
changes:
  description: What apt would do, from C(apt-get --simulate).
  returned: success
  type: list
  elements: dict
  sample: [{action: install, name: nvidia-utils-580, from: null, to: 580.95.05-0ubuntu0.24.04.1}]
unmet:
  description: Unmet-dependency and error lines from the simulation; empty when apt can do it.
  returned: success
  type: list
  elements: str
cross_branch:
  description: Packages the simulation would install whose version or name is on another branch.
  returned: success
  type: list
  elements: str
'''

import fnmatch
import os
import re

from ansible.module_utils.basic import AnsibleModule

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
    epoch, _, rest = version.partition(':') if ':' in version else ('0', '', version)
    if '-' in rest:
        upstream, _, revision = rest.rpartition('-')
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


def render_preferences(family, versions, branch, other_branches):
    """The family pinned to exactly `versions` (one stanza each: every package version string of
    the install, e.g. 580.95.05-0ubuntu0.24.04.1; exact, so the same upstream version from another
    origin, NVIDIA's 580.95.05-0ubuntu1, does not win), every other branch's names at -1."""
    if isinstance(versions, str):
        versions = [versions]
    block = block_globs(family, other_branches)
    text = '# The whole NVIDIA family at exactly this driver version...\n' + '\n'.join(
        'Package: %s\nPin: version %s\nPin-Priority: 1001\n' % (' '.join(family), v) for v in versions)
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


def off_branch(family_installed, branch, upstream):
    """Installed family packages that do not belong to this driver: named for another branch, or
    on this branch (or unversioned, NVIDIA's 590+ names) at another driver version."""
    result = []
    for pkg in family_installed:
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


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            packages=dict(type='list', elements='str', required=True),
            pre_packages=dict(type='list', elements='str', default=[]),
            version_from=dict(type='str'),
            kernel_following=dict(type='list', elements='str', default=[]),
            other_branches=dict(type='list', elements='str', default=[]),
            origins=dict(type='list', elements='str', default=[]),
            not_origins=dict(type='list', elements='str', default=[]),
            preferences_path=dict(type='path', default='/etc/apt/preferences.d/rigkeeper-nvidia'),
            extra_packages=dict(type='list', elements='str', default=[]),
            version_named=dict(type='list', elements='str', default=[]),
            branch=dict(type='str', required=True),
            version=dict(type='str'),
            keep_installed=dict(type='bool', default=True),
            family=dict(type='list', elements='str', required=True),
            exclude=dict(type='list', elements='str', default=[]),
            remove_other_branches=dict(type='bool', default=True),
            install_recommends=dict(type='bool', default=False),
            simulate=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )


DPKG_STATUS = '/var/lib/dpkg/status'


def _simulation_config(module, preferences, family_names, status_path=None):
    """apt options that simulate on the host's own configuration, changed only where the run
    changes it: rigkeeper's preferences file replaced, the family's holds released."""
    tmpdir = module.tmpdir
    parts = os.path.join(tmpdir, 'preferences.d')
    os.makedirs(parts, exist_ok=True)
    ours = os.path.basename(module.params['preferences_path'])
    here = os.path.dirname(module.params['preferences_path']) or '/etc/apt/preferences.d'
    if os.path.isdir(here):
        for name in sorted(os.listdir(here)):
            src = os.path.join(here, name)
            if name == ours or not os.path.isfile(src):
                continue
            with open(src) as handle, open(os.path.join(parts, name), 'w') as copy:
                copy.write(handle.read())
    with open(os.path.join(parts, ours), 'w') as handle:
        handle.write(preferences)
    opts = ['-o', 'Dir::Etc::PreferencesParts=%s' % parts]
    try:
        with open(status_path or DPKG_STATUS) as handle:
            status = handle.read()
    except (IOError, OSError):
        status = None
    if status is not None:
        copy = os.path.join(tmpdir, 'status')
        with open(copy, 'w') as handle:
            handle.write(released_status(status, set(family_names)))
        opts += ['-o', 'Dir::State::status=%s' % copy]
    return opts


def run_module(module):
    params = module.params
    packages = params['packages']
    branch = str(params['branch']).strip()
    if not packages:
        module.fail_json(msg='packages must name at least the driver package')
    if not re.match(r'^\d{3,4}$', branch):
        module.fail_json(msg='branch %r is not a driver branch number (e.g. 580)' % branch)
    family, exclude = params['family'], params['exclude']
    following = params['kernel_following']
    main_pkg = params['version_from'] or packages[0]
    env = {'LC_ALL': 'C', 'LANG': 'C'}
    module.run_command_environ_update = env

    rc, native, err = module.run_command(['dpkg', '--print-architecture'])
    if rc != 0:
        module.fail_json(msg='dpkg --print-architecture failed', rc=rc, stderr=err)
    rc, out, err = module.run_command(
        ['dpkg-query', '-W', '-f',
         '${binary:Package}\t${Version}\t${db:Status-Want}\t${db:Status-Status}\n'])
    if rc != 0:
        module.fail_json(msg='dpkg-query failed', rc=rc, stdout=out, stderr=err)
    installed = parse_dpkg(out, native.strip())
    installed_versions = {p['name']: p['version'] for p in installed}
    family_installed = [dict(name=p['name'], version=p['version'], branch=name_branch(p['name']),
                             selection=p['want'])
                        for p in installed if in_family(p['name'], family, exclude)]

    is_following = lambda name: any(fnmatch.fnmatchcase(name, g) for g in following)  # noqa: E731
    asked = [main_pkg] + [n for n in packages if n != main_pkg] + params['pre_packages']
    apt_cache = module.get_bin_path('apt-cache', True)
    rc, out, err = module.run_command([apt_cache, 'madison'] + asked)
    # madison exits 0 even for unknown names; anything else is a broken apt setup.
    if rc != 0:
        module.fail_json(msg='apt-cache madison failed: %s' % err.strip(), rc=rc, stdout=out, stderr=err)
    offered = parse_madison(out, params['origins'], params['not_origins'])
    stanzas = []
    if any(is_following(n) for n in packages):
        rc, out, err = module.run_command([apt_cache, 'show'] + [n for n in packages if is_following(n)])
        stanzas = parse_show(out) if rc == 0 else []

    try:
        version, resolved_from, available = resolve([main_pkg] + packages, branch, params['version'],
                                                    params['keep_installed'], offered,
                                                    installed_versions)
        install = []
        for name in params['pre_packages']:
            newest = sort_versions(offered.get(name, []))
            if not newest:
                raise PlanError('%s is not offered by the configured repositories: from branch 590 on, '
                                "NVIDIA's pinning package must be installed before the driver" % name)
            install.append('%s=%s' % (name, newest[0]))
        for name in packages:
            if name == main_pkg:
                install.append('%s=%s' % (name, version))
            elif is_following(name):
                build = kernel_following_version(name, stanzas, upstream_of(version))
                if build is None:
                    offered_builds = sorted(set(st.get('Version', '') for st in stanzas if st.get('Package') == name))
                    raise PlanError('%s has no build for driver %s (builds offered: %s): Canonical publishes the '
                                    'precompiled modules of a driver version some time after it; use DKMS '
                                    '(nvidia_driver_modules: dkms) or another driver version'
                                    % (name, upstream_of(version), ', '.join(offered_builds) or 'none'))
                install.append('%s=%s' % (name, build))
            else:
                install.append('%s=%s' % (name, companion_version(name, version, offered, installed_versions)))
        named = [t.replace('{upstream}', upstream_of(version)) for t in params['version_named']]
        named = [n for n in named if n not in [s.split('=', 1)[0] for s in install]]
        if named:
            rc, out, err = module.run_command([apt_cache, 'madison'] + named)
            offered_named = parse_madison(out, params['origins'], params['not_origins']) if rc == 0 else {}
            for name in named:
                same = [v for v in sort_versions(offered_named.get(name, []) +
                                                 ([installed_versions[name]] if name in installed_versions else []))
                        if upstream_of(v) == upstream_of(version)]
                if same:
                    install.append('%s=%s' % (name, version if version in same else same[0]))
        install += params['extra_packages']
    except PlanError as exc:
        module.fail_json(msg=str(exc), offered=offered)
    if version_branch(version) != branch:
        module.fail_json(msg='%s %s is not on branch %s' % (main_pkg, version, branch))

    upstream = upstream_of(version)
    remove = []
    if params['remove_other_branches']:
        remove = [p['name'] for p in family_installed
                  if p['branch'] is not None and p['branch'] != branch]
    asked_names = set(spec.split('=', 1)[0] for spec in install)
    remove += [n for n in version_named_leftovers(family_installed, branch, upstream)
               if n not in remove and n not in asked_names]

    # Exact versions (each distinct version of the install, kernel-following builds left out: they
    # carry the kernel's), so the pin names one build of one origin.
    # The driver's own version first (version_from may not be among the packages installed: the
    # libraries of NVIDIA's 590+ repository carry another revision than its metapackages).
    pinned = [version]
    for spec in install:
        name, _sep, ver = spec.partition('=')
        if ver and not is_following(name) and name not in params['pre_packages'] and ver not in pinned:
            pinned.append(ver)
    preferences = render_preferences(family, pinned or [version], branch, params['other_branches'])
    result = dict(
        changed=False,
        version=version,
        upstream=upstream,
        pin_version=pin_glob(version),
        pinned_versions=pinned or [version],
        resolved_from=resolved_from,
        available=available,
        install=install,
        preferences=preferences,
        block_globs=block_globs(family, params['other_branches']),
        installed_family=family_installed,
        installed_driver=installed_versions.get(main_pkg),
        remove=remove,
        off_branch=off_branch(family_installed, branch, upstream),
        family_after=family_after(family_installed, [], family, exclude),
        changes=[],
        summary=[],
        unmet=[],
        unmet_packages=[],
        unmet_branches=[],
        cross_branch=[],
    )
    result['holdable_after'] = [p for p in result['family_after'] if not is_following(p['name'])]
    if not params['simulate']:
        module.exit_json(**result)
    if not remove and already_installed(install, installed):
        # apt would do nothing: every package asked for is installed, configured, at exactly that
        # version (so its dependencies are met), and nothing is to be removed. The simulation would
        # only confirm it, at the price of a full dependency-cache build (seconds on a big index).
        result.update(simulation_rc=0, simulation_skipped=True)
        module.exit_json(**result)

    cmd = [module.get_bin_path('apt-get', True), '--simulate'] + \
        _simulation_config(module, preferences, [p['name'] for p in family_installed]) + \
        ['-o', 'APT::Get::Show-Versions=false', '-o', 'Debug::NoLocking=true',
         '--allow-downgrades',
         '--install-recommends' if params['install_recommends'] else '--no-install-recommends',
         'install'] + install + \
        ['%s-' % name for name in remove]
    rc, out, err = module.run_command(cmd)
    result['simulation_rc'] = rc
    if rc == 0:
        result['changes'] = parse_simulation(out)
    else:
        result['unmet'] = unmet_lines(out + '\n' + err) or [(err or out).strip()]
        result['unmet_packages'] = unmet_other_branch(result['unmet'], branch)
        result['unmet_branches'] = sorted(set(name_branch(n) for n in result['unmet_packages']))
    result['family_after'] = family_after(family_installed, result['changes'], family, exclude)
    result['holdable_after'] = [p for p in result['family_after'] if not is_following(p['name'])]
    result['summary'] = [describe(c) for c in result['changes']]
    cross = []
    for change in result['changes']:
        if change['action'] == 'remove' or not in_family(change['name'], family, exclude):
            continue
        if is_following(change['name']):
            continue
        named = name_branch(change['name'])
        to = change['to'] or ''
        if named is None:
            # Unnamed members (nvidia-settings, Debian's libcuda1) carry their own version numbers;
            # NVIDIA's unversioned 590+ names carry the driver's.
            if _driver_like(to) and version_branch(to) != branch:
                cross.append('%s %s' % (change['name'], to))
            continue
        if named != branch or (_driver_like(to) and version_branch(to) != branch):
            cross.append('%s %s' % (change['name'], to))
    result['cross_branch'] = cross
    module.exit_json(**result)


def main():
    run_module(build_module())


if __name__ == '__main__':
    main()
