# -*- coding: utf-8 -*-
"""grub_cmdline: pure logic and the module, on real files in tmp_path, with the real bash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


from ansible.module_utils import basic  # noqa: E402
from ansible_collections.rigkeeper.gpu.plugins.module_utils import rigkeeper_grub as rg  # noqa: E402

import grub_cmdline  # noqa: E402

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    import contextlib
    from unittest import mock

    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = json.dumps({'ANSIBLE_MODULE_ARGS': args or {}}).encode()
        with mock.patch.object(basic, '_ANSIBLE_ARGS', payload):
            yield


BASH = '/bin/bash' if os.path.exists('/bin/bash') else 'bash'
DEFAULT = 'GRUB_CMDLINE_LINUX_DEFAULT'
LINUX = 'GRUB_CMDLINE_LINUX'


def source_values(*files):
    """An independent evaluation (not the module's code path) of the files, in order."""
    script = ('exec 3>&1 >/dev/null; for f in "$@"; do . "$f"; done; '
              'printf "%s\\0%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" >&3')
    out = subprocess.run([BASH, '-c', script, 'test'] + [str(f) for f in files],
                         check=True, stdout=subprocess.PIPE).stdout.decode()
    linux, default = out.split('\0')
    return {LINUX: linux, DEFAULT: default}


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------

class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs['failed'] = True
    kwargs['msg'] = msg
    raise AnsibleFailJson(kwargs)


class Host(object):
    """A fake /etc/default plus /proc/cmdline under tmp_path."""

    def __init__(self, root):
        self.root = root
        self.grub_dir = root / 'etc' / 'default'
        self.grub_dir.mkdir(parents=True)
        self.cmdline = root / 'proc' / 'cmdline'
        self.module_tmp = root / 'module-tmp'
        self.module_tmp.mkdir()

    @property
    def dropin(self):
        return self.grub_dir / 'grub.d' / '99-rigkeeper.cfg'

    def write(self, files):
        for name, text in files.items():
            target = self.grub_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def boot(self, cmdline):
        self.cmdline.parent.mkdir(parents=True, exist_ok=True)
        self.cmdline.write_text(cmdline + '\n')

    def tree(self):
        """Every file under grub_dir and the module tmpdir, with its bytes."""
        snapshot = {}
        for base in (self.grub_dir, self.module_tmp):
            for path in sorted(base.rglob('*')):
                snapshot[str(path)] = path.read_bytes() if path.is_file() else None
        return snapshot

    def sourced(self):
        files = [self.grub_dir / 'grub'] if (self.grub_dir / 'grub').exists() else []
        files += sorted((self.grub_dir / 'grub.d').glob('*.cfg')) if (self.grub_dir / 'grub.d').exists() else []
        return source_values(*files)


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


@pytest.fixture
def run(host, monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)

    def _run(check=False, diff=False, fail=False, **args):
        args.setdefault('grub_dir', str(host.grub_dir))
        args.setdefault('cmdline_path', str(host.cmdline))
        args.update(_ansible_check_mode=check, _ansible_diff=diff, _ansible_tmpdir=str(host.module_tmp))
        with patch_module_args(args):
            with pytest.raises(AnsibleFailJson if fail else AnsibleExitJson) as info:
                grub_cmdline.main()
        return info.value.args[0]

    return _run


# ---------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('cmdline, tokens', [
    ('', []),
    (None, []),
    ('  quiet   splash\t', ['quiet', 'splash']),
    ('quiet dyndbg="file foo.c +p" splash', ['quiet', 'dyndbg="file foo.c +p"', 'splash']),
    ('"dyndbg=file foo.c +p" ro', ['"dyndbg=file foo.c +p"', 'ro']),
    ('a="x y"b c', ['a="x y"b', 'c']),
    ("odd=it's\\n", ["odd=it's\\n"]),
])
def test_split_args(cmdline, tokens):
    assert rg.split_args(cmdline) == tokens


