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
    family: [nvidia-*, libnvidia-*, cuda-drivers*, xserver-xorg-video-nvidia-*]
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
pin_version:
  description: The glob of the preferences' C(Pin) version line (RV(upstream) with any revision).
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
block_regex:
  description: The POSIX extended regular expression of the names of other branches.
  returned: success
  type: str
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
  description: Installed family packages named for another branch, to remove after the install.
  returned: success
  type: list
  elements: str
family_after:
  description: Family packages installed once the change is made, with their current selection (C(hold), C(install)).
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
# The same shape in POSIX ERE for apt preferences, with the branch alternatives filled in.
_BLOCK_ERE = ('^((lib|xserver-xorg-video-|linux-(modules|objects|signatures)-)?nvidia-'
              '([a-z][a-z0-9.+]*-)*|cuda-drivers-)({numbers})(-.*)?$')
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


def other_numbers_ere(branch):
    """POSIX ERE alternatives for every 3 and 4 digit number except ``branch``."""
    digits = '0123456789'
    alternatives = []
    for length in (3, 4):
        if len(branch) != length:
            alternatives.append('[0-9]{%d}' % length)
            continue
        for pos, char in enumerate(branch):
            rest = digits.replace(char, '')
            alternatives.append(branch[:pos] + '[' + rest + ']'
                                + ('[0-9]{%d}' % (length - pos - 1) if pos < length - 1 else ''))
    return '|'.join(alternatives)


def block_regex(branch):
    return _BLOCK_ERE.format(numbers=other_numbers_ere(branch))


def render_preferences(family, version_glob, branch):
    return ('# The whole NVIDIA family at exactly this driver version...\n'
            'Package: %s\n'
            'Pin: version %s\n'
            'Pin-Priority: 1001\n'
            '\n'
            '# ...and no package named for another branch (transitional packages included).\n'
            'Package: /%s/\n'
            'Pin: version *\n'
            'Pin-Priority: -1\n') % (' '.join(family), version_glob, block_regex(branch))


# ------------------------------------------------------------------------------------------
# Probes
# ------------------------------------------------------------------------------------------
def parse_madison(text):
    """{package: [versions]} from `apt-cache madison` output."""
    result = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split('|')]
        if len(parts) >= 2 and parts[0] and parts[1]:
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


def off_branch(family_installed, branch, upstream):
    """Installed family packages that do not belong to this driver."""
    result = []
    for pkg in family_installed:
        named = pkg['branch']
        if named is None:
            continue
        up = upstream_of(pkg['version'])
        looks_like_driver = re.match(r'^\d{3,4}\.', up) is not None
        if named != branch or (looks_like_driver and up != upstream):
            result.append('%s %s' % (pkg['name'], pkg['version']))
    return result


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
            extra_packages=dict(type='list', elements='str', default=[]),
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


def run_module(module):
    params = module.params
    packages = params['packages']
    branch = str(params['branch']).strip()
    if not packages:
        module.fail_json(msg='packages must name at least the driver package')
    if not re.match(r'^\d{3,4}$', branch):
        module.fail_json(msg='branch %r is not a driver branch number (e.g. 580)' % branch)
    family, exclude = params['family'], params['exclude']
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

    rc, out, err = module.run_command([module.get_bin_path('apt-cache', True), 'madison'] + packages)
    # madison exits 0 even for unknown names; anything else is a broken apt setup.
    if rc != 0:
        module.fail_json(msg='apt-cache madison failed: %s' % err.strip(), rc=rc, stdout=out, stderr=err)
    offered = parse_madison(out)

    try:
        version, resolved_from, available = resolve(packages, branch, params['version'],
                                                    params['keep_installed'], offered,
                                                    installed_versions)
        install = ['%s=%s' % (packages[0], version)]
        for name in packages[1:]:
            install.append('%s=%s' % (name, companion_version(name, version, offered,
                                                               installed_versions)))
        install += params['extra_packages']
    except PlanError as exc:
        module.fail_json(msg=str(exc), offered=offered)
    if version_branch(version) != branch:
        module.fail_json(msg='%s %s is not on branch %s' % (packages[0], version, branch))

    remove = []
    if params['remove_other_branches']:
        remove = [p['name'] for p in family_installed
                  if p['branch'] is not None and p['branch'] != branch]

    preferences = render_preferences(family, pin_glob(version), branch)
    result = dict(
        changed=False,
        version=version,
        upstream=upstream_of(version),
        pin_version=pin_glob(version),
        resolved_from=resolved_from,
        available=available,
        install=install,
        preferences=preferences,
        block_regex=block_regex(branch),
        installed_family=family_installed,
        installed_driver=installed_versions.get(packages[0]),
        remove=remove,
        off_branch=off_branch(family_installed, branch, upstream_of(version)),
        family_after=family_after(family_installed, [], family, exclude),
        changes=[],
        summary=[],
        unmet=[],
        unmet_packages=[],
        unmet_branches=[],
        cross_branch=[],
    )
    if not params['simulate']:
        module.exit_json(**result)
    if not remove and already_installed(install, installed):
        # apt would do nothing: every package asked for is installed, configured, at exactly that
        # version (so its dependencies are met), and nothing is to be removed. The simulation would
        # only confirm it, at the price of a full dependency-cache build (seconds on a big index).
        result.update(simulation_rc=0, simulation_skipped=True)
        module.exit_json(**result)

    tmpdir = module.tmpdir
    prefs = os.path.join(tmpdir, 'rigkeeper-nvidia.pref')
    parts = os.path.join(tmpdir, 'preferences.d')
    os.makedirs(parts, exist_ok=True)
    with open(prefs, 'w') as handle:
        handle.write(preferences)
    cmd = [module.get_bin_path('apt-get', True), '--simulate', '--ignore-hold', '-o',
           'Dir::Etc::Preferences=%s' % prefs, '-o', 'Dir::Etc::PreferencesParts=%s' % parts,
           '-o', 'APT::Get::Show-Versions=false', '-o', 'Debug::NoLocking=true',
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
    result['summary'] = [describe(c) for c in result['changes']]
    cross = []
    for change in result['changes']:
        if change['action'] == 'remove' or not in_family(change['name'], family, exclude):
            continue
        named = name_branch(change['name'])
        # Unnamed members (nvidia-settings, Debian's libcuda1) carry their own version numbers.
        if named is None:
            continue
        to = change['to'] or ''
        looks_like_driver = re.match(r'^\d{3,4}\.', upstream_of(to)) is not None
        if named != branch or (looks_like_driver and version_branch(to) != branch):
            cross.append('%s %s' % (change['name'], to))
    result['cross_branch'] = cross
    module.exit_json(**result)


def main():
    run_module(build_module())


if __name__ == '__main__':
    main()
