# -*- coding: utf-8 -*-
"""rk_driver_packages additions (issue #12 section 2/3): 590+ pinning package first and the
version read from a driver package, Canonical's signed precompiled modules, holds that leave the
kernel-following packages alone, the other branches by name, and an unattended-upgrades blacklist
that catches the driver family only."""

from __future__ import annotations

import fnmatch
import re

import pytest

from test_policy import assert_words, err, policy

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY

KERNEL_FOLLOWING = ['linux-modules-nvidia-*', 'linux-objects-nvidia-*', 'linux-signatures-nvidia-*']


def pkgs(branch, source='ubuntu', **kwargs):
    return policy.rk_driver_packages(branch, source, **kwargs)


# ============================================================================================
# a. NVIDIA's CUDA repository from 590 on: the pinning package first, the version from a driver package
# ============================================================================================
@pytest.mark.parametrize('branch,source,kwargs,pre_install,install,version_from', [
    # 590+ from the CUDA repo
    (590, 'cuda', {}, ['nvidia-driver-pinning-590'], ['cuda-drivers'], 'libnvidia-compute'),
    (590, 'cuda', {'flavor': 'open'}, ['nvidia-driver-pinning-590'], ['nvidia-open'], 'libnvidia-compute'),
    (595, 'cuda', {'flavor': 'open'}, ['nvidia-driver-pinning-595'], ['nvidia-open'], 'libnvidia-compute'),
    ('620', 'cuda', {'flavor': 'open', 'distro': 'debian'}, ['nvidia-driver-pinning-620'], ['nvidia-open'],
     'libnvidia-compute'),
    (610, 'cuda', {}, ['nvidia-driver-pinning-610'], ['cuda-drivers'], 'libnvidia-compute'),
    # before 590 and other sources: the main package, as before
    (580, 'cuda', {}, [], ['cuda-drivers-580'], 'cuda-drivers-580'),
    (580, 'cuda', {'flavor': 'open'}, [], ['nvidia-open-580'], 'nvidia-open-580'),
    (535, 'cuda', {}, [], ['cuda-drivers-535'], 'cuda-drivers-535'),
    (580, 'ubuntu', {'flavor': 'open'}, [], ['nvidia-driver-580-open'], 'nvidia-driver-580-open'),
    (620, 'ubuntu', {'flavor': 'open', 'server': True}, [], ['nvidia-driver-620-server-open'],
     'nvidia-driver-620-server-open'),
    (580, 'ubuntu', {'headless': True}, [], ['nvidia-headless-580', 'nvidia-utils-580'], 'nvidia-headless-580'),
    (535, 'debian', {'distro': 'debian'}, [], ['nvidia-driver'], 'nvidia-driver'),
    (535, 'debian', {'distro': 'debian', 'server': True}, [], ['nvidia-tesla-535-driver'],
     'nvidia-tesla-535-driver'),
])
def test_pre_install_install_and_version_from(branch, source, kwargs, pre_install, install, version_from):
    out = pkgs(branch, source, **kwargs)
    assert out['pre_install'] == pre_install
    assert out['install'] == install
    assert out['version_from'] == version_from
    assert out['hold'] == pre_install + install
    assert not any(name.startswith('nvidia-driver-pinning') for name in out['install'])
    assert not out['version_from'].startswith('nvidia-driver-pinning')


def test_590_warning_says_pinning_first_and_where_the_version_comes_from():
    (warning,) = pkgs(590, 'cuda')['warnings']
    assert_words(warning, ['nvidia-driver-pinning-590 locks it', 'install it first',
                           'read the driver version from libnvidia-compute', 'FACTS.md: Driver branches'])


def test_version_from_rule_is_documented():
    doc = policy.rk_driver_packages.__doc__
    assert_words(doc, ['version_from', 'never from the pinning package', 'pre_install', 'before'])


