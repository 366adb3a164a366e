# -*- coding: utf-8 -*-
# Apache-2.0
"""Each role's wanted state as data: the resources the probe reads and the values the role applies.

``compile_role(role, ctx)`` turns a role's variables (its defaults and vars, the inventory, the
host's facts; the policy filters run inside those variables) into::

    {"role": name, "resources": [resource, ...], "data": {...}}

A resource is what ``plugins/module_utils/rigkeeper_probe.py`` reads on the host (``file``, ``directory``,
``link``, ``package``, ``unit``, ``command``, ``json_file``, ``grub``, ``apt_sources``,
``nvidia_family``) or what the controller judges from the facts (``fact``, see ``judge_fact``).
Each has an ``id`` (``<role>/<key>``), a ``key`` the role's tasks use
(``rigkeeper_wanted.<role>.res.<key>``: a file's rendered ``content``, ``path``, ``mode``) and a
``label``. ``data`` holds the computed values the role's tasks apply (kernel arguments, the power
plan, package names). The role's tasks read both, so the probe checks exactly what converge sets.

``ctx`` gives templated variables (``ctx.v(name)``), rendered role templates
(``ctx.render(name)``) and an overlay for values computed here (``ctx.set``). A policy refusal or a
bad variable raises: the role is then an error in the audit, and the role's own first task fails
with the same message before anything changes.
"""
from __future__ import annotations

import json
import os
import re
import shlex

# Roles the playbooks know, in the order site.yml applies them; DEFAULT_ROLES: those a host manages
# when its inventory does not name them (rigkeeper_roles): monitoring is off unless named.
ROLES = ('nvidia_driver', 'cuda_toolkit', 'container_toolkit', 'kernel_params', 'gpu_power', 'headless', 'ssh',
         'monitoring')
DEFAULT_ROLES = tuple(r for r in ROLES if r != 'monitoring')
# The probe code the host's self-audit runs (monitoring role): these module_utils files, as they are.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils')
SELFAUDIT_FILES = ('rigkeeper_selfaudit.py', 'rigkeeper_probe.py', 'rigkeeper_facts.py', 'rigkeeper_host.py',
                   'rigkeeper_nvsmi.py', 'rigkeeper_apt.py', 'rigkeeper_grub.py', 'rigkeeper_metrics.py')
# Where the host's record of what rigkeeper manages lives (playbooks/site.yml writes it), and the
# compiled wanted state it was converged to (the host's own self-audit compares against it).
RECORD_PATH = '/etc/rigkeeper/managed.json'
WANTED_PATH = '/etc/rigkeeper/wanted.json'


class CompileError(Exception):
    """A role's wanted state cannot be computed (bad input, a policy refusal)."""


class Wanted(object):
    def __init__(self, role):
        self.role = role
        self.resources = []
        self.data = {}

    def add(self, key, kind, label, **spec):
        spec = dict((k, v) for k, v in spec.items() if v is not None)
        res = dict(id='%s/%s' % (self.role, key), role=self.role, key=key, kind=kind, label=label, **spec)
        if any(r['id'] == res['id'] for r in self.resources):
            raise CompileError('%s: resource key %s used twice' % (self.role, key))
        self.resources.append(res)
        return res

    # Shorthands for the kinds the roles use most.
    def file(self, key, label, path, content=None, mode='0644', owner='root', group='root', **extra):
        return self.add(key, 'file', label, path=path, content=content, mode=mode, owner=owner, group=group, **extra)

    def absent(self, key, label, path, **extra):
        return self.add(key, 'file', label, path=path, state='absent', **extra)

    def directory(self, key, label, path, mode='0755', owner='root', group='root'):
        return self.add(key, 'directory', label, path=path, mode=mode, owner=owner, group=group)

    def package(self, key, name, version=None, hold=None, state='present', label=None):
        return self.add(key, 'package', label or 'package %s' % name, name=name, version=version, hold=hold, state=state)

    def unit(self, key, name, label=None, **spec):
        return self.add(key, 'unit', label or 'unit %s' % name, name=name, **spec)

    def fact(self, key, label, check, severity=None, pending=None, reboot=None, **params):
        """A check of the facts. ``reboot``: what it finds waits for a reboot (the audit reports it
        under "reboot" as a warning, and site.yml reboots for it); ``pending``: after the role ran,
        it may still wait for a reboot or the loaded driver (verify does not fail on it)."""
        return self.add(key, 'fact', label, check=check, severity=severity, pending=pending, reboot=reboot,
                        params=params)

    def as_dict(self):
        return {'role': self.role, 'resources': self.resources, 'data': self.data,
                'res': dict((r['key'], r) for r in self.resources)}