@pytest.mark.parametrize('token, pair', [
    ('quiet', ('quiet', None)),
    ('iommu=pt', ('iommu', 'pt')),
    ('dyndbg="file foo.c +p"', ('dyndbg', 'file foo.c +p')),
    ('"dyndbg=file foo.c +p"', ('dyndbg', 'file foo.c +p')),   # as GRUB hands it to the kernel
    ('nvidia-drm.modeset=1', ('nvidia_drm.modeset', '1')),
    ('root=UUID=abc', ('root', 'UUID=abc')),
    ('empty=', ('empty', '')),
])
def test_parse_arg(token, pair):
    assert rg.parse_arg(token) == pair


@pytest.mark.parametrize('arg', ['', 'a b', 'a\nb', 'x="unbalanced', '--', '=x'])
def test_validate_arg_rejects(arg):
    with pytest.raises(ValueError):
        rg.validate_arg(arg, 'args_present')


@pytest.mark.parametrize('present, absent', [
    (['quiet'], ['quiet']),
    (['amd_iommu=off'], ['amd_iommu']),
    (['amd_iommu=off'], ['amd-iommu=off']),
])
def test_check_conflicts(present, absent):
    with pytest.raises(ValueError):
        rg.check_conflicts(present, absent)


def test_check_conflicts_allows_other_value():
    rg.check_conflicts(['amd_iommu=off'], ['amd_iommu=on'])


@pytest.mark.parametrize('before, present, absent, after', [
    ('quiet iommu=on splash', ['iommu=pt'], [], 'quiet iommu=pt splash'),
    ('amd_iommu=on quiet', ['amd_iommu=off'], [], 'amd_iommu=off quiet'),
    ('iommu=on quiet iommu=soft', ['iommu=pt'], [], 'iommu=pt quiet'),
    ('quiet iommu=pt iommu=pt', ['iommu=pt'], [], 'quiet iommu=pt'),
    ('splash', ['quiet'], [], 'splash quiet'),
    ('quiet=1 splash', ['quiet'], [], 'quiet splash'),
    ('quiet splash', [], ['quiet'], 'splash'),
    ('quiet amd_iommu=on', [], ['amd_iommu'], 'quiet'),
    ('quiet amd_iommu=off', [], ['amd_iommu=on'], 'quiet amd_iommu=off'),
    ('nvidia-drm.modeset=0', ['nvidia_drm.modeset=1'], [], 'nvidia_drm.modeset=1'),
    ('a "dyndbg=file a.c +p" b', ['dyndbg="file a.c +p"'], [], 'a "dyndbg=file a.c +p" b'),
    ('a dyndbg="file a.c +p" b', ['dyndbg="file b.c +p"'], [], 'a dyndbg="file b.c +p" b'),
    ('console=tty1 console=ttyS0', ['console=ttyS1,115200'], [], 'console=tty1 console=ttyS0 console=ttyS1,115200'),
    ('console=tty1 console=ttyS0', ['console=ttyS0'], ['console=tty1'], 'console=ttyS0'),
    ('quiet -- single iommu=on', ['iommu=pt'], [], 'quiet iommu=pt -- single iommu=on'),
    ('', ['iommu=pt', 'mitigations=off'], [], 'iommu=pt mitigations=off'),
])
def test_apply_args(before, present, absent, after):
    assert rg.apply_args(rg.split_args(before), present, absent) == rg.split_args(after)


@pytest.mark.parametrize('value', [
    '',
    'quiet splash',
    'quiet dyndbg="file foo.c +p"',
    "odd=it's $HOME `id` $(id) \\n \\' \"",
])
def test_shell_quote_round_trip(tmp_path, value):
    dropin = tmp_path / 'x.cfg'
    dropin.write_text(rg.render_dropin({DEFAULT: value}))
    assert source_values(dropin)[DEFAULT] == value


