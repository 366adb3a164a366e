"""The ssh role: what a client outside the rig sees, and what sshd itself says it runs."""

import os
import re

import pytest
import yaml

from conftest import EPHEMERAL, public_key

DROPIN = "/etc/ssh/sshd_config.d/00-rigkeeper.conf"
LISTEN_DROPIN = "/etc/ssh/sshd_config.d/00-rigkeeper-listen.conf"
ROLE_DEFAULTS = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "roles", "ssh", "defaults", "main.yml")


def effective(host):
    """`sshd -T` as a dict of keyword -> value (last one wins for repeated keywords)."""
    out = host.check_output("/usr/sbin/sshd -T -C user=root,host=localhost,addr=127.0.0.1")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def key_lines(host, path):
    return [line for line in host.file(path).content_string.splitlines() if line and not line.startswith("#")]


def sshd_state(host):
    """Everything a refused run must leave as it was, read in one go: the files (sshd's and the
    keys), the daemon (PID, state), how often it was reloaded, and the configuration it would load."""
    return host.check_output(
        "sha256sum /etc/ssh/sshd_config /etc/ssh/sshd_config.d/* /home/*/.ssh/authorized_keys*;"
        " ls -la /etc/ssh/sshd_config.d;"
        " systemctl show -p MainPID -p ActiveState ssh.service;"
        " echo SIGHUPs: $(journalctl -u ssh.service -o cat --no-pager | grep -c 'Received SIGHUP');"
        " /usr/sbin/sshd -T")


# From outside the box -------------------------------------------------------------------------

def test_key_login_works(ssh):
    run = ssh("rkadmin", "id", "-un", key="admin")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "rkadmin"


def test_additive_mode_keeps_the_key_that_was_there(ssh):
    for key in ("ops", "kept"):
        run = ssh("rkops", "true", key=key)
        assert run.returncode == 0, (key, run.stderr)


def test_exclusive_mode_dropped_the_stale_key(ssh):
    run = ssh("rkadmin", "true", key="stale")
    assert run.returncode != 0
    assert "Permission denied (publickey)" in run.stderr


@pytest.mark.parametrize("kbd", [False, True], ids=["password", "keyboard-interactive"])
def test_password_login_refused(ssh, kbd):
    run = ssh("rkadmin", "true", kbd=kbd)
    assert run.returncode == 255
    # sshd offers publickey and nothing else.
    assert "Permission denied (publickey)." in run.stderr


@pytest.mark.parametrize("option, refusal", [
    ("KexAlgorithms=diffie-hellman-group14-sha256", "no matching key exchange method"),
    ("Ciphers=aes128-cbc", "no matching cipher"),
    ("MACs=hmac-sha1", "no matching MAC"),
])
def test_weak_algorithms_refused(ssh, option, refusal):
    options = ["-o", option] + (["-o", "Ciphers=aes128-ctr"] if option.startswith("MACs") else [])
    run = ssh("rkadmin", "true", key="admin", options=options)
    assert run.returncode == 255
    assert refusal in run.stderr


# sshd's own view -----------------------------------------------------------------------------

def test_effective_configuration(host):
    config = effective(host)
    assert config["passwordauthentication"] == "no"
    assert config["kbdinteractiveauthentication"] == "no"
    assert config["pubkeyauthentication"] == "yes"
    assert config["permitemptypasswords"] == "no"
    assert config["permitrootlogin"] == "without-password"
    assert config["maxauthtries"] == "3"
    assert config["x11forwarding"] == "no"
    # prepare.yml left cloud-init's PasswordAuthentication yes: it is still there, and loses.
    assert "PasswordAuthentication yes" in host.file("/etc/ssh/sshd_config.d/50-cloud-init.conf").content_string


@pytest.mark.parametrize("keyword, query, variable", [
    ("kexalgorithms", "kex", "ssh_kex_algorithms"),
    ("ciphers", "cipher", "ssh_ciphers"),
    ("macs", "mac", "ssh_macs"),
])
def test_algorithms_are_the_supported_part_of_the_preference(host, keyword, query, variable):
    with open(ROLE_DEFAULTS) as handle:
        preference = yaml.safe_load(handle)[variable]
    supported = host.check_output("ssh -Q %s", query).split()
    expected = [name for name in preference if name in supported]
    assert expected, "nothing in common: the test would prove nothing"
    assert effective(host)[keyword].split(",") == expected


def test_sshd_config_includes_the_dropins_first(host):
    lines = [line.strip() for line in host.file("/etc/ssh/sshd_config").content_string.splitlines()]
    settings = [line for line in lines if line and not line.startswith("#")]
    assert settings[0] == "Include /etc/ssh/sshd_config.d/*.conf"


@pytest.mark.parametrize("path", [DROPIN, LISTEN_DROPIN])
def test_dropins(host, path):
    dropin = host.file(path)
    assert dropin.is_file
    assert (dropin.user, dropin.group, dropin.mode) == ("root", "root", 0o644)
    assert dropin.content_string.startswith("#")