def _bool(value):
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on')


# ------------------------------------------------------------------------------------------------
# headless
# ------------------------------------------------------------------------------------------------
def compile_headless(ctx):
    w = Wanted('headless')
    v = ctx.v
    dropin_dir, dropin = v('__headless_getty_dropin_dir'), v('__headless_getty_dropin')
    if _bool(v('headless_autologin_enabled')):
        user = v('headless_autologin_user')
        if not user:
            raise CompileError('headless_autologin_enabled is true but headless_autologin_user is empty')
        w.directory('getty_dir', 'getty drop-in directory %s' % dropin_dir, dropin_dir)
        w.file('getty_dropin', 'console autologin for %s' % user, dropin,
               content=ctx.render('getty-autologin.conf.j2'))
    else:
        # Only a drop-in carrying rigkeeper's marker is taken away.
        w.absent('getty_dropin', 'no console autologin', dropin, marker=v('__headless_autologin_marker'))
    if _bool(v('headless_default_target_enabled')):
        target = v('headless_default_target')
        w.add('default_target', 'link', 'default boot target %s' % target, path=v('__headless_default_target_link'),
              target_names=[target], fallback_paths=['/lib/systemd/system/default.target',
                                                     '/usr/lib/systemd/system/default.target'])
    if _bool(v('headless_no_sleep_enabled')):
        for unit in v('headless_sleep_targets'):
            w.unit('mask_' + unit.replace('.', '_').replace('-', '_'), unit, '%s masked' % unit, masked=True)
        w.directory('sleep_dir', 'sleep.conf.d', v('__headless_sleep_conf_dir'))
        w.file('sleep_conf', 'every sleep mode forbidden', v('__headless_sleep_conf'),
               content=ctx.render('no-sleep.conf.j2'))
    if _bool(v('headless_remove_desktop')):
        for name in v('headless_desktop_packages'):
            w.package('desktop_' + name, name, state='absent', label='%s removed' % name)
    return w


# ------------------------------------------------------------------------------------------------
# kernel_params
# ------------------------------------------------------------------------------------------------
def compile_kernel_params(ctx):
    w = Wanted('kernel_params')
    v = ctx.v
    if _bool(v('kernel_params_cmdline_enabled')):
        args = v('__kernel_params_args_wanted')
        ctx.set('__kernel_params_args', args)
        absent = v('__kernel_params_absent')
        linux_absent = v('__kernel_params_linux_absent')
        w.data.update(args=args, absent=absent, linux_absent=linux_absent)
        w.add('grub_dropin', 'grub', 'kernel arguments in GRUB (%s)' % v('__kernel_params_grub_dropin'),
              path=v('__kernel_params_grub_dropin'), grub_dir=v('__kernel_params_grub_dir'),
              assignments=[{'variable': 'GRUB_CMDLINE_LINUX_DEFAULT', 'args_present': args['present'],
                            'args_absent': absent},
                           {'variable': 'GRUB_CMDLINE_LINUX', 'args_present': [], 'args_absent': linux_absent}],
              repeatable_keys=v('__kernel_params_repeatable_keys'), grub_cfg=v('__kernel_params_grub_cfg'),
              absent_all=absent)
        w.fact('running_cmdline', 'the running kernel has the wanted arguments', 'cmdline', pending=True, reboot=True,
               present=args['present'], absent=absent)
    if _bool(v('kernel_params_acs_disable')):
        for name in v('__kernel_params_acs_packages'):
            w.package('acs_pkg_' + name, name)
        w.file('acs_script', 'ACS-disable script', v('__kernel_params_acs_script_path'),
               content=ctx.render('rigkeeper-acs-disable.sh.j2'), mode='0755')
        w.file('acs_unit_file', 'ACS-disable boot unit', v('__kernel_params_acs_unit_path'),
               content=ctx.render('rigkeeper-acs-disable.service.j2'))
        w.unit('acs_unit', v('__kernel_params_acs_unit'), 'ACS-disable unit enabled', enabled=True)
        w.fact('acs_off', 'ACS off on every PCI bridge', 'acs_off')
    else:
        w.absent('acs_unit_file', 'no ACS-disable unit', v('__kernel_params_acs_unit_path'))
        w.absent('acs_script', 'no ACS-disable script', v('__kernel_params_acs_script_path'))
    return w