def test_render_value_keeps_untouched_spacing():
    assert rg.render_value('quiet   splash', ['quiet', 'splash']) == 'quiet   splash'
    assert rg.render_value('quiet   splash', ['quiet']) == 'quiet'


def test_chain_places_replacement_by_name():
    files = ['/d/grub', '/d/grub.d/50-cloudimg-settings.cfg', '/d/grub.d/99-rigkeeper.cfg',
             '/d/grub.d/init-select.cfg']
    others, later = rg.chain(files, '/d/grub.d/99-rigkeeper.cfg')
    assert others == ['/d/grub', '/d/grub.d/50-cloudimg-settings.cfg', '/d/grub.d/init-select.cfg']
    assert later == ['/d/grub.d/init-select.cfg']
    with_tmp, _ = rg.chain(files, '/d/grub.d/99-rigkeeper.cfg', '/tmp/x')
    assert with_tmp == ['/d/grub', '/d/grub.d/50-cloudimg-settings.cfg', '/tmp/x', '/d/grub.d/init-select.cfg']


def test_grub_files_order_and_filter(tmp_path):
    (tmp_path / 'grub.d').mkdir()
    for name in ('init-select.cfg', '99-rigkeeper.cfg', '50-cloudimg-settings.cfg', 'README',
                 '.99-rigkeeper.cfg.x.tmp', '99-rigkeeper.cfg.123.2025-01-01@00:00:00~'):
        (tmp_path / 'grub.d' / name).write_text('')
    (tmp_path / 'grub').write_text('')
    assert [os.path.relpath(f, str(tmp_path)) for f in rg.grub_files(str(tmp_path))] == [
        'grub', 'grub.d/50-cloudimg-settings.cfg', 'grub.d/99-rigkeeper.cfg', 'grub.d/init-select.cfg']


@pytest.mark.parametrize('stdout, rc', [
    ('', 1),
    ('', 0),
    ('noise\0set\0a\0set\0b\0', 0),
])
def test_parse_source_output_rejects(stdout, rc):
    with pytest.raises(rg.GrubSourceError):
        rg.parse_source_output(rc, stdout, '')


# ---------------------------------------------------------------------------
# The module: table of scenarios
# ---------------------------------------------------------------------------

GRUB_UBUNTU = '''\
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""
'''

