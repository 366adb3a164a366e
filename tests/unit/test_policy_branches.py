# -*- coding: utf-8 -*-
"""Driver branches: the branch table, the last branch per architecture and the default branch
(plugins/module_utils/rigkeeper_policy_driver.py, issue #12 section 2). Data from ../shared/FACTS.md,
"Driver branches" (re-checked Dec 2026) and "CUDA toolkit -> minimum Linux driver"."""

from __future__ import annotations

import datetime

import pytest

from test_policy import assert_words, err, gpu, gpus_of, policy

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import _months_left
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY

SUPPORTED_PAGE = "'Supported Drivers and CUDA Toolkit Versions' page, 615 and 620 editions"
MATRIX = "NVIDIA's CUDA toolkit, driver and architecture matrix"


def maxwell(index=0):
    return gpu('1070', index, product_name='Tesla M60', product_brand='Tesla', architecture='Maxwell')


def kepler(index=0):
    return gpu('1070', index, product_name='Tesla K80', product_brand='Tesla', architecture='Kepler')


# ============================================================================================
# The data
# ============================================================================================
BRANCHES = [
    # branch, type, eol, ended
    (535, 'LTSB', '2026-06', False),
    (545, 'short-lived', None, True),
    (550, 'short-lived', None, True),
    (555, 'short-lived', None, True),
    (560, 'short-lived', None, True),
    (565, 'short-lived', None, True),
    (570, 'production', '2026-02', False),
    (575, 'short-lived', None, True),
    (580, 'LTSB', '2028-06', False),       # June, not August
    (590, 'feature', None, False),         # new feature branch, short-lived, no published EOL
    (595, 'production', '2027-03', False),
    (610, 'feature', '2026-08', False),
    (620, 'LTSB', '2029-09', False),
]


@pytest.mark.parametrize('branch,kind,eol,ended', BRANCHES)
def test_branch_rows_match_facts(branch, kind, eol, ended):
    row = POLICY['driver_branches'][branch]
    assert (row['type'], row['eol'], row['ended']) == (kind, eol, ended)
    assert_words(row['source'], [SUPPORTED_PAGE, 'FACTS.md: Driver branches'])


def test_branch_table_has_exactly_these_rows():
    table = POLICY['driver_branches']
    assert sorted(table) == [b for b, *_ in BRANCHES]
    assert {row['type'] for row in table.values()} == {'LTSB', 'production', 'feature', 'short-lived'}


@pytest.mark.parametrize('arch,last,words', [
    ('Kepler', 470, ['NVIDIA Unix Driver Archive', '470.xx', 'Kepler', 'no longer maintained']),
    ('Maxwell', 580, [MATRIX, 'FACTS.md: Driver branches']),
    ('Pascal', 580, [MATRIX, 'FACTS.md: Driver branches']),
    ('Volta', 580, [MATRIX, 'FACTS.md: Driver branches']),
])
def test_last_branch_rows(arch, last, words):
    row = POLICY['architecture_last_branch'][arch]
    assert row['last_branch'] == last and row['verified'] is True
    assert 'UNVERIFIED' not in row['source']
    assert_words(row['source'], words)


def test_last_branch_table_has_only_pre_turing_rows():
    assert sorted(POLICY['architecture_last_branch']) == ['Kepler', 'Maxwell', 'Pascal', 'Volta']


def test_default_branch_data_records_its_rationale():
    row = POLICY['default_branch']
    assert row['type'] == 'LTSB' and row['min_support_months'] == 12
    assert_words(row['source'], ['mature LTSB', 'P2P', '545', '555', '560', SUPPORTED_PAGE])


@pytest.mark.parametrize('eol,today,left', [
    ('2028-06', '2026-12-01', 18),
    ('2028-06', '2027-06-30', 12),
    ('2028-06', '2027-07-01', 11),
    ('2028-06', '2028-06-30', 0),
    ('2028-06', '2028-07-01', -1),
    ('2029-09', '2027-07-01', 26),
    (None, '2026-12-01', None),
])
def test_months_left_counts_calendar_months(eol, today, left):
    day = datetime.date.fromisoformat(today)
    assert _months_left({'eol': eol}, day) == left


