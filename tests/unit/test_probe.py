"""plugins/module_utils/rigkeeper_probe.py: every resource kind judged on a real file tree (tmp_path) with
commands answered by a fake runner; one resource's failure never stops the others."""

import json
import os
import shutil

import pytest

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import Host, probe, worst

ME = os.getuid()


class FakeHost(Host):
    """Real files (absolute tmp_path paths); commands from a table; systemd on or off."""

    def __init__(self, commands=None, systemd=True):
        super().__init__(root='/', runner=self._answer)
        self.commands = commands or {}
        self.calls = []
        self._systemd = systemd

    def _answer(self, argv):
        self.calls.append(list(argv))
        for prefix, answer in self.commands.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return answer(argv) if callable(answer) else answer
        return None, '', '%s: command not found' % argv[0]

    def systemd_running(self):
        return self._systemd


def one(res, host=None):
    res = dict(res, id=res.get('id', 'r/x'), role='r', label=res.get('label', 'x'))
    return probe([res], host or FakeHost())[res['id']]


def owner():
    import pwd
    return pwd.getpwuid(ME).pw_name


# -- file ------------------------------------------------------------------------------------
def test_file_with_the_wanted_content_mode_and_owner_is_ok(tmp_path):
    f = tmp_path / 'a.conf'
    f.write_text('x = 1\n')
    f.chmod(0o644)
    got = one({'kind': 'file', 'path': str(f), 'content': 'x = 1\n', 'mode': '0644', 'owner': owner()})
    assert got == {'status': 'ok', 'reasons': []}


def test_file_content_drift_says_which_lines_and_carries_a_diff(tmp_path):
    f = tmp_path / 'a.conf'
    f.write_text('iommu=on\nquiet\n')
    got = one({'kind': 'file', 'path': str(f), 'content': 'iommu=pt\nquiet\n'})
    assert got['status'] == 'drift'
    assert '-iommu=on' in got['reasons'][0] and '+iommu=pt' in got['reasons'][0]
    assert got['diff']['before'] == 'iommu=on\nquiet\n' and got['diff']['after'] == 'iommu=pt\nquiet\n'


def test_file_mode_and_owner_drift(tmp_path):
    f = tmp_path / 'a.conf'
    f.write_text('x')
    f.chmod(0o600)
    got = one({'kind': 'file', 'path': str(f), 'mode': '0644', 'owner': 'nobody-rigkeeper-test'})
    assert got['status'] == 'drift'
    assert 'mode 0600, wanted 0644' in got['reasons']
    assert any(r.startswith('owner ') for r in got['reasons'])


def test_missing_file_is_absent_and_a_directory_in_its_place_is_drift(tmp_path):
    assert one({'kind': 'file', 'path': str(tmp_path / 'nope')})['status'] == 'absent'
    (tmp_path / 'd').mkdir()
    got = one({'kind': 'file', 'path': str(tmp_path / 'd')})
    assert got['status'] == 'drift' and 'a directory' in got['reasons'][0]


def test_file_wanted_absent_with_a_marker_leaves_a_foreign_file_alone(tmp_path):
    f = tmp_path / 'override.conf'
    f.write_text('[Service]\nExecStart=something of the owner\n')
    res = {'kind': 'file', 'path': str(f), 'state': 'absent', 'marker': 'rigkeeper headless'}
    assert one(res)['status'] == 'ok'
    f.write_text('# rigkeeper headless: console autologin\n')
    assert one(res)['status'] == 'drift'
    f.unlink()
    assert one(res)['status'] == 'ok'


def test_file_match_and_not_match(tmp_path):
    f = tmp_path / 'dropin.conf'
    f.write_text('[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --persistence-mode\n')
    res = {'kind': 'file', 'path': str(f), 'match': [r'^ExecStart=\S+.* --persistence-mode( |$)'],
           'not_match': ['--no-persistence-mode']}
    assert one(res)['status'] == 'ok'
    f.write_text('[Service]\nExecStart=\nExecStart=/usr/bin/nvidia-persistenced --no-persistence-mode\n')
    got = one(res)
    assert got['status'] == 'drift' and len(got['reasons']) == 2


def test_file_or_paths_accepts_the_file_at_the_other_place(tmp_path):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'nvidia.yaml').write_text('cdiVersion: 0.5.0\n')
    res = {'kind': 'file', 'path': str(tmp_path / 'etc.yaml'), 'or_paths': [str(tmp_path / 'run' / 'nvidia.yaml')]}
    assert one(res)['status'] == 'ok'