SCENARIOS = [
    dict(
        id='second-assignment-wins',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'
                       'GRUB_TIMEOUT=5\n'
                       'GRUB_CMDLINE_LINUX_DEFAULT="nomodeset loglevel=3"\n'},
        args=dict(args_present=['iommu=pt']),
        before='nomodeset loglevel=3',
        after='nomodeset loglevel=3 iommu=pt',
    ),
    dict(
        id='cloudimg-dropin-kept',
        files={'grub': GRUB_UBUNTU,
               'grub.d/50-cloudimg-settings.cfg': 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n'
                                                  'GRUB_TIMEOUT=0\n'},
        args=dict(args_present=['iommu=pt', 'mitigations=off']),
        before='console=tty1 console=ttyS0',
        after='console=tty1 console=ttyS0 iommu=pt mitigations=off',
    ),
    dict(
        id='quoted-values-byte-exact',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT=\'quiet dyndbg="file foo.c +p" odd=it\'\\\'\'s$HOME\\n\'\n'},
        args=dict(args_present=['iommu=pt', 'dyndbg="file foo.c +p"']),
        before='quiet dyndbg="file foo.c +p" odd=it\'s$HOME\\n',
        after='quiet dyndbg="file foo.c +p" odd=it\'s$HOME\\n iommu=pt',
    ),
    dict(
        id='remove-param-set-in-etc-default-grub',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash mitigations=off"\n'},
        args=dict(args_absent=['splash', 'mitigations']),
        before='quiet splash mitigations=off',
        after='quiet',
    ),
    dict(
        id='iommu-on-to-pt-in-place',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=on splash"\n'},
        args=dict(args_present=['iommu=pt']),
        before='quiet iommu=on splash',
        after='quiet iommu=pt splash',
    ),
    dict(
        id='amd-iommu-off-replaces-on',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="amd_iommu=on quiet"\n'},
        args=dict(args_present=['amd_iommu=off']),
        before='amd_iommu=on quiet',
        after='amd_iommu=off quiet',
    ),
    dict(
        id='amd-iommu-absent-exact-value',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="amd_iommu=on quiet"\n'},
        args=dict(args_absent=['amd_iommu=on']),
        before='amd_iommu=on quiet',
        after='quiet',
    ),
    dict(
        id='amd-iommu-absent-other-value-untouched',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="amd_iommu=off quiet"\n'},
        args=dict(args_absent=['amd_iommu=on']),
        before='amd_iommu=off quiet',
        after='amd_iommu=off quiet',
        changed=False,
    ),
    dict(
        id='duplicates-collapse',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="iommu=on quiet iommu=soft"\n'},
        args=dict(args_present=['iommu=pt']),
        before='iommu=on quiet iommu=soft',
        after='iommu=pt quiet',
    ),
    dict(
        id='bare-flag-present-and-absent',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'},
        args=dict(args_present=['nomodeset'], args_absent=['quiet']),
        before='quiet splash',
        after='splash nomodeset',
    ),
    dict(
        id='already-satisfied-writes-nothing',
        files={'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet  iommu=pt"\n'},
        args=dict(args_present=['iommu=pt'], args_absent=['splash']),
        before='quiet  iommu=pt',
        after='quiet  iommu=pt',
        changed=False,
    ),
    dict(
        id='variable-unset-everywhere',
        files={'grub': 'GRUB_TIMEOUT=5\n'},
        args=dict(args_present=['iommu=pt']),
        before='',
        after='iommu=pt',
    ),
    dict(
        id='no-grub-files-at-all',
        files={},
        args=dict(args_present=['iommu=pt']),
        before='',
        after='iommu=pt',
    ),
    dict(
        id='grub-cmdline-linux-console-repeatable',
        files={'grub': 'GRUB_CMDLINE_LINUX="console=tty1 console=ttyS0"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'},
        args=dict(variable=LINUX, args_present=['console=ttyS1,115200n8']),
        before='console=tty1 console=ttyS0',
        after='console=tty1 console=ttyS0 console=ttyS1,115200n8',
        kernel_args=['console=tty1', 'console=ttyS0', 'console=ttyS1,115200n8', 'quiet'],
    ),
    dict(
        id='echo-in-default-file-does-not-confuse',
        files={'grub': 'echo "hello from grub"\nprintf "\\0\\0"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'},
        args=dict(args_present=['iommu=pt']),
        before='quiet',
        after='quiet iommu=pt',
    ),
]


@pytest.mark.parametrize('case', SCENARIOS, ids=[case['id'] for case in SCENARIOS])
def test_scenario(host, run, case):
    host.write(case['files'])
    variable = case['args'].get('variable', DEFAULT)
    changed = case.get('changed', True)

    result = run(**case['args'])

    assert result['changed'] is changed
    assert result['cmdline_before'] == case['before']
    assert result['cmdline'] == case['after']
    assert result['path'] == str(host.dropin)
    assert 'backup_file' not in result
    # What grub-mkconfig would compute now, evaluated independently of the module.
    assert host.sourced()[variable] == case['after']
    assert host.dropin.exists() is changed
    if changed:
        text = host.dropin.read_text()
        assert text.startswith('# Managed by Ansible')
        assert source_values(host.dropin)[variable] == case['after']
    if 'kernel_args' in case:
        assert result['kernel_args'] == case['kernel_args']
    # Files the user owns are never touched.
    for name, text in case['files'].items():
        assert (host.grub_dir / name).read_text() == text

    # Idempotence: the second run changes nothing and reports the same value.
    again = run(**case['args'])
    assert again['changed'] is False
    assert again['cmdline'] == case['after']
    assert again['cmdline_before'] == case['after']


