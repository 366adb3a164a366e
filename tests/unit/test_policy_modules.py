# -*- coding: utf-8 -*-
"""rk_module_plan: DKMS or Canonical's signed precompiled modules, given Secure Boot (issue #12:
"a Secure Boot box would reboot into no driver"). FACTS.md, Headless: "Secure Boot needs
MOK-signed DKMS modules (enrolment needs the console), or Canonical's signed precompiled
linux-modules-nvidia-* packages"."""

from __future__ import annotations

import pytest

from test_policy import assert_words, err, policy

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY

FACTS_SB = ("Secure Boot needs MOK-signed DKMS modules (enrolment needs the console), or Canonical's signed "
            "precompiled linux-modules-nvidia-* packages")
KEY_REJECTED = "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service"

PLANS = [
    # (case, secure_boot, mok_enrolled, source, modules, result, words in reasons, warned)
    ('sb-ubuntu-auto', True, False, 'ubuntu', 'auto', 'precompiled',
     ['modules precompiled', 'Secure Boot is on', 'signed', 'without a MOK', FACTS_SB], False),
    ('sb-ubuntu-auto-mok-unknown', True, None, 'ubuntu', 'auto', 'precompiled', ['Secure Boot is on'], False),
    ('sb-ubuntu-auto-mok', True, True, 'ubuntu', 'auto', 'precompiled', ['Secure Boot is on'], False),
    ('no-sb-ubuntu-auto', False, None, 'ubuntu', 'auto', 'dkms', ['modules dkms (auto)', 'Secure Boot is off'],
     False),
    ('no-sb-cuda-auto', False, False, 'cuda', 'auto', 'dkms', ['Secure Boot is off'], False),
    ('no-sb-debian-dkms', False, None, 'debian', 'dkms', 'dkms', ['modules dkms (requested)'], False),
    ('sb-cuda-mok', True, True, 'cuda', 'auto', 'dkms', ['a MOK is enrolled', 'DKMS signs the modules'], False),
    ('sb-debian-mok', True, True, 'debian', 'dkms', 'dkms', ['modules dkms (requested)', 'a MOK is enrolled'],
     False),
    ('sb-ubuntu-dkms-mok', True, True, 'ubuntu', 'dkms', 'dkms', ['a MOK is enrolled'], False),
    ('no-sb-ubuntu-precompiled', False, None, 'ubuntu', 'precompiled', 'precompiled',
     ['modules precompiled: requested', 'Secure Boot off'], False),
    ('unknown-ubuntu-precompiled', None, None, 'ubuntu', 'precompiled', 'precompiled',
     ['Secure Boot unknown'], False),
    ('unknown-ubuntu-auto', None, None, 'ubuntu', 'auto', 'dkms', ['Secure Boot state unknown'], True),
    ('unknown-cuda-auto', None, None, 'cuda', 'auto', 'dkms', ['Secure Boot state unknown'], True),
    ('unknown-debian-dkms', None, True, 'debian', 'dkms', 'dkms', ['Secure Boot state unknown'], True),
]


@pytest.mark.parametrize('secure_boot,mok,source,modules,result,words,warned', [c[1:] for c in PLANS],
                         ids=[c[0] for c in PLANS])
def test_module_plan(secure_boot, mok, source, modules, result, words, warned):
    out = policy.rk_module_plan(secure_boot, mok, source, modules=modules)
    assert set(out) == {'modules', 'reasons', 'warnings'}
    assert out['modules'] == result
    assert_words(' | '.join(out['reasons']), words)
    assert bool(out['warnings']) is warned
    if warned:
        assert_words(out['warnings'][0], ['no mokutil', KEY_REJECTED, 'install mokutil'])
        assert ('modules: precompiled' in out['warnings'][0]) is (source == 'ubuntu')
    # What the plan says, rk_driver_packages can install.
    distro = 'debian' if source == 'debian' else 'ubuntu'
    branch = 535 if source == 'debian' else 580
    assert policy.rk_driver_packages(branch, source, distro=distro, modules=out['modules'])['install']


def test_module_plan_default_is_auto():
    assert policy.rk_module_plan(True, False, 'ubuntu')['modules'] == 'precompiled'
    assert policy.rk_module_plan(False, False, 'ubuntu')['modules'] == 'dkms'