# -- directory and link ----------------------------------------------------------------------
def test_directory_and_link(tmp_path):
    (tmp_path / 'd').mkdir(mode=0o755)
    assert one({'kind': 'directory', 'path': str(tmp_path / 'd'), 'mode': '0755'})['status'] == 'ok'
    assert one({'kind': 'directory', 'path': str(tmp_path / 'x')})['status'] == 'absent'
    link = tmp_path / 'default.target'
    link.symlink_to('/lib/systemd/system/graphical.target')
    got = one({'kind': 'link', 'path': str(link), 'target_names': ['multi-user.target']})
    assert got['status'] == 'drift' and 'graphical.target' in got['reasons'][0]
    link.unlink()
    link.symlink_to('/lib/systemd/system/multi-user.target')
    assert one({'kind': 'link', 'path': str(link), 'target_names': ['multi-user.target']})['status'] == 'ok'


def test_link_falls_back_to_the_vendor_default(tmp_path):
    vendor = tmp_path / 'vendor.target'
    vendor.symlink_to('multi-user.target')
    res = {'kind': 'link', 'path': str(tmp_path / 'etc.target'), 'target_names': ['multi-user.target'],
           'fallback_paths': [str(vendor)]}
    assert one(res)['status'] == 'ok'


# -- packages --------------------------------------------------------------------------------
DPKG = (0, 'nvidia-driver-580\t580.95.05-0ubuntu1\thold\tinstalled\n'
           'nvidia-utils-580\t580.95.05-0ubuntu1\tinstall\tinstalled\n'
           'pciutils\t1:3.9.0-4\tinstall\tinstalled\n'
           'oldpkg\t1.0\tdeinstall\tconfig-files\n'
           'halfpkg\t2.0\tinstall\thalf-configured\n', '')


@pytest.mark.parametrize('res,status,reason', [
    ({'name': 'pciutils'}, 'ok', None),
    ({'name': 'openssh-server'}, 'absent', 'openssh-server not installed'),
    ({'name': 'oldpkg'}, 'absent', 'oldpkg not installed'),
    ({'name': 'halfpkg'}, 'drift', 'half-configured'),
    ({'name': 'nvidia-driver-580', 'version': '580.95.05-*', 'hold': True}, 'ok', None),
    ({'name': 'nvidia-utils-580', 'hold': True}, 'drift', 'not held'),
    ({'name': 'nvidia-utils-580', 'version': '580.82.07-*'}, 'drift', 'wanted 580.82.07-*'),
    ({'name': 'pciutils', 'state': 'absent'}, 'drift', 'wanted absent'),
    ({'name': 'oldpkg', 'state': 'absent'}, 'ok', None),
    ({'any_of': ['docker.io', 'docker-ce', 'pciutils']}, 'ok', None),
    ({'any_of': ['docker.io', 'docker-ce']}, 'absent', 'none of docker.io, docker-ce installed'),
])
def test_packages_from_one_dpkg_query(res, status, reason):
    host = FakeHost({('dpkg-query',): DPKG})
    got = one(dict(res, kind='package'), host)
    assert got['status'] == status
    if reason:
        assert reason in ' '.join(got['reasons'])


def test_many_package_resources_cost_one_dpkg_query():
    host = FakeHost({('dpkg-query',): DPKG})
    res = [{'id': 'r/%d' % i, 'role': 'r', 'label': 'p', 'kind': 'package', 'name': n}
           for i, n in enumerate(['pciutils', 'nvidia-driver-580', 'nope', 'oldpkg'])]
    probe(res, host)
    assert [c[0] for c in host.calls] == ['dpkg-query']


def test_without_dpkg_every_package_is_an_error_and_files_are_still_read(tmp_path):
    (tmp_path / 'f').write_text('x')
    res = [{'id': 'r/p', 'role': 'r', 'label': 'p', 'kind': 'package', 'name': 'pciutils'},
           {'id': 'r/f', 'role': 'r', 'label': 'f', 'kind': 'file', 'path': str(tmp_path / 'f')}]
    got = probe(res, FakeHost())
    assert got['r/p']['status'] == 'error' and 'dpkg-query not found' in got['r/p']['reasons'][0]
    assert got['r/f']['status'] == 'ok'


# -- units -----------------------------------------------------------------------------------
def show(blocks):
    return lambda argv: (0, '\n\n'.join('\n'.join('%s=%s' % kv for kv in b.items()) for b in blocks) + '\n', '')