# ------------------------------------------------------------------------------------------------
# gpu_power
# ------------------------------------------------------------------------------------------------
def persistence_resources(w, ctx, prefix='', pending=None):
    """nvidia-persistenced with persistence mode on: the drop-in, the unit at boot and running, and
    every GPU in persistence mode. Shared by nvidia_driver and gpu_power (the same wanted state)."""
    dropin = '/etc/systemd/system/nvidia-persistenced.service.d/50-rigkeeper-persistence.conf'
    w.file(prefix + 'persistenced_dropin', 'nvidia-persistenced runs with --persistence-mode', dropin,
           match=[r'^ExecStart=$', r'^ExecStart=\S+.* --persistence-mode( |$)'],
           not_match=[r'^ExecStart=.*--no-persistence-mode'])
    w.unit(prefix + 'persistenced', 'nvidia-persistenced.service', 'nvidia-persistenced at boot and running',
           enabled=True, active=True, pending=pending)
    w.fact(prefix + 'persistence_mode', 'persistence mode on for every GPU', 'persistence', pending=pending)


def compile_gpu_power(ctx):
    w = Wanted('gpu_power')
    v = ctx.v
    gpus = (v('ansible_facts') or {}).get('nvidia_gpu') or {}
    if _bool(v('gpu_power_persistence')):
        # Without a GPU answering (a driver that waits for its reboot) persistence waits too.
        persistence_resources(w, ctx, pending=True if not gpus.get('present') else None)
    if not _bool(v('gpu_power_limits_enabled')):
        for key, var in (('apt_hook', '__gpu_power_apt_hook_path'), ('unit_file', '__gpu_power_unit_path'),
                         ('conf', '__gpu_power_conf_path'), ('script', '__gpu_power_script_path')):
            w.absent(key, 'no %s' % key.replace('_', ' '), v(var))
        return w
    w.file('script', 'power-limit script', v('__gpu_power_script_path'),
           content=ctx.render('rigkeeper-gpu-power.sh.j2'), mode='0755')
    w.file('unit_file', 'power-limit boot unit', v('__gpu_power_unit_path'),
           content=ctx.render('rigkeeper-gpu-power.service.j2'))
    w.unit('unit', v('__gpu_power_unit'), 'power-limit unit enabled', enabled=True)
    if _bool(v('gpu_power_apt_hook')):
        w.file('apt_hook', 'power limits re-applied after dpkg runs', v('__gpu_power_apt_hook_path'),
               content=ctx.render('99rigkeeper-gpu-power.j2'))
    else:
        w.absent('apt_hook', 'no apt hook', v('__gpu_power_apt_hook_path'))
    if not gpus.get('present'):
        w.data['plan'] = None
        w.fact('limits', 'power limits applied', 'no_gpu', pending=True,
               error=gpus.get('error') or 'nvidia-smi not available')
        return w
    plan = v('__gpu_power_plan_wanted')
    ctx.set('__gpu_power_plan', plan)
    managed = v('__gpu_power_managed')
    w.data.update(plan=plan, managed=managed)
    w.directory('conf_dir', 'rigkeeper configuration directory', v('__gpu_power_conf_path').rsplit('/', 1)[0])
    w.file('conf', 'planned limit of each GPU', v('__gpu_power_conf_path'), content=ctx.render('gpu-power.conf.j2'))
    w.fact('limits', 'every GPU at its planned limit', 'power_limits',
           limits=dict((g['bus_id'].upper(), float(g['limit_w'])) for g in managed))
    return w


# ------------------------------------------------------------------------------------------------
# nvidia_driver
# ------------------------------------------------------------------------------------------------
CUDA_REPO_BASE = 'https://developer.download.nvidia.com/compute/cuda/repos'
CUDA_REPO_DIRS = {'Ubuntu-22': 'ubuntu2204', 'Ubuntu-24': 'ubuntu2404', 'Debian-12': 'debian12'}
CUDA_REPO_ARCHES = {'x86_64': 'x86_64', 'aarch64': 'sbsa'}


def cuda_repo_url(ctx, var):
    """NVIDIA's CUDA repository: the variable, else cuda_toolkit_repo_url from the inventory, else
    NVIDIA's directory for this distribution and architecture (as cuda_toolkit's repo tasks name it)."""
    for name in (var, 'cuda_toolkit_repo_url'):
        if name in ctx.variables and ctx.v(name):
            return str(ctx.v(name)).rstrip('/')
    facts = ctx.v('ansible_facts') if 'ansible_facts' in ctx.variables else {}
    key = '%s-%s' % (facts.get('distribution', ''), facts.get('distribution_major_version', ''))
    if key not in CUDA_REPO_DIRS or facts.get('architecture') not in CUDA_REPO_ARCHES:
        raise CompileError("NVIDIA's CUDA repository has no directory for %s on %s: set %s"
                           % (key, facts.get('architecture'), var))
    return '%s/%s/%s' % (CUDA_REPO_BASE, CUDA_REPO_DIRS[key], CUDA_REPO_ARCHES[facts['architecture']])


