"""Shared pytest wiring for rigkeeper.

Makes the repository's plugins importable the way Ansible sees them:
``module_utils/rigkeeper_*.py`` as ``ansible.module_utils.rigkeeper_*`` (ansible.cfg sets
``module_utils = ./module_utils``), and ``library/`` and ``filter_plugins/`` as top-level modules.
"""

import os
import sys
from pathlib import Path

import ansible.module_utils
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT.parent / 'shared' / 'fixtures' / 'nvidia-smi'

_MODULE_UTILS = str(REPO_ROOT / 'module_utils')
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

for _plugin_dir in ('library', 'filter_plugins'):
    _path = str(REPO_ROOT / _plugin_dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(scope='session')
def repo_root():
    """The repository root (a ``pathlib.Path``)."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def fixtures_dir():
    """Captured nvidia-smi outputs: ``../shared/fixtures/nvidia-smi`` next to the repository."""
    if not FIXTURES_DIR.is_dir():
        pytest.fail('fixtures not found at %s' % os.fspath(FIXTURES_DIR))
    return FIXTURES_DIR
