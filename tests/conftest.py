"""Shared pytest wiring for rigkeeper.

The repository is the collection ``rigkeeper.gpu``: its plugins import each other as Ansible loads
them, ``ansible_collections.rigkeeper.gpu.plugins.<type>.<name>``. ``.cache/collections`` holds the link
``ansible_collections/rigkeeper/gpu`` -> the repository (``./rk`` and ansible.cfg use the same one),
and it is put first on ``sys.path``. The modules and filter plugins are also importable by their short
names (``import grub_cmdline``), as the same module objects, so a test that patches one patches what
the plugins use.
"""

import importlib
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT.parent / 'shared' / 'fixtures' / 'nvidia-smi'
COLLECTIONS_DIR = REPO_ROOT / '.cache' / 'collections'


def _link_collection():
    link = COLLECTIONS_DIR / 'ansible_collections' / 'rigkeeper' / 'gpu'
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.join('..', '..', '..', '..'))
        except FileExistsError:  # made by a parallel run in between
            pass
    if str(COLLECTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS_DIR))


_link_collection()

for _kind in ('modules', 'filter'):
    for _file in sorted((REPO_ROOT / 'plugins' / _kind).glob('*.py')):
        _name = _file.stem
        if _name not in sys.modules:
            sys.modules[_name] = importlib.import_module('ansible_collections.rigkeeper.gpu.plugins.%s.%s' % (_kind, _name))


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