def compile_nvidia_driver(ctx):
    w = Wanted('nvidia_driver')
    v = ctx.v
    pin_path = v('nvidia_driver_preferences_path')
    if v('nvidia_driver_state') == 'absent':
        w.absent('pin', 'no driver pin', pin_path)
        w.absent('unattended', 'no unattended-upgrades blacklist', v('nvidia_driver_unattended_path'))
        w.fact('driver_absent', 'no NVIDIA driver installed', 'driver_absent')
        return w
    distro = v('__nvidia_driver_distro')
    if distro not in ('ubuntu', 'debian'):
        raise CompileError("nvidia_driver supports Ubuntu and Debian; this host is '%s' "
                           "(set nvidia_driver_distro or rigkeeper_distro for a derivative)" % distro)
    module_plan = v('__nvidia_driver_module_plan_wanted')
    ctx.set('__nvidia_driver_module_plan', module_plan)
    decision = v('__nvidia_driver_decision_wanted')
    ctx.set('__nvidia_driver_decision', decision)
    packages = v('__nvidia_driver_packages_wanted')
    ctx.set('__nvidia_driver_packages', packages)
    fabric = _bool(v('__nvidia_driver_fabricmanager_wanted'))
    if fabric and v('nvidia_driver_source') == 'debian':
        raise CompileError('this host has NVSwitch devices but Debian non-free ships no fabric manager: '
                           'use nvidia_driver_source cuda')
    install = v('__nvidia_driver_install_names_wanted')
    extra = v('__nvidia_driver_extra_names_wanted')
    source = v('nvidia_driver_source')
    w.data.update(branch=decision['branch'], flavor=decision['flavor'], modules=module_plan['modules'],
                  packages=packages, install=install, extra=extra, fabricmanager=fabric)
    if _bool(v('nvidia_driver_repo_enabled')):
        if source == 'debian':
            w.file('debian_source', "Debian's non-free components", v('__nvidia_driver_debian_sources_path'),
                   content=ctx.render('debian-nonfree.sources.j2'))
        elif source == 'cuda':
            w.add('cuda_source', 'apt_sources', "NVIDIA's CUDA repository", present_urls=[cuda_repo_url(ctx, 'nvidia_driver_cuda_repo_url')])
        w.file('apt_stamp', 'the package index refresh is stamped', v('nvidia_driver_apt_stamp_path'),
               content=v('__nvidia_driver_apt_stamp_content'))
        if _bool(v('nvidia_driver_legacy_cleanup')):
            w.add('legacy_sources', 'apt_sources', 'no graphics-drivers PPA',
                  absent_urls=v('__nvidia_driver_legacy_source_urls'))
    if _bool(v('nvidia_driver_install_enabled')):
        w.add('family', 'nvidia_family', 'NVIDIA driver %s: installed, one version, held, pinned' % decision['branch'],
              install=install, pre_install=packages.get('pre_install') or [], version_from=packages.get('version_from'),
              version=v('nvidia_driver_version') or None, branch=str(decision['branch']),
              family=packages['pin_patterns'], exclude=packages['pin_exclude'],
              kernel_following=packages.get('kernel_following') or [], other_branches=packages['other_branches'],
              versioned_apart=packages.get('versioned_apart') or [], preferences_path=pin_path)
        for name in extra:
            w.package('extra_' + name, name)
        w.file('unattended', 'unattended-upgrades leaves the driver alone', v('nvidia_driver_unattended_path'),
               content=ctx.render('unattended-upgrades.conf.j2'))
        if module_plan['modules'] == 'dkms' and _bool(v('nvidia_driver_install_headers')):
            names = v('nvidia_driver_headers_packages') or [v('__nvidia_driver_headers_meta')]
            for name in names:
                # A warning: an archive that no longer offers them is reported by the role, not failed.
                w.package('headers_' + name, name, label='kernel headers %s (DKMS builds against them)' % name)
                w.resources[-1]['severity'] = 'warning'
        if _bool(v('nvidia_driver_p2p_modules')):
            # The opt-in P2P modules (tasks/p2p_modules.yml): DKMS has nvidia-p2p installed for a kernel.
            # A host without them drifts, so a converged driver still reaches the role's P2P tasks
            # (their refusals first). That P2P works is not probed: playbooks/p2p_check.yml measures it.
            w.add('p2p_modules', 'command', 'P2P kernel modules nvidia-p2p installed through DKMS',
                  argv=['dkms', 'status', '-m', 'nvidia-p2p'], program='dkms',
                  match=[r'^nvidia-p2p/\S+, \S+, \S+: installed'])
        w.fact('driver_running', 'the installed driver is the one running', 'driver_running', pending=True,
               reboot=True)
        count = v('rigkeeper_expected_gpu_count') if 'rigkeeper_expected_gpu_count' in ctx.variables else None
        if count:
            w.fact('gpu_count', '%s GPUs answer' % count, 'gpu_count', pending=True, count=int(count))
        w.fact('reboot_required', 'no reboot the OS asks for', 'reboot_required', severity='warning', reboot='os')
    if _bool(v('nvidia_driver_nouveau_enabled')):
        w.file('nouveau_blacklist', 'nouveau blacklisted', v('nvidia_driver_nouveau_blacklist_path'),
               content=ctx.render('blacklist-nouveau.conf.j2'))
        if v('nvidia_driver_module_params'):
            w.file('module_params', 'NVIDIA module options', v('__nvidia_driver_modprobe_path'),
                   content=ctx.render('nvidia-modprobe.conf.j2'))
        else:
            w.absent('module_params', 'no NVIDIA module options', v('__nvidia_driver_modprobe_path'))
        w.fact('nouveau_off', 'nouveau does not hold the GPUs', 'nouveau_off', pending=True, reboot=True)
    if _bool(v('nvidia_driver_persistence_enabled')) and _bool(v('nvidia_driver_persistence_mode')):
        persistence_resources(w, ctx, pending=True)
    if _bool(v('nvidia_driver_fabricmanager_enabled')) and fabric:
        w.unit('fabricmanager', v('__nvidia_driver_fabricmanager_unit'), 'fabric manager enabled and running',
               enabled=True, active=True, pending=True)
    return w


