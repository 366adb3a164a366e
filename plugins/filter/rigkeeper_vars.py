# -*- coding: utf-8 -*-
# Apache-2.0
"""Which of a host's variables no rigkeeper role knows: a misspelt want is refused, not ignored.

A variable with a role prefix (``ssh_``, ``nvidia_driver_``, ..., ``rigkeeper_``) that no role's
``meta/argument_specs.yml`` declares is almost always a typo or a name from another project
(``ssh_users`` for ``ssh_authorized_keys``): Ansible would silently ignore it and the rig would
come out other than its owner asked. The preflight role loads every role's argument specs, hands
them with the host's variable names to :func:`rk_unknown_variables`, and fails before anything
changes, naming the closest known names.

This module is the one data place for what the argument specs do not declare:

* ``SHARED_VARIABLES``: rigkeeper variables read by several roles or by the playbooks, the
  simulator's inventory and the report callback;
* ``RUNTIME_VARIABLES``: names the roles, modules and the callback set while a run goes on
  (``set_fact``, ``register``, module facts), which are host variables afterwards;
* ``ALIASES``: names people bring from elsewhere, with what rigkeeper calls them.

``tests/unit/test_vars_known.py`` checks that every ``rigkeeper_*`` name used in the repository
and every name a role sets at runtime is listed here, and that the shipped inventories set only
known names. Names starting with two underscores are internal and never judged.
"""
from __future__ import annotations

import difflib
import re

from ansible.errors import AnsibleFilterError

# The prefixes the issue names; every role of the specs adds its own (``<role>_``) too.
PREFIXES = (
    "nvidia_driver_", "cuda_toolkit_", "container_toolkit_", "kernel_params_", "gpu_power_",
    "headless_", "ssh_", "preflight_", "gpu_facts_", "rigkeeper_",
)

# Read by more than one role, by the playbooks or by the report callback; not in any role's specs
# (rigkeeper_reboot_reasons and rigkeeper_boot_id_command are: nvidia_driver's reboot entry point).
# name: where it is documented.
SHARED_VARIABLES = {
    # Inventory wants (inventory/example/group_vars/all/main.yml, the roles' READMEs).
    "rigkeeper_roles": "playbooks/site.yml: the roles this host manages (default: all of them)",
    "rigkeeper_expected_gpu_models": "roles/preflight: GPU models judged by the policy before the driver is in",
    "rigkeeper_p2p_wanted": "roles/preflight/README.md: multi-GPU peer to peer matters here",
    "rigkeeper_psu_watts": "roles/preflight and gpu_power READMEs: the PSU rating",
    "rigkeeper_distro": "roles/nvidia_driver/README.md: the distribution whose package names apply",
    "rigkeeper_cmdline_path": "roles/gpu_facts/README.md: where the running kernel command line is read",
    "rigkeeper_kernel_release_path": "roles/gpu_facts/README.md: where the running kernel release is read",
    "rigkeeper_sys_module_dir": "roles/gpu_facts/README.md: where loaded kernel modules are listed (/sys/module)",
    "rigkeeper_module_version_paths": "roles/gpu_facts/README.md: where the loaded module version is read",
    "rigkeeper_iommu_dir": "roles/gpu_facts/README.md: where the active IOMMUs are listed (/sys/class/iommu)",
    "rigkeeper_apt_lock_timeout": "playbooks/site.yml: seconds apt waits for the dpkg lock (default 600)",
    # Playbook variables.
    "rigkeeper_all_roles": "playbooks/site.yml, audit.yml: every role the playbooks know",
    "rigkeeper_default_roles": "playbooks/site.yml, audit.yml: the roles a host manages when rigkeeper_roles is unset",
    "nvidia_driver_upgrade_hosts": "playbooks/upgrade_driver.yml: the hosts to upgrade (default all)",
    "nvidia_driver_upgrade_serial": "playbooks/upgrade_driver.yml: the batch size (default 1)",
    # The simulator's inventory (inventory/sim) and its Molecule prepare step.
    "rigkeeper_sim_repo": "inventory/sim: the simulated NVIDIA repositories",
    "rigkeeper_sim_root": "inventory/sim: the repository root on the control node",
    "rigkeeper_sim_admin_key": "inventory/sim: the rig's admin key",
    "rigkeeper_sim_config": "molecule/_shared/prepare.yml: the GPU preset of the rig",
    # The report callback (plugins/callback/rigkeeper_report.py): task variables and what it sets.
    "rigkeeper_report": "plugins/callback/rigkeeper_report.py: a task's role in the report",
    "rigkeeper_check": "plugins/callback/rigkeeper_report.py: the check a task belongs to",
}

