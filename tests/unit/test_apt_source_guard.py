# -*- coding: utf-8 -*-
"""apt_source_guard: the parsers, then the module on apt source trees in tmp_path.

dpkg-query is faked (which files packages own, which packages are installed); every tree the module
edits is also read by the real apt (apt-cache policy with Dir::Etc pointed at the tree) when it is
installed here, so "apt reads it and sees no conflict" is not only our parser's opinion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible.module_utils import basic

import apt_source_guard as asg

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

CUDA = 'https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64'
CUDA_PREFIX = 'https://developer.download.nvidia.com/compute/cuda/repos/'
KEYRING = '/usr/share/keyrings/cuda-archive-keyring.gpg'
OURS = 'cuda.list'
KEYRING_LIST = 'cuda-ubuntu2404-x86_64.list'
DISABLED = '# disabled by rigkeeper: '
INLINE_KEY = ('Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZabc\n'
              ' -----END PGP PUBLIC KEY BLOCK-----\n')


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('line, uris, signed_by, types', [
    ('deb [signed-by=/k.gpg] https://x/y/ /', ['https://x/y/'], '/k.gpg', ['deb']),
    ('deb [ arch=amd64 signed-by=/k.gpg ] https://x/y suite main', ['https://x/y'], '/k.gpg', ['deb']),
    ('deb [arch=amd64,arm64 signed-by=/a.gpg,/b.gpg] https://x /', ['https://x'], '/a.gpg,/b.gpg', ['deb']),
    ('deb-src https://x/y /', ['https://x/y'], None, ['deb-src']),
    ('deb\thttps://x/y\t/   # trailing comment', ['https://x/y'], None, ['deb']),
    ('  deb https://x/y / ', ['https://x/y'], None, ['deb']),
    ('deb [signed-by=] https://x/y /', ['https://x/y'], None, ['deb']),
])
def test_parse_one_line(line, uris, signed_by, types):
    entry = asg.parse_one_line(line)
    assert (entry['uris'], entry['signed_by'], entry['types'], entry['enabled']) == (uris, signed_by, types, True)


@pytest.mark.parametrize('line', ['', '   ', '# deb https://x /', DISABLED + 'deb https://x /', 'rpm https://x /'])
def test_parse_one_line_skips(line):
    assert asg.parse_one_line(line) is None


@pytest.mark.parametrize('line, error', [
    ('deb [signed-by=/k.gpg https://x /', 'unterminated'),
    ('deb [trusted] https://x /', 'has no value'),
    ('deb [arch=amd64]', 'no URI'),
])
def test_parse_one_line_errors(line, error):
    with pytest.raises(asg.SourceError, match=error):
        asg.parse_one_line(line)


def test_parse_deb822_fields_continuations_comments_and_inline_keys():
    text = ('# a comment before\nTypes: deb deb-src\nURIs: https://a/\n https://b\nSuites: /\n' + INLINE_KEY
            + 'Enabled: yes\n\n\n# between\n\ntypes: deb\nuris: https://c\nsuites: noble\ncomponents: main restricted\n'
            'signed-by: /k.gpg\nenabled: no\n')
    first, second = asg.parse_deb822(text)
    assert first['types'] == ['deb', 'deb-src'] and first['uris'] == ['https://a/', 'https://b']
    assert first['signed_by'] == asg.INLINE_KEY and first['enabled'] is True
    assert (first['start'], first['end']) == (1, 10)
    assert second['uris'] == ['https://c'] and second['components'] == ['main', 'restricted']
    assert second['signed_by'] == '/k.gpg' and second['enabled'] is False


@pytest.mark.parametrize('text, error', [
    (' continued\nTypes: deb\n', 'continuation line without a field'),
    ('Types deb\n', 'not a "Field: value" line'),
])
def test_parse_deb822_errors(text, error):
    with pytest.raises(asg.SourceError, match=error):
        asg.parse_deb822(text)


@pytest.mark.parametrize('uri, url, prefixes, matches', [
    (CUDA + '/', CUDA, [], True),
    (CUDA, CUDA + '//', [], True),
    ('HTTPS://Developer.Download.NVIDIA.com/compute/cuda/repos/ubuntu2404/x86_64/', CUDA, [], True),
    # The path stays case-sensitive, as on the server.
    (CUDA.replace('x86_64', 'X86_64'), CUDA, [], False),
    ('file:///srv/repo/cuda/', 'file:/srv/repo/cuda', [], True),
    ('http://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64', CUDA, [], False),
    ('https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64', CUDA, [CUDA_PREFIX], True),
    # A prefix is a path prefix, not a string prefix.
    ('https://developer.download.nvidia.com/compute/cuda/repos2/x', CUDA, [CUDA_PREFIX.rstrip('/')], False),
    ('https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)',
     'https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)/', [], True),
])
def test_uri_matches(uri, url, prefixes, matches):
    assert asg.uri_matches(uri, url, prefixes) is matches


# ---------------------------------------------------------------------------
# The module on a tree
# ---------------------------------------------------------------------------

class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs.update(failed=True, msg=msg)
    raise AnsibleFailJson(kwargs)


class Host(object):
    """/etc/apt under tmp_path, and what dpkg knows (owned files, installed packages)."""

    def __init__(self, root):
        self.root = root
        self.etc = root / 'etc' / 'apt'
        self.parts = self.etc / 'sources.list.d'
        self.parts.mkdir(parents=True)
        self.backups = root / 'backups'
        self.owned = {}        # path -> package
        self.installed = {}    # package -> [files]
        self.calls = []

    def path(self, name):
        return str(self.etc / name) if name == 'sources.list' else str(self.parts / name)

    def write(self, files):
        for name, text in files.items():
            with open(self.path(name), 'w') as handle:
                handle.write(text)

    def read(self, name):
        with open(self.path(name)) as handle:
            return handle.read()

    def tree(self):
        out = {}
        for base in (self.etc, self.backups):
            for p in sorted(base.rglob('*')):
                out[str(p)] = p.read_bytes() if p.is_file() else None
        return out

    def own(self, name, package):
        self.owned[self.path(name)] = package
        self.installed.setdefault(package, []).append(self.path(name))

    def run_command(self, argv, **kwargs):
        self.calls.append(list(argv))
        assert argv[0] == '/usr/bin/dpkg-query'
        if argv[1] == '-S':
            out = ['%s: %s' % (self.owned[p], p) for p in argv[2:] if p in self.owned]
            err = ''.join('dpkg-query: no path found matching pattern %s\n' % p for p in argv[2:] if p not in self.owned)
            return (0 if not err else 1), '\n'.join(out) + '\n', err
        if argv[1] == '-W':
            package = argv[-1]
            return (0, 'ii ', '') if package in self.installed else (1, '', 'no packages found matching %s' % package)
        if argv[1] == '-L':
            return 0, '\n'.join(['/.', '/usr/share/keyrings'] + self.installed[argv[2]]) + '\n', ''
        raise AssertionError(argv)

    def apt_reads(self):
        """The real apt's verdict on the tree: (rc, stderr)."""
        if not shutil.which('apt-cache'):
            return None
        state = self.root / 'aptstate'
        (state / 'lists' / 'partial').mkdir(parents=True, exist_ok=True)
        if not (self.etc / 'sources.list').exists():
            (self.etc / 'sources.list').write_text('')
        opts = ['-o', 'Dir::Etc::sourcelist=%s' % (self.etc / 'sources.list'), '-o', 'Dir::Etc::sourceparts=%s' % self.parts,
                '-o', 'Dir::State::Lists=%s' % (state / 'lists'), '-o', 'Dir::Cache=%s' % (state / 'cache'),
                '-o', 'Dir::State::status=/dev/null', '-o', 'Dir::Etc::Preferences=/dev/null',
                '-o', 'Dir::Etc::PreferencesParts=%s' % state]
        proc = subprocess.run(['apt-cache'] + opts + ['policy'], capture_output=True, text=True)
        return proc.returncode, proc.stderr


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