# ------------------------------------------------------------------------------------------------
# cuda_toolkit
# ------------------------------------------------------------------------------------------------
def compile_cuda_toolkit(ctx, policy):
    w = Wanted('cuda_toolkit')
    v = ctx.v
    wanted = [str(x) for x in v('cuda_toolkit_versions')]
    default = v('__cuda_toolkit_default')
    major = v('cuda_toolkit_cudnn_major')
    bad = [x for x in wanted if not x.replace('.', '', 1).isdigit() or x.count('.') != 1]
    if not wanted or bad or default not in wanted or (major is not None and int(major) not in (8, 9)):
        raise CompileError('cuda_toolkit_versions must list "major.minor" strings, cuda_toolkit_default one of '
                           'them and cuda_toolkit_cudnn_major 8, 9 or unset; got versions %s, default %s, '
                           'cuDNN major %s' % (wanted, default, major))
    checks = []
    for driver in v('__cuda_toolkit_drivers'):
        for version in wanted:
            got = policy.rk_cuda_check(version, driver['driver'])
            checks.append(dict(got, origin=driver['origin']))
    w.data.update(versions=wanted, default=default, checks=checks)
    if _bool(v('cuda_toolkit_repo_enabled')):
        w.add('repo', 'apt_sources', "NVIDIA's CUDA repository", present_urls=[v('__cuda_toolkit_repo_url')])
        w.file('keyring', "the CUDA repository's signing key", v('__cuda_toolkit_keyring'))
    for name in v('__cuda_toolkit_packages'):
        w.package('pkg_' + name, name)
    default_dir = v('__cuda_toolkit_default_dir')
    w.add('default', 'link', '/usr/local/cuda points to %s' % default_dir, path='/etc/alternatives/cuda',
          target=default_dir)
    w.file('default_manual', 'the cuda alternative is set by hand (manual mode)', '/var/lib/dpkg/alternatives/cuda',
           mode=None, owner=None, group=None, match=[r'\Amanual\n'])
    if v('cuda_toolkit_cudnn_major') is not None:
        ctx.set('__cuda_toolkit_cudnn_specs', v('__cuda_toolkit_cudnn_specs'))
        w.file('cudnn_pin', 'cuDNN pinned to the build for CUDA %s' % v('__cuda_toolkit_default'),
               v('__cuda_toolkit_cudnn_preferences'), content=ctx.render('cudnn.pref.j2'))
        pin = v('__cuda_toolkit_cudnn_pin')
        for name in v('__cuda_toolkit_cudnn_names'):
            w.package('cudnn_' + name, name, version=pin, hold=True)
    if _bool(v('cuda_toolkit_environment_enabled')):
        w.file('profile', 'the default toolkit on login shells\' PATH', v('__cuda_toolkit_profile_file'),
               content=ctx.render('cuda-profile.sh.j2'))
        w.file('ld_conf', "the toolkit's libraries for the dynamic linker", v('__cuda_toolkit_ld_conf_file'),
               content=ctx.render('cuda-ld.so.conf.j2'))
    return w


