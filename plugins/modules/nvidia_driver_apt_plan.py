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
  - rigkeeper developers (@rigkeeper)
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
  versioned_apart:
    description:
      - Family members with their own version (Debian's nvidia-persistenced, nvidia-settings), never
        reported in RV(off_branch).
    type: list
    elements: str
    default: []
  other_branches:
    description:
      - The other driver branches; the preferences forbid packages named for any of them
        (priority -1, the exact names apt and dpkg know, so apt matches no glob on each command).
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

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_apt import (  # noqa: F401 pylint: disable=unused-import
    split_version, _order, _compare_part, compare_versions, sort_versions, upstream_of,
    version_branch, pin_glob, name_branch, in_family, block_globs, pin_names, render_preferences,
    parse_madison, parse_dpkg, already_installed, parse_simulation, describe, unmet_lines,
    unmet_other_branch, _driver_like, off_branch, version_named_leftovers, parse_show,
    kernel_following_version, released_status, family_after, PlanError, resolve, companion_version,
    _NAME_BRANCH_RE, _NAME_VERSION_RE, _SIM_RE, _UNMET_NAME_RE,
)


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            packages=dict(type='list', elements='str', required=True),
            pre_packages=dict(type='list', elements='str', default=[]),
            version_from=dict(type='str'),
            kernel_following=dict(type='list', elements='str', default=[]),
            other_branches=dict(type='list', elements='str', default=[]),
            versioned_apart=dict(type='list', elements='str', default=[]),
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

    def is_following(name):
        return any(fnmatch.fnmatchcase(name, g) for g in following)

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
    # The names the pin lists: every family name apt knows or dpkg has installed.
    rc, out, err = module.run_command([apt_cache, 'pkgnames'])
    if rc != 0:
        module.fail_json(msg='apt-cache pkgnames failed: %s' % err.strip(), rc=rc, stdout=out, stderr=err)
    known = set(out.split()) | set(p['name'] for p in family_installed)
    preferences = render_preferences(family, pinned or [version], branch, params['other_branches'], known, exclude)
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
        block_names=pin_names(known, family, exclude, branch, params['other_branches'])[1],
        installed_family=family_installed,
        installed_driver=installed_versions.get(main_pkg),
        remove=remove,
        off_branch=off_branch(family_installed, branch, upstream, params['versioned_apart']),
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