@pytest.fixture
def run(host, monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', _fail_json)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *a, **k: '/usr/bin/' + name)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, argv, **kw: host.run_command(argv, **kw))

    def _run(check=False, diff=False, fail=False, **args):
        args.setdefault('url', CUDA)
        args.setdefault('signed_by', KEYRING)
        args.setdefault('path', host.path(OURS))
        args.setdefault('sources_list', str(host.etc / 'sources.list'))
        args.setdefault('sources_parts', str(host.parts))
        args.setdefault('backup_dir', str(host.backups))
        args['disable_files'] = [host.path(f) for f in args.get('disable_files', [])]
        args.update(_ansible_check_mode=check, _ansible_diff=diff)
        with patch_module_args(args):
            with pytest.raises(AnsibleFailJson if fail else AnsibleExitJson) as caught:
                asg.main()
        return caught.value.args[0]
    return _run


SIGNED = 'deb [signed-by=%s] %s/ /\n' % (KEYRING, CUDA)
UNSIGNED = 'deb %s/ /\n' % CUDA
OTHER_KEY = 'deb [signed-by=/usr/share/keyrings/old-cuda.gpg] %s /\n' % CUDA
UBUNTU = 'deb http://archive.ubuntu.com/ubuntu noble main restricted\n'
DEB822_OTHER = 'Types: deb\nURIs: %s/\nSuites: /\nSigned-By: /etc/apt/keyrings/nvidia.gpg\n' % CUDA
DEB822_UBUNTU = 'Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble\nComponents: main\n'


# Each case: the tree, module arguments, the actions per entry, and each file's text afterwards
# (None: unchanged).
CASES = {
    'unsigned entry in sources.list, among others': dict(
        files={'sources.list': UBUNTU + '# a comment\n' + UNSIGNED + 'deb-src %s /\n' % CUDA},
        actions=['disabled', 'disabled'],
        after={'sources.list': UBUNTU + '# a comment\n' + DISABLED + UNSIGNED + DISABLED + 'deb-src %s /\n' % CUDA}),
    'another keyring in a .list, ours kept': dict(
        files={'old-cuda.list': OTHER_KEY, OURS: SIGNED},
        actions=['own', 'disabled'],
        after={'old-cuda.list': DISABLED + OTHER_KEY, OURS: None}),
    'the same keyring elsewhere is the same source': dict(
        files={'hand.list': SIGNED},
        actions=['kept'], after={'hand.list': None}),
    'deb822 stanza with another Signed-By gets Enabled: no': dict(
        files={'nvidia.sources': DEB822_UBUNTU + '\n' + DEB822_OTHER},
        actions=['disabled'],
        after={'nvidia.sources': DEB822_UBUNTU + '\n' + DISABLED + 'Signed-By /etc/apt/keyrings/nvidia.gpg, not %s\n'
               % KEYRING + DEB822_OTHER + 'Enabled: no\n'}),
    'deb822 Enabled: yes is replaced, no newline at the end': dict(
        files={'nvidia.sources': DEB822_OTHER + 'Enabled: yes'},
        actions=['disabled'],
        after={'nvidia.sources': DISABLED + 'Signed-By /etc/apt/keyrings/nvidia.gpg, not %s\n' % KEYRING
               + DEB822_OTHER + 'Enabled: no\n'}),
    'deb822 inline key is another Signed-By': dict(
        files={'inline.sources': 'Types: deb\nURIs: %s\nSuites: /\n' % CUDA + INLINE_KEY},
        actions=['disabled'],
        after={'inline.sources': DISABLED + 'Signed-By <inline key>, not %s\n' % KEYRING
               + 'Types: deb\nURIs: %s\nSuites: /\n' % CUDA + INLINE_KEY + 'Enabled: no\n'}),
    'deb822 already disabled stays as it is': dict(
        files={'nvidia.sources': DEB822_OTHER + 'Enabled: no\n'},
        actions=['already_disabled'], after={'nvidia.sources': None}),
    'deb822 with other URIs too keeps them': dict(
        files={'mixed.sources': 'Types: deb\nURIs: %s\n http://mirror.example/x\nSuites: /\n' % CUDA},
        actions=['disabled'],
        after={'mixed.sources': DISABLED + 'URIs %s removed from this stanza: no Signed-By (rigkeeper\'s source uses %s)\n'
               % (CUDA, KEYRING) + 'Types: deb\nURIs: http://mirror.example/x\nSuites: /\n'}),
    'older distribution directories through url_prefixes': dict(
        files={'cuda-2204.list': 'deb %s/ /\n' % CUDA.replace('2404', '2204'),
               'cuda-2004.list': 'deb [signed-by=%s] %s/ /\n' % (KEYRING, CUDA.replace('2404', '2004'))},
        args=dict(url_prefixes=[CUDA_PREFIX]),
        actions=['kept', 'disabled'],
        after={'cuda-2204.list': DISABLED + 'deb %s/ /\n' % CUDA.replace('2404', '2204'), 'cuda-2004.list': None}),
    'without url_prefixes another directory is not ours': dict(
        files={'cuda-2204.list': 'deb %s/ /\n' % CUDA.replace('2404', '2204')},
        actions=[], after={'cuda-2204.list': None}),
    'a stale list is disabled whole, whatever it names': dict(
        files={'nvidia-docker.list': SIGNED + 'deb https://nvidia.github.io/nvidia-docker/ubuntu18.04/$(ARCH) /\n'},
        args=dict(disable_files=['nvidia-docker.list']),
        actions=['disabled', 'disabled'],
        after={'nvidia-docker.list': DISABLED + SIGNED + DISABLED
               + 'deb https://nvidia.github.io/nvidia-docker/ubuntu18.04/$(ARCH) /\n'}),
    'files apt does not read are not read': dict(
        files={'old.list.disabled': UNSIGNED, 'old.list.save': UNSIGNED, 'bad name.list': UNSIGNED},
        actions=[], after={'old.list.disabled': None, 'old.list.save': None, 'bad name.list': None}),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_tree(host, run, name):
    case = CASES[name]
    host.write(case['files'])
    before = {f: host.read(f) for f in case['files']}
    result = run(**case.get('args', {}))
    assert [e['action'] for e in result['entries']] == case['actions']
    for f, text in case['after'].items():
        assert host.read(f) == (before[f] if text is None else text), f
    changed = sorted(host.path(f) for f, text in case['after'].items() if text is not None)
    assert result['changed'] is bool(changed) and result['changed_files'] == changed
    # One backup per changed file, of the text before.
    assert sorted(result['backups']) == changed
    for f in case['after']:
        if case['after'][f] is not None:
            with open(result['backups'][host.path(f)]) as handle:
                assert handle.read() == before[f]
            assert os.stat(result['backups'][host.path(f)]).st_mode & 0o777 == 0o600
    # Idempotent: the second run finds nothing to do and writes nothing.
    tree = host.tree()
    again = run(**case.get('args', {}))
    assert again['changed'] is False and again['backups'] == {} and host.tree() == tree
    verdict = host.apt_reads()
    if verdict is not None:
        rc, stderr = verdict
        assert rc == 0 and 'Conflicting' not in stderr and 'E:' not in stderr, stderr


def test_the_issue_scene_apt_fails_before_and_reads_after(host, run):
    """An old unsigned CUDA entry and a deb822 one with another Signed-By, next to ours: the real apt
    refuses the tree before, and reads it after."""
    host.write({'sources.list': UBUNTU + UNSIGNED, 'nvidia.sources': DEB822_OTHER, OURS: SIGNED})
    verdict = host.apt_reads()
    if verdict is None:
        pytest.skip('apt-cache is not installed here')
    assert verdict[0] != 0 and 'Conflicting values set for option Signed-By' in verdict[1]
    result = run()
    assert sorted(e['action'] for e in result['entries']) == ['disabled', 'disabled', 'own']
    rc, stderr = host.apt_reads()
    assert rc == 0 and 'Conflicting' not in stderr, stderr


def test_check_mode_reports_and_changes_nothing(host, run):
    host.write({'sources.list': UNSIGNED, 'nvidia.sources': DEB822_OTHER})
    tree = host.tree()
    result = run(check=True, diff=True)
    assert result['changed'] is True
    assert result['changed_files'] == sorted([host.path('sources.list'), host.path('nvidia.sources')])
    assert [e['action'] for e in result['entries']] == ['disabled', 'disabled']
    assert host.tree() == tree
    assert not host.backups.exists()
    diffs = {d['before_header']: d for d in result['diff']}
    assert diffs[host.path('sources.list')]['after'] == DISABLED + UNSIGNED
    assert diffs[host.path('nvidia.sources')]['after'].endswith('Enabled: no\n')


def test_a_second_change_keeps_the_first_backup(host, run):
    host.write({'old.list': UNSIGNED})
    first = run()['backups'][host.path('old.list')]
    # Later someone adds the line again: the file changes again, the first backup stays.
    host.write({'old.list': DISABLED + UNSIGNED + OTHER_KEY})
    second = run()['backups'][host.path('old.list')]
    assert second != first
    with open(first) as handle:
        assert handle.read() == UNSIGNED
    with open(second) as handle:
        assert handle.read() == DISABLED + UNSIGNED + OTHER_KEY


def test_mode_and_owner_are_kept(host, run):
    host.write({'old.list': UNSIGNED})
    os.chmod(host.path('old.list'), 0o640)
    run()
    assert os.stat(host.path('old.list')).st_mode & 0o777 == 0o640
    assert not [p for p in os.listdir(str(host.parts)) if p.startswith('.')], 'a temporary file was left behind'


# ---------------------------------------------------------------------------
# Files packages own, and the cuda-keyring package
# ---------------------------------------------------------------------------

def test_a_package_list_with_another_key_fails_before_anything_changes(host, run):
    host.write({'sources.list': UNSIGNED, 'vendor.list': OTHER_KEY})
    host.own('vendor.list', 'vendor-repo')
    tree = host.tree()
    result = run(fail=True)
    assert 'vendor-repo' in result['msg'] and host.path('vendor.list') in result['msg']
    assert 'nothing was changed' in result['msg']
    assert host.tree() == tree


def test_a_package_list_that_only_matches_a_prefix_is_a_warning(host, run, monkeypatch):
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, 'warn', lambda self, text: warnings.append(text))
    old = 'deb [signed-by=/usr/share/keyrings/old.gpg] %s/ /\n' % CUDA.replace('2404', '2204')
    host.write({'vendor.list': old})
    host.own('vendor.list', 'vendor-repo')
    result = run(url_prefixes=[CUDA_PREFIX])
    assert [(e['action'], e['owner']) for e in result['entries']] == [('dpkg_owned', 'vendor-repo')]
    assert result['changed'] is False and host.read('vendor.list') == old
    assert any('vendor-repo' in w for w in warnings)


def test_cuda_keyring_with_the_same_source_is_used(host, run):
    host.write({KEYRING_LIST: SIGNED, 'sources.list': UNSIGNED})
    host.own(KEYRING_LIST, 'cuda-keyring')
    result = run(package='cuda-keyring')
    assert result['own_file_needed'] is False
    assert result['package_source'] == {'package': 'cuda-keyring', 'installed': True, 'same_source': True,
                                        'files': [host.path(KEYRING_LIST)]}
    actions = {(os.path.basename(e['file']), e['action']) for e in result['entries']}
    assert actions == {(KEYRING_LIST, 'package_source'), ('sources.list', 'disabled')}
    # The package's file is never touched.
    assert host.read(KEYRING_LIST) == SIGNED


def test_cuda_keyring_for_another_url_fails_before_anything_changes(host, run):
    other = 'deb [signed-by=%s] %s/ /\n' % (KEYRING, CUDA.replace('2404', '2204'))
    host.write({'cuda-ubuntu2204-x86_64.list': other, 'sources.list': UNSIGNED})
    host.own('cuda-ubuntu2204-x86_64.list', 'cuda-keyring')
    tree = host.tree()
    result = run(package='cuda-keyring', fail=True)
    assert 'cuda-keyring is installed and its source lists' in result['msg']
    assert CUDA.replace('2404', '2204') in result['msg'] and 'Nothing was changed' in result['msg']
    assert host.tree() == tree


def test_cuda_keyring_not_installed(host, run):
    host.write({OURS: SIGNED})
    result = run(package='cuda-keyring')
    assert result['own_file_needed'] is True
    assert result['package_source'] == {'package': 'cuda-keyring', 'installed': False, 'same_source': False,
                                        'files': []}


def test_cuda_keyring_whose_list_was_deleted_needs_our_file(host, run):
    host.installed['cuda-keyring'] = [host.path(KEYRING_LIST)]  # dpkg lists it, the file is gone
    result = run(package='cuda-keyring')
    assert result['own_file_needed'] is True and result['package_source']['files'] == []


def test_dpkg_is_asked_once_for_all_files(host, run):
    host.write({'a.list': UNSIGNED, 'b.list': OTHER_KEY, 'c.sources': DEB822_OTHER})
    run()
    owner_calls = [c for c in host.calls if c[1] == '-S']
    assert len(owner_calls) == 1 and sorted(owner_calls[0][2:]) == sorted(host.path(f) for f in ('a.list', 'b.list', 'c.sources'))


def test_an_unparsable_file_fails_naming_it(host, run):
    host.write({'broken.list': 'deb [signed-by=/k.gpg %s /\n' % CUDA, 'old.list': UNSIGNED})
    tree = host.tree()
    result = run(fail=True)
    assert host.path('broken.list') in result['msg'] and 'unterminated' in result['msg']
    assert host.tree() == tree


def test_no_sources_at_all(host, run):
    result = run()
    assert result['changed'] is False and result['entries'] == []
    assert result['msg'] == 'no other entry for %s conflicts' % CUDA