# ------------------------------------------------------------------------------------------------
# container_toolkit
# ------------------------------------------------------------------------------------------------
def _dotted(data, prefix=''):
    """{"a": {"b": 1}} -> {"a.b": 1} (lists and scalars are leaves)."""
    out = {}
    for key, value in data.items():
        name = prefix + key
        if isinstance(value, dict) and value:
            out.update(_dotted(value, name + '.'))
        else:
            out[name] = value
    return out


def compile_container_toolkit(ctx, docker_policy):
    w = Wanted('container_toolkit')
    v = ctx.v
    if _bool(v('container_toolkit_docker_enabled')):
        names = sorted(set(sum((list(x) for x in v('__container_toolkit_docker_packages').values()), []))
                       | {'docker.io', 'docker-ce', 'moby-engine'})
        source = v('container_toolkit_docker_source')
        if source == 'keep':
            w.add('docker', 'package', 'a Docker engine installed', any_of=['docker.io', 'docker-ce', 'moby-engine'])
        else:
            for name in v('__container_toolkit_docker_packages')[source]:
                w.package('docker_' + name, name)
        del names
        w.unit('docker_unit', 'docker.service', 'Docker enabled and running', enabled=True, active=True)
    if _bool(v('container_toolkit_repo_enabled')):
        w.add('repo', 'apt_sources', "NVIDIA's container toolkit repository",
              present_urls=[v('__container_toolkit_repo_url')])
        w.file('keyring', "the container toolkit repository's signing key", v('__container_toolkit_keyring'))
    version = v('container_toolkit_version')
    for name in v('__container_toolkit_packages'):
        if version is not None:
            w.package('pkg_' + name, name, version=version, hold=True)
        elif name == 'nvidia-container-toolkit':
            w.package('pkg_' + name, name)
    if version is not None:
        w.file('pin', 'container toolkit pinned to %s' % version, v('__container_toolkit_preferences'),
               content=ctx.render('nvidia-container-toolkit.pref.j2'))
    else:
        w.absent('pin', 'no container toolkit pin', v('__container_toolkit_preferences'))
    runtime_enabled = _bool(v('container_toolkit_runtime_enabled'))
    default_runtime = _bool(v('container_toolkit_default_runtime'))
    cgroupfs = _bool(v('__container_toolkit_cgroupfs'))
    cdi = _bool(v('container_toolkit_cdi_enabled'))
    options = v('container_toolkit_daemon_options') or {}
    ours = docker_policy.rk_docker_daemon_wanted({}, runtime_enabled=runtime_enabled, runtime=v('__container_toolkit_runtime'),
                                                 default_runtime=default_runtime, cgroupfs=cgroupfs, cdi=cdi,
                                                 options=options)
    subset = _dotted(dict((k, val) for k, val in ours.items() if k != 'exec-opts'))
    contains = {'exec-opts': ['native.cgroupdriver=cgroupfs']} if cgroupfs else {}
    not_values = {} if (default_runtime or 'default-runtime' in options) else {'default-runtime': 'nvidia'}
    w.data.update(daemon_keys=ours)
    w.add('daemon_json', 'json_file', "daemon.json has rigkeeper's keys (every other key kept)",
          path=v('__container_toolkit_daemon_json'), subset=subset, contains=contains, not_values=not_values)
    if _bool(v('container_toolkit_docker_enabled')):
        expect = {}
        if default_runtime:
            expect['DefaultRuntime'] = 'nvidia'
        if cgroupfs:
            expect['CgroupDriver'] = 'cgroupfs'
        w.add('docker_live', 'command', 'the running Docker uses the nvidia runtime',
              argv=['docker', 'info', '--format', '{{json .}}'], parse='json', program='docker',
              has_keys=['Runtimes.nvidia'] if runtime_enabled else [], expect=expect)
    if _bool(v('__container_toolkit_udev')):
        w.file('udev_rule', 'udev links /dev/char to the NVIDIA devices', v('__container_toolkit_udev_rule'),
               content=ctx.render('71-nvidia-dev-char.rules.j2'))
    else:
        w.absent('udev_rule', 'no dev-char udev rule', v('__container_toolkit_udev_rule'))
    if cdi:
        w.file('cdi_spec', 'a CDI specification of the driver', v('container_toolkit_cdi_spec'),
               mode=None, owner=None, group=None, or_paths=[v('__container_toolkit_cdi_refresh_spec')], pending=True)
    return w


# ------------------------------------------------------------------------------------------------
# ssh
# How `sshd -T` prints values sshd_config spells otherwise (roles/ssh/files/sshd_check.py).
SSHD_SPELLING = {('permitrootlogin', 'prohibit-password'): 'without-password',
                 ('allowtcpforwarding', 'all'): 'yes'}
