"""The lists in plugins/filter/rigkeeper_vars.py against the repository: every rigkeeper_* name the
code uses, every name a role sets at runtime and every variable the shipped inventories and the
Molecule plays set is known; and every listed name is still used somewhere (no stale entries)."""

import re
from pathlib import Path

import pytest
import yaml

from rigkeeper_vars import ALIASES, RUNTIME_VARIABLES, SHARED_VARIABLES, _prefixes, rk_known_variables, \
    rk_unknown_variables

REPO = Path(__file__).resolve().parents[2]
SPECS = {p.parts[-3]: yaml.safe_load(p.read_text()) for p in sorted(REPO.glob("roles/*/meta/argument_specs.yml"))}
KNOWN = set(rk_known_variables(SPECS))
PREFIXES = _prefixes(SPECS)
SCANNED = ("roles", "playbooks", "plugins", "inventory", "meta")
TEXT_SUFFIXES = {".yml", ".yaml", ".j2", ".py", ".md", ".cfg", ""}
# A name ends in a letter or digit ("rigkeeper_sim_*" in prose is a family, not a name).
RIGKEEPER_NAME = re.compile(r"(?<![\w$])rigkeeper_[a-z0-9_]*[a-z0-9](?![\w])")


def _files(*tops):
    for top in tops:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                yield path


def _plugin_names():
    """rigkeeper_* names that are files (filter, callback, module, module_utils) or the self-audit's
    Prometheus metrics (plugins/module_utils/rigkeeper_metrics.py), not variables."""
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_metrics import NAMES
    return {p.stem for top in ("plugins/filter", "plugins/callback", "plugins/modules", "plugins/module_utils", "plugins/action")
            for p in (REPO / top).glob("rigkeeper_*.py")} | set(NAMES)


def test_every_rigkeeper_name_used_in_the_repository_is_known():
    plugins = _plugin_names()
    unknown = {}
    for path in _files(*SCANNED):
        for name in RIGKEEPER_NAME.findall(path.read_text(errors="replace")):
            if name in plugins or name in KNOWN:
                continue
            unknown.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert unknown == {}, "add these to SHARED_VARIABLES or RUNTIME_VARIABLES in plugins/filter/rigkeeper_vars.py"


def _walk_tasks(node, out, where):
    if isinstance(node, list):
        for item in node:
            _walk_tasks(item, out, where)
    elif isinstance(node, dict):
        if isinstance(node.get("register"), str):
            out.append((node["register"], where))
        for key in ("ansible.builtin.set_fact", "set_fact"):
            if isinstance(node.get(key), dict):
                out.extend((name, where) for name in node[key] if name != "cacheable")
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            if key in node:
                _walk_tasks(node[key], out, where)


def _runtime_set_names():
    out = []
    for path in list(REPO.glob("roles/*/tasks/*.yml")) + list(REPO.glob("roles/*/handlers/*.yml")) \
            + list(REPO.glob("playbooks/**/*.yml")):
        _walk_tasks(yaml.safe_load(path.read_text()), out, str(path.relative_to(REPO)))
    return out


def test_the_scan_finds_what_the_roles_set():
    found = {name for name, _ in _runtime_set_names()}
    # A canary: if the walk broke, the test below would pass on nothing.
    assert {"preflight_results", "nvidia_driver_reboot_pending", "kernel_params_reboot_pending"} <= found


def test_every_public_name_a_role_sets_at_runtime_is_known():
    """set_fact and register names with a role prefix (not internal ones) must not trip preflight
    when a later play's preflight sees them in hostvars."""
    unknown = sorted({(name, where) for name, where in _runtime_set_names()
                      if not name.startswith("__") and name.startswith(PREFIXES) and name not in KNOWN})
    assert unknown == [], "add these to RUNTIME_VARIABLES in plugins/filter/rigkeeper_vars.py"


def _inventory_variables(top):
    """Every variable an inventory folder sets: group_vars/host_vars files and hosts.yml vars."""
    names = {}
    for path in sorted((REPO / top).rglob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        rel = str(path.relative_to(REPO))
        if "group_vars" in path.parts or "host_vars" in path.parts:
            for name in data:
                names.setdefault(name, rel)
        else:
            stack = [data]
            while stack:
                group = stack.pop()
                for name in (group.get("vars") or {}):
                    names.setdefault(name, rel)
                for host_vars in (group.get("hosts") or {}).values():
                    for name in (host_vars or {}):
                        names.setdefault(name, rel)
                stack.extend((group.get("children") or {}).values())
                stack.extend(v for k, v in group.items() if k not in ("vars", "hosts", "children") and isinstance(v, dict))
    return names


@pytest.mark.parametrize("inventory", ["inventory/example", "inventory/sim"])
def test_every_variable_the_shipped_inventories_set_is_known(inventory):
    names = _inventory_variables(inventory)
    assert len(names) > 5, "the inventory reader found almost nothing"
    assert rk_unknown_variables(list(names), SPECS) == []


def test_the_inventory_reader_sees_a_typo():
    # The example shipped `ssh_users` before: the same reader on that content finds it.
    names = list(_inventory_variables("inventory/example")) + ["ssh_users"]
    (entry,) = rk_unknown_variables(names, SPECS)
    assert entry["suggestions"][0] == "ssh_authorized_keys"


def test_every_variable_the_molecule_plays_set_is_known():
    names = {}
    for path in sorted(REPO.glob("molecule/*/*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if isinstance(play, dict):
                for name in play.get("vars") or {}:
                    names.setdefault(name, str(path.relative_to(REPO)))
    assert rk_unknown_variables(list(names), SPECS) == []


def test_listed_names_are_still_used():
    """No stale entries: each shared or runtime name appears somewhere outside the list itself."""
    text = "\n".join(p.read_text(errors="replace") for p in _files(*SCANNED, "molecule")
                     if p.name != "rigkeeper_vars.py")
    stale = sorted(n for n in list(SHARED_VARIABLES) + list(RUNTIME_VARIABLES)
                   if not re.search(r"(?<![\w])%s(?![\w])" % re.escape(n), text))
    assert stale == []


def test_lists_do_not_overlap_the_specs():
    declared = set().union(*(set((s or {}).get("options") or {}) for doc in SPECS.values()
                             for s in doc["argument_specs"].values()))
    assert not set(SHARED_VARIABLES) & declared, "declared in a role's specs already: drop it from SHARED_VARIABLES"
    assert not set(SHARED_VARIABLES) & set(RUNTIME_VARIABLES)


def test_aliases_point_at_known_names_and_are_unknown_themselves():
    for alias, targets in ALIASES.items():
        assert alias not in KNOWN, alias
        assert targets and set(targets) <= KNOWN, (alias, targets)


def test_preflight_reads_the_specs_of_every_role():
    listed = yaml.safe_load((REPO / "roles/preflight/vars/main.yml").read_text())["__preflight_spec_roles"]
    assert listed == sorted(SPECS), "roles/preflight/vars/main.yml must list every role with meta/argument_specs.yml"