def test_sshd_was_reloaded_not_restarted(host):
    assert host.service("ssh").is_running
    count = host.run("journalctl -u ssh.service -o cat --no-pager | grep -c 'Received SIGHUP'").stdout.strip()
    assert int(count) >= 1


# Keys on disk ---------------------------------------------------------------------------------

def test_exclusive_file_holds_exactly_the_listed_key(host):
    path = "/home/rkadmin/.ssh/authorized_keys"
    assert key_lines(host, path) == [public_key("admin")]
    keys = host.file(path)
    assert (keys.user, keys.group, keys.mode) == ("rkadmin", "rkadmin", 0o600)
    ssh_dir = host.file("/home/rkadmin/.ssh")
    assert (ssh_dir.user, ssh_dir.mode) == ("rkadmin", 0o700)
    # backup: true kept the replaced file.
    backups = host.run("cat /home/rkadmin/.ssh/authorized_keys.*~").stdout
    assert public_key("stale") in backups


def test_exclusive_file_created_where_there_was_no_ssh_dir(host):
    assert key_lines(host, "/home/rkdev/.ssh/authorized_keys") == [public_key("spare")]
    assert host.file("/home/rkdev/.ssh").mode == 0o700


def test_additive_file_keeps_other_keys_and_marks_its_block(host):
    lines = host.file("/home/rkops/.ssh/authorized_keys").content_string.splitlines()
    assert lines == [
        public_key("kept"),
        "# BEGIN rigkeeper ssh role: managed keys",
        public_key("ops"),
        "# END rigkeeper ssh role: managed keys",
    ]


# Runs that must change nothing ---------------------------------------------------------------

def test_check_mode_on_the_converged_rig_reports_nothing(playbook):
    run = playbook(check=True)
    assert run.returncode == 0, run.output
    assert (run.changed, run.failed) == (0, 0), run.output


def test_over_real_ssh_the_guard_protects_the_login_user(playbook, port, tmp_path):
    """Ansible logs in as rkadmin (key, then sudo): a --check run reports nothing, and the guard
    checks rkadmin because it is the login user, though neither ssh_login_users nor a managed key
    list names it."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"rig-over-ssh": {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "rkadmin",
        "ansible_become": True,
        "ansible_ssh_private_key_file": os.path.join(EPHEMERAL, "keys", "admin"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }}}}))
    run = playbook(check=True, inventory=str(inventory), verbose=True,
                   extra_vars={"ssh_authorized_keys_enabled": False, "ssh_login_users": ["rkops"]})
    assert run.returncode == 0, run.output
    assert (run.changed, run.failed) == (0, 0), run.output
    checked = re.search(r'"__ssh_guard_users": \[([^\]]*)\]', run.output)
    assert checked, run.output
    assert sorted(re.findall(r'"([^"]+)"', checked.group(1))) == ["rkadmin", "rkops"]


def test_bogus_option_fails_validation_and_changes_nothing(host, playbook, ssh):
    before = sshd_state(host)
    # A valid change rides along: were validation skipped, the drop-in would change.
    run = playbook(extra_vars={"ssh_sshd_extra": {"Bogus": True}, "ssh_max_auth_tries": 5})
    assert run.returncode != 0
    assert "failed to validate" in run.output
    assert "Bad configuration option: Bogus" in run.output
    assert sshd_state(host) == before
    assert "Bogus" not in host.file(DROPIN).content_string
    assert ssh("rkadmin", "true", key="admin").returncode == 0


def _keys_for(**overrides):
    entries = {
        "rkadmin": {"user": "rkadmin", "keys": [public_key("admin"), public_key("spare")], "exclusive": True},
        "rkops": {"user": "rkops", "keys": [public_key("ops")], "exclusive": False},
        "rkdev": {"user": "rkdev", "keys": [public_key("spare")], "exclusive": True},
    }
    entries.update(overrides)
    return list(entries.values())


@pytest.mark.parametrize("case", ["password user without a key", "listed user left with no key"])
def test_lockout_guard_refuses_before_any_change(host, playbook, case):
    password_hash = host.check_output("getent shadow rkadmin | cut -d: -f2")
    if case == "password user without a key":
        host.run_expect([0], "useradd -m -s /bin/bash rknokey && usermod -p '%s' rknokey" % password_hash)
        keys = _keys_for()
        named = ("rknokey has no key in ssh_authorized_keys and none in the files sshd reads"
                 " (/home/rknokey/.ssh/authorized_keys, /home/rknokey/.ssh/authorized_keys2)")
    else:
        keys = _keys_for(rkadmin={"user": "rkadmin", "keys": [], "exclusive": True})
        named = "rkadmin would be left with an empty /home/rkadmin/.ssh/authorized_keys"
    before = sshd_state(host)
    try:
        # Would rewrite rkadmin's keys (exclusive, one more key) if the guard did not stop it first.
        run = playbook(extra_vars={"ssh_authorized_keys": keys})
    finally:
        host.run("userdel -r rknokey")
    assert run.returncode != 0
    assert "Lockout guard: ssh_password_authentication is false" in run.output
    assert named in run.output
    assert "Nothing was changed." in run.output
    assert sshd_state(host) == before