# ============================================================================================
# b. Canonical's signed precompiled modules (Ubuntu archive)
# ============================================================================================
@pytest.mark.parametrize('branch,kwargs,install', [
    (580, {}, ['nvidia-headless-no-dkms-580', 'nvidia-utils-580', 'linux-modules-nvidia-580-generic']),
    (580, {'flavor': 'open'},
     ['nvidia-headless-no-dkms-580-open', 'nvidia-utils-580', 'linux-modules-nvidia-580-open-generic']),
    (580, {'flavor': 'open', 'server': True},
     ['nvidia-headless-no-dkms-580-server-open', 'nvidia-utils-580-server',
      'linux-modules-nvidia-580-server-open-generic']),
    (580, {'server': True},
     ['nvidia-headless-no-dkms-580-server', 'nvidia-utils-580-server', 'linux-modules-nvidia-580-server-generic']),
    ('620', {'flavor': 'open', 'kernel_flavour': 'generic-hwe-22.04'},
     ['nvidia-headless-no-dkms-620-open', 'nvidia-utils-620', 'linux-modules-nvidia-620-open-generic-hwe-22.04']),
    (580, {'kernel_flavour': 'lowlatency'},
     ['nvidia-headless-no-dkms-580', 'nvidia-utils-580', 'linux-modules-nvidia-580-lowlatency']),
    (580, {'flavor': 'open', 'kernel_flavour': 'generic-64k', 'headless': True},
     ['nvidia-headless-no-dkms-580-open', 'nvidia-utils-580', 'linux-modules-nvidia-580-open-generic-64k']),
])
def test_precompiled_packages(branch, kwargs, install):
    out = pkgs(branch, 'ubuntu', modules='precompiled', **kwargs)
    assert out['install'] == install
    assert out['pre_install'] == []
    assert out['version_from'] == install[0]          # the driver version, not the kernel's
    assert out['hold'] == install[:2]                  # the module meta follows the kernel: never held
    assert all(fnmatch.fnmatchcase(install[2], p) for p in ['linux-modules-nvidia-*'])
    assert any(fnmatch.fnmatchcase(install[2], p) for p in out['pin_patterns'])  # pinned by branch name


@pytest.mark.parametrize('headless,warned', [(False, True), (True, False)])
def test_precompiled_says_it_installs_no_desktop_packages(headless, warned):
    out = pkgs(580, 'ubuntu', modules='precompiled', headless=headless)
    hits = [w for w in out['warnings'] if 'without DKMS' in w]
    assert bool(hits) is warned
    if warned:
        assert_words(hits[0], ['nvidia-headless-no-dkms-580', 'no X/desktop driver packages'])


def test_precompiled_keeps_the_transitional_server_warning():
    out = pkgs(535, 'ubuntu', modules='precompiled', server=True, headless=True)
    assert any('transitional' in w and 'pulls 580' in w for w in out['warnings'])


@pytest.mark.parametrize('kwargs', [{}, {'modules': 'dkms'}, {'kernel_flavour': 'lowlatency'}])
def test_dkms_default_keeps_todays_packages(kwargs):
    assert pkgs(580, 'ubuntu', flavor='open', **kwargs)['install'] == ['nvidia-driver-580-open']


@pytest.mark.parametrize('branch,source,kwargs,words', [
    (580, 'cuda', {'modules': 'precompiled'},
     ["modules 'precompiled'", 'exist only in the Ubuntu archive', "not for source 'cuda'", "source 'ubuntu'",
      "modules 'dkms'", 'enrol a MOK', 'packages.ubuntu.com']),
    (535, 'debian', {'modules': 'precompiled', 'distro': 'debian'}, ["not for source 'debian'"]),
    (580, 'ubuntu', {'modules': 'auto'}, ["modules 'auto' is not 'dkms' or 'precompiled'", 'rk_module_plan']),
    (580, 'ubuntu', {'modules': 'DKMS'}, ["modules 'DKMS'"]),
    (580, 'ubuntu', {'modules': None}, ['modules None']),
    (580, 'ubuntu', {'modules': 'precompiled', 'kernel_flavour': ''}, ["kernel_flavour ''"]),
    (580, 'ubuntu', {'modules': 'precompiled', 'kernel_flavour': 'Generic'}, ["kernel_flavour 'Generic'"]),
    (580, 'ubuntu', {'modules': 'precompiled', 'kernel_flavour': '6.8.0-51-generic'},
     ["kernel_flavour '6.8.0-51-generic'", "6.8.0-51-generic -> 'generic'"]),
    (580, 'ubuntu', {'modules': 'precompiled', 'kernel_flavour': 'generic lowlatency'}, ['not a kernel flavour']),
    (580, 'ubuntu', {'kernel_flavour': None}, ['kernel_flavour None']),
])
def test_precompiled_refusals(branch, source, kwargs, words):
    assert_words(err(policy.rk_driver_packages, branch, source, **kwargs), words)


# ============================================================================================
# c. hold_patterns, kernel_following, other_branches
# ============================================================================================
ALL = [
    (580, 'ubuntu', {}), (580, 'ubuntu', {'modules': 'precompiled', 'flavor': 'open'}),
    (580, 'cuda', {}), (590, 'cuda', {'flavor': 'open'}), (620, 'cuda', {'distro': 'debian'}),
    (535, 'debian', {'distro': 'debian'}),
]