def test_units_from_one_systemctl_show_in_the_order_asked():
    host = FakeHost({('systemctl', 'show'): show([
        {'Id': 'docker.service', 'LoadState': 'loaded', 'ActiveState': 'active', 'UnitFileState': 'enabled'},
        {'Id': 'sleep.target', 'LoadState': 'masked', 'ActiveState': 'inactive', 'UnitFileState': 'masked'},
        {'Id': 'rigkeeper-gpu-power.service', 'LoadState': 'not-found', 'ActiveState': 'inactive', 'UnitFileState': ''},
    ])})
    res = [{'id': 'r/d', 'role': 'r', 'label': 'd', 'kind': 'unit', 'name': 'docker.service', 'enabled': True, 'active': True},
           {'id': 'r/s', 'role': 'r', 'label': 's', 'kind': 'unit', 'name': 'sleep.target', 'masked': True},
           {'id': 'r/g', 'role': 'r', 'label': 'g', 'kind': 'unit', 'name': 'rigkeeper-gpu-power.service', 'enabled': True}]
    # The batch is asked sorted: docker, rigkeeper-gpu-power, sleep.
    host.commands[('systemctl', 'show')] = show([
        {'Id': 'docker.service', 'LoadState': 'loaded', 'ActiveState': 'active', 'UnitFileState': 'enabled'},
        {'Id': 'rigkeeper-gpu-power.service', 'LoadState': 'not-found', 'ActiveState': 'inactive', 'UnitFileState': ''},
        {'Id': 'sleep.target', 'LoadState': 'masked', 'ActiveState': 'inactive', 'UnitFileState': 'masked'},
    ])
    got = probe(res, host)
    assert [c[:2] for c in host.calls] == [['systemctl', 'show']]
    assert got['r/d']['status'] == 'ok' and got['r/s']['status'] == 'ok'
    assert got['r/g']['status'] == 'absent'


@pytest.mark.parametrize('unit,spec,status', [
    ({'LoadState': 'loaded', 'ActiveState': 'failed', 'UnitFileState': 'enabled'}, {'active': True}, 'drift'),
    ({'LoadState': 'loaded', 'ActiveState': 'active', 'UnitFileState': 'disabled'}, {'enabled': True}, 'drift'),
    ({'LoadState': 'loaded', 'ActiveState': 'inactive', 'UnitFileState': 'static'}, {'masked': True}, 'drift'),
    ({'LoadState': 'masked', 'ActiveState': 'inactive', 'UnitFileState': 'masked'}, {'enabled': True}, 'drift'),
    ({'LoadState': 'not-found', 'ActiveState': 'inactive', 'UnitFileState': ''}, {'enabled': False}, 'ok'),
])
def test_unit_states(unit, spec, status):
    host = FakeHost({('systemctl', 'show'): show([dict(unit, Id='x.service')])})
    assert one(dict(spec, kind='unit', name='x.service'), host)['status'] == status


def test_without_systemd_units_are_read_from_their_files_and_not_running(tmp_path, monkeypatch):
    import ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe as rp
    etc, lib = tmp_path / 'etc', tmp_path / 'lib'
    (etc / 'multi-user.target.wants').mkdir(parents=True)
    lib.mkdir()
    (lib / 'docker.service').write_text('[Service]\n')
    (etc / 'multi-user.target.wants' / 'docker.service').symlink_to(lib / 'docker.service')
    (etc / 'sleep.target').symlink_to('/dev/null')
    monkeypatch.setattr(rp, 'UNIT_DIRS', (str(etc), str(tmp_path / 'run'), str(lib)))
    host = FakeHost(systemd=False)
    assert one({'kind': 'unit', 'name': 'sleep.target', 'masked': True}, host)['status'] == 'ok'
    got = one({'kind': 'unit', 'name': 'docker.service', 'enabled': True, 'active': True}, host)
    assert got['status'] == 'drift' and got['reasons'] == ['docker.service is not running: systemd is not running on this host']
    assert one({'kind': 'unit', 'name': 'ssh.service', 'enabled': True}, host)['status'] == 'absent'
    assert host.calls == []


# -- commands --------------------------------------------------------------------------------
SSHD_T = (0, 'port 22\npasswordauthentication no\npermitrootlogin prohibit-password\nlistenaddress 0.0.0.0:22\n', '')


@pytest.mark.parametrize('answer,expect,status,reason', [
    (SSHD_T, {'passwordauthentication': 'no', 'port': 22}, 'ok', None),
    (SSHD_T, {'passwordauthentication': 'yes'}, 'drift', 'passwordauthentication no, wanted yes'),
    (SSHD_T, {'maxauthtries': '3'}, 'drift', 'maxauthtries not set'),
    ((255, '', '/etc/ssh/sshd_config line 3: Bad configuration option: Foo\n'), {}, 'error', 'Bad configuration option'),
    ((None, '', 'sshd: command not found'), {}, 'absent', 'sshd not installed'),
    ((124, '', ''), {}, 'error', 'did not answer'),
])
def test_sshd_effective_settings(answer, expect, status, reason):
    host = FakeHost({('sshd',): answer})
    got = one({'kind': 'command', 'argv': ['sshd', '-T'], 'parse': 'kv', 'expect': expect, 'program': 'sshd'}, host)
    assert got['status'] == status
    if reason:
        assert reason in ' '.join(got['reasons'])