# Set while a run goes on; host variables afterwards (hostvars shows them to a later play).
# name: who sets it.
RUNTIME_VARIABLES = {
    "rigkeeper_host": "nvidia_gpu_facts module (gpu_facts role): host facts",
    "preflight_results": "roles/preflight/tasks/main.yml (set_fact)",
    "nvidia_driver_reboot_pending": "roles/nvidia_driver/tasks/reboot.yml (set_fact)",
    "nvidia_driver_reboot_pending_reasons": "roles/nvidia_driver/tasks/reboot.yml (set_fact)",
    "kernel_params_reboot_pending": "roles/kernel_params/tasks/cmdline.yml (set_fact)",
    "nvidia_driver_reboot_os_pending": "roles/nvidia_driver/tasks/reboot.yml (set_fact): the OS asks for a reboot",
    "nvidia_driver_reboot_os_reason": "roles/nvidia_driver/tasks/reboot.yml (set_fact): why the OS asks",
    "nvidia_driver_gpus_before": "roles/nvidia_driver/tasks/validate.yml (set_fact): GPUs seen before a change",
    "nvidia_driver_compute_apps_before": "roles/nvidia_driver/tasks/validate.yml (set_fact): GPU processes before",
    "nvidia_driver_gpu_jobs": "roles/nvidia_driver/tasks/gpu_jobs.yml (set_fact): GPU work that blocks a reboot",
    "cuda_toolkit_repo_pending": "roles/cuda_toolkit/tasks/repo.yml (set_fact): the repository is not set up yet (check mode)",
    "container_toolkit_cdi_pending": "roles/container_toolkit/tasks/cdi.yml (set_fact): CDI waits for the driver",
    "p2p_check_results": "roles/p2p_check/tasks/report.yml (set_fact): the P2P diagnosis per pair and per GPU",
    "nvidia_p2p": "nvidia_p2p_facts module (p2p_check role, nvidia_driver's P2P modules): P2P matrices and pairs",
    "rigkeeper_report_drift": "plugins/callback/rigkeeper_report.py: the checks that drifted",
    "rigkeeper_wanted": "rigkeeper_probe action: each role's compiled wanted state (the values its tasks apply)",
    "rigkeeper_state": "rigkeeper_probe action: each role's probe status and findings",
    "rigkeeper_report_active": "plugins/callback/rigkeeper_report.py: the callback runs",
}

# Names from other projects or older rigkeeper inventories: what rigkeeper calls them.
ALIASES = {
    "ssh_users": ["ssh_authorized_keys", "ssh_login_users"],
    "ssh_keys": ["ssh_authorized_keys"],
    "ssh_allow_users": ["ssh_login_users"],
    "ssh_server_ports": ["ssh_port"],
    "ssh_listen_to": ["ssh_listen_addresses"],
    "ssh_server_password_login": ["ssh_password_authentication"],
    "ssh_allow_root_with_key": ["ssh_permit_root_login"],
    "nvidia_driver_package_version": ["nvidia_driver_version"],
    "nvidia_driver_branch_version": ["nvidia_driver_branch", "nvidia_driver_version"],
    "cuda_toolkit_version": ["cuda_toolkit_versions"],
    "gpu_power_limit": ["gpu_power_limits"],
    "kernel_params_cmdline": ["kernel_params_extra"],
}


def _err(msg):
    return AnsibleFilterError("rigkeeper: " + msg)


def _spec_names(specs):
    """{role: set of option names} from {role: argument_specs document}."""
    if not isinstance(specs, dict):
        raise _err("rk_known_variables: specs must map role names to their meta/argument_specs.yml, got %r"
                   % type(specs).__name__)
    out = {}
    for role, doc in specs.items():
        if not isinstance(doc, dict) or not isinstance(doc.get("argument_specs"), dict):
            raise _err("rk_known_variables: the specs of role %r have no argument_specs mapping" % role)
        names = set()
        for entry, spec in doc["argument_specs"].items():
            options = (spec or {}).get("options") or {}
            if not isinstance(options, dict):
                raise _err("rk_known_variables: %s entry point %s: options must be a mapping" % (role, entry))
            names.update(options)
        out[str(role)] = names
    return out