REFUSED = [
    # (case, secure_boot, mok_enrolled, source, modules, words, absent)
    ('sb-cuda-no-mok', True, False, 'cuda', 'auto',
     ['modules dkms (auto) refused', 'Secure Boot is on and no MOK is enrolled', KEY_REJECTED, 'EKEYREJECTED',
      'without a driver', FACTS_SB, 'FACTS.md: Headless',
      'nvidia_driver_source: ubuntu', "Canonical's signed precompiled modules",
      'enrol a MOK: `mokutil --import /var/lib/shim-signed/mok/MOK.der`', 'confirm it at the console',
      'next boot', 'mokutil --test-key', 'turn Secure Boot off in the firmware'], ['modules: precompiled']),
    ('sb-debian-mok-unknown', True, None, 'debian', 'dkms',
     ['modules dkms (requested) refused', 'no enrolled MOK is known', KEY_REJECTED, 'mokutil --import'], []),
    ('sb-ubuntu-dkms-no-mok', True, False, 'ubuntu', 'dkms',
     ['no MOK is enrolled', 'modules: precompiled', "Canonical's signed linux-modules-nvidia-* packages",
      'mokutil --import /var/lib/shim-signed/mok/MOK.der', 'turn Secure Boot off'],
     ['nvidia_driver_source: ubuntu']),
    ('sb-cuda-precompiled', True, True, 'cuda', 'precompiled',
     ["modules 'precompiled'", 'exist only in the Ubuntu archive', "not for source 'cuda'",
      'nvidia_driver_source: ubuntu', 'modules: dkms with an enrolled MOK'], []),
    ('no-sb-debian-precompiled', False, None, 'debian', 'precompiled',
     ["not for source 'debian'", 'modules: dkms'], ['with an enrolled MOK']),
]


@pytest.mark.parametrize('secure_boot,mok,source,modules,words,absent', [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_module_plan_refusals(secure_boot, mok, source, modules, words, absent):
    msg = err(policy.rk_module_plan, secure_boot, mok, source, modules=modules)
    assert_words(msg, words)
    for word in absent:
        assert word not in msg


@pytest.mark.parametrize('args,words', [
    (('yes', False, 'ubuntu'), ["secure_boot must be true, false or null (unknown), got 'yes'"]),
    ((1, False, 'ubuntu'), ['secure_boot must be true, false or null']),
    ((True, 'no', 'ubuntu'), ["mok_enrolled must be true, false or null (unknown), got 'no'"]),
    ((True, True, 'ppa'), ["source 'ppa' is not 'ubuntu'", "'cuda'", "'debian'"]),
    ((True, True, 'ubuntu', 'signed'), ["modules 'signed' is not one of 'auto', 'dkms', 'precompiled'"]),
    ((True, True, 'ubuntu', None), ['modules None']),
])
def test_module_plan_bad_input(args, words):
    assert_words(err(policy.rk_module_plan, *args), words)


def test_module_plan_data_cites_its_sources():
    row = POLICY['modules']['secure_boot']
    assert row['kernel_error'] == KEY_REJECTED
    assert row['mok_import'] == 'mokutil --import /var/lib/shim-signed/mok/MOK.der'
    assert_words(row['source'], [FACTS_SB, 'FACTS.md: Headless', 'precompiled signed drivers'])
    assert 'EKEYREJECTED' in row['kernel_error_source']


def test_module_plan_is_registered():
    assert policy.FilterModule().filters()['rk_module_plan'] is policy.rk_module_plan


def test_preflight_names_runfile_leftovers_with_the_fix():
    from rigkeeper_policy import rk_preflight_checks
    host = {'runfile': {'uninstaller': True, 'stray_libraries': ['/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05']}}
    result = [r for r in rk_preflight_checks({'present': False, 'gpus': []}, host) if r['id'] == 'runfile'][0]
    assert (result['ok'], result['severity']) == (False, 'fail')
    assert '/usr/bin/nvidia-uninstall' in result['message'] and 'libnvidia-ml.so.580.95.05 (no package owns it)' in result['message']
    assert 'sudo nvidia-uninstall' in result['message']
    clean = [r for r in rk_preflight_checks({'present': False, 'gpus': []}, {}) if r['id'] == 'runfile'][0]
    assert clean['ok'] is True


def test_preflight_tells_a_container_hosts_driver_from_a_run_installer():
    """The lent H200 server: the sandbox's host mounts its driver in under /usr/local/nvidia."""
    from rigkeeper_policy import rk_preflight_checks
    host = {'runfile': {'stray_libraries': ['/usr/local/nvidia/lib64/libnvidia-ml.so.580.159.04']}}
    result = [r for r in rk_preflight_checks({'present': False, 'gpus': []}, host) if r['id'] == 'runfile'][0]
    assert result['ok'] is False
    assert result['message'].startswith("a driver installed outside apt (NVIDIA's .run installer, or a container "
                                        "host's driver mounted in): /usr/local/nvidia/lib64/")


def test_the_read_only_hardware_run_sets_every_preflight_check_to_warn():
    """tests/hardware/run-readonly.sh must not stop on a check it did not list (the runfile check,
    added later, stopped its run on the H200)."""
    import json
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / 'tests/hardware/run-readonly.sh').read_text()
    listed = json.loads(re.search(r"-e '(\{\"preflight_severities\".*?\})'", text).group(1))['preflight_severities']
    assert set(listed) == set(POLICY['preflight']['checks']) and set(listed.values()) == {'warn'}