def test_docker_info_json_keys_and_values():
    info = json.dumps({'Runtimes': {'runc': {}, 'nvidia': {'path': 'nvidia-container-runtime'}},
                       'DefaultRuntime': 'runc'})
    host = FakeHost({('docker',): (0, info, '')})
    res = {'kind': 'command', 'argv': ['docker', 'info'], 'parse': 'json', 'has_keys': ['Runtimes.nvidia']}
    assert one(res, host)['status'] == 'ok'
    got = one(dict(res, expect={'DefaultRuntime': 'nvidia'}), host)
    assert got['status'] == 'drift' and 'DefaultRuntime is "runc", wanted "nvidia"' in got['reasons'][0]


# -- json_file -------------------------------------------------------------------------------
def test_daemon_json_subset_contains_and_not_values(tmp_path):
    f = tmp_path / 'daemon.json'
    f.write_text(json.dumps({'runtimes': {'nvidia': {'path': 'nvidia-container-runtime', 'args': []},
                                          'crun': {'path': '/usr/bin/crun'}},
                             'exec-opts': ['native.cgroupdriver=cgroupfs'], 'log-driver': 'journald'}))
    res = {'kind': 'json_file', 'path': str(f),
           'subset': {'runtimes.nvidia': {'path': 'nvidia-container-runtime', 'args': []}},
           'contains': {'exec-opts': ['native.cgroupdriver=cgroupfs']}, 'not_values': {'default-runtime': 'nvidia'}}
    assert one(res)['status'] == 'ok'
    f.write_text(json.dumps({'default-runtime': 'nvidia', 'exec-opts': []}))
    got = one(res)
    assert got['status'] == 'drift' and len(got['reasons']) == 3
    f.write_text('{"runtimes": ')
    assert one(res)['status'] == 'drift'


# -- apt sources -----------------------------------------------------------------------------
def test_apt_sources_one_line_and_deb822(tmp_path, monkeypatch):
    d = tmp_path / 'sources.list.d'
    d.mkdir()
    (d / 'cuda.list').write_text('deb [signed-by=/k.gpg] file:///srv/repo/cuda /\n')
    (d / 'ppa.sources').write_text('Types: deb\nURIs: http://ppa.launchpad.net/graphics-drivers/ppa/ubuntu\n'
                                   'Suites: noble\nComponents: main\nEnabled: no\n')
    host = FakeHost()
    real = host.read_bytes
    monkeypatch.setattr(host, 'listdir', lambda p: sorted(os.listdir(d)))
    monkeypatch.setattr(host, 'read_bytes', lambda p: real(str(d / os.path.basename(p))) if p.startswith('/etc/apt/sources.list.d/') else (_ for _ in ()).throw(IOError()))
    res = {'kind': 'apt_sources', 'present_urls': ['file:///srv/repo/cuda/'],
           'absent_urls': ['ppa.launchpad.net/graphics-drivers']}
    assert one(res, host)['status'] == 'ok'
    (d / 'ppa.sources').write_text((d / 'ppa.sources').read_text().replace('Enabled: no', 'Enabled: yes'))
    assert one(res, host)['status'] == 'drift'
    assert one({'kind': 'apt_sources', 'present_urls': ['https://other']}, host)['status'] == 'absent'