# ============================================================================================
# A requested branch above a GPU's last branch is refused before anything changes
# ============================================================================================
REFUSED = [
    # (case, gpus, branch, words that must be in the message, words that must not)
    ('pascal-590', gpus_of('1070'), 590,
     ['driver branch 590 does not drive these GPUs',
      'GPU 0 (00000000:01:00.0, GeForce GTX 1070) is Pascal, whose last driver branch is 580', MATRIX,
      'nvidia_driver_branch: 580 (LTSB until 2028-06)', 'move those cards to another host'], []),
    ('volta-595', gpus_of('v100'), 595,
     ['GPU 0 (00000000:01:00.0, Tesla V100-SXM2-16GB) is Volta', 'last driver branch is 580',
      'nvidia_driver_branch: 580'], []),
    ('maxwell-620', [maxwell()], 620, ['Tesla M60) is Maxwell', 'last driver branch is 580'], []),
    ('pascal-610', gpus_of('1070'), '610', ['driver branch 610 does not drive', 'Pascal'], []),
    ('one-of-two', gpus_of('a100', 'v100'), 620,
     ['GPU 1 (00000000:02:00.0, Tesla V100-SXM2-16GB) is Volta'], ['GPU 0']),
    ('two-archs', gpus_of('1070', 'v100'), 590,
     ['GPU 0 (00000000:01:00.0, GeForce GTX 1070) is Pascal', 'GPU 1 (00000000:02:00.0, '
      'Tesla V100-SXM2-16GB) is Volta'], []),
    ('same-arch-grouped', gpus_of('1070', '1070'), 590,
     ['GPU 0 (00000000:01:00.0, GeForce GTX 1070), GPU 1 (00000000:02:00.0, GeForce GTX 1070) are Pascal'],
     []),
    ('arch-from-name', gpus_of('p100_noarch'), 590, ['Tesla P100-PCIE-16GB) is Pascal'], []),
    ('model-names', ['Tesla V100-SXM2-16GB', 'NVIDIA GeForce RTX 4090'], 590,
     ['GPU 0 (Tesla V100-SXM2-16GB) is Volta', 'nvidia_driver_branch: 580'], ['GPU 1']),
    ('kepler-580', [kepler()], 580,
     ['driver branch 580 does not drive', 'Tesla K80) is Kepler, whose last driver branch is 470',
      'NVIDIA Unix Driver Archive', "no branch in rigkeeper's table drives them",
      'move those cards to another host'], ['nvidia_driver_branch:']),
    ('kepler-535', [kepler()], 535, ['Kepler', '470'], []),
    ('kepler-and-pascal', [kepler(0), gpu('1070', 1)], 580, ['GPU 0', 'Kepler'], ['GPU 1']),
]