def rk_known_variables(specs):
    """Every variable name rigkeeper knows: the specs' options, shared and runtime names, sorted."""
    names = set(SHARED_VARIABLES) | set(RUNTIME_VARIABLES)
    for options in _spec_names(specs).values():
        names |= options
    return sorted(names)


def _prefixes(roles):
    return tuple(sorted(set(PREFIXES) | {r + "_" for r in roles}, key=len, reverse=True))


def _owner(name, roles):
    """The role whose prefix the name carries (the longest), or None for rigkeeper_ names."""
    for role in sorted(roles, key=len, reverse=True):
        if name.startswith(role + "_"):
            return role
    return None


def _suggestions(name, known):
    """Closest known names: aliases first, then close spellings, then known names that are a prefix
    of the name or start with it (a value's key written into the name, a name cut short)."""
    out = [n for n in ALIASES.get(name, []) if n in known]
    out += difflib.get_close_matches(name, known, n=3, cutoff=0.75)
    stem = [n for n in known if name.startswith(n + "_")]
    out += sorted(stem, key=len, reverse=True)[:2]
    longer = sorted(n for n in known if n.startswith(name + "_"))
    out += longer[:3]
    seen, result = set(), []
    for n in out:
        if n not in seen:
            seen.add(n)
            result.append(n)
    return result[:4]


def _compile_ignore(ignore):
    if ignore is None:
        return []
    if isinstance(ignore, str) or not isinstance(ignore, (list, tuple)):
        raise _err("rk_unknown_variables: ignore must be a list of names or regular expressions, got %r"
                   % (ignore,))
    out = []
    for pattern in ignore:
        try:
            out.append(re.compile(str(pattern)))
        except re.error as error:
            raise _err("rk_unknown_variables: ignore entry %r is not a regular expression (%s)" % (pattern, error))
    return out


def rk_unknown_variables(names, specs, ignore=None):
    """The entries of `names` with a role prefix that rigkeeper does not know.

    names: variable names (the host's, e.g. ``hostvars[inventory_hostname].keys()``); specs:
    {role: its meta/argument_specs.yml}; ignore: names or regular expressions (full match) of
    variables that belong to something else (another role sharing a prefix).
    Returns a list, sorted by name, of {name, role, suggestions, message}; empty when all is known.
    """
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise _err("rk_unknown_variables: names must be a list of variable names, got %r" % (names,))
    by_role = _spec_names(specs)
    known = set(rk_known_variables(specs))
    prefixes = _prefixes(by_role)
    patterns = _compile_ignore(ignore)
    found = []
    for name in sorted({str(n) for n in names}):
        if name.startswith("__") or name in known or not name.startswith(prefixes):
            continue
        if any(p.fullmatch(name) for p in patterns):
            continue
        role = _owner(name, by_role)
        # Names set at runtime are not wants: never suggested.
        suggestions = _suggestions(name, sorted(known - set(RUNTIME_VARIABLES)))
        found.append({"name": name, "role": role, "suggestions": suggestions,
                      "message": _message(name, role, suggestions)})
    return found


def _message(name, role, suggestions):
    head = "`%s` is not a rigkeeper variable" % name
    if suggestions:
        head += "; did you mean `%s`?" % suggestions[0]
        if len(suggestions) > 1:
            head += " (also close: %s)." % ", ".join("`%s`" % s for s in suggestions[1:])
        head += " "
    else:
        head += ", and no known name is close. "
    if role:
        where = "the %s role's variables are listed in roles/%s/README.md" % (role, role)
    else:
        where = "rigkeeper's shared variables are listed in plugins/filter/rigkeeper_vars.py (SHARED_VARIABLES)"
    return "%s%s; a variable of another project that shares the prefix goes in preflight_variables_ignore." % (
        head, where[0].upper() + where[1:])


class FilterModule:
    def filters(self):
        return {"rk_unknown_variables": rk_unknown_variables, "rk_known_variables": rk_known_variables}