# -- grub ------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_grub_dropin_as_grub_cmdline_would_write_it_and_grub_cfg_in_sync(tmp_path):
    grub = tmp_path / 'default'
    (grub / 'grub.d').mkdir(parents=True)
    (grub / 'grub').write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n')
    res = {'kind': 'grub', 'path': str(grub / 'grub.d' / '99-rigkeeper.cfg'), 'grub_dir': str(grub),
           'assignments': [{'variable': 'GRUB_CMDLINE_LINUX_DEFAULT', 'args_present': ['iommu=pt'], 'args_absent': []},
                           {'variable': 'GRUB_CMDLINE_LINUX', 'args_present': [], 'args_absent': ['iommu']}],
           'grub_cfg': str(tmp_path / 'grub.cfg')}
    host = Host(root='/')
    got = one(res, host)
    assert got['status'] == 'absent'
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_grub import render_dropin
    (grub / 'grub.d' / '99-rigkeeper.cfg').write_text(render_dropin({'GRUB_CMDLINE_LINUX': '',
                                                                     'GRUB_CMDLINE_LINUX_DEFAULT': 'quiet splash iommu=pt'}))
    (tmp_path / 'grub.cfg').write_text("menuentry 'Ubuntu' {\n\tlinux\t/vmlinuz-6.8.0-51-generic root=/dev/sda1 ro quiet splash iommu=pt\n}\n")
    assert one(res, host) == {'status': 'ok', 'reasons': []}
    # update-grub never ran after the drop-in changed: grub.cfg boots the old line.
    (tmp_path / 'grub.cfg').write_text("menuentry 'Ubuntu' {\n\tlinux\t/vmlinuz root=/dev/sda1 ro quiet splash\n}\n")
    got = one(res, host)
    assert got['status'] == 'drift' and 'update-grub has not run' in got['reasons'][0]
    # The drop-in edited by hand: drift with the diff.
    text = (grub / 'grub.d' / '99-rigkeeper.cfg').read_text().replace('iommu=pt', 'iommu=on')
    (grub / 'grub.d' / '99-rigkeeper.cfg').write_text(text)
    got = one(res, host)
    assert got['status'] == 'drift' and '-GRUB_CMDLINE_LINUX_DEFAULT' in got['reasons'][0] and 'diff' in got


@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_grub_chain_that_does_not_evaluate_is_this_resource_error(tmp_path):
    grub = tmp_path / 'default'
    (grub / 'grub.d').mkdir(parents=True)
    (grub / 'grub').write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet\nexit 3\n')
    res = {'kind': 'grub', 'path': str(grub / 'grub.d' / '99-rigkeeper.cfg'), 'grub_dir': str(grub),
           'assignments': [{'variable': 'GRUB_CMDLINE_LINUX_DEFAULT', 'args_present': ['iommu=pt']}]}
    got = one(res, Host(root='/'))
    assert got['status'] == 'error' and 'GRUB defaults do not evaluate' in got['reasons'][0]


# -- the whole probe -------------------------------------------------------------------------
def test_one_broken_resource_never_stops_the_others(tmp_path):
    (tmp_path / 'f').write_text('x')
    res = [{'id': 'a/1', 'role': 'a', 'label': 'weird', 'kind': 'teleporter'},
           {'id': 'a/2', 'role': 'a', 'label': 'no path', 'kind': 'file'},
           {'id': 'b/1', 'role': 'b', 'label': 'f', 'kind': 'file', 'path': str(tmp_path / 'f')}]
    got = probe(res, FakeHost())
    assert got['a/1']['status'] == 'error' and 'unknown resource kind' in got['a/1']['reasons'][0]
    assert got['a/2']['status'] == 'error' and 'KeyError' in got['a/2']['reasons'][0]
    assert got['b/1']['status'] == 'ok'


def test_worst_status_counts_for_a_role():
    assert worst(['ok', 'warn']) == 'warn'
    assert worst(['ok', 'absent', 'drift']) in ('absent', 'drift')
    assert worst(['drift', 'error']) == 'error'
    assert worst([]) == 'ok'


class ProcHost(FakeHost):
    """A host whose /proc/driver/nvidia/version says which driver runs."""

    def __init__(self, commands, proc):
        super().__init__(commands)
        self.proc = proc

    def read_bytes(self, path):
        if path == '/proc/driver/nvidia/version':
            if self.proc is None:
                raise IOError(2, 'No such file or directory')
            return self.proc.encode()
        return super().read_bytes(path)


# The lent H200 server's text (tests/hardware/README.md): a driver no package installed.
H200_PROC = ('NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)  \n'
             'GCC version:  gcc version 15.3.0 (GCC) \n')


@pytest.mark.parametrize('proc,extra', [(H200_PROC, 'yet driver 580.159.04 is loaded, installed outside apt'),
                                        (None, None)])
def test_a_driver_no_package_installed_is_named(proc, extra):
    host = ProcHost({('dpkg-query',): (0, 'pciutils\t1:3.9.0-4\tinstall ok installed\n', ''),
                     ('apt-cache', 'pkgnames'): (0, 'nvidia-open-580\n', '')}, proc)
    got = one({'kind': 'nvidia_family', 'install': ['nvidia-open-580'], 'branch': '580',
               'family': ['nvidia-*'], 'preferences_path': '/nonexistent/rigkeeper-nvidia'}, host)
    assert got['status'] == 'absent' and 'nvidia-open-580 missing' in got['reasons'][0]
    assert (extra in ' '.join(got['reasons'])) if extra else len(got['reasons']) == 1
