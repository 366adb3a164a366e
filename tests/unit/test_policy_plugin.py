# -*- coding: utf-8 -*-
"""The policy filter plugin is only a map of names (issue #17): the policy lives in
plugins/module_utils/rigkeeper_policy_*.py, one file per concern, pure Python without Ansible; the
filter plugin wraps each function so that its PolicyError reaches the play as AnsibleFilterError
with the same message."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

import rigkeeper_policy
from ansible_collections.rigkeeper.gpu.plugins.module_utils import rigkeeper_policy_cuda, rigkeeper_policy_power
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import PolicyError

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / 'plugins' / 'filter' / 'rigkeeper_policy.py'
UTILS = sorted((REPO / 'plugins' / 'module_utils').glob('rigkeeper_policy_*.py'))
PREFIX = 'ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_'
FILTERS = rigkeeper_policy.FilterModule().filters()


def test_the_concerns_have_their_files():
    assert [p.stem for p in UTILS] == ['rigkeeper_policy_' + c for c in (
        'common', 'cuda', 'data', 'driver', 'kernel', 'packages', 'power', 'preflight')]


@pytest.mark.parametrize('name', sorted(FILTERS))
def test_every_filter_is_a_module_utils_function(name):
    func = FILTERS[name]
    inner = getattr(func, '__wrapped__', None)
    assert inner is not None, f'{name} is not a wrapped policy function'
    assert inner.__name__ == name and inner.__module__.startswith(PREFIX), inner.__module__
    source = Path(inspect.getsourcefile(inner)).resolve()
    assert source.parent == REPO / 'plugins' / 'module_utils' and source.name.startswith('rigkeeper_policy_')
    assert getattr(sys.modules[inner.__module__], name) is inner
    assert getattr(rigkeeper_policy, name) is func


def test_every_public_policy_function_has_its_filter():
    public = set()
    for path in UTILS:
        tree = ast.parse(path.read_text())
        public |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith('rk_')}
    assert public == set(FILTERS)


def test_the_plugin_defines_nothing_but_the_wrapper_and_the_map():
    tree = ast.parse(PLUGIN.read_text())
    defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defs == ['_filter', 'FilterModule']
    for node in tree.body:
        if isinstance(node, ast.Assign):
            assert isinstance(node.value, ast.Call) and node.value.func.id == '_filter', ast.dump(node)
        else:
            assert isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)), ast.dump(node)


def test_no_function_is_defined_twice_across_the_concerns():
    seen = {}
    for path in UTILS:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign)):
                names = [node.name] if not isinstance(node, ast.Assign) else [t.id for t in node.targets]
                for name in names:
                    assert name not in seen, f'{name} in {path.name} and {seen[name]}'
                    seen[name] = path.name


def test_a_policy_error_becomes_an_ansible_filter_error_with_the_same_message():
    with pytest.raises(PolicyError) as raw:
        rigkeeper_policy_cuda.rk_cuda_check('12.7', '580')
    with pytest.raises(AnsibleFilterError) as wrapped:
        FILTERS['rk_cuda_check']('12.7', '580')
    assert str(raw.value).startswith('rigkeeper: CUDA 12.7 does not exist')
    assert str(wrapped.value) == str(raw.value) and wrapped.value.message == str(raw.value)
    assert isinstance(wrapped.value.__cause__, PolicyError)
    assert not isinstance(raw.value, AnsibleFilterError)


def test_the_power_plan_refusal_keeps_its_text_through_the_filter():
    gpus = [{'index': 0, 'product_name': 'NVIDIA GeForce RTX 4090', 'power_default_w': 450.0,
             'power_min_w': 150.0, 'power_max_w': 600.0}]
    wants = [{'index': 0, 'watts': 700}]
    with pytest.raises(PolicyError) as raw:
        rigkeeper_policy_power.rk_power_plan(gpus, wants)
    with pytest.raises(AnsibleFilterError) as wrapped:
        FILTERS['rk_power_plan'](gpus, wants)
    assert "outside the card's range [150 W, 600 W]" in str(raw.value)
    assert str(wrapped.value) == str(raw.value)


def test_other_exceptions_are_not_rewritten():
    def boom():
        raise KeyError('not a policy refusal')
    with pytest.raises(KeyError):
        rigkeeper_policy._filter(boom)()


def test_module_utils_are_python_38_and_import_without_ansible():
    """ansible-test sanity compiles module_utils for every target Python and refuses controller-only
    imports there: each file parses as Python 3.8 and imports with the ``ansible`` package blocked."""
    for path in UTILS:
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith('ansible.'), f'{path.name} imports {node.module}'
                if node.module.startswith('ansible_collections'):
                    assert node.module.startswith(PREFIX), f'{path.name} imports {node.module}'
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith('ansible') for a in node.names), path.name
    code = ('import sys, importlib; sys.modules["ansible"] = None; sys.path.insert(0, sys.argv[1]); '
            'mod = importlib.import_module(sys.argv[2]); print(mod.__name__)')
    for path in UTILS:
        out = subprocess.run([sys.executable, '-c', code, str(REPO / '.cache' / 'collections'),
                              PREFIX + path.stem[len('rigkeeper_policy_'):]],
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