@pytest.mark.parametrize('gpus,branch,words,absent', [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize('allow_known_bad', [False, True])
def test_branch_above_last_branch_is_refused(gpus, branch, words, absent, allow_known_bad):
    msg = err(policy.rk_driver_decision, gpus, branch=branch, allow_known_bad=allow_known_bad,
              today='2026-12-01')
    assert_words(msg, words)
    for word in absent:
        assert word not in msg


@pytest.mark.parametrize('gpus,branch', [
    (gpus_of('1070'), 580), (gpus_of('v100', 'v100'), 535), ([maxwell()], 580),
    (gpus_of('a100'), 620), (gpus_of('5090'), 620), (gpus_of('4090', '4090'), 595),
    (gpus_of('unknown'), 620),            # architecture unknown: nothing to refuse on
    (['Graphics Device'], 620), ([], 620),
])
def test_branch_within_last_branch_is_allowed(gpus, branch):
    out = policy.rk_driver_decision(gpus, branch=branch, today='2026-12-01')
    assert out['branch'] == str(branch)
    assert not any('does not drive' in w or 'may not drive' in w for w in out['warnings'])


def test_branch_refusal_precedes_cuda_and_flavor_checks():
    # 620 on Pascal is refused for the card, not for CUDA or the module flavour.
    msg = err(policy.rk_driver_decision, gpus_of('1070'), branch=620, cuda_versions=['13.1'],
              module_flavor='open', today='2026-12-01')
    assert 'does not drive these GPUs' in msg and 'open kernel modules' not in msg


def test_unverified_last_branch_warns_instead_of_refusing(monkeypatch):
    table = dict(POLICY['architecture_last_branch'])
    table['Kepler'] = {'last_branch': 470, 'verified': False,
                       'source': 'forum post, UNVERIFIED [no source in FACTS.md]'}
    monkeypatch.setitem(POLICY, 'architecture_last_branch', table)
    out = policy.rk_driver_decision([kepler()], branch=580, today='2026-12-01')
    warned = [w for w in out['warnings'] if 'may not drive these GPUs' in w]
    assert len(warned) == 1
    assert_words(warned[0], ['Tesla K80) is Kepler', '470', 'UNVERIFIED', 'move those cards'])
    default = policy.rk_driver_decision([kepler()], today='2026-12-01')
    assert default['branch'] == '580' and any('may not drive' in w for w in default['warnings'])


def test_unverified_by_flag_alone_warns(monkeypatch):
    table = dict(POLICY['architecture_last_branch'])
    table['Pascal'] = dict(table['Pascal'], verified=False)
    monkeypatch.setitem(POLICY, 'architecture_last_branch', table)
    out = policy.rk_driver_decision(gpus_of('1070'), branch=590, today='2026-12-01')
    assert any('may not drive these GPUs' in w and 'nvidia_driver_branch: 580' in w for w in out['warnings'])


# ============================================================================================
# The default branch (branch=None), decided by data
# ============================================================================================
DEFAULTS = [
    # (case, today, gpus, cuda, branch, words in reasons)
    ('today-no-gpus', '2026-12-01', [], [], '580',
     ['580: oldest LTSB with >= 12 months of support (EOL 2028-06, 18 months left on 2026-12-01)',
      '620 (EOL 2029-09) becomes the default once 580 has less than 12 months left (from 2027-07)',
      'mature LTSB', 'P2P', SUPPORTED_PAGE]),
    ('today-a100', '2026-11-15', gpus_of('a100', 'a100'), [], '580', ['that drives every GPU', '(from 2027-07)']),
    ('last-month-of-580', '2027-06-30', gpus_of('4090'), [], '580', ['12 months left on 2027-06-30']),
    ('620-from-2027-07', '2027-07-01', gpus_of('4090'), [], '620',
     ['620: oldest LTSB with >= 12 months of support (EOL 2029-09, 26 months left on 2027-07-01)',
      '620 stays the default until its end of life (2029-09): no newer LTSB is eligible']),
    ('620-after-580-eol', '2028-07-01', [], [], '620', ['14 months left']),
    ('620-last-year', '2029-01-01', [], [], '620',
     ['no eligible LTSB has >= 12 months of support left on 2029-01-01', 'newest',
      '620 (EOL 2029-09, 8 months left)']),
    ('535-too-short', '2026-05-01', [], [], '580', ['25 months left']),
    ('535-still-long', '2025-06-01', [], [], '535',
     ['535: oldest LTSB with >= 12 months of support (EOL 2026-06, 12 months left on 2025-06-01)',
      '580 (EOL 2028-06) becomes the default once 535 has less than 12 months left (from 2025-07)']),
    ('535-then-580', '2025-07-01', [], [], '580', ['35 months left']),
    ('pascal', '2026-12-01', gpus_of('1070'), [], '580',
     ['580 stays the default until its end of life (2028-06): no newer LTSB is eligible',
      '620 not eligible: GPU 0 (00000000:01:00.0, GeForce GTX 1070) is Pascal, whose last driver branch is 580',
      MATRIX]),
    ('pascal-after-2027-07', '2027-07-01', gpus_of('1070'), [], '580',
     ['no eligible LTSB has >= 12 months of support left on 2027-07-01', '580 (EOL 2028-06, 11 months left)',
      '620 not eligible']),
    ('volta-last-day', '2028-06-30', gpus_of('v100'), [], '580', ['0 months left', 'Volta']),
    ('maxwell', '2027-08-01', [maxwell()], [], '580', ['Maxwell']),
    ('mixed-host', '2027-08-01', gpus_of('a100', 'v100'), [], '580', ['GPU 1 (00000000:02:00.0, Tesla V100']),
    ('model-names', '2027-08-01', ['NVIDIA GeForce RTX 4090', 'Tesla V100-SXM2-16GB'], [], '580',
     ['GPU 1 (Tesla V100-SXM2-16GB) is Volta']),
    ('model-names-new', '2027-08-01', ['NVIDIA GeForce RTX 4090'], [], '620', ['oldest LTSB']),
    ('cuda-13.0', '2026-12-01', [], ['12.4', '13.0'], '580', ['and runs CUDA 12.4, 13.0 in full']),
    ('cuda-13.1', '2026-12-01', [], ['13.1'], '620',
     ['620: oldest LTSB with >= 12 months of support', 'and runs CUDA 13.1 in full',
      '580 not eligible: CUDA 13.1 needs driver >= 590.44.01', 'CUDA 13.1 release notes, table 3']),
    ('cuda-13.1-a100', '2026-12-01', gpus_of('a100'), ['13.1'], '620', ['that drives every GPU and runs CUDA 13.1']),
    ('cuda-13.1-later', '2027-07-01', [], ['13.1'], '620', ['26 months left']),
    ('cuda-12.x-pascal', '2026-12-01', gpus_of('1070'), ['12.8'], '580', ['580 stays the default']),
]


@pytest.mark.parametrize('today,gpus,cuda,branch,words', [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_default_branch(today, gpus, cuda, branch, words):
    out = policy.rk_driver_decision(gpus, cuda_versions=cuda, today=today)
    assert out['branch'] == branch
    assert out['type'] == 'LTSB' and out['eol'] == POLICY['driver_branches'][int(branch)]['eol']
    assert out['reasons'][0].startswith(f'branch {branch}: none requested; ')
    assert_words(' | '.join(out['reasons']), words)
    for c in cuda:  # the default runs every wanted CUDA in full, never through minor-version compat
        assert any(r.startswith(f'CUDA {c}: branch {branch} runs it (full;') for r in out['reasons'])
    assert not any('minor-version compatibility' in w for w in out['warnings'])


@pytest.mark.parametrize('today,gpus,short', [
    ('2026-12-01', [], False),
    ('2027-07-01', gpus_of('1070'), True),
    ('2029-01-01', [], True),
    ('2027-07-01', [], False),
])
def test_default_branch_warns_when_support_runs_short(today, gpus, short):
    out = policy.rk_driver_decision(gpus, today=today)
    warned = [w for w in out['warnings'] if 'months of support left' in w]
    assert bool(warned) is short
    if short:
        assert_words(warned[0], ['no eligible LTSB lasts longer', 'plan the move', SUPPORTED_PAGE])


DEFAULT_REFUSED = [
    ('pascal-past-580', '2028-07-01', gpus_of('1070'), [],
     ['no LTSB branch still supported on 2028-07-01 (620) drives every GPU',
      'GPU 0 (00000000:01:00.0, GeForce GTX 1070) is Pascal, whose last driver branch is 580', MATRIX,
      'nvidia_driver_branch: 580 (past end of life: no more fixes)', 'move those cards to another host']),
    ('kepler', '2026-12-01', [kepler()], [],
     ['no LTSB branch still supported on 2026-12-01 (580, 620) drives every GPU', 'Tesla K80) is Kepler',
      '470', 'NVIDIA Unix Driver Archive', 'move those cards to another host']),
    ('kepler-model-name', '2026-12-01', ['Tesla K80'], [], ['GPU 0 (Tesla K80) is Kepler']),
    ('cuda-13.1-pascal', '2026-12-01', gpus_of('1070'), ['13.1'],
     ['no LTSB branch runs the wanted CUDA in full', 'CUDA 13.1 needs driver >= 590.44.01',
      'CUDA 13.1 release notes, table 3', 'the LTSB branches that drive every GPU are 580',
      'GeForce GTX 1070) is Pascal', 'set nvidia_driver_branch explicitly',
      '580 runs it only under minor-version compatibility', 'use an older CUDA', 'move those cards']),
    ('cuda-13.1-volta-names', '2026-12-01', ['Tesla V100-SXM2-16GB'], ['13.0', '13.1'],
     ['CUDA 13.1 needs driver >= 590.44.01', 'Volta']),
    ('no-ltsb-left', '2029-10-01', [], [], ["no LTSB branch in rigkeeper's table is still supported on 2029-10-01",
                                           'set the branch explicitly']),
]


@pytest.mark.parametrize('today,gpus,cuda,words', [c[1:] for c in DEFAULT_REFUSED],
                         ids=[c[0] for c in DEFAULT_REFUSED])
def test_default_branch_refusals(today, gpus, cuda, words):
    assert_words(err(policy.rk_driver_decision, gpus, cuda_versions=cuda, today=today), words)


def test_explicit_580_still_runs_cuda_13_1_under_minor_compat_on_pascal():
    # The refusal above names this way out; it must work.
    out = policy.rk_driver_decision(gpus_of('1070'), branch=580, cuda_versions=['13.1'], today='2026-12-01')
    assert out['branch'] == '580'
    assert any('minor-version compatibility' in w for w in out['warnings'])


def test_default_cuda_garbage_is_refused_first():
    assert 'CUDA 12.7 does not exist' in err(policy.rk_driver_decision, [], cuda_versions=['12.7'],
                                             today='2026-12-01')


@pytest.mark.parametrize('today,gpus,advised', [
    ('2026-12-01', gpus_of('3090', '3090'), '580'),
    ('2027-08-01', gpus_of('3090', '3090'), '620'),
])
def test_known_issue_advice_names_the_default(today, gpus, advised):
    msg = err(policy.rk_driver_decision, gpus, branch=545, today=today)
    assert f'use {advised} (current LTSB)' in msg


@pytest.mark.parametrize('gpus,today,words', [
    (gpus_of('a100'), '2027-08-01', ['move to 620 (LTSB until 2029-09)']),
    (gpus_of('v100'), '2027-08-01', ['move to 580 (LTSB until 2028-06)']),   # 620 does not drive Volta
])
def test_eol_advice_is_gpu_aware(gpus, today, words):
    out = policy.rk_driver_decision(gpus, branch=570, today=today)
    assert_words(' | '.join(out['warnings']), words)


def test_eol_advice_when_no_ltsb_drives_the_gpus():
    out = policy.rk_driver_decision(gpus_of('1070'), branch=580, today='2028-07-01')
    eol = [w for w in out['warnings'] if 'reached end of life' in w]
    assert len(eol) == 1 and 'no LTSB still supported drives every GPU' in eol[0]