@pytest.mark.parametrize('branch,source,kwargs', ALL)
def test_hold_patterns_leave_the_kernel_following_packages_alone(branch, source, kwargs):
    out = pkgs(branch, source, **kwargs)
    assert out['kernel_following'] == KERNEL_FOLLOWING
    assert out['hold_patterns'] == [p for p in out['pin_patterns'] if p not in KERNEL_FOLLOWING]
    for name in ['linux-modules-nvidia-580-open-generic', 'linux-modules-nvidia-580-open-6.8.0-51-generic',
                 'linux-objects-nvidia-580-6.8.0-51-generic', 'linux-signatures-nvidia-6.8.0-51-generic']:
        assert not any(fnmatch.fnmatchcase(name, p) for p in out['hold_patterns']), name
        assert not any(fnmatch.fnmatchcase(name, p) for p in out['hold']), name
    for name in out['hold']:
        assert any(fnmatch.fnmatchcase(name, p) for p in out['hold_patterns']), name


def test_ubuntu_pins_the_kernel_following_packages_by_name():
    # Pinned (apt preferences keep them on the branch), not held.
    out = pkgs(580, 'ubuntu')
    for pattern in KERNEL_FOLLOWING:
        assert pattern in out['pin_patterns'] and pattern not in out['hold_patterns']


@pytest.mark.parametrize('branch,source,kwargs', ALL)
def test_other_branches(branch, source, kwargs):
    out = pkgs(branch, source, **kwargs)
    table = sorted(POLICY['driver_branches'])
    assert out['other_branches'] == [str(b) for b in table if b != branch]
    assert str(branch) not in out['other_branches'] and len(out['other_branches']) == len(table) - 1


def test_other_branches_names_the_2026_table():
    assert pkgs(580, 'ubuntu')['other_branches'] == ['535', '545', '550', '555', '560', '565', '570', '575',
                                                     '590', '595', '610', '620']


# ============================================================================================
# d. unattended-upgrades: the driver family only (Python regexes, re.match on package names)
# ============================================================================================
BLACKLISTED = ['nvidia-driver-580-open', 'libnvidia-compute-580', 'nvidia-firmware-580-580.95.05',
               'cuda-drivers-580', 'nvidia-open', 'libnvidia-compute', 'cuda-drivers', 'nvidia-dkms-open',
               'nvidia-driver-pinning-590', 'nvidia-driver-pinning-590.44.01', 'nvidia-utils-580-server',
               'nvidia-kernel-common-580', 'nvidia-headless-no-dkms-580-open', 'xserver-xorg-video-nvidia-580',
               'nvidia-fabricmanager-580', 'libnvidia-extra-535-server']
NOT_BLACKLISTED = ['nvidia-container-toolkit', 'nvidia-container-toolkit-base', 'libnvidia-container1',
                   'libnvidia-container-tools', 'nvidia-docker2',
                   'linux-modules-nvidia-580-open-generic', 'linux-modules-nvidia-580-open-6.8.0-51-generic',
                   'linux-objects-nvidia-580-6.8.0-51-generic', 'linux-signatures-nvidia-6.8.0-51-generic',
                   'cuda-toolkit-12-4', 'libcudnn8', 'linux-image-generic', 'docker-ce']
DEBIAN_BLACKLISTED = ['nvidia-driver', 'nvidia-kernel-dkms', 'libcuda1', 'firmware-nvidia-gsp',
                      'xserver-xorg-video-nvidia', 'nvidia-tesla-535-driver']


def _blacklisted(name, out):
    return any(re.match(rx, name) for rx in out['unattended_blacklist'])


@pytest.mark.parametrize('branch,source,kwargs', ALL)
@pytest.mark.parametrize('name', BLACKLISTED)
def test_unattended_blacklist_catches_the_driver_family(branch, source, kwargs, name):
    assert _blacklisted(name, pkgs(branch, source, **kwargs))


@pytest.mark.parametrize('branch,source,kwargs', ALL)
@pytest.mark.parametrize('name', NOT_BLACKLISTED)
def test_unattended_blacklist_spares_the_toolkit_and_kernel_modules(branch, source, kwargs, name):
    assert not _blacklisted(name, pkgs(branch, source, **kwargs))


@pytest.mark.parametrize('name', DEBIAN_BLACKLISTED)
def test_unattended_blacklist_debian_names(name):
    assert _blacklisted(name, pkgs(535, 'debian', distro='debian'))


def test_unattended_blacklist_entries():
    out = pkgs(580, 'ubuntu')
    assert out['unattended_blacklist'] == ['^nvidia-(?!container-|docker)', '^libnvidia-(?!container)',
                                           '^cuda-drivers', '^xserver-xorg-video-nvidia']
    for regex in pkgs(535, 'debian', distro='debian')['unattended_blacklist']:
        assert regex.startswith('^') and re.compile(regex)


@pytest.mark.parametrize('branch,source,kwargs', ALL)
def test_everything_installed_is_blacklisted_unless_it_follows_the_kernel(branch, source, kwargs):
    out = pkgs(branch, source, **kwargs)
    for name in out['pre_install'] + out['install']:
        follows = any(fnmatch.fnmatchcase(name, p) for p in KERNEL_FOLLOWING)
        assert _blacklisted(name, out) is not follows, name
