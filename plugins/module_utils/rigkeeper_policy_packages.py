# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: package names for a driver branch, a CUDA toolkit and cuDNN.

``rk_driver_packages`` (what to install, pin and hold, per package source), ``rk_cuda_packages``,
``rk_cudnn_packages``. Data: ``POLICY['packages']``, ``POLICY['cuda']``, ``POLICY['cudnn']``
(rigkeeper_policy_data.py). Pure Python; raises ``PolicyError``.
"""

from __future__ import annotations

import fnmatch
import re

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import (
    _BRANCHES, _as_bool, _err, _parse_branch
)
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_cuda import _parse_cuda


_FLAVOUR_RE = re.compile(r'[a-z][a-z0-9.+-]*')


def _glob_prefix(pattern):
    """'nvidia-container-*' -> 'nvidia-container-' (the literal part before the first wildcard)."""
    return re.split(r'[*?\[]', pattern, maxsplit=1)[0]


def _blacklist(patterns, not_family):
    """unattended-upgrades regexes (re.match on package names) for these family globs, skipping
    what ``not_family`` names (the container toolkit keeps its security updates)."""
    out = []
    for pattern in patterns:
        prefix = _glob_prefix(pattern)
        skip = [_glob_prefix(p)[len(prefix):] for p in not_family
                if _glob_prefix(p).startswith(prefix) and _glob_prefix(p) != prefix]
        regex = '^' + prefix.replace('.', r'\.')
        if skip:
            regex += '(?!' + '|'.join(x.replace('.', r'\.') for x in skip) + ')'
        if regex not in out:
            out.append(regex)
    return out


def rk_driver_packages(branch, source, flavor='proprietary', distro='ubuntu', server=False,
                       headless=False, modules='dkms', kernel_flavour='generic'):
    """Packages for a driver branch from a package source, and the globs that pin its family.

    Usage: ``decision.branch | rk_driver_packages('ubuntu', flavor=decision.flavor, server=true,
    modules=module_plan.modules)``

    :param branch: ``580`` or ``'580'`` (must be in the branch table).
    :param source: ``'ubuntu'`` (Ubuntu archive: ``nvidia-driver-<br>[-server][-open]``, headless
        ``nvidia-headless-<br>[-server][-open]`` + ``nvidia-utils-<br>[-server]``),
        ``'cuda'`` (NVIDIA's CUDA repo: ``cuda-drivers-<br>`` proprietary, ``nvidia-open-<br>`` open;
        from 590 the names drop the branch and ``nvidia-driver-pinning-<br>`` locks it), or
        ``'debian'`` (Debian 12 non-free, 535 only: ``nvidia-driver``, or
        ``nvidia-tesla-535-driver`` with ``server=True``).
    :param flavor: ``'proprietary'`` or ``'open'`` (take it from :func:`rk_driver_decision`).
    :param distro: ``'ubuntu'`` or ``'debian'`` (the host's); ``source='ubuntu'`` needs Ubuntu and
        ``source='debian'`` needs Debian.
    :param server: the Ubuntu ``-server`` (datacenter) packages; with ``'debian'`` the tesla driver;
        ignored (warning) for ``'cuda'``.
    :param headless: no X/desktop packages; mapped for ``source='ubuntu'`` only.
    :param modules: ``'dkms'`` (modules built on the host) or ``'precompiled'`` (take it from
        :func:`rk_module_plan`): Canonical's signed precompiled modules from the Ubuntu archive
        (source linux-restricted-modules; what a Secure Boot host without an enrolled MOK needs),
        ``source='ubuntu'`` only: ``nvidia-headless-no-dkms-<br>[-server][-open]``,
        ``nvidia-utils-<br>[-server]`` and the kernel-flavour meta
        ``linux-modules-nvidia-<br>[-server][-open]-<kernel_flavour>``, which depends on the module
        package of the current kernel ABI (``= kernel version``) and on
        ``nvidia-kernel-common-<br> (>= driver version)``. The X/desktop packages are not part of
        it (``headless=False`` gives a warning).
    :param kernel_flavour: the kernel flavour of the precompiled meta (``'generic'``,
        ``'generic-hwe-22.04'``, ``'lowlatency'``, ...); used with ``modules='precompiled'``.
    :returns: a dict:

        - ``pre_install``: packages to install *before* ``install`` in their own step, so apt
          resolves the driver under the lock: ``['nvidia-driver-pinning-<br>']`` for 590+ from the
          CUDA repo, else ``[]``.
        - ``install``: the driver packages (never the pinning package).
        - ``version_from``: the package whose version IS the driver version; resolve and verify
          the driver version from it, never from the pinning package (its version is its own) nor
          from a kernel-module meta (kernel versions): ``'libnvidia-compute'`` for 590+ from the CUDA
          repo, else ``install[0]``.
        - ``hold``: what this installs (``pre_install + install``) minus the kernel-following
          packages. Hold every *installed* package matching ``hold_patterns`` minus
          ``pin_exclude`` too.
        - ``pin_patterns``: globs naming the whole NVIDIA family (apt preferences);
          ``pin_exclude``: globs those catch that are versioned apart from the driver (the
          container toolkit).
        - ``hold_patterns``: ``pin_patterns`` minus ``kernel_following``.
        - ``kernel_following``: ``linux-modules-nvidia-*``, ``linux-objects-nvidia-*``,
          ``linux-signatures-nvidia-*``: they follow the kernel's ABI, so they are never held
          (kernel updates would arrive without their module) nor blacklisted.
        - ``pin_version``: ``'580.*'``. Use it as a *positive* pin only (``Pin: version 580.*``,
          priority >= 1000): some family members (``linux-modules-nvidia-*``, Ubuntu's
          ``nvidia-settings``) carry other version numbers.
        - ``other_branches``: every other branch in the table, as strings (``['535', ...]``), for
          apt preferences that block them by name.
        - ``unattended_blacklist``: Python regexes (unattended-upgrades applies ``re.match`` to
          package names) for the driver family only: not the container toolkit
          (``nvidia-container-*``, ``libnvidia-container*``, ``nvidia-docker*``: it keeps its
          security updates) and not the kernel-following packages.
        - ``version_named``: templates (``{upstream}``: the driver version, 580.95.05) of packages
          named for one driver version that the driver needs, installed with it when the archive
          offers them: Ubuntu's and NVIDIA's GSP firmware, ``nvidia-firmware-<br>[-server]-<version>``
          (``nvidia-firmware-<version>`` from 590 in NVIDIA's repository), which the open modules
          cannot start a GPU without (canonical/nvidia-graphics-drivers,
          debian/templates/nvidia-firmware-flavour-version.install.in). Named explicitly, not left
          to a dependency: the precompiled modules' packages are built apart from the driver's.
        - ``warnings``: [str].

        A package *name* does not pin a branch (transitional packages): verify the installed
        driver with :func:`rk_version_on_branch`.
    """
    br = _parse_branch(branch)
    if flavor not in ('proprietary', 'open'):
        raise _err(f"flavor {flavor!r} is not 'proprietary' or 'open' (take it from rk_driver_decision)")
    if distro not in ('ubuntu', 'debian'):
        raise _err(f"distro {distro!r} is not 'ubuntu' or 'debian' (rigkeeper supports Ubuntu 22.04/"
                   '24.04 and Debian 12)')
    if modules not in ('dkms', 'precompiled'):
        raise _err(f"modules {modules!r} is not 'dkms' or 'precompiled' (take it from rk_module_plan)")
    if not isinstance(kernel_flavour, str) or not _FLAVOUR_RE.fullmatch(kernel_flavour):
        raise _err(f"kernel_flavour {kernel_flavour!r} is not a kernel flavour like 'generic' (the part of "
                   "`uname -r` after the ABI, e.g. 6.8.0-51-generic -> 'generic')")
    server = _as_bool(server, 'server')
    headless = _as_bool(headless, 'headless')
    table = POLICY['packages']
    is_open = flavor == 'open'
    warnings = []
    patterns = list(table['family']['patterns'])
    pre_install = []
    version_from = None
    precompiled = table['ubuntu_precompiled']
    if modules == 'precompiled' and source not in precompiled['sources']:
        raise _err(f"modules 'precompiled' (Canonical's signed linux-modules-nvidia-* packages) exist only "
                   f"in the Ubuntu archive ({precompiled['source']}), not for source {source!r}: use "
                   "source 'ubuntu', or modules 'dkms' (with Secure Boot on: enrol a MOK, see "
                   'rk_module_plan)')

    if source == 'ubuntu':
        if distro != 'ubuntu':
            raise _err("source 'ubuntu' (the Ubuntu archive) needs an Ubuntu host; on Debian use "
                       "source 'debian' (non-free) or 'cuda' (NVIDIA's CUDA repo)")
        variant = '-server' if server else ''
        suffix = variant + ('-open' if is_open else '')
        if modules == 'precompiled':
            install = [name.format(br=br, variant=variant, open='-open' if is_open else '',
                                   flavour=kernel_flavour) for name in precompiled['install']]
            if not headless:
                warnings.append('modules precompiled installs the headless set without DKMS '
                                f'({install[0]}, {install[1]}): no X/desktop driver packages')
        elif headless:
            install = [f'nvidia-headless-{br}{suffix}', f'nvidia-utils-{br}{variant}']
        else:
            install = [f'nvidia-driver-{br}{suffix}']
        patterns += table['family_ubuntu']['patterns']
        pitfall = table['ubuntu_transitional_server']
        if server and br in pitfall['branches']:
            warnings.append(f'{install[0]} may be a transitional package that pulls 580 '
                            f'({pitfall["source"]}): pinning the name does not pin the branch; '
                            f'verify the installed driver version is on {br} after install')
    elif source == 'cuda':
        if headless:
            raise _err("headless=True is mapped only for source 'ubuntu': FACTS.md records no headless "
                       "package names for NVIDIA's CUDA repo; use headless=False (the X packages do "
                       "no harm on a server) or source 'ubuntu'")
        if server:
            warnings.append("server=True has no meaning for NVIDIA's CUDA repo (the -server packages "
                            'are Ubuntu archive names); ignored')
        unversioned = table['cuda_unversioned_from']
        if br >= unversioned['branch']:
            pinning = table['cuda_pinning']
            pre_install = [pinning['pre_install'].format(branch=br)]
            install = ['nvidia-open' if is_open else 'cuda-drivers']
            version_from = pinning['version_from']
            warnings.append(f'branch {br}: package names carry no branch; nvidia-driver-pinning-{br} '
                            f'locks it ({unversioned["source"]}): install it first, and read the '
                            f'driver version from {version_from}')
        else:
            install = [f'nvidia-open-{br}' if is_open else f'cuda-drivers-{br}']
    elif source == 'debian':
        if distro != 'debian':
            raise _err("source 'debian' (Debian non-free) needs a Debian host; on Ubuntu use source "
                       "'ubuntu' or 'cuda'")
        deb = table['debian_branches']
        if br not in deb['branches']:
            raise _err(f'Debian 12 non-free ships only branch '
                       f'{", ".join(map(str, deb["branches"]))} ({deb["source"]}); for {br} use '
                       "source 'cuda' (NVIDIA's debian12 repo)")
        if is_open:
            raise _err("flavor open is not mapped for Debian non-free (FACTS.md records only the "
                       "proprietary DKMS packages); use source 'cuda' (nvidia-open-<br>) or "
                       "flavor 'proprietary'")
        if headless:
            raise _err("headless=True is not mapped for Debian non-free (FACTS.md records no headless "
                       "package set); use headless=False (nvidia-driver) or source 'cuda'")
        install = [f'nvidia-tesla-{br}-driver'] if server else ['nvidia-driver']
        patterns += table['family_debian']['patterns']
    else:
        raise _err(f"source {source!r} is not 'ubuntu' (Ubuntu archive), 'cuda' (NVIDIA CUDA repo) "
                   "or 'debian' (Debian non-free)")

    patterns = list(dict.fromkeys(patterns))
    following = list(table['kernel_following']['patterns'])

    def _follows(name):
        return any(fnmatch.fnmatchcase(name, p) for p in following)

    hold_patterns = [p for p in patterns if p not in following]
    not_family = list(table['not_family']['patterns'])
    if source == 'ubuntu':
        version_named = [f'nvidia-firmware-{br}{variant}-{{upstream}}']
    elif source == 'cuda':
        version_named = ['nvidia-firmware-{upstream}' if br >= table['cuda_unversioned_from']['branch']
                         else f'nvidia-firmware-{br}-{{upstream}}']
    else:
        version_named = []
    return {
        'pre_install': pre_install,
        'install': install,
        'version_from': version_from or install[0],
        'hold': [name for name in pre_install + install if not _follows(name)],
        'pin_patterns': patterns,
        'pin_exclude': not_family,
        'hold_patterns': hold_patterns,
        'kernel_following': following,
        'pin_version': f'{br}.*',
        'other_branches': [str(b) for b in sorted(_BRANCHES) if b != br],
        'unattended_blacklist': _blacklist(hold_patterns, not_family),
        'version_named': version_named,
        'versioned_apart': list(table['versioned_apart_debian']['names']) if source == 'debian' else [],
        'warnings': warnings,
    }


def rk_cuda_packages(cuda_version):
    """CUDA toolkit package(s) for a CUDA version: ``'12.4'`` -> ``['cuda-toolkit-12-4']``.

    :raises PolicyError: unknown or nonexistent CUDA version (12.7).
    """
    cuda = _parse_cuda(cuda_version)
    major, minor = cuda.split('.')
    return [POLICY['cuda']['toolkit_package']['pattern'].format(major=major, minor=minor)]


def rk_cudnn_packages(cuda_version, cudnn_major=9, dev=True, version=None):
    """cuDNN packages matched to a CUDA version (NVIDIA's CUDA repo).

    cuDNN 8 (CUDA 11.x/12.x): ``libcudnn8`` (+ ``libcudnn8-dev``); its repo carries one build per
    CUDA major (``8.9.7.29-1+cuda12.2``), so pass ``version`` to pin the build for your CUDA.
    cuDNN 9 (CUDA 12.x/13.x): ``cudnn9-cuda-<major>`` (meta) + ``libcudnn9-cuda-<major>`` +
    ``libcudnn9-dev-cuda-<major>``; runtime only with ``dev=False``.

    :param cuda_version: ``'12.4'``.
    :param cudnn_major: ``8`` or ``9``.
    :param dev: include the headers/dev packages (and the cuDNN 9 metapackage).
    :param version: optional exact package version; names come back as ``name=version`` (the form
        ``ansible.builtin.apt`` takes). cuDNN 8: ``8.x.y.z-N+cudaX.Y`` with X = the CUDA major;
        cuDNN 9: ``9.x.y.z-N``.
    :returns: list of package names.
    :raises PolicyError: impossible combination (cuDNN 8 with CUDA 13, cuDNN 9 with 11.x),
        unknown CUDA, a version for another CUDA major.
    """
    cuda = _parse_cuda(cuda_version)
    cuda_major = int(cuda.split('.', maxsplit=1)[0])
    if isinstance(cudnn_major, str) and cudnn_major.strip().isdigit():
        cudnn_major = int(cudnn_major)
    table = POLICY['cudnn']
    if isinstance(cudnn_major, bool) or cudnn_major not in table:
        raise _err(f'cudnn_major {cudnn_major!r} is not 8 or 9')
    row = table[cudnn_major]
    dev = _as_bool(dev, 'dev')
    if cuda_major not in row['cuda_majors']:
        other = 9 if cudnn_major == 8 else 8
        built = ' and '.join(f'{m}.x' for m in row['cuda_majors'])
        raise _err(f'cuDNN {cudnn_major} is built for CUDA {built} '
                   f'only, not CUDA {cuda} ({row["source"]}); use cudnn_major={other}'
                   + ('' if cuda_major in table[other]['cuda_majors'] else ' or another CUDA'))
    names = []
    if dev and row['meta']:
        names.append(row['meta'].format(major=cuda_major))
    names.append(row['runtime'].format(major=cuda_major))
    if dev:
        names.append(row['dev'].format(major=cuda_major))
    if version is None:
        return names
    if not isinstance(version, str):
        raise _err(f'cuDNN version {version!r} must be a string like "{row["version_example"]}"')
    match = re.fullmatch(row['version_re'], version.strip())
    if not match:
        raise _err(f'cuDNN version {version!r} is not a cuDNN {cudnn_major} package version '
                   f'(e.g. "{row["version_example"]}")')
    if cudnn_major == 8 and int(match.group(1)) != cuda_major:
        raise _err(f'cuDNN version {version} is the build for CUDA {match.group(1)}.{match.group(2)}, '
                   f'not CUDA {cuda}: pick the "+cuda{cuda_major}.x" build')
    return [f'{name}={version.strip()}' for name in names]