SSH_ALGORITHMS = {'kexalgorithms': 'ssh_kex_algorithms', 'ciphers': 'ssh_ciphers', 'macs': 'ssh_macs'}


def compile_ssh(ctx):
    w = Wanted('ssh')
    v = ctx.v
    w.package('server', 'openssh-server')
    if _bool(v('ssh_authorized_keys_enabled')):
        default_exclusive = _bool(v('ssh_authorized_keys_exclusive'))
        for entry in v('ssh_authorized_keys') or []:
            w.add('keys_' + entry['user'], 'authorized_keys', "%s's authorized keys" % entry['user'],
                  user=entry['user'], keys=list(entry.get('keys') or []),
                  exclusive=_bool(entry.get('exclusive', default_exclusive)))
    if not _bool(v('ssh_sshd_enabled')):
        return w
    port = int(v('ssh_port'))
    w.file('listen_dropin', 'where sshd listens', '%s/%s' % (v('__ssh_config_dir'), v('__ssh_listen_dropin_name')),
           content=ctx.render('sshd_listen.conf.j2'))
    expect = {}
    for keyword, value in v('__ssh_settings'):
        key = keyword.lower()
        if key in SSH_ALGORITHMS:
            continue
        value = str(value).lower()
        expect[key] = SSHD_SPELLING.get((key, value), value)
    expect['port'] = str(port)
    expect['hostkey'] = ['%s/ssh_host_%s_key' % (v('__ssh_host_key_dir'), t) for t in v('ssh_host_key_types')]
    within = dict((key, list(v(var))) for key, var in SSH_ALGORITHMS.items())
    w.data.update(expect=expect)
    for user in ['root'] + [u for u in (v('ssh_login_users') or []) if u != 'root']:
        w.add('effective_' + user, 'command', 'sshd uses the hardened settings for %s' % user,
              argv=[v('__ssh_sshd_bin'), '-T', '-C', 'user=%s,host=localhost,addr=127.0.0.1,lport=%d' % (user, port)],
              parse='kv', program='sshd', expect=expect, expect_within=within, run_dirs=[v('__ssh_privsep_dir')])
    return w


# ------------------------------------------------------------------------------------------------
# monitoring
# ------------------------------------------------------------------------------------------------
def selfaudit_config(ctx):
    """The self-audit's configuration (/etc/rigkeeper/selfaudit.json) as a dict."""
    v = ctx.v
    interval = v('monitoring_interval')
    try:
        interval = int(interval)
    except (TypeError, ValueError):
        raise CompileError('monitoring_interval must be a number of seconds, not %r' % (interval,))
    if interval < 30:
        raise CompileError('monitoring_interval is %d s: the self-audit runs at most every 30 s' % interval)
    textfile_dir = v('monitoring_textfile_dir')
    if not str(textfile_dir).startswith('/'):
        raise CompileError('monitoring_textfile_dir must be an absolute path, not %r' % (textfile_dir,))
    return {
        'wanted_path': WANTED_PATH,
        'metrics_path': '%s/%s' % (str(textfile_dir).rstrip('/'), v('__monitoring_metrics_file')),
        'state_path': v('__monitoring_state_path'),
        'p2p_path': v('monitoring_p2p_record'),
        'interval_s': interval,
        'facts': dict(v('__monitoring_facts')),
    }


def node_exporter_textfile(defaults_text, default_dir):
    """What node_exporter's textfile collector reads, from the package's /etc/default file:
    ``{'enabled': bool, 'dir': path}``. The last ``ARGS=`` line counts (the file is sourced by
    systemd's EnvironmentFile); ``--collector.textfile.directory=X`` or ``... X`` sets the directory,
    ``--no-collector.textfile`` turns the collector off; without either, the package's default."""
    args = ''
    for line in (defaults_text or '').splitlines():
        m = re.match(r'\s*ARGS=(.*)$', line)
        if m:
            args = m.group(1).strip()
    try:
        value = ' '.join(shlex.split(args))
        tokens = shlex.split(value)
    except ValueError as exc:
        raise CompileError('node_exporter ARGS cannot be read (%s): %r' % (exc, args))
    directory, enabled = default_dir, True
    for i, token in enumerate(tokens):
        if token.startswith('--collector.textfile.directory='):
            directory = token.split('=', 1)[1]
        elif token == '--collector.textfile.directory' and i + 1 < len(tokens):
            directory = tokens[i + 1]
        elif token == '--no-collector.textfile':
            enabled = False
        elif token == '--collector.textfile':
            enabled = True
    return {'enabled': enabled, 'dir': directory.rstrip('/') or '/'}


