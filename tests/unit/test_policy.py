# -*- coding: utf-8 -*-
"""Unit tests for the policy layer: plugins/module_utils/rigkeeper_policy_*.py, through the filter
plugin plugins/filter/rigkeeper_policy.py that maps their names.

GPU dicts follow docs/facts.md; power numbers are the observed ones in FACTS.md (RTX 3090
350/100/350 W, RTX 4090 450/150/600 W).
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest


import rigkeeper_policy as policy  # noqa: E402
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY  # noqa: E402
from ansible.errors import AnsibleFilterError  # noqa: E402

TODAY = '2026-11-15'

MODELS = {
    '4090': dict(product_name='NVIDIA GeForce RTX 4090', product_brand='GeForce',
                 architecture='Ada Lovelace', memory_total_mib=24564,
                 power_default_w=450.0, power_min_w=150.0, power_max_w=600.0),
    '3090': dict(product_name='NVIDIA GeForce RTX 3090', product_brand='GeForce', architecture='Ampere',
                 memory_total_mib=24576, power_default_w=350.0, power_min_w=100.0, power_max_w=350.0),
    'a6000': dict(product_name='NVIDIA RTX A6000', product_brand='NVIDIA RTX', architecture='Ampere',
                  memory_total_mib=49140, power_default_w=300.0, power_min_w=100.0, power_max_w=300.0),
    'a100': dict(product_name='NVIDIA A100-SXM4-80GB', product_brand='NVIDIA', architecture='Ampere',
                 memory_total_mib=81920, power_default_w=400.0, power_min_w=100.0, power_max_w=400.0),
    '2080ti': dict(product_name='GeForce RTX 2080 Ti', product_brand='GeForce', architecture='Turing',
                   memory_total_mib=11019, power_default_w=250.0, power_min_w=100.0, power_max_w=280.0),
    't4': dict(product_name='Tesla T4', product_brand='Tesla', architecture='Turing',
               memory_total_mib=15360, power_default_w=70.0, power_min_w=60.0, power_max_w=70.0),
    '1070': dict(product_name='GeForce GTX 1070', product_brand='GeForce', architecture='Pascal',
                 memory_total_mib=8192, power_default_w=151.0, power_min_w=75.0, power_max_w=170.0),
    'v100': dict(product_name='Tesla V100-SXM2-16GB', product_brand='Tesla', architecture='Volta',
                 memory_total_mib=16384, power_default_w=300.0, power_min_w=150.0, power_max_w=300.0),
    '5090': dict(product_name='NVIDIA GeForce RTX 5090', product_brand='GeForce',
                 architecture='Blackwell', memory_total_mib=32607,
                 power_default_w=575.0, power_min_w=400.0, power_max_w=600.0),
    'p100_noarch': dict(product_name='Tesla P100-PCIE-16GB', product_brand='Tesla', architecture=None,
                        memory_total_mib=16384, power_default_w=250.0, power_min_w=125.0,
                        power_max_w=250.0),
    'unknown': dict(product_name='Graphics Device', product_brand='GeForce', architecture=None,
                    memory_total_mib=8192, power_default_w=None, power_min_w=None, power_max_w=None),
}


def gpu(model='4090', index=0, **over):
    """A GPU fact dict (docs/facts.md keys)."""
    d = {
        'index': index, 'minor_number': index, 'bus_id': f'00000000:{index + 1:02X}:00.0',
        'uuid': f'GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd', 'serial': None,
        'vbios_version': None, 'persistence_mode': True, 'compute_mode': 'Default',
        'mig_mode': None, 'power_draw_w': 30.0, 'power_enforced_w': None,
        'pcie_gen_current': 4, 'pcie_gen_max': 4, 'pcie_width_current': 16, 'pcie_width_max': 16,
    }
    d.update(MODELS[model])
    d['power_limit_w'] = d['power_default_w']
    d.update(over)
    return d


def gpus_of(*models):
    return [gpu(m, i) for i, m in enumerate(models)]


def err(func, *args, **kwargs):
    with pytest.raises(AnsibleFilterError) as info:
        func(*args, **kwargs)
    return str(info.value)


def assert_words(text, words):
    for word in words:
        assert word in text, f'{word!r} missing from: {text}'


# ============================================================================================
# The data table and the plugin shape
# ============================================================================================
def test_filter_module_maps_exact_names():
    filters = policy.FilterModule().filters()
    assert set(filters) == {
        'rk_driver_decision', 'rk_driver_packages', 'rk_version_on_branch', 'rk_cuda_check',
        'rk_cuda_packages', 'rk_cudnn_packages', 'rk_power_plan', 'rk_iommu_args',
        'rk_mitigations_args', 'rk_kernel_args', 'rk_cmdline_diff', 'rk_preflight_checks',
        'rk_gpu_architecture', 'rk_module_plan',
    }
    for name, func in filters.items():
        assert func is getattr(policy, name)


def _entries():
    p = POLICY
    yield from (('driver_branches', k, v) for k, v in p['driver_branches'].items())
    yield from (('architecture_last_branch', k, v) for k, v in p['architecture_last_branch'].items())
    yield 'default_branch', '', p['default_branch']
    yield from (('modules', k, v) for k, v in p['modules'].items())
    yield from (('known_issues', v['id'], v) for v in p['known_issues'])
    yield 'module_flavors', '', p['module_flavors']
    yield from (('architecture_names', v['architecture'], v) for v in p['architecture_names'])
    yield from (('cuda.min_driver', k, v) for k, v in p['cuda']['min_driver'].items())
    yield from (('cuda.minor_compat', k, v) for k, v in p['cuda']['minor_compat'].items())
    yield from (('cuda.missing', k, v) for k, v in p['cuda']['missing'].items())
    yield 'cuda.toolkit_package', '', p['cuda']['toolkit_package']
    yield from (('cudnn', k, v) for k, v in p['cudnn'].items())
    yield from (('packages', k, v) for k, v in p['packages'].items())
    yield from (('kernel.iommu_modes', k, v) for k, v in p['kernel']['iommu_modes'].items())
    yield 'kernel.iommu_keys', '', p['kernel']['iommu_keys']
    yield 'kernel.mitigations', '', p['kernel']['mitigations']
    yield from (('kernel.refused_args', k, v) for k, v in p['kernel']['refused_args'].items())
    yield 'power', '', p['power']
    yield from (('preflight.checks', k, v) for k, v in p['preflight']['checks'].items())


@pytest.mark.parametrize('table,key,entry', list(_entries()), ids=lambda x: str(x)[:30])
def test_every_table_entry_has_a_source(table, key, entry):
    assert isinstance(entry.get('source'), str) and entry['source'].strip()


@pytest.mark.parametrize('issue_id,ids', [
    ('p2p-545', ['vllm-project/vllm#1801', 'huggingface/text-generation-inference#1559',
                 'NVIDIA/nccl#1127', 'vllm-project/vllm#5458']),
    ('p2p-555', ['vllm-project/vllm#5458']),
    ('p2p-560', ['dmlc/xgboost#11242']),
    ('p2p-rtx4090', ['NVIDIA/nccl-tests#117']),
])
def test_known_issues_cite_their_reports(issue_id, ids):
    issue = next(i for i in POLICY['known_issues'] if i['id'] == issue_id)
    assert_words(issue['source'], ids)


# The branch table itself: tests/unit/test_policy_branches.py.


# ============================================================================================
# Architecture fallback
# ============================================================================================
@pytest.mark.parametrize('name,arch', [
    ('GeForce GTX 1070', 'Pascal'),
    ('GeForce GTX 1070 Ti', 'Pascal'),
    ('NVIDIA GeForce GT 1030', 'Pascal'),
    ('Quadro P2000', 'Pascal'),
    ('Quadro P400', 'Pascal'),
    ('Tesla P100-PCIE-16GB', 'Pascal'),
    ('GRID P4-1Q', 'Pascal'),
    ('Tesla K80', 'Kepler'),
    ('Tesla M60', 'Maxwell'),
    ('Tesla V100-SXM2-16GB', 'Volta'),
    ('Tesla T4', 'Turing'),
    ('GeForce RTX 2080 Ti', 'Turing'),
    ('NVIDIA GeForce RTX 2070', 'Turing'),
    ('Quadro RTX 6000', 'Turing'),
    ('NVIDIA GeForce RTX 3060 Laptop GPU', 'Ampere'),
    ('NVIDIA GeForce RTX 3090', 'Ampere'),
    ('NVIDIA RTX A5000', 'Ampere'),
    ('NVIDIA A10G', 'Ampere'),
    ('NVIDIA A100-SXM4-40GB', 'Ampere'),
    ('NVIDIA GeForce RTX 4090', 'Ada Lovelace'),
    ('NVIDIA RTX 4000 SFF Ada Generation', 'Ada Lovelace'),
    ('NVIDIA L40S', 'Ada Lovelace'),
    ('NVIDIA H100 80GB HBM3', 'Hopper'),
    ('NVIDIA H200', 'Hopper'),
    ('NVIDIA GeForce RTX 5090', 'Blackwell'),
    ('NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition', 'Blackwell'),
    ('NVIDIA B200', 'Blackwell'),
    ('Graphics Device', None),
    (None, None),
])
def test_gpu_architecture_fallback(name, arch):
    assert policy.rk_gpu_architecture(name) == arch


def test_gpu_architecture_rejects_non_string():
    assert 'string' in err(policy.rk_gpu_architecture, 4090)


# ============================================================================================
# 1. Driver decision
# ============================================================================================
def test_default_branch_is_a_mature_ltsb():
    out = policy.rk_driver_decision(gpus_of('a100', 'a100'), today=TODAY)
    assert out['branch'] == '580' and out['type'] == 'LTSB' and out['eol'] == '2028-06'
    assert out['warnings'] == []
    assert_words(out['reasons'][0], ['oldest LTSB with >= 12 months of support',
                                     'Supported Drivers and CUDA Toolkit Versions'])


def test_default_branch_when_every_ltsb_is_past_eol():
    msg = err(policy.rk_driver_decision, [], today='2029-10-01')
    assert_words(msg, ['no LTSB branch', 'set the branch explicitly'])


@pytest.mark.parametrize('branch', [580, '580', 'R580', 'r580', ' 580 '])
def test_branch_accepts_int_and_str(branch):
    assert policy.rk_driver_decision([], branch=branch, today=TODAY)['branch'] == '580'


@pytest.mark.parametrize('branch,words', [
    ('58O', ["'58O' is not a driver branch", 'e.g. 580']),
    ('', ["'' is not a driver branch"]),
    ('latest', ['not a driver branch']),
    (True, ['not a driver branch']),
    (580.0, ['not a driver branch']),
    ('580.95.05', ['full version', 'give only its branch, 580']),
    (470, ["470 is not in rigkeeper's branch table", 'known: 535']),
    ('600', ['600 is not in']),
])
def test_branch_garbage_is_refused(branch, words):
    assert_words(err(policy.rk_driver_decision, [], branch=branch, today=TODAY), words)


BUGS_545 = ['vllm-project/vllm#1801', 'huggingface/text-generation-inference#1559',
            'NVIDIA/nccl#1127', 'vllm-project/vllm#5458']


@pytest.mark.parametrize('models,named', [
    (('3090', '3090'), ['GPU 0', 'GPU 1', 'RTX 3090']),
    (('4090', '4090'), ['GPU 0', 'GPU 1', 'RTX 4090']),
    (('a6000', 'a6000'), ['GPU 0', 'RTX A6000']),        # workstation Ampere
    (('a100', '3090'), ['GPU 1 (00000000:02:00.0, NVIDIA GeForce RTX 3090)']),  # one affected of 2
])
def test_545_refused_for_multi_gpu_consumer_ampere_ada(models, named):
    msg = err(policy.rk_driver_decision, gpus_of(*models), branch=545, today=TODAY)
    assert_words(msg, BUGS_545 + named + ['refused', 'P2P', 'allow_known_bad', '535', '580'])


def test_545_refusal_does_not_name_unaffected_gpu():
    msg = err(policy.rk_driver_decision, gpus_of('a100', '3090'), branch=545, today=TODAY)
    assert 'GPU 0' not in msg


def test_545_allowed_when_known_bad_allowed():
    out = policy.rk_driver_decision(gpus_of('3090', '3090'), branch='545', allow_known_bad=True,
                                    today=TODAY)
    assert out['branch'] == '545'
    bad = [w for w in out['warnings'] if 'vllm-project/vllm#1801' in w]
    assert len(bad) == 1 and 'allowed by allow_known_bad' in bad[0] and 'known bad' in bad[0]


@pytest.mark.parametrize('models,expect_warning', [
    (('3090',), True),            # single consumer Ampere: warning, not refusal
    (('4090',), True),
    ((), True),                   # no GPU facts yet: cannot tell, so warn
    (('a100', 'a100'), False),    # datacenter cards are not in the reports
    (('2080ti', '2080ti'), False),  # Turing is not in the reports
])
def test_545_warnings_without_refusal(models, expect_warning):
    out = policy.rk_driver_decision(gpus_of(*models), branch=545, today=TODAY)
    warned = [w for w in out['warnings'] if 'vllm-project/vllm#1801' in w]
    assert bool(warned) is expect_warning
    if not models:
        assert 'no GPU facts' in warned[0]
    elif expect_warning:
        assert 'single GPU' in warned[0]


@pytest.mark.parametrize('branch,source', [
    (555, 'vllm-project/vllm#5458'),
    (560, 'dmlc/xgboost#11242'),
])
@pytest.mark.parametrize('models', [('a100', 'a100'), ('3090',), ()])
def test_555_560_warn_with_source(branch, source, models):
    out = policy.rk_driver_decision(gpus_of(*models), branch=branch, today=TODAY)
    assert any(source in w and 'NCCL_P2P_DISABLE=1' in w for w in out['warnings'])


def test_rtx4090_pair_gets_no_p2p_warning_on_any_branch():
    out = policy.rk_driver_decision(gpus_of('4090', '4090'), today=TODAY)
    assert any('NVIDIA/nccl-tests#117' in w for w in out['warnings'])
    single = policy.rk_driver_decision(gpus_of('4090'), today=TODAY)
    assert not any('nccl-tests#117' in w for w in single['warnings'])


@pytest.mark.parametrize('branch,today,words', [
    (535, '2026-06-30', None),
    (535, '2026-07-01', ['535 (LTSB) reached end of life in 2026-06', 'move to 580']),
    (570, '2026-02-28', None),
    (570, '2026-03-01', ['570 (production) reached end of life in 2026-02']),
    (545, '2024-01-01', ['545 (short-lived) is past end of life']),
    (550, TODAY, ['550 (short-lived) is past end of life']),
    (555, TODAY, ['555 (short-lived) is past end of life']),
    (560, TODAY, ['560 (short-lived) is past end of life']),
    (565, TODAY, ['565 (short-lived) is past end of life']),
    (580, TODAY, None),
    (580, '2028-06-30', None),
    (580, '2028-07-01', ['580 (LTSB) reached end of life in 2028-06', 'move to 620']),
    (575, TODAY, ['575 (short-lived) is past end of life']),
    (590, TODAY, ['590 is a new feature branch, short-lived', 'no end of life', 'move to 580']),
    (595, '2027-03-31', None),
    (595, '2027-04-01', ['595 (production) reached end of life in 2027-03']),
    (610, '2026-08-31', ['610 is a new feature branch, short-lived', 'end of life 2026-08']),
    (610, '2026-09-01', ['610 (new feature branch) reached end of life in 2026-08']),
    (620, '2029-09-30', None),
    (620, '2029-10-01', ['620 (LTSB) reached end of life in 2029-09']),
])
def test_eol_warnings(branch, today, words):
    out = policy.rk_driver_decision(gpus_of('a100'), branch=branch, today=today)
    eol = [w for w in out['warnings'] if 'end of life' in w]
    if words is None:
        assert eol == []
    else:
        assert len(eol) == 1
        assert_words(eol[0], words + ['Supported Drivers and CUDA Toolkit Versions', 'FACTS.md: Driver branches'])


@pytest.mark.parametrize('models,branch,wanted,flavor', [
    (('4090', '4090'), 580, 'auto', 'open'),
    (('4090', '4090'), 560, 'auto', 'open'),
    (('4090', '4090'), 550, 'auto', 'proprietary'),
    (('t4',), 580, 'open', 'open'),
    (('t4',), 535, 'open', 'open'),
    (('4090',), 580, 'proprietary', 'proprietary'),
    (('1070',), 580, 'auto', 'proprietary'),        # Pascal: open unsupported
    (('v100',), 580, 'auto', 'proprietary'),        # Volta: open unsupported
    (('p100_noarch',), 580, 'auto', 'proprietary'),  # architecture from the name
    (('5090',), 550, 'auto', 'open'),               # Blackwell needs open, whatever the branch
    (('5090', '4090'), 580, 'auto', 'open'),
    (('5090',), 580, 'open', 'open'),
])
def test_flavor(models, branch, wanted, flavor):
    out = policy.rk_driver_decision(gpus_of(*models), branch=branch, module_flavor=wanted, today=TODAY)
    assert out['flavor'] == flavor
    assert any(r.startswith(f'flavor {flavor}') for r in out['reasons'])


@pytest.mark.parametrize('models,wanted,words', [
    (('5090',), 'proprietary', ['GPU 0', 'Blackwell', 'open kernel modules', "module_flavor 'open'"]),
    (('4090', '5090'), 'proprietary', ['GPU 1', 'Blackwell']),
    (('1070',), 'open', ['GPU 0', 'Pascal', 'Turing and newer', "'proprietary'"]),
    (('t4', 'v100'), 'open', ['GPU 1', 'Volta']),
    (('p100_noarch',), 'open', ['Pascal']),
    (('5090', '1070'), 'auto', ['no kernel-module flavour drives all these GPUs', 'Blackwell', 'Pascal']),
])
def test_flavor_refusals(models, wanted, words):
    msg = err(policy.rk_driver_decision, gpus_of(*models), branch=580, module_flavor=wanted,
              today=TODAY)
    assert_words(msg, words + ['FACTS.md: Packages'])


@pytest.mark.parametrize('models', [('unknown',), ()])
def test_auto_open_with_unknown_architecture_warns(models):
    out = policy.rk_driver_decision(gpus_of(*models), branch=580, today=TODAY)
    assert out['flavor'] == 'open'
    assert any('architecture unknown' in w and "'proprietary'" in w for w in out['warnings'])


def test_flavor_garbage_is_refused():
    assert_words(err(policy.rk_driver_decision, [], module_flavor='closed', today=TODAY),
                 ["'closed'", "'auto', 'open', 'proprietary'"])


@pytest.mark.parametrize('branch,cuda,mode', [
    (580, ['12.4', '13.0'], 'full'),
    (550, '12.4', 'full'),
    (535, ['12.4'], 'minor-compat'),
])
def test_decision_checks_cuda(branch, cuda, mode):
    out = policy.rk_driver_decision(gpus_of('a100'), branch=branch, cuda_versions=cuda, today=TODAY)
    cuda_reasons = [r for r in out['reasons'] if r.startswith('CUDA ')]
    assert cuda_reasons and all(f'({mode};' in r for r in cuda_reasons)
    assert any('minor-version compatibility' in w for w in out['warnings']) is (mode == 'minor-compat')


@pytest.mark.parametrize('branch,cuda,words', [
    (550, ['13.0'], ['CUDA 13.0 needs NVIDIA driver >= 580.65.06', 'CUDA 13.1 release notes',
                     'branch 550 is below']),
    (570, ['13.0'], ['580.65.06', 'branch 570 is below']),
    (580, ['12.7'], ['CUDA 12.7 does not exist']),
])
def test_decision_refuses_cuda_the_branch_cannot_run(branch, cuda, words):
    assert_words(err(policy.rk_driver_decision, [], branch=branch, cuda_versions=cuda, today=TODAY),
                 words)


def test_decision_accepts_model_names_for_a_box_without_driver():
    # A fresh box has no nvidia-smi yet: the inventory's expected models stand in for the facts.
    assert_words(err(policy.rk_driver_decision, ['NVIDIA GeForce RTX 4090'] * 2, branch='545', today=TODAY),
                 ['545', 'vllm-project/vllm#1801'])


def test_decision_accepts_whole_nvidia_gpu_dict():
    out = policy.rk_driver_decision({'present': True, 'gpus': gpus_of('1070')}, today=TODAY)
    assert out['flavor'] == 'proprietary'


@pytest.mark.parametrize('kwargs,words', [
    ({'gpus': 'RTX 4090'}, ['must be the list nvidia_gpu.gpus']),
    ({'gpus': [42]}, ['gpus[0] must be a dict']),
    ({'gpus': [], 'today': '15/11/2026'}, ["'YYYY-MM-DD'"]),
    ({'gpus': [], 'allow_known_bad': 'yes'}, ['allow_known_bad must be true or false']),
])
def test_decision_bad_input(kwargs, words):
    kwargs.setdefault('today', TODAY)
    assert_words(err(policy.rk_driver_decision, **kwargs), words)


def test_decision_today_defaults_to_a_real_date():
    assert policy.rk_driver_decision([], branch=580)['branch'] == '580'


# ============================================================================================
# 2. Packages
# ============================================================================================
@pytest.mark.parametrize('branch,source,flavor,distro,server,headless,install', [
    (580, 'ubuntu', 'proprietary', 'ubuntu', False, False, ['nvidia-driver-580']),
    ('580', 'ubuntu', 'open', 'ubuntu', False, False, ['nvidia-driver-580-open']),
    (580, 'ubuntu', 'proprietary', 'ubuntu', True, False, ['nvidia-driver-580-server']),
    (580, 'ubuntu', 'open', 'ubuntu', True, False, ['nvidia-driver-580-server-open']),
    (580, 'ubuntu', 'proprietary', 'ubuntu', False, True, ['nvidia-headless-580', 'nvidia-utils-580']),
    (580, 'ubuntu', 'open', 'ubuntu', False, True, ['nvidia-headless-580-open', 'nvidia-utils-580']),
    (580, 'ubuntu', 'proprietary', 'ubuntu', True, True,
     ['nvidia-headless-580-server', 'nvidia-utils-580-server']),
    (580, 'ubuntu', 'open', 'ubuntu', True, True,
     ['nvidia-headless-580-server-open', 'nvidia-utils-580-server']),
    (535, 'cuda', 'proprietary', 'ubuntu', False, False, ['cuda-drivers-535']),
    (580, 'cuda', 'open', 'ubuntu', False, False, ['nvidia-open-580']),
    (580, 'cuda', 'proprietary', 'debian', False, False, ['cuda-drivers-580']),
    (590, 'cuda', 'proprietary', 'ubuntu', False, False, ['cuda-drivers']),   # pinning: pre_install
    (590, 'cuda', 'open', 'ubuntu', False, False, ['nvidia-open']),
    (535, 'debian', 'proprietary', 'debian', False, False, ['nvidia-driver']),
    (535, 'debian', 'proprietary', 'debian', True, False, ['nvidia-tesla-535-driver']),
])
def test_driver_packages(branch, source, flavor, distro, server, headless, install):
    out = policy.rk_driver_packages(branch, source, flavor=flavor, distro=distro, server=server,
                                    headless=headless)
    assert out['install'] == install
    assert out['hold'] == out['pre_install'] + install
    assert out['pre_install'] == ([f'nvidia-driver-pinning-{branch}'] if int(branch) >= 590 else [])
    assert out['pin_version'] == f'{branch}.*'
    for pattern in ('nvidia-*', 'libnvidia-*', 'cuda-drivers*', 'xserver-xorg-video-nvidia*'):
        assert pattern in out['pin_patterns']


FAMILY = {
    'ubuntu': ['nvidia-driver-580', 'nvidia-driver-580-server-open', 'libnvidia-compute-580',
               'libnvidia-extra-535-server', 'nvidia-kernel-common-580', 'nvidia-utils-580-server',
               'xserver-xorg-video-nvidia-580', 'linux-modules-nvidia-580-server-generic',
               'nvidia-fabricmanager-580', 'cuda-drivers-580'],
    'cuda': ['cuda-drivers-580', 'cuda-drivers', 'nvidia-open-580', 'nvidia-open', 'nvidia-dkms-open',
             'nvidia-driver-pinning-590', 'libnvidia-compute-580', 'xserver-xorg-video-nvidia-580'],
    'debian': ['nvidia-driver', 'nvidia-kernel-dkms', 'nvidia-smi', 'xserver-xorg-video-nvidia',
               'libcuda1', 'nvidia-tesla-535-driver', 'libnvidia-ml1', 'firmware-nvidia-gsp'],
}
NOT_FAMILY = ['nvidia-container-toolkit', 'nvidia-container-toolkit-base', 'libnvidia-container1',
              'libnvidia-container-tools']
OUTSIDE = ['cuda-toolkit-12-4', 'libcudnn8', 'linux-image-generic', 'docker-ce']


def _pinned(name, out):
    return (any(fnmatch.fnmatchcase(name, p) for p in out['pin_patterns'])
            and not any(fnmatch.fnmatchcase(name, p) for p in out['pin_exclude']))


@pytest.mark.parametrize('source,branch,distro', [('ubuntu', 580, 'ubuntu'), ('cuda', 580, 'ubuntu'),
                                                  ('debian', 535, 'debian')])
def test_pin_patterns_cover_the_family_only(source, branch, distro):
    out = policy.rk_driver_packages(branch, source, distro=distro)
    for name in FAMILY[source] + out['install']:
        assert _pinned(name, out), name
        kernel_following = any(fnmatch.fnmatchcase(name, p) for p in out['kernel_following'])
        # The kernel-following modules move with kernel updates: pinned by branch, never blacklisted.
        assert any(re.match(rx, name) for rx in out['unattended_blacklist']) is not kernel_following, name
    for name in NOT_FAMILY + OUTSIDE:
        assert not _pinned(name, out), name
        # The container toolkit keeps its security updates.
        assert not any(re.match(rx, name) for rx in out['unattended_blacklist']), name


@pytest.mark.parametrize('branch,server,warned', [
    (535, True, True), (550, True, True), (565, True, True), (580, True, False), (535, False, False),
])
def test_ubuntu_transitional_server_warning(branch, server, warned):
    out = policy.rk_driver_packages(branch, 'ubuntu', server=server)
    hits = [w for w in out['warnings'] if 'transitional' in w]
    assert bool(hits) is warned
    if warned:
        assert_words(hits[0], ['pulls 580', 'verify the installed driver version', 'FACTS.md: Packages'])


def test_cuda_repo_warnings():
    assert any('ignored' in w for w in policy.rk_driver_packages(580, 'cuda', server=True)['warnings'])
    out = policy.rk_driver_packages(590, 'cuda')
    assert any('nvidia-driver-pinning-590 locks it' in w for w in out['warnings'])
    assert policy.rk_driver_packages(580, 'cuda')['warnings'] == []


@pytest.mark.parametrize('args,kwargs,words', [
    ((580, 'ubuntu'), {'distro': 'debian'}, ["source 'ubuntu'", 'needs an Ubuntu host']),
    ((535, 'debian'), {'distro': 'ubuntu'}, ["source 'debian'", 'needs a Debian host']),
    ((580, 'debian'), {'distro': 'debian'}, ['ships only branch 535', "source 'cuda'"]),
    ((535, 'debian'), {'distro': 'debian', 'flavor': 'open'}, ['flavor open is not mapped', "source 'cuda'"]),
    ((535, 'debian'), {'distro': 'debian', 'headless': True}, ['headless=True is not mapped']),
    ((580, 'cuda'), {'headless': True}, ["mapped only for source 'ubuntu'"]),
    ((580, 'ppa'), {}, ["source 'ppa'", "'ubuntu'", "'cuda'", "'debian'"]),
    ((580, 'ubuntu'), {'flavor': 'auto'}, ["flavor 'auto'", 'rk_driver_decision']),
    ((580, 'ubuntu'), {'distro': 'centos'}, ["distro 'centos'"]),
    ((580, 'ubuntu'), {'server': 'yes'}, ['server must be true or false']),
    (('58O', 'ubuntu'), {}, ['not a driver branch']),
    ((470, 'ubuntu'), {}, ['not in rigkeeper']),
])
def test_driver_packages_refusals(args, kwargs, words):
    assert_words(err(policy.rk_driver_packages, *args, **kwargs), words)


@pytest.mark.parametrize('version,branch,expected', [
    ('580.95.05', 580, True),
    ('580.95.05', '580', True),
    ('580.95.05', 'R580', True),
    ('580.95.05', 535, False),
    ('570.26', 570, True),
    ('535.309.01-0ubuntu0.24.04.2', 535, True),   # Ubuntu transitional package version
    ('535.309.01-0ubuntu0.24.04.2', 580, False),
    ('1:580.95.05-1', 580, True),                 # epoch
    ('2:535.261.03-1', 580, False),
    ('535.261.03-1', 535, True),                  # Debian non-free
    ('590.44.01-0ubuntu1~24.04', 590, True),
    ('580', 580, True),
    ('5800.1', 580, False),
    (' 580.95.05 ', 580, True),
])
def test_version_on_branch(version, branch, expected):
    assert policy.rk_version_on_branch(version, branch) is expected


@pytest.mark.parametrize('version,branch,words', [
    (None, 580, ['None', 'is not none']),
    ('', 580, ['not a driver version']),
    ('58O.95.05', 580, ['not a driver version']),
    ('580.95.05 extra', 580, ['not a driver version']),
    (True, 580, ['not a driver version']),
    ('580.95.05', '58O', ['not a driver branch']),
    ('580.95.05', '', ['not a driver branch']),
])
def test_version_on_branch_bad_input(version, branch, words):
    assert_words(err(policy.rk_version_on_branch, version, branch), words)


# ============================================================================================
# 3. CUDA
# ============================================================================================
CUDA_TABLE = [('11.8', '520.61.05'), ('12.0', '525.60.13'), ('12.1', '530.30.02'),
              ('12.2', '535.54.03'), ('12.3', '545.23.06'), ('12.4', '550.54.14'),
              ('12.5', '555.42.02'), ('12.6', '560.28.03'), ('12.8', '570.26'),
              ('12.9', '575.51.03'), ('13.0', '580.65.06'), ('13.1', '590.44.01')]


@pytest.mark.parametrize('cuda,minimum', CUDA_TABLE)
def test_cuda_table_rows(cuda, minimum):
    out = policy.rk_cuda_check(cuda, minimum)
    assert out == {'ok': True, 'mode': 'full', 'warnings': [], 'cuda': cuda, 'driver': minimum,
                   'min_driver': minimum, 'source': POLICY['cuda']['min_driver'][cuda]['source']}
    assert 'CUDA 13.1 release notes, table 3' in out['source']
    assert policy.rk_cuda_check(cuda, minimum.split('.')[0])['mode'] == 'full'  # its branch


@pytest.mark.parametrize('cuda,driver,mode', [
    ('12.4', '550.54.14', 'full'),
    ('12.4', '580.95.05', 'full'),
    ('12.4', '550', 'full'),          # branch: compared by branch number
    ('12.4', 550, 'full'),
    ('12.4', '550.54.13', 'minor-compat'),
    ('12.4', '545', 'minor-compat'),
    ('12.4', '535.54.03', 'minor-compat'),
    ('12.0', '525.60.12', 'minor-compat'),
    ('12.9', '525', 'minor-compat'),
    ('11.8', '450.80.02', 'minor-compat'),
    ('11.8', '470', 'minor-compat'),
    ('13.0', '580', 'full'),
    ('13.1', '580.65.06', 'minor-compat'),
    ('13.1', '580', 'minor-compat'),
    ('12.8', 570, 'full'),
    ('12.4.1', '550.54.14', 'full'),  # patch release read as 12.4
    (12.4, '550.54.14', 'full'),      # YAML float
    ('12-4', '550.54.14', 'full'),    # package-style
    ('11.8', '580.95.05', 'full'),    # newer drivers run older CUDA
])
def test_cuda_check_modes(cuda, driver, mode):
    out = policy.rk_cuda_check(cuda, driver)
    assert out['ok'] is True and out['mode'] == mode
    if mode == 'minor-compat':
        assert len(out['warnings']) == 1
        assert_words(out['warnings'][0], ['minor-version compatibility', out['min_driver'],
                                          'PTX JIT', 'CUDA 13.1 release notes'])
    else:
        assert out['warnings'] == []


@pytest.mark.parametrize('cuda,driver,words', [
    ('12.4', '520.61.05', ['CUDA 12.4 needs NVIDIA driver >= 550.54.14', '>= 525',
                           'driver 520.61.05 is below both', 'CUDA 13.1 release notes, table 3']),
    ('12.0', '520', ['525.60.13', 'branch 520 is below both']),
    ('11.8', '450.80.01', ['520.61.05', '450.80.02']),
    ('11.8', '440', ['520.61.05']),
    ('13.0', '575.51.03', ['580.65.06', 'use branch 580 or newer']),
    ('13.1', '575', ['590.44.01', '>= 580']),
])
def test_cuda_check_refusals(cuda, driver, words):
    assert_words(err(policy.rk_cuda_check, cuda, driver), words)


@pytest.mark.parametrize('cuda,driver,words', [
    ('12.7', '580.95.05', ['CUDA 12.7 does not exist', 'no 12.7', '12.6 or 12.8']),
    ('12.7.1', '580', ['CUDA 12.7 does not exist']),
    ('14.0', '580', ["CUDA 14.0 is not in rigkeeper's CUDA table", 'known: 11.8']),
    ('11.7', '580', ['not in rigkeeper']),
    ('twelve', '580', ['"major.minor"']),
    (12, '580', ['"major.minor"']),
    (None, '580', ['"major.minor"']),
    ('12.4', 'abc', ['not a driver version']),
    ('12.4', None, ['not a driver version']),
    ('12.4', '', ['not a driver version']),
    ('12.4', True, ['not a driver version']),
])
def test_cuda_check_bad_input(cuda, driver, words):
    assert_words(err(policy.rk_cuda_check, cuda, driver), words)


@pytest.mark.parametrize('cuda,expected', [
    ('12.4', ['cuda-toolkit-12-4']), ('13.0', ['cuda-toolkit-13-0']), ('11.8', ['cuda-toolkit-11-8']),
    ('12.2.2', ['cuda-toolkit-12-2']),
])
def test_cuda_packages(cuda, expected):
    assert policy.rk_cuda_packages(cuda) == expected


def test_cuda_packages_refuses_12_7():
    assert 'does not exist' in err(policy.rk_cuda_packages, '12.7')


@pytest.mark.parametrize('cuda,major,kwargs,expected', [
    ('12.4', 8, {}, ['libcudnn8', 'libcudnn8-dev']),
    ('11.8', 8, {'dev': False}, ['libcudnn8']),
    ('12.2', 8, {'version': '8.9.7.29-1+cuda12.2'},
     ['libcudnn8=8.9.7.29-1+cuda12.2', 'libcudnn8-dev=8.9.7.29-1+cuda12.2']),
    ('11.8', 8, {'version': '8.9.7.29-1+cuda11.8', 'dev': False}, ['libcudnn8=8.9.7.29-1+cuda11.8']),
    ('12.4', 9, {}, ['cudnn9-cuda-12', 'libcudnn9-cuda-12', 'libcudnn9-dev-cuda-12']),
    ('12.4', '9', {}, ['cudnn9-cuda-12', 'libcudnn9-cuda-12', 'libcudnn9-dev-cuda-12']),
    ('12.4', 9, {'dev': False}, ['libcudnn9-cuda-12']),
    ('13.0', 9, {}, ['cudnn9-cuda-13', 'libcudnn9-cuda-13', 'libcudnn9-dev-cuda-13']),
    ('12.8', 9, {'version': '9.5.1.17-1', 'dev': False}, ['libcudnn9-cuda-12=9.5.1.17-1']),
])
def test_cudnn_packages(cuda, major, kwargs, expected):
    assert policy.rk_cudnn_packages(cuda, major, **kwargs) == expected


@pytest.mark.parametrize('cuda,major,kwargs,words', [
    ('13.0', 8, {}, ['cuDNN 8 is built for CUDA 11.x and 12.x only', 'use cudnn_major=9']),
    ('11.8', 9, {}, ['cuDNN 9 is built for CUDA 12.x and 13.x only', 'use cudnn_major=8']),
    ('12.4', 7, {}, ['cudnn_major 7 is not 8 or 9']),
    ('12.4', True, {}, ['is not 8 or 9']),
    ('12.4', 8, {'version': '8.9.7.29-1+cuda11.8'}, ['build for CUDA 11.8', '"+cuda12.x"']),
    ('12.4', 8, {'version': '8.9.7'}, ['not a cuDNN 8 package version', '8.9.7.29-1+cuda12.2']),
    ('12.4', 9, {'version': '8.9.7.29-1+cuda12.2'}, ['not a cuDNN 9 package version']),
    ('12.4', 9, {'version': 9}, ['must be a string']),
    ('12.4', 9, {'dev': 'no'}, ['dev must be true or false']),
    ('12.7', 9, {}, ['CUDA 12.7 does not exist']),
])
def test_cudnn_refusals(cuda, major, kwargs, words):
    assert_words(err(policy.rk_cudnn_packages, cuda, major, **kwargs), words)


# ============================================================================================
# 4. Power
# ============================================================================================
def _limits(plan):
    return [(p['limit_w'], p['source']) for p in plan]


def test_power_plan_defaults_and_shape():
    plan = policy.rk_power_plan(gpus_of('4090', '3090'))
    assert plan[0] == {'index': 0, 'bus_id': '00000000:01:00.0',
                       'uuid': 'GPU-00000000-aaaa-bbbb-cccc-dddddddddddd',
                       'product_name': 'NVIDIA GeForce RTX 4090', 'limit_w': 450, 'default_w': 450,
                       'min_w': 150, 'max_w': 600, 'source': 'default', 'want': None}
    assert _limits(plan) == [(450, 'default'), (350, 'default')]
    assert all(isinstance(p['limit_w'], int) for p in plan)


def test_power_plan_unknown_default_gives_none():
    assert policy.rk_power_plan(gpus_of('unknown'))[0]['limit_w'] is None


UUID1 = 'GPU-00000001-aaaa-bbbb-cccc-dddddddddddd'


@pytest.mark.parametrize('limits,expected', [
    ([{'model': 'RTX 4090', 'watts': 300}], [(300, 'model'), (300, 'model'), (350, 'default')]),
    ([{'model': 'rtx 4090', 'watts': 300}], [(300, 'model'), (300, 'model'), (350, 'default')]),
    ([{'model': 'GeForce RTX', 'watts': 300}], [(300, 'model'), (300, 'model'), (300, 'model')]),
    ([{'model': 'RTX 4090', 'watts': 300}, {'index': 1, 'watts': 350}],
     [(300, 'model'), (350, 'index'), (350, 'default')]),
    ([{'index': 1, 'watts': 350}, {'model': 'RTX 4090', 'watts': 300}],  # order does not matter
     [(300, 'model'), (350, 'index'), (350, 'default')]),
    ([{'model': 'RTX 4090', 'watts': 300}, {'index': 1, 'watts': 350}, {'uuid': UUID1, 'watts': 400}],
     [(300, 'model'), (400, 'uuid'), (350, 'default')]),
    ([{'uuid': UUID1.lower().upper(), 'watts': 400}], [(450, 'default'), (400, 'uuid'), (350, 'default')]),
    ([{'index': 0, 'watts': 350}, {'bus_id': '01:00.0', 'watts': 320}],
     [(320, 'bus_id'), (450, 'default'), (350, 'default')]),
    ([{'bus_id': '0000:02:00.0', 'watts': 310}], [(450, 'default'), (310, 'bus_id'), (350, 'default')]),
    ([{'bus_id': '00000000:03:00.0', 'watts': 280}], [(450, 'default'), (450, 'default'), (280, 'bus_id')]),
    ([{'index': 2, 'percent': 80}], [(450, 'default'), (450, 'default'), (280, 'index')]),
])
def test_power_plan_precedence(limits, expected):
    gpus = gpus_of('4090', '4090', '3090')
    assert _limits(policy.rk_power_plan(gpus, limits)) == expected


@pytest.mark.parametrize('want,limit', [
    ({'percent': 70}, 315),
    ({'percent': 66.7}, 300),      # 300.15
    ({'percent': 77.8}, 350),      # 350.1
    ({'percent': 77.7}, 350),      # 349.65
    ({'percent': 133.3}, 600),     # 599.85
    ({'percent': '80'}, 360),      # numeric string
    ({'watts': 300.5}, 301),       # half up, not banker's rounding
    ({'watts': 301.5}, 302),
    ({'watts': 150}, 150),         # min, inclusive
    ({'watts': 600}, 600),         # max, inclusive
    ({'watts': '320'}, 320),
])
def test_power_plan_percent_and_rounding(want, limit):
    plan = policy.rk_power_plan(gpus_of('4090'), [dict(want, index=0)])
    assert plan[0]['limit_w'] == limit and isinstance(plan[0]['limit_w'], int)
    assert plan[0]['want'] == dict(want, index=0)


@pytest.mark.parametrize('models,limits,words', [
    (('4090',), [{'model': 'RTX 4090', 'watts': 700}],
     ['GPU 0', '00000000:01:00.0', 'requested 700 W', '[150 W, 600 W]', 'choose a value in that range']),
    (('4090',), [{'index': 0, 'watts': 100}], ['GPU 0', 'requested 100 W', '[150 W, 600 W]']),
    (('4090',), [{'index': 0, 'percent': 140}],
     ['140% of the 450 W default = 630 W', '[150 W, 600 W]']),
    (('4090', '3090'), [{'index': 1, 'watts': 380}],
     ['GPU 1 (00000000:02:00.0, NVIDIA GeForce RTX 3090)', 'requested 380 W', '[100 W, 350 W]']),
    (('4090',), [{'index': 0, 'watts': 600.6}], ['requested 600.6 W', '600 W]']),
])
def test_power_plan_out_of_range(models, limits, words):
    assert_words(err(policy.rk_power_plan, gpus_of(*models), limits), words)


@pytest.mark.parametrize('limits,words', [
    ([{'model': 'RTX 3090', 'watts': 300}], ["model='RTX 3090'", 'matches no GPU', 'GPU 0 (']),
    ([{'index': 5, 'watts': 300}], ['index=5', 'matches no GPU']),
    ([{'uuid': 'GPU-nope', 'watts': 300}], ['matches no GPU']),
    ([{'bus_id': '00000000:41:00.0', 'watts': 300}], ['matches no GPU']),
])
def test_power_plan_want_matching_no_gpu(limits, words):
    assert_words(err(policy.rk_power_plan, gpus_of('4090', '4090'), limits), words)


def test_power_plan_duplicated_uuid_needs_bus_id():
    gpus = [gpu('4090', 0, uuid='GPU-SAME'), gpu('4090', 1, uuid='GPU-SAME')]
    assert_words(err(policy.rk_power_plan, gpus, [{'uuid': 'GPU-SAME', 'watts': 300}]),
                 ['matches 2 GPUs', 'bus_id instead'])


@pytest.mark.parametrize('limits', [
    [{'model': 'RTX 4090', 'watts': 300}, {'model': '4090', 'watts': 350}],
    [{'uuid': 'GPU-00000000-aaaa-bbbb-cccc-dddddddddddd', 'watts': 300},
     {'bus_id': '01:00.0', 'watts': 350}],
    [{'index': 0, 'watts': 300}, {'index': 0, 'percent': 70}],
])
def test_power_plan_equal_precedence_conflict(limits):
    assert_words(err(policy.rk_power_plan, gpus_of('4090'), limits),
                 ['GPU 0', 'wants of equal precedence', 'keep one'])


@pytest.mark.parametrize('limits,words', [
    ('RTX 4090: 300', ['limits[0] must be a dict']),
    ([['RTX 4090', 300]], ['limits[0] must be a dict']),
    ([{'model': 'RTX 4090', 'index': 0, 'watts': 300}], ['exactly one selector', "'index', 'model'"]),
    ([{'watts': 300}], ['exactly one selector', 'none']),
    ([{'index': 0, 'watts': 300, 'percent': 70}], ['exactly one of watts or percent']),
    ([{'index': 0}], ['exactly one of watts or percent']),
    ([{'index': 0, 'watt': 300}], ["unknown keys ['watt']"]),
    ([{'index': -1, 'watts': 300}], ['index must be a GPU index']),
    ([{'index': '0', 'watts': 300}], ['index must be a GPU index']),
    ([{'index': True, 'watts': 300}], ['index must be a GPU index']),
    ([{'bus_id': 'slot1', 'watts': 300}], ["bus_id 'slot1' is not a PCI address"]),
    ([{'model': '', 'watts': 300}], ['model must be a non-empty string']),
    ([{'uuid': 7, 'watts': 300}], ['uuid must be a non-empty string']),
    ([{'index': 0, 'watts': '300W'}], ['must be a number', 'without a unit']),
    ([{'index': 0, 'watts': 0}], ['must be above 0']),
    ([{'index': 0, 'percent': -5}], ['must be above 0']),
    ([{'index': 0, 'watts': True}], ['must be a number']),
])
def test_power_plan_malformed_wants(limits, words):
    assert_words(err(policy.rk_power_plan, gpus_of('4090'), limits), words)


def test_power_plan_card_without_range():
    assert_words(err(policy.rk_power_plan, gpus_of('unknown'), [{'index': 0, 'watts': 100}]),
                 ['GPU 0', 'no power limit range (N/A)', 'remove the want'])


def test_power_plan_percent_without_default():
    g = gpu('4090', power_default_w=None)
    assert_words(err(policy.rk_power_plan, [g], [{'index': 0, 'percent': 80}]),
                 ['no default power limit', 'give watts instead'])


@pytest.mark.parametrize('limits,psu,kwargs', [
    ([], 1600, {}),                                        # 900 + 250 = 1150 <= 1280
    ([{'model': '4090', 'watts': 355}], 1200, {}),         # 710 + 250 = 960 <= 960 (edge)
    ([], 1200, {'psu_fraction': 1.0}),                     # 1150 <= 1200
    ([], 1200, {'base_watts': 0}),                         # 900 <= 960
    ([], 1600, {'transient_factor': 1.5}),                 # 1350 + 250 = 1600 <= 1600
    ([], None, {'base_watts': 5000}),                      # no PSU: not checked
])
def test_power_plan_psu_ok(limits, psu, kwargs):
    policy.rk_power_plan(gpus_of('4090', '4090'), limits, psu_watts=psu, **kwargs)


@pytest.mark.parametrize('limits,psu,kwargs,words', [
    ([], 1200, {}, ['PSU budget exceeded', '900 W + base 250 W = 1150 W', '80% of the 1200 W PSU (960 W)',
                    'Rule of thumb', 'no cited source', 'spike', '<= 355 W each', 'Lower the power limits']),
    ([{'model': '4090', 'watts': 356}], 1200, {}, ['712 W + base 250 W = 962 W']),
    ([], 1200, {'psu_fraction': 0.9}, ['90% of the 1200 W PSU (1080 W)']),
    ([], 1000, {'base_watts': 900}, ['base_watts 900 W alone exceeds it']),
    ([], 1600, {'transient_factor': 2}, ['transient', 'x transient_factor 2', '2050 W', 'over the 1600 W']),
])
def test_power_plan_psu_refusals(limits, psu, kwargs, words):
    assert_words(err(policy.rk_power_plan, gpus_of('4090', '4090'), limits, psu_watts=psu, **kwargs),
                 words)


@pytest.mark.parametrize('kwargs,words', [
    ({'psu_watts': 0}, ['psu_watts must be above 0']),
    ({'psu_watts': 'big'}, ['psu_watts must be a number']),
    ({'psu_watts': 1600, 'base_watts': -1}, ['base_watts must be 0 or more']),
    ({'psu_watts': 1600, 'psu_fraction': 1.5}, ['psu_fraction must be in (0, 1]']),
    ({'psu_watts': 1600, 'psu_fraction': 0}, ['psu_fraction must be in (0, 1]']),
    ({'psu_watts': 1600, 'transient_factor': 0.5}, ['transient_factor must be 1 or more']),
])
def test_power_plan_bad_psu_numbers(kwargs, words):
    assert_words(err(policy.rk_power_plan, gpus_of('4090'), [], **kwargs), words)


def test_power_plan_psu_uses_current_then_max_for_unknown_default():
    g = gpu('4090', power_default_w=None, power_limit_w=None)  # budget falls back to max 600
    policy.rk_power_plan([g], [], psu_watts=1063)              # 600 + 250 = 850 <= 850.4
    assert 'PSU budget exceeded' in err(policy.rk_power_plan, [g], [], psu_watts=1062)


def test_power_plan_psu_with_unknown_power_is_refused():
    assert_words(err(policy.rk_power_plan, gpus_of('unknown'), [], psu_watts=1000),
                 ['GPU 0', 'reports no power limit', 'psu_watts: null'])


# ============================================================================================
# 5. Kernel command line
# ============================================================================================
@pytest.mark.parametrize('vendor,mode,present,absent', [
    ('amd', 'off', ['amd_iommu=off'], ['iommu']),
    ('intel', 'off', ['intel_iommu=off'], ['iommu']),
    ('amd', 'pt', ['iommu=pt'], ['amd_iommu=off']),
    ('intel', 'pt', ['iommu=pt'], ['intel_iommu=off']),
    ('amd', 'on', ['amd_iommu=on'], ['iommu']),
    ('intel', 'on', ['intel_iommu=on'], ['iommu']),
    ('amd', 'unmanaged', [], []),
    ('intel', 'unmanaged', [], []),
    ('arm', 'unmanaged', [], []),
    ('unknown', 'unmanaged', [], []),
])
def test_iommu_presets(vendor, mode, present, absent):
    assert policy.rk_iommu_args(vendor, mode) == {'present': present, 'absent': absent}


@pytest.mark.parametrize('vendor,mode,words', [
    ('arm', 'off', ["cpu_vendor 'arm'", "use mode 'unmanaged'"]),
    ('unknown', 'pt', ["cpu_vendor 'unknown'"]),
    ('amd', 'passthrough', ["IOMMU mode 'passthrough' is not one of", "'pt'"]),
    ('amd', None, ['IOMMU mode None']),
])
def test_iommu_refusals(vendor, mode, words):
    assert_words(err(policy.rk_iommu_args, vendor, mode), words)


@pytest.mark.parametrize('value,expected', [
    (True, {'present': ['mitigations=off'], 'absent': []}),
    (False, {'present': [], 'absent': ['mitigations=off']}),
    (None, {'present': [], 'absent': []}),
])
def test_mitigations_args(value, expected):
    assert policy.rk_mitigations_args(value) == expected


def test_mitigations_args_default_and_garbage():
    assert policy.rk_mitigations_args() == {'present': [], 'absent': ['mitigations=off']}
    assert 'true or false' in err(policy.rk_mitigations_args, 'off')


def test_kernel_args_merge():
    out = policy.rk_kernel_args('amd', 'off', True, ['pcie_aspm=off', 'quiet'])
    assert out == {'present': ['amd_iommu=off', 'mitigations=off', 'pcie_aspm=off', 'quiet'],
                   'absent': ['iommu']}
    assert policy.rk_kernel_args('intel') == {'present': [], 'absent': []}


@pytest.mark.parametrize('kwargs,words', [
    ({'extra_args': ['rcutree.rcu_idle_gp_delay=1']},
     ['rcutree.rcu_idle_gp_delay is not allowed', 'no-op', 'RCU_FAST_NO_HZ', 'remove it']),
    ({'extra_args': ['rcutree.rcu_idle_gp_delay']}, ['rcutree.rcu_idle_gp_delay is not allowed']),
    ({'extra_args': ['quiet splash']}, ['one per list item']),
    ({'extra_args': ['acpi_osi="Linux"']}, ['quotes, $']),
    ({'extra_args': ['foo=$(reboot)']}, ['shell script']),
    ({'extra_args': ['pci=noaer', 'pci=nommconf']}, ['set pci twice', 'keep one']),
    ({'extra_args': ['']}, ['non-empty string']),
    ({'extra_args': [3]}, ['non-empty string']),
    ({'iommu_mode': 'off', 'extra_args': ['amd_iommu=on']}, ['amd_iommu is managed by iommu_mode=off']),
    ({'iommu_mode': 'pt', 'extra_args': ['iommu=soft']}, ['iommu is managed by iommu_mode=pt']),
    ({'mitigations_off': False, 'extra_args': ['mitigations=auto']},
     ['mitigations is managed by mitigations_off']),
])
def test_kernel_args_refusals(kwargs, words):
    assert_words(err(policy.rk_kernel_args, 'amd', **kwargs), words)


def test_kernel_args_extras_allowed_when_preset_unmanaged():
    out = policy.rk_kernel_args('amd', 'unmanaged', None, ['amd_iommu=on', 'mitigations=auto'])
    assert out == {'present': ['amd_iommu=on', 'mitigations=auto'], 'absent': []}


@pytest.mark.parametrize('cmdline,args,expected', [
    ({'amd_iommu': 'off', 'quiet': None}, {'present': ['amd_iommu=off'], 'absent': ['iommu']},
     {'in_sync': True, 'missing': [], 'unwanted': []}),
    ('BOOT_IMAGE=/vmlinuz ro quiet iommu=pt', {'present': ['amd_iommu=off'], 'absent': ['iommu']},
     {'in_sync': False, 'missing': ['amd_iommu=off'], 'unwanted': ['iommu=pt']}),
    ({'amd_iommu': 'on'}, {'present': ['amd_iommu=off'], 'absent': []},
     {'in_sync': False, 'missing': ['amd_iommu=off'], 'unwanted': []}),
    ({'mitigations': 'off'}, {'present': [], 'absent': ['mitigations=off']},
     {'in_sync': False, 'missing': [], 'unwanted': ['mitigations=off']}),
    ({'mitigations': 'auto'}, {'present': [], 'absent': ['mitigations=off']},
     {'in_sync': True, 'missing': [], 'unwanted': []}),
    ('ro quiet', {'present': ['quiet'], 'absent': []}, {'in_sync': True, 'missing': [], 'unwanted': []}),
    # Every console= counts; a repeated console does not look like drift.
    ('ro console=tty0 console=ttyS0,115200n8', {'present': ['console=tty0', 'console=ttyS0,115200n8'], 'absent': []},
     {'in_sync': True, 'missing': [], 'unwanted': []}),
    # Anything else: the last occurrence is in effect.
    ('ro iommu=off iommu=pt', {'present': ['iommu=pt'], 'absent': ['iommu=off']},
     {'in_sync': True, 'missing': [], 'unwanted': []}),
    ('ro iommu=pt iommu=off', {'present': ['iommu=pt'], 'absent': ['iommu=off']},
     {'in_sync': False, 'missing': ['iommu=pt'], 'unwanted': ['iommu=off']}),
    ('ro iommu=pt iommu=off', {'present': [], 'absent': ['iommu']},
     {'in_sync': False, 'missing': [], 'unwanted': ['iommu=off']}),
])
def test_cmdline_diff(cmdline, args, expected):
    assert policy.rk_cmdline_diff(cmdline, args) == expected


@pytest.mark.parametrize('cmdline,args,words', [
    (None, {'present': [], 'absent': []}, ['cmdline must be']),
    ('ro', ['amd_iommu=off'], ['kernel_args must be the {present, absent} dict']),
])
def test_cmdline_diff_bad_input(cmdline, args, words):
    assert_words(err(policy.rk_cmdline_diff, cmdline, args), words)


# ============================================================================================
# 6. Preflight
# ============================================================================================
def nv(gpus=None, present=True, driver='580.95.05', **over):
    gpus = gpus_of('4090', '4090') if gpus is None else gpus
    d = {'present': present, 'error': None if present else 'nvidia-smi not found',
         'nvidia_smi': '/usr/bin/nvidia-smi' if present else None,
         'driver_version': driver if present else None, 'cuda_version': '13.0' if present else None,
         'count': len(gpus), 'nvswitch': False, 'gpus': gpus, 'topology': None, 'p2p_read': None}
    d.update(over)
    return d


def host(**over):
    d = {'cpu_vendor': 'amd', 'mem_total_mib': 131072, 'cmdline': 'ro quiet', 'cmdline_args': {},
         'iommu': {'enabled': False, 'groups': 0, 'cmdline': {}},
         'acs': {'checked': True, 'enabled_bridges': []}, 'secure_boot': False,
         'reboot_required': False, 'driver_installed_version': '580.95.05',
         'driver_running_version': '580.95.05', 'driver_mismatch': False, 'systemd': True}
    d.update(over)
    return d


def check(results, check_id):
    found = [r for r in results if r['id'] == check_id]
    assert len(found) == 1, results
    return found[0]


IDS = ['pcie_link', 'ram_vs_vram', 'psu_budget', 'p2p_iommu', 'known_bad_driver', 'gpu_count', 'runfile']


def test_preflight_all_ok_shape():
    results = policy.rk_preflight_checks(nv(), host(), {'p2p_wanted': True, 'expected_gpu_count': 2,
                                                        'psu_watts': 1600})
    assert [r['id'] for r in results] == IDS
    for r in results:
        assert set(r) == {'id', 'severity', 'ok', 'message'}
        assert r['ok'] is True and r['severity'] == 'info' and r['message']


def test_preflight_defaults_to_no_config():
    assert all(r['ok'] for r in policy.rk_preflight_checks(nv(), host()))


# (case id, nvidia_gpu, rigkeeper_host, config, check id, severity, words in message)
FAILING = [
    ('pcie-width', nv(gpus=[gpu('4090', 0), gpu('4090', 1, pcie_width_current=2)]), host(), {},
     'pcie_link', 'warn', ['GPU 1', 'x2 of x16', 'x16 + x2 trap', 'CPU-attached x16 slot']),
    ('ram', nv(), host(mem_total_mib=65536), {},
     'ram_vs_vram', 'warn', ['RAM 64.0 GiB', '2x total GPU memory 48.0 GiB', 'rule of thumb', 'Add RAM']),
    ('ram-factor', nv(), host(), {'ram_vram_factor': 3},
     'ram_vs_vram', 'warn', ['3x total GPU memory']),
    ('psu', nv(), host(), {'psu_watts': 1200},
     'psu_budget', 'warn', ['PSU budget exceeded', '1150 W', '80%', 'Rule of thumb', 'Lower the power limits']),
    ('psu-limits', nv(), host(), {'psu_watts': 1600, 'base_watts': 400,
                                  'power_limits': [{'model': '4090', 'watts': 600}]},
     'psu_budget', 'warn', ['1200 W + base 400 W = 1600 W']),
    ('psu-bad-want', nv(), host(), {'psu_watts': 1600, 'power_limits': [{'model': 'RTX 3090', 'watts': 300}]},
     'psu_budget', 'warn', ['matches no GPU']),
    ('iommu', nv(), host(iommu={'enabled': True, 'groups': 30, 'cmdline': {'iommu': 'pt'}}),
     {'p2p_wanted': True}, 'p2p_iommu', 'warn',
     ['IOMMU is enabled', 'iommu=pt is set', 'pytorch/pytorch#52142', "IOMMU mode to 'off'",
      'NCCL_P2P_DISABLE=1']),
    ('acs', nv(), host(acs={'checked': True, 'enabled_bridges': ['0000:00:01.1', '0000:00:03.1']}),
     {'p2p_wanted': True}, 'p2p_iommu', 'warn',
     ['ACS is on for bridge(s) 0000:00:01.1, 0000:00:03.1', 'PCI Access Control Services',
      'setpci -s <bdf> ECAP_ACS+0x6.w=0000']),
    ('545', nv(gpus=gpus_of('3090', '3090'), driver='545.29.02'),
     host(driver_running_version='545.29.02'), {},
     'known_bad_driver', 'fail', ['545.29.02', 'vllm-project/vllm#1801', 'NVIDIA/nccl#1127',
                                  'upgrade_driver.yml']),
    ('545-allowed', nv(gpus=gpus_of('3090', '3090'), driver='545.29.06'),
     host(driver_running_version=None), {'allow_known_bad': True},
     'known_bad_driver', 'warn', ['545.29.06', 'huggingface/text-generation-inference#1559']),
    ('555', nv(driver='555.42.06'), host(driver_running_version='555.42.06'), {},
     'known_bad_driver', 'warn', ['vllm-project/vllm#5458']),
    ('560', nv(gpus=gpus_of('a100', 'a100'), driver='560.35.03'), host(driver_running_version='560.35.03'),
     {}, 'known_bad_driver', 'warn', ['dmlc/xgboost#11242']),
    ('count', nv(gpus=gpus_of('4090')), host(), {'expected_gpu_count': 2},
     'gpu_count', 'fail', ['lists 1 GPU(s), expected 2', 'lspci', 'dmesg']),
    ('severity-override', nv(gpus=[gpu('4090', 0, pcie_width_current=8)]), host(),
     {'severities': {'pcie_link': 'fail'}}, 'pcie_link', 'fail', ['x8 of x16']),
    ('severity-downgrade', nv(gpus=gpus_of('4090')), host(),
     {'expected_gpu_count': 4, 'severities': {'gpu_count': 'warn'}}, 'gpu_count', 'warn', ['expected 4']),
]


@pytest.mark.parametrize('nvidia_gpu,rk_host,config,check_id,severity,words',
                         [c[1:] for c in FAILING], ids=[c[0] for c in FAILING])
def test_preflight_failing(nvidia_gpu, rk_host, config, check_id, severity, words):
    result = check(policy.rk_preflight_checks(nvidia_gpu, rk_host, config), check_id)
    assert result['ok'] is False and result['severity'] == severity
    assert_words(result['message'], words)


OK = [
    ('pcie-full', nv(), host(), {}, 'pcie_link', ['maximum width']),
    ('pcie-gen-idle', nv(gpus=[gpu('4090', 0, pcie_gen_current=1)]), host(), {},
     'pcie_link', ['gen 1 of 4', 'normal at idle', 'under load']),
    ('pcie-unknown', nv(gpus=[gpu('4090', 0, pcie_width_current=None, pcie_gen_current=None)]), host(), {},
     'pcie_link', ['maximum width']),
    ('ram', nv(), host(mem_total_mib=98304), {}, 'ram_vs_vram', ['>= 2x']),
    ('ram-unknown', nv(), host(mem_total_mib=None), {}, 'ram_vs_vram', ['not checked']),
    ('psu-unset', nv(), host(), {}, 'psu_budget', ['not checked', 'psu_watts']),
    ('psu', nv(), host(), {'psu_watts': 1600}, 'psu_budget', ['PSU budget ok', '1150 W', '1280 W']),
    ('psu-lowered', nv(), host(), {'psu_watts': 1200, 'power_limits': [{'model': '4090', 'watts': 300}]},
     'psu_budget', ['PSU budget ok', '600 W + base 250 W']),
    ('p2p-not-wanted', nv(), host(iommu={'enabled': True}), {}, 'p2p_iommu', ['p2p_wanted is false']),
    ('p2p-one-gpu', nv(gpus=gpus_of('4090')), host(iommu={'enabled': True}), {'p2p_wanted': True},
     'p2p_iommu', ['fewer than 2 GPUs']),
    ('p2p-clean', nv(), host(), {'p2p_wanted': True}, 'p2p_iommu', ['IOMMU off and no ACS']),
    ('p2p-acs-unchecked', nv(), host(acs={'checked': False, 'enabled_bridges': []}), {'p2p_wanted': True},
     'p2p_iommu', ['ACS not checked']),
    ('driver-580', nv(), host(), {}, 'known_bad_driver', ['580.95.05', 'no known issue']),
    ('driver-545-datacenter', nv(gpus=gpus_of('a100', 'a100'), driver='545.29.02'),
     host(driver_running_version='545.29.02'), {}, 'known_bad_driver', ['no known issue']),
    ('driver-none', nv(driver=None), host(driver_running_version=None), {}, 'known_bad_driver',
     ['no NVIDIA driver running']),
    ('count-unset', nv(), host(), {}, 'gpu_count', ['not checked', 'expected_gpu_count']),
    ('count', nv(), host(), {'expected_gpu_count': 2}, 'gpu_count', ['lists 2 GPU(s)']),
    ('count-more', nv(), host(), {'expected_gpu_count': 1}, 'gpu_count', ['more than the 1 expected']),
]


@pytest.mark.parametrize('nvidia_gpu,rk_host,config,check_id,words', [c[1:] for c in OK],
                         ids=[c[0] for c in OK])
def test_preflight_ok(nvidia_gpu, rk_host, config, check_id, words):
    result = check(policy.rk_preflight_checks(nvidia_gpu, rk_host, config), check_id)
    assert result['ok'] is True and result['severity'] == 'info'
    assert_words(result['message'], words)


def test_preflight_fresh_box_checks_nothing_it_cannot_see():
    results = policy.rk_preflight_checks(nv(gpus=[], present=False), host(driver_running_version=None),
                                         {'expected_gpu_count': 2, 'psu_watts': 1000, 'p2p_wanted': True})
    assert [r['id'] for r in results] == IDS
    for r in results:
        assert r['ok'] is True and r['severity'] == 'info'
        if r['id'] == 'runfile':  # needs no GPU facts: checked on a fresh box too
            continue
        assert 'not checked' in r['message'] and 'nvidia-smi not found' in r['message']


def test_preflight_severity_off_drops_checks():
    results = policy.rk_preflight_checks(nv(), host(), {'severities': {'pcie_link': 'off', 'gpu_count': 'off'}})
    assert [r['id'] for r in results] == ['ram_vs_vram', 'psu_budget', 'p2p_iommu', 'known_bad_driver', 'runfile']


@pytest.mark.parametrize('args,words', [
    ((nv(), host(), {'severities': {'pcie': 'warn'}}), ["unknown check 'pcie'"]),
    ((nv(), host(), {'severities': {'pcie_link': 'error'}}), ["'error' is not 'fail', 'warn' or 'off'"]),
    ((nv(), host(), {'severities': ['pcie_link']}), ['config.severities must be a dict']),
    ((nv(), host(), {'expected_gpus': 2}), ["unknown keys ['expected_gpus']"]),
    ((nv(), host(), {'expected_gpu_count': '2'}), ['expected_gpu_count must be a whole number']),
    ((nv(), host(), {'p2p_wanted': 'yes'}), ['config.p2p_wanted must be true or false']),
    ((nv(), host(), 'strict'), ['config must be a dict']),
    ((None, host(), {}), ['nvidia_gpu must be the nvidia_gpu fact dict']),
    ((nv(), [], {}), ['rigkeeper_host must be the rigkeeper_host fact dict']),
])
def test_preflight_bad_input(args, words):
    assert_words(err(policy.rk_preflight_checks, *args), words)
