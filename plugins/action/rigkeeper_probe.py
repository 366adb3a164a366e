# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Action plugin of the rigkeeper_probe module: facts, each role's wanted state, one probe.

In one task per host:
1. the GPU and host facts (the nvidia_gpu_facts module), unless the play has them already;
2. each managed role's wanted state, compiled on the controller from its defaults and vars, the
   inventory and the facts (plugins/filter/rigkeeper_wanted.py; the policy runs inside the roles'
   variables), with the role's templates rendered as the template module renders them;
3. one rigkeeper_probe module call that reads every host resource of every role;
4. the checks that read facts (running command line, power limits, persistence, running driver),
   judged here;
5. per-role results: ok, drift (with findings and diffs), error (a role whose wanted state cannot
   be computed, or a resource that cannot be read: the others are still checked), or not managed.

Returns the facts it gathered plus ``rigkeeper_wanted`` (each role's compiled state: the values
its tasks apply) and ``rigkeeper_state`` (each role's status and findings). Never changes the host
and never reports a change. With ``probe: false`` it only compiles (a role's first task), and a
role that cannot be compiled fails the task with the reason, before anything changes.
"""
from __future__ import annotations

import json
import os
import time
from collections import ChainMap

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

from ansible_collections.rigkeeper.gpu.plugins.filter import rigkeeper_docker, rigkeeper_vars, rigkeeper_wanted
from ansible_collections.rigkeeper.gpu.plugins.module_utils import rigkeeper_policy_cuda
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import summarize

# The collection's root (plugins/action/ -> ../..): its roles are the ones this action compiles.
_COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:  # the template module's own variables (ansible_managed), so a render here equals its render
    from ansible._internal._templating import _template_vars
except ImportError:  # pragma: no cover - older ansible-core
    _template_vars = None

FACT_KEYS = ('nvidia_gpu', 'rigkeeper_host')
GPU_FACTS_ARGS = {
    'cmdline_path': 'gpu_facts_cmdline_path',
    'module_version_path': 'gpu_facts_module_version_paths',
    'kernel_release_path': 'gpu_facts_kernel_release_path',
    'sys_module_dir': 'gpu_facts_sys_module_dir',
    'grub_cfg_path': 'gpu_facts_grub_cfg_path',
    'iommu_dir': 'gpu_facts_iommu_dir',
    'gather_topology': 'gpu_facts_gather_topology',
}


def _version():
    """The collection's version, written into the host's record: MANIFEST.json where the collection is
    installed (ansible-galaxy writes it), galaxy.yml in the repository."""
    try:
        with open(os.path.join(_COLLECTION, 'MANIFEST.json'), encoding='utf-8') as handle:
            return str(json.load(handle)['collection_info']['version'])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(_COLLECTION, 'galaxy.yml'), encoding='utf-8') as handle:
            for line in handle:
                if line.startswith('version:'):
                    return line.split(':', 1)[1].strip().strip('"\'')
    except OSError:
        pass
    return 'unknown'


def _trust(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return dict((k, _trust(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_trust(v) for v in value]
    return value


class RoleContext(object):
    """A role's variables as its tasks see them: task variables over the role's vars and defaults,
    templated on access; plus an overlay for values the compile sets."""

    def __init__(self, action, role, task_vars, extra=None):
        self.role = role
        self.action = action
        self.role_dir = action._role_dir(role)
        defaults = action._load_yaml(os.path.join(self.role_dir, 'defaults', 'main.yml'))
        role_vars = action._load_yaml(os.path.join(self.role_dir, 'vars', 'main.yml'))
        self.overlay = dict(extra or {})
        self.variables = ChainMap(self.overlay, task_vars, role_vars, defaults)
        self.templar = action._templar.copy_with_new_env(available_variables=self.variables)

    def v(self, name):
        if name not in self.variables:
            raise rigkeeper_wanted.CompileError('%s: variable %s is not defined' % (self.role, name))
        return self.templar.template(self.variables[name])

    def set(self, name, value):
        self.overlay[name] = value

    def render(self, name, **local):
        path = os.path.join(self.role_dir, 'templates', name)
        with open(path, encoding='utf-8') as handle:
            text = trust_as_template(handle.read())
        variables = ChainMap(dict(local), self.variables)
        if _template_vars is not None and 'ansible_managed' not in self.variables:
            variables = ChainMap(_template_vars.generate_ansible_template_vars(
                path=name, fullpath=path, include_ansible_managed=True), variables)
        templar = self.templar.copy_with_new_env(available_variables=variables,
                                                 searchpath=[os.path.dirname(path)])
        out = templar.template(text, escape_backslashes=False,
                               overrides=dict(trim_blocks=True, lstrip_blocks=False, newline_sequence='\n'))
        return '' if out is None else to_text(out)


# What a connection that never reached the host's Python prints (the docker connection returns the
# daemon's error instead of raising; SSH's own failures are raised by the connection plugin).
UNREACHABLE_TEXTS = ('No such container', 'is not running', 'Connection refused', 'Could not resolve hostname',
                     'Connection timed out', 'No route to host', 'Permission denied (publickey')


def looks_unreachable(res):
    """True when a failed module result says the host was never reached."""
    if res.get('unreachable'):
        return True
    if (res.get('module_stdout') or '').strip():
        return False
    text = '%s\n%s' % (res.get('module_stderr') or '', res.get('msg') or '')
    return any(t in text for t in UNREACHABLE_TEXTS)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('roles', 'probe', 'facts', 'record', 'fail_on_error', 'resources', 'variables',
                             'verify'))
    _requires_connection = True

    # -- helpers ---------------------------------------------------------------------------
    def _role_dir(self, role):
        # This collection's own roles only: a user's role of the same short name is not ours.
        path = os.path.join(_COLLECTION, 'roles', role)
        if os.path.isdir(path):
            return path
        raise rigkeeper_wanted.CompileError('role %s not found in %s' % (role, os.path.join(_COLLECTION, 'roles')))

    def _load_yaml(self, path):
        if not os.path.exists(path):
            return {}
        return _trust(self._loader.load_from_file(path) or {})

    def _unknown_variables(self, task_vars):
        """rk_unknown_variables over every variable the task sees, with every role's specs."""
        specs = {}
        roles_dir = os.path.dirname(self._role_dir('preflight'))
        for name in sorted(os.listdir(roles_dir)):
            path = os.path.join(roles_dir, name, 'meta', 'argument_specs.yml')
            if os.path.exists(path):
                specs[name] = self._loader.load_from_file(path)
        ignore = task_vars.get('preflight_variables_ignore') or []
        return rigkeeper_vars.rk_unknown_variables(list(task_vars.keys()), specs, ignore=ignore)

    def _gather_facts(self, task_vars):
        ctx = RoleContext(self, 'gpu_facts', task_vars)
        args = dict((arg, ctx.v(var)) for arg, var in GPU_FACTS_ARGS.items())
        res = self._execute_module(module_name='rigkeeper.gpu.nvidia_gpu_facts', module_args=args, task_vars=task_vars)
        if res.get('failed'):
            if looks_unreachable(res):
                # The first call on the host: a connection that never reached Python is the host's
                # state (unreachable), not this probe's failure.
                raise AnsibleConnectionFailure('host unreachable: %s' % (
                    (res.get('module_stderr') or res.get('msg') or '').strip().splitlines() or ['no answer'])[-1])
            raise AnsibleActionFail('gathering the GPU and host facts failed: %s' % res.get('msg'), result=res)
        return res.get('ansible_facts') or {}

    # -- the run ---------------------------------------------------------------------------
    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        started = time.time()
        task_vars = task_vars or {}
        args = self._task.args
        if args.get('resources') is not None:  # the bare module: judge the resources given
            return self._execute_module(module_name='rigkeeper.gpu.rigkeeper_probe', module_args=dict(resources=args['resources']),
                                        task_vars=task_vars)
        roles = args.get('roles')
        if roles is None:
            roles = task_vars.get('rigkeeper_roles') or list(rigkeeper_wanted.DEFAULT_ROLES)
        roles = [str(r) for r in roles]
        unknown = [r for r in roles if r not in rigkeeper_wanted.ROLES]
        if unknown:
            raise AnsibleActionFail('rigkeeper_roles names roles rigkeeper does not have: %s (known: %s)'
                                    % (', '.join(unknown), ', '.join(rigkeeper_wanted.ROLES)))
        verify = bool(args.get('verify', False))
        do_probe = bool(args.get('probe', True)) or verify
        facts_mode = args.get('facts', 'auto')
        fail_on_error = bool(args.get('fail_on_error', not do_probe))

        variables = args.get('variables', 'off')
        if variables not in ('fail', 'warn', 'off'):
            raise AnsibleActionFail("variables must be fail, warn or off, not %r" % (variables,))
        unknown = self._unknown_variables(task_vars) if variables != 'off' else []
        if unknown and variables == 'fail' and fail_on_error:
            raise AnsibleActionFail('variables no rigkeeper role knows (nothing was changed): %s'
                                    % ' '.join(u['message'] for u in unknown))
        # The host's facts as ansible_facts holds them (never the top-level copies Ansible injects:
        # INJECT_FACTS_AS_VARS is deprecated). A play that sets ansible_facts itself gives a template.
        known = self._templar.template(task_vars.get('ansible_facts') or {})
        known = dict(known) if isinstance(known, dict) else {}
        gathered = {}
        if facts_mode == 'refresh' or (facts_mode == 'auto' and any(k not in known for k in FACT_KEYS)):
            gathered = self._gather_facts(task_vars)
        facts = dict((k, gathered.get(k, known.get(k))) for k in FACT_KEYS)
        overlay = dict(gathered)
        # Ansible's distribution facts from the same read of /etc/os-release, where the play has none
        # (the audit gathers nothing else; the roles' own setup calls then find them).
        os_facts = dict((k, val) for k, val in ((facts.get('rigkeeper_host') or {}).get('os') or {}).items()
                        if k.startswith(('distribution', 'architecture')) and val is not None)
        added = dict((k, val) for k, val in os_facts.items() if k not in known)
        known_before = dict(known)
        known.update(gathered)
        known.update(added)
        overlay['ansible_facts'] = known
        if gathered or added:
            gathered = dict(gathered, **added)
        t_facts = time.time()

        compiled, state = {}, {}
        for role in roles:
            try:
                ctx = RoleContext(self, role, task_vars, overlay)
                compiled[role] = rigkeeper_wanted.compile_role(
                    role, ctx, {'rigkeeper_policy': rigkeeper_policy_cuda, 'rigkeeper_docker': rigkeeper_docker})
            except Exception as exc:  # a policy refusal or a bad variable: this role's error
                msg = to_text(exc)
                if fail_on_error:
                    raise AnsibleActionFail('%s: %s. Nothing was changed.' % (role, msg))
                state[role] = {'status': 'error',
                               'findings': [{'label': 'wanted state', 'status': 'error', 'reasons': [msg]}],
                               'counts': {'error': 1}}
        if unknown:
            state['variables'] = {'status': 'error' if variables == 'fail' else 'warn',
                                  'findings': [{'id': 'variables/' + u['name'], 'label': 'variable %s' % u['name'],
                                                'status': 'error' if variables == 'fail' else 'warn',
                                                'reasons': [u['message']]} for u in unknown],
                                  'counts': {'error' if variables == 'fail' else 'warn': len(unknown)}}
        if args.get('record'):
            managed = [r for r in rigkeeper_wanted.ROLES if r in roles]
            whole = all(r in compiled for r in managed)
            compiled['record'] = rigkeeper_wanted.compile_record(
                managed, compiled if whole else None, _version()).as_dict()
        t_compile = time.time()

        results = {}
        if do_probe:
            host_res = [r for c in compiled.values() for r in c['resources'] if r['kind'] != 'fact']
            if host_res:
                out = self._execute_module(module_name='rigkeeper.gpu.rigkeeper_probe',
                                           module_args=dict(resources=host_res), task_vars=task_vars)
                if out.get('failed') or 'resources' not in out:
                    reason = 'the probe did not run on the host: %s' % (out.get('msg') or out.get('module_stderr') or out)
                    results.update((r['id'], {'status': 'error', 'reasons': [reason]}) for r in host_res)
                else:
                    results.update(out['resources'])
            for c in compiled.values():
                for r in c['resources']:
                    if r['kind'] == 'fact':
                        try:
                            results[r['id']] = rigkeeper_wanted.judge_fact(r, facts)
                        except Exception as exc:
                            results[r['id']] = {'status': 'error', 'reasons': ['%s: %s' % (r['label'], exc)]}
            # What only a reboot brings is the "reboot" check's warning, not the role's drift.
            probed, reboot = summarize(dict((role, c['resources']) for role, c in compiled.items()), results,
                                       diff=bool(self._task.diff))
            state.update(probed)
            # Roles not probed now keep what an earlier probe of the play found.
            earlier = ((known_before.get('rigkeeper_state') or {}).get('reboot') or {}).get('findings') or []
            reboot = [f for f in earlier if f['id'].split('/', 1)[0] not in compiled] + reboot
            state['reboot'] = {'status': 'warn' if reboot else 'ok', 'findings': reboot,
                               'counts': {'warn': len(reboot)} if reboot else {'ok': 1},
                               'pending': [f['label'] + ': ' + '; '.join(f['reasons']) for f in reboot if f['rigkeeper']]}

        wanted = dict(known_before.get('rigkeeper_wanted') or {})
        wanted.update((role, dict(res=c['res'], data=c['data'])) for role, c in compiled.items())
        all_state = dict(known_before.get('rigkeeper_state') or {})
        all_state.update(state)
        facts_out = dict(gathered)
        facts_out['rigkeeper_wanted'] = wanted
        if do_probe:
            facts_out['rigkeeper_state'] = all_state
        result.update(
            changed=False,
            roles=state,
            ansible_facts=facts_out,
            timings={'facts_s': round(t_facts - started, 3), 'compile_s': round(t_compile - t_facts, 3),
                     'probe_s': round(time.time() - t_compile, 3)},
        )
        if do_probe and self._task.diff:
            diffs = [f['diff'] for s in state.values() for f in s['findings'] if f.get('diff')]
            if diffs:
                result['diff'] = diffs
        drifted = sorted(r for r, s in state.items() if s['status'] in ('drift', 'error'))
        result['msg'] = ('drift: %s' % ', '.join(drifted)) if drifted else 'no drift'
        if verify:
            # After a role applied its state: everything must now be as wanted, except what only a
            # reboot or the loaded driver brings (reported, not failed).
            pending_ids = set(r['id'] for c in compiled.values() for r in c['resources'] if r.get('pending'))
            left = [(role, f) for role, s in sorted(state.items()) for f in s['findings']
                    if f['status'] not in ('ok', 'warn') and f.get('id') not in pending_ids]
            pending = [f for s in state.values() for f in s['findings']
                       if f.get('id') in pending_ids and f['id'].split('/', 1)[0] in compiled]
            result['pending'] = ['%s: %s' % (f['label'], '; '.join(f['reasons'])) for f in pending]
            if left:
                raise AnsibleActionFail(
                    'applied, but the probe still finds: %s' % ' | '.join(
                        '%s %s: %s' % (role, f['label'], '; '.join(f['reasons'])) for role, f in left),
                    result=result)
            result['msg'] = 'verified%s' % ((' (waiting for a reboot or the driver: %s)' % '; '.join(result['pending']))
                                            if pending else '')
        return result
