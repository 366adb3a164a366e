"""rk_unknown_variables: which of a host's variables no rigkeeper role knows, and what to say."""

import glob
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from rigkeeper_vars import RUNTIME_VARIABLES, rk_known_variables, rk_unknown_variables

REPO = Path(__file__).resolve().parents[2]

# A small, fixed world so the table does not move when a role gains a variable.
SPECS = {
    "ssh": {"argument_specs": {"main": {"options": {
        "ssh_authorized_keys": {"type": "list"}, "ssh_login_users": {"type": "list"},
        "ssh_port": {"type": "int"}, "ssh_password_authentication": {"type": "bool"}}}}},
    "nvidia_driver": {"argument_specs": {
        "main": {"options": {"nvidia_driver_branch": {}, "nvidia_driver_version": {}, "nvidia_driver_source": {}}},
        "reboot": {"options": {"nvidia_driver_reboot": {}, "rigkeeper_reboot_reasons": {}}}}},
    "gpu_power": {"argument_specs": {"main": {"options": {"gpu_power_limits": {}, "gpu_power_psu_watts": {}}}}},
    # A role without options (an entry point with none) is fine.
    "p2p_check": {"argument_specs": {"main": {"short_description": "x"}}},
}


def names(found):
    return [f["name"] for f in found]


@pytest.mark.parametrize("given, unknown", [
    # Known: declared by a spec (any entry point), shared, runtime-set.
    (["ssh_port", "nvidia_driver_reboot", "rigkeeper_reboot_reasons"], []),
    (["rigkeeper_roles", "rigkeeper_psu_watts", "rigkeeper_sim_repo", "rigkeeper_report"], []),
    (["nvidia_driver_reboot_pending", "kernel_params_reboot_pending", "preflight_results", "rigkeeper_host"], []),
    (["nvidia_driver_upgrade_serial", "rigkeeper_apt_lock_timeout"], []),
    # Not judged: internal names, names without a rigkeeper prefix (Ansible's, other roles').
    (["__nvidia_driver_plan", "__rigkeeper_roles", "ansible_host", "inventory_hostname", "docker_users",
      "nvidia_gpu", "sshd_port", "gpu_count"], []),
    # A prefix alone is not a name of the role ("ssh" is not "ssh_").
    (["ssh", "gpu_power", "rigkeeper"], []),
    # A role's own prefix counts even when the issue's list lacks it (p2p_check_).
    (["p2p_check_pairs"], ["p2p_check_pairs"]),
    # Unknown, sorted, each once.
    (["ssh_users", "gpu_power_limit", "ssh_users", "nvidia_driver_brnach"],
     ["gpu_power_limit", "nvidia_driver_brnach", "ssh_users"]),
    (["rigkeeper_psu_wats"], ["rigkeeper_psu_wats"]),
])
def test_which_names_are_unknown(given, unknown):
    assert names(rk_unknown_variables(given, SPECS)) == unknown


@pytest.mark.parametrize("name, suggestions, role", [
    # The issue's example: the alias table knows what ssh_users means here.
    ("ssh_users", ["ssh_authorized_keys", "ssh_login_users"], "ssh"),
    # A close spelling.
    ("nvidia_driver_brnach", ["nvidia_driver_branch"], "nvidia_driver"),
    # A known name is a prefix of the unknown one (a key written into the name).
    ("gpu_power_limits_watts", ["gpu_power_limits"], "gpu_power"),
    # The unknown one is cut short: the known names that start with it.
    ("nvidia_driver_reboot_x", ["nvidia_driver_reboot"], "nvidia_driver"),
    ("gpu_power_psu", ["gpu_power_psu_watts"], "gpu_power"),
    ("rigkeeper_psu_wats", ["rigkeeper_psu_watts"], None),
    # Nothing close: no suggestion, only where the role's names are listed.
    ("ssh_zzz_qqq", [], "ssh"),
])
def test_suggestions(name, suggestions, role):
    (entry,) = rk_unknown_variables([name], SPECS)
    assert entry["role"] == role
    assert entry["suggestions"][:len(suggestions)] == suggestions
    if not suggestions:
        assert entry["suggestions"] == []


def test_the_issue_message():
    (entry,) = rk_unknown_variables(["ssh_users"], SPECS)
    assert entry["message"].startswith(
        "`ssh_users` is not a rigkeeper variable; did you mean `ssh_authorized_keys`?")
    assert "roles/ssh/README.md" in entry["message"]
    assert "preflight_variables_ignore" in entry["message"]


def test_message_without_suggestion_says_so():
    (entry,) = rk_unknown_variables(["ssh_zzz_qqq"], SPECS)
    assert "no known name is close" in entry["message"]
    assert "did you mean" not in entry["message"]


def test_shared_names_point_at_the_shared_list():
    (entry,) = rk_unknown_variables(["rigkeeper_colour"], SPECS)
    assert entry["role"] is None
    assert "SHARED_VARIABLES" in entry["message"]


def test_runtime_names_are_never_suggested():
    # rigkeeper_host is close to rigkeeper_hosts, but nobody should set it.
    (entry,) = rk_unknown_variables(["rigkeeper_hosts"], SPECS)
    assert not set(entry["suggestions"]) & set(RUNTIME_VARIABLES)


@pytest.mark.parametrize("ignore, unknown", [
    ([], ["ssh_site_banner", "ssh_users"]),
    (["ssh_users"], ["ssh_site_banner"]),
    (["ssh_site_.*"], ["ssh_users"]),
    # Full match: a pattern that only matches part of a name does not hide it.
    (["ssh_site"], ["ssh_site_banner", "ssh_users"]),
    (None, ["ssh_site_banner", "ssh_users"]),
])
def test_ignore(ignore, unknown):
    assert names(rk_unknown_variables(["ssh_site_banner", "ssh_users"], SPECS, ignore=ignore)) == unknown


@pytest.mark.parametrize("args, fragment", [
    (("ssh_users", SPECS), "names must be a list"),
    ((["ssh_users"], ["not", "a", "dict"]), "specs must map role names"),
    ((["ssh_users"], {"ssh": {"options": {}}}), "no argument_specs mapping"),
    ((["ssh_users"], {"ssh": {"argument_specs": {"main": {"options": ["a"]}}}}), "options must be a mapping"),
])
def test_bad_input_raises(args, fragment):
    with pytest.raises(AnsibleFilterError, match=fragment):
        rk_unknown_variables(*args)


def test_bad_ignore_raises():
    with pytest.raises(AnsibleFilterError, match="not a regular expression"):
        rk_unknown_variables(["ssh_users"], SPECS, ignore=["ssh_("])
    with pytest.raises(AnsibleFilterError, match="must be a list"):
        rk_unknown_variables(["ssh_users"], SPECS, ignore="ssh_users")


def test_known_variables_of_the_real_specs():
    specs = {Path(f).parts[-3]: yaml.safe_load(Path(f).read_text())
             for f in glob.glob(str(REPO / "roles/*/meta/argument_specs.yml"))}
    known = rk_known_variables(specs)
    assert known == sorted(set(known))
    for name in ("ssh_authorized_keys", "nvidia_driver_branch", "cuda_toolkit_versions", "rigkeeper_roles",
                 "preflight_variables_check", "nvidia_driver_reboot_deferred"):
        assert name in known
    assert "ssh_users" not in known