def test_full_result_dict(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX="console=ttyS0"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=on"\n'})
    host.boot('BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro console=ttyS0 quiet iommu=on')
    result = run(args_present=['iommu=pt'])
    result.pop('invocation', None)
    result.pop('warnings', None)
    assert result == dict(
        changed=True,
        path=str(host.dropin),
        cmdline='quiet iommu=pt',
        cmdline_before='quiet iommu=on',
        linux_cmdline='console=ttyS0',
        kernel_args=['console=ttyS0', 'quiet', 'iommu=pt'],
        running_cmdline='BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro console=ttyS0 quiet iommu=on',
        reboot_pending=True,
    )
    assert host.dropin.read_text() == rg.DROPIN_HEADER + "GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'\n"


def test_builds_on_user_edit_made_later(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    assert run(args_present=['iommu=pt'])['cmdline'] == 'quiet iommu=pt'
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet pci=noaer"\n'})
    result = run(args_present=['iommu=pt'])
    assert result['changed'] is True
    assert result['cmdline_before'] == 'quiet iommu=pt'
    assert result['cmdline'] == 'quiet pci=noaer iommu=pt'


# ---------------------------------------------------------------------------
# Check mode, diff, backup
# ---------------------------------------------------------------------------

def test_check_mode_writes_nothing(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=on"\n'})
    before = host.tree()
    result = run(check=True, diff=True, args_present=['iommu=pt'])
    assert host.tree() == before
    assert result['changed'] is True
    assert result['cmdline'] == 'quiet iommu=pt'
    assert result['cmdline_before'] == 'quiet iommu=on'
    assert result['diff'] == dict(
        before='', after=rg.DROPIN_HEADER + "GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'\n",
        before_header=str(host.dropin), after_header=str(host.dropin))
    assert 'backup_file' not in result


def test_check_mode_on_converged_host_reports_nothing(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=on"\n'})
    run(args_present=['iommu=pt'])
    before = host.tree()
    result = run(check=True, diff=True, args_present=['iommu=pt'])
    assert host.tree() == before
    assert result['changed'] is False
    assert result['diff']['before'] == result['diff']['after']


def test_diff_of_existing_dropin(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    run(args_present=['iommu=on'], backup=False)
    result = run(diff=True, args_present=['iommu=pt'], backup=False)
    assert result['diff']['before'].endswith("GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=on'\n")
    assert result['diff']['after'].endswith("GRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'\n")


@pytest.mark.parametrize('backup', [True, False])
def test_backup_on_change(host, run, backup):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    first = run(args_present=['iommu=on'])
    assert 'backup_file' not in first      # nothing to back up yet
    old = host.dropin.read_text()
    result = run(args_present=['iommu=pt'], backup=backup)
    backups = [p for p in host.dropin.parent.iterdir() if p.name.startswith('99-rigkeeper.cfg.')]
    if backup:
        assert [str(p) for p in backups] == [result['backup_file']]
        assert backups[0].read_text() == old
        assert not backups[0].name.endswith('.cfg')        # grub-mkconfig will not source it
        assert host.sourced()[DEFAULT] == 'quiet iommu=pt'
    else:
        assert backups == []
        assert 'backup_file' not in result
    # No temporary file left behind either.
    assert sorted(p.name for p in host.dropin.parent.iterdir() if p.name.startswith('.')) == []


# ---------------------------------------------------------------------------
# reboot_pending
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('running, args, pending', [
    ('BOOT_IMAGE=/vmlinuz ro quiet iommu=pt', dict(args_present=['iommu=pt']), False),
    ('BOOT_IMAGE=/vmlinuz ro quiet iommu=on', dict(args_present=['iommu=pt']), True),
    ('BOOT_IMAGE=/vmlinuz ro quiet', dict(args_present=['iommu=pt']), True),
    ('BOOT_IMAGE=/vmlinuz ro quiet iommu=on iommu=pt', dict(args_present=['iommu=pt']), True),
    ('BOOT_IMAGE=/vmlinuz ro quiet splash', dict(args_absent=['splash']), True),
    ('BOOT_IMAGE=/vmlinuz ro quiet', dict(args_absent=['splash']), False),
    ('BOOT_IMAGE=/vmlinuz ro amd_iommu=off', dict(args_absent=['amd_iommu=on']), False),
    ('ro "dyndbg=file foo.c +p"', dict(args_present=['dyndbg="file foo.c +p"']), False),
    ('ro nvidia-drm.modeset=1', dict(args_present=['nvidia_drm.modeset=1']), False),
    ('ro console=tty1 console=ttyS0', dict(args_present=['console=ttyS0']), False),
    ('ro -- iommu=pt', dict(args_present=['iommu=pt']), True),
], ids=lambda value: value if isinstance(value, str) else None)
def test_reboot_pending(host, run, running, args, pending):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'})
    host.boot(running)
    result = run(**args)
    assert result['running_cmdline'] == running
    assert result['reboot_pending'] is pending


def test_an_argument_taken_out_of_grub_that_still_runs_is_a_pending_reboot(host, run):
    """kernel_params_extra dropped: the drop-in loses pcie_aspm=off, the running kernel still has it
    (the site scenario's last run did not reboot for it)."""
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    host.boot('BOOT_IMAGE=/vmlinuz ro quiet iommu=pt pcie_aspm=off')
    first = run(args_present=['iommu=pt', 'pcie_aspm=off'], path=str(host.dropin))
    assert first['changed'] and first['reboot_pending'] is False
    second = run(args_present=['iommu=pt'], path=str(host.dropin))
    assert second['changed'] and 'pcie_aspm=off' not in second['kernel_args']
    assert second['reboot_pending'] is True
    host.boot('BOOT_IMAGE=/vmlinuz ro quiet iommu=pt')
    assert run(args_present=['iommu=pt'], path=str(host.dropin))['reboot_pending'] is False


def test_reboot_pending_unknown_without_cmdline(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    result = run(args_present=['iommu=pt'])
    assert result['running_cmdline'] is None
    assert result['reboot_pending'] is None


# ---------------------------------------------------------------------------
# Failures: nothing written
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('files, msg, stderr', [
    ({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet\n'}, 'failed', 'unexpected EOF'),
    ({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nif then fi\n'}, 'failed', 'syntax error'),
    # grub-mkconfig runs under set -e: a failing command aborts update-grub too.
    ({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 'grub.d/10-broken.cfg': 'false\n'}, 'failed', ''),
    ({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', 'grub.d/10-exit.cfg': 'exit 0\n'}, 'no usable answer', ''),
], ids=['unterminated-quote', 'syntax-error', 'failing-command', 'exit'])
def test_broken_default_files_fail_and_write_nothing(host, run, files, msg, stderr):
    host.write(files)
    before = host.tree()
    result = run(fail=True, args_present=['iommu=pt'])
    assert msg in result['msg']
    assert stderr in result['stderr']
    if msg == 'failed':
        assert result['rc'] != 0
    else:
        assert result['rc'] == 0
    assert host.tree() == before
    assert not host.dropin.exists()


def test_later_dropin_overriding_fails(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
                'grub.d/zz-vendor.cfg': 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT vendor=1"\n'})
    before = host.tree()
    result = run(fail=True, args_present=['iommu=pt'])
    assert 'zz-vendor.cfg' in result['msg']
    assert host.tree() == before


def test_later_dropin_not_touching_variable_is_fine(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
                'grub.d/init-select.cfg': 'if [ -x /nonexistent/upstart ]; then\n'
                                          '  GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT init=/sbin/upstart"\n'
                                          'fi\n'})
    result = run(args_present=['iommu=pt'])
    assert result['cmdline'] == 'quiet iommu=pt'
    assert host.sourced()[DEFAULT] == 'quiet iommu=pt'


@pytest.mark.parametrize('args, msg', [
    (dict(args_present=['quiet'], args_absent=['quiet']), 'args_absent'),
    (dict(args_present=['a b']), 'more than one'),
    (dict(args_present=['x="open']), 'unbalanced'),
    (dict(args_present=['x\ny']), 'control character'),
    (dict(state='absent', args_present=['quiet']), 'state=absent'),
    (dict(args_present=['quiet'], path='/tmp/elsewhere.cfg'), 'directly in'),
], ids=['conflict', 'two-args', 'unbalanced', 'newline', 'absent-with-args', 'path-outside'])
def test_bad_parameters(host, run, args, msg):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    before = host.tree()
    result = run(fail=True, **args)
    assert msg in result['msg']
    assert host.tree() == before


# ---------------------------------------------------------------------------
# The drop-in as a whole
# ---------------------------------------------------------------------------

def test_both_variables_share_the_dropin(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX="console=tty1"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'})
    run(variable=LINUX, args_present=['console=ttyS0'])
    result = run(args_present=['iommu=pt'])
    assert result['changed'] is True
    assert result['linux_cmdline'] == 'console=tty1 console=ttyS0'
    assert result['kernel_args'] == ['console=tty1', 'console=ttyS0', 'quiet', 'iommu=pt']
    assert source_values(host.dropin) == {LINUX: 'console=tty1 console=ttyS0', DEFAULT: 'quiet iommu=pt'}
    assert run(variable=LINUX, args_present=['console=ttyS0'])['changed'] is False
    assert run(args_present=['iommu=pt'])['changed'] is False


def test_broken_own_dropin_is_replaced(host, run):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
                'grub.d/99-rigkeeper.cfg': 'GRUB_CMDLINE_LINUX_DEFAULT="half\n'})
    result = run(args_present=['iommu=pt'], backup=False)
    assert result['changed'] is True
    assert result['cmdline_before'] is None
    assert result['cmdline'] == 'quiet iommu=pt'
    assert host.sourced()[DEFAULT] == 'quiet iommu=pt'


@pytest.mark.parametrize('check', [False, True])
def test_state_absent_removes_dropin(host, run, check):
    host.write({'grub': 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n'})
    host.boot('ro quiet')
    run(args_absent=['splash'])
    kept = host.dropin.read_text()
    result = run(check=check, diff=True, state='absent')
    assert result['changed'] is True
    assert result['cmdline_before'] == 'quiet'
    assert result['cmdline'] == 'quiet splash'
    assert result['reboot_pending'] is True          # splash comes back, the running kernel lacks it
    assert result['diff']['after'] == ''
    if check:
        assert host.dropin.read_text() == kept
        assert 'backup_file' not in result
    else:
        assert not host.dropin.exists()
        assert Path(result['backup_file']).read_text() == kept
        assert run(state='absent')['changed'] is False


def test_paths_are_never_shell_code(tmp_path, run, host):
    # A grub_dir whose name would run code if it were interpolated into a shell string.
    weird = tmp_path / "we ird $(touch PWNED) `touch PWNED2` 'q'"
    (weird / 'grub.d').mkdir(parents=True)
    (weird / 'grub').write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (weird / 'grub.d' / '50-$HOME.cfg').write_text('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT x=1"\n')
    result = run(grub_dir=str(weird), args_present=['iommu=pt'])
    assert result['cmdline'] == 'quiet x=1 iommu=pt'
    assert (weird / 'grub.d' / '99-rigkeeper.cfg').exists()
    assert not list(tmp_path.rglob('PWNED*'))
    assert not list(Path.cwd().glob('PWNED*'))