def compile_monitoring(ctx):
    w = Wanted('monitoring')
    v = ctx.v
    config = selfaudit_config(ctx)
    ctx.set('__monitoring_interval_s', config['interval_s'])
    exporter = v('monitoring_node_exporter')
    if exporter not in ('package', 'external'):
        raise CompileError("monitoring_node_exporter must be 'package' or 'external', not %r" % (exporter,))
    lib = v('__monitoring_lib_dir')
    w.directory('lib_dir', 'self-audit code directory %s' % lib, lib)
    for name in SELFAUDIT_FILES:
        with open(os.path.join(_MODULE_UTILS, name), encoding='utf-8') as handle:
            content = handle.read()
        w.file('code_' + name[:-3], 'self-audit code %s' % name, '%s/%s' % (lib, name), content=content)
    w.file('config', 'self-audit configuration', v('__monitoring_config_path'),
           content=json.dumps(config, indent=1, sort_keys=True) + '\n')
    w.directory('state_dir', 'self-audit state directory', os.path.dirname(config['state_path']))
    w.directory('textfile_dir', "node_exporter's textfile directory", os.path.dirname(config['metrics_path']))
    w.file('service_file', 'self-audit service', v('__monitoring_service_path'),
           content=ctx.render('rigkeeper-selfaudit.service.j2'))
    w.file('timer_file', 'self-audit timer (every %d s)' % config['interval_s'], v('__monitoring_timer_path'),
           content=ctx.render('rigkeeper-selfaudit.timer.j2'))
    w.unit('timer', v('__monitoring_timer'), 'self-audit timer enabled and running', enabled=True, active=True)
    if exporter == 'package':
        w.package('node_exporter', v('__monitoring_node_exporter_package'))
        w.unit('node_exporter_unit', v('__monitoring_node_exporter_unit'), 'node_exporter enabled and running',
               enabled=True, active=True)
    w.data.update(config=config, exporter=exporter)
    return w


# ------------------------------------------------------------------------------------------------
# The host's record
# ------------------------------------------------------------------------------------------------
def record_content(roles):
    return json.dumps({'roles': list(roles)}, indent=4) + '\n'


def wanted_content(roles, compiled, version):
    """The compiled wanted state of the managed roles, as the host keeps it (sorted, stable)."""
    resources = [r for role in roles for r in (compiled.get(role) or {}).get('resources', [])]
    return json.dumps({'writer': 'rigkeeper', 'version': version, 'roles': list(roles), 'resources': resources},
                      indent=1, sort_keys=True) + '\n'


def compile_record(roles, compiled=None, version='unknown'):
    """The host's record: the managed roles, and (with ``compiled``) their wanted state, root-only."""
    w = Wanted('record')
    w.file('managed', "the host's record of the roles rigkeeper manages", RECORD_PATH,
           content=record_content(roles))
    if compiled is not None:
        w.file('wanted', 'the wanted state the host was converged to (for its self-audit)', WANTED_PATH,
               content=wanted_content(roles, compiled, version), mode='0600')
    return w


COMPILERS = {
    'nvidia_driver': compile_nvidia_driver,
    'cuda_toolkit': compile_cuda_toolkit,
    'container_toolkit': compile_container_toolkit,
    'headless': compile_headless,
    'kernel_params': compile_kernel_params,
    'gpu_power': compile_gpu_power,
    'ssh': compile_ssh,
    'monitoring': compile_monitoring,
}


def compile_role(role, ctx, policies=None):
    """The role's wanted state as a dict. ``policies``: {name: module} of the policy filters some
    roles call directly (rigkeeper_docker)."""
    if role not in COMPILERS:
        raise CompileError('no wanted state is known for role %r' % role)
    fn = COMPILERS[role]
    policies = policies or {}
    if role == 'container_toolkit':
        return fn(ctx, policies['rigkeeper_docker']).as_dict()
    if role == 'cuda_toolkit':
        return fn(ctx, policies['rigkeeper_policy']).as_dict()
    return fn(ctx).as_dict()


# ------------------------------------------------------------------------------------------------
# Checks judged from the facts: plugins/module_utils/rigkeeper_probe.py (the host's self-audit uses them too).
# ------------------------------------------------------------------------------------------------
def judge_fact(res, facts, policy=None):
    """Result of a ``fact`` resource (``policy`` is accepted for older callers and not used)."""
    try:
        from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import judge_fact as judge
    except ImportError:  # the action plugin puts plugins/module_utils/ on sys.path
        from rigkeeper_probe import judge_fact as judge
    return judge(res, facts)


class FilterModule(object):
    """The compile runs in the rigkeeper_probe action plugin; one filter lists the roles."""

    def filters(self):
        return {'rk_wanted_roles': lambda _x=None: list(ROLES), 'rk_node_exporter_textfile': node_exporter_textfile}
