"""The ssh role: what a client outside the rig sees, and what sshd itself says it runs."""

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import fingerprint, over_ssh_inventory, public_key

DROPIN = "/etc/ssh/sshd_config.d/00-rigkeeper.conf"
LISTEN_DROPIN = "/etc/ssh/sshd_config.d/00-rigkeeper-listen.conf"
ROLE_DEFAULTS = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "roles", "ssh", "defaults", "main.yml")


LOGIN_USERS = ["root", "rkadmin", "rkops", "rkdev"]
HOST_KEYS = ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]


def effective(host, user="root"):
    """`sshd -T` as a dict of keyword -> value (last one wins for repeated keywords); user=None:
    plain `sshd -T`, without a connection spec (no Match block evaluated)."""
    spec = "" if user is None else " -C user=%s,host=localhost,addr=127.0.0.1" % user
    out = host.check_output("/usr/sbin/sshd -T" + spec)
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def host_keys(host, user="root"):
    out = host.check_output("/usr/sbin/sshd -T -C user=%s,host=localhost,addr=127.0.0.1" % user)
    return sorted(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("hostkey "))


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


@pytest.mark.parametrize("user", LOGIN_USERS + [None])
def test_every_login_user_gets_the_hardened_values(host, user):
    """Plain `sshd -T` and `sshd -T -C user=U` for every login user the role knows (Match blocks
    count): each hardened value is in effect."""
    config = effective(host, user)
    wanted = {
        "passwordauthentication": "no", "kbdinteractiveauthentication": "no", "pubkeyauthentication": "yes",
        "permitemptypasswords": "no", "permitrootlogin": "without-password", "maxauthtries": "3",
        "logingracetime": "30", "x11forwarding": "no", "allowtcpforwarding": "yes",
        "allowagentforwarding": "yes", "hostbasedauthentication": "no", "ignorerhosts": "yes",
        "permituserenvironment": "no", "gatewayports": "no", "permittunnel": "no", "strictmodes": "yes",
        "clientaliveinterval": "300", "clientalivecountmax": "3", "compression": "no", "usedns": "no",
        "loglevel": "VERBOSE",
    }
    assert {k: config.get(k) for k in wanted} == wanted


def test_only_ed25519_and_long_rsa_host_keys_are_offered(host):
    for user in LOGIN_USERS:
        assert host_keys(host, user) == HOST_KEYS
    bits = host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").split()[0]
    assert int(bits) >= 3072


def test_the_short_rsa_host_key_was_backed_up_then_replaced(host):
    old = host.file("/root/rk-weak-rsa.fp").content_string.strip()
    backups = host.check_output("ls /etc/ssh/ssh_host_rsa_key.pub.2048-bit.*~ /etc/ssh/ssh_host_rsa_key.2048-bit.*~").split()
    assert len(backups) == 2, backups
    pub = [b for b in backups if ".pub." in b][0]
    assert host.check_output("ssh-keygen -l -f %s" % pub).split()[1] == old
    assert host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").split()[1] != old


@pytest.mark.parametrize("key_type", ["ecdsa-sha2-nistp256", "ssh-rsa"])
def test_a_client_cannot_get_an_unoffered_host_key(ssh, key_type):
    run = ssh("rkadmin", "true", key="admin", options=["-o", "HostKeyAlgorithms=" + key_type])
    assert run.returncode == 255
    assert "no matching host key type found" in run.stderr


def test_small_dh_moduli_are_gone_and_a_backup_kept(host):
    sizes = host.check_output("awk '$1 ~ /^[0-9]+$/ { print $5 }' /etc/ssh/moduli").split()
    assert sizes, "the moduli file must never be left empty"
    assert min(int(size) + 1 for size in sizes) >= 3072
    backup = host.check_output("ls /etc/ssh/moduli.*~").split()
    assert len(backup) == 1
    # Debian's file has 2048-bit groups (size field 2047): the backup is the original.
    assert host.run("grep -c ' 2047 ' %s" % backup[0]).stdout.strip() not in ("", "0")


# Graded from outside ---------------------------------------------------------------------------

def test_ssh_audit_reports_no_fail(port):
    """ssh-audit (jtesta/ssh-audit, from PyPI; pyproject's test extras) grades the rig's sshd from
    outside, through its published port; prepare.yml proved it fails the unhardened one."""
    audit = os.path.join(os.path.dirname(sys.executable), "ssh-audit")
    assert os.path.exists(audit), "ssh-audit is not installed next to this Python (pip install -e .[test])"
    run = subprocess.run([audit, "--no-colors", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=120)
    # Exit status 0 good, 2 warnings only, 3 a failure, 1 no connection (ssh_audit/exitcodes.py).
    assert run.returncode in (0, 2), run.stdout + run.stderr
    failures = [line for line in run.stdout.splitlines() if "[fail]" in line]
    assert failures == [], run.stdout
    for line in run.stdout.splitlines():
        if line.startswith(("(gen)", "(kex)", "(key)", "(enc)", "(mac)")):
            print(line)


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
    inventory = over_ssh_inventory(tmp_path, port, key="admin")
    run = playbook(check=True, inventory=inventory, verbose=True,
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
    # The whole-configuration check names the live file the candidate would become.
    assert "/etc/ssh/sshd_config.d/00-rigkeeper.conf: line" in run.output
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


# What is made to lose, and what fails naming the file ------------------------------------------

def test_a_setting_above_the_include_is_made_to_lose(host, playbook, ssh):
    """sshd keeps the first value: a PasswordAuthentication yes above the Include would win. The
    role moves the Include to the top (backing sshd_config up) and the drop-in wins."""
    host.run_expect([0], "cp -p /etc/ssh/sshd_config /root/rk-sshd_config.orig"
                         " && sed -i '1i PasswordAuthentication yes' /etc/ssh/sshd_config")
    try:
        assert effective(host, None)["passwordauthentication"] == "yes"
        run = playbook()
        assert run.returncode == 0, run.output
        lines = [l.strip() for l in host.file("/etc/ssh/sshd_config").content_string.splitlines()]
        settings = [l for l in lines if l and not l.startswith("#")]
        assert settings[:2] == ["Include /etc/ssh/sshd_config.d/*.conf", "PasswordAuthentication yes"]
        for user in [None] + LOGIN_USERS:
            assert effective(host, user)["passwordauthentication"] == "no"
        backups = host.check_output("grep -l '^PasswordAuthentication yes' /etc/ssh/sshd_config.*~").split()
        assert backups, "sshd_config was changed without a backup"
        assert ssh("rkadmin", "true").returncode == 255
    finally:
        host.run("cp -p /root/rk-sshd_config.orig /etc/ssh/sshd_config && rm -f /etc/ssh/sshd_config.*~")


OVERRIDES = {
    # Sorts before 00-rigkeeper.conf (C collation: 'a' < 'r'), so its value is read first.
    "/etc/ssh/sshd_config.d/00-aaa.conf": "PasswordAuthentication yes\n",
    # A Match block in a drop-in read after ours, for a login user.
    "/etc/ssh/sshd_config.d/99-match.conf": "# an admin's exception\nMatch User rkadmin\n  X11Forwarding yes\n",
}
MATCH_BLOCKS = "Match User rkops\n  AllowAgentForwarding no\n  PermitRootLogin yes\nMatch User sftponly\n  X11Forwarding yes\n"


def test_what_cannot_be_made_to_lose_fails_naming_file_line_and_setting(host, playbook, ssh):
    """An earlier drop-in, and Match blocks (in sshd_config and in a drop-in) that loosen a value
    for a login user: the run fails before any change or reload, naming each file, line and
    setting in one message. A Match block that tightens a value (AllowAgentForwarding no) and one
    for a user the role does not know (sftponly) are left alone."""
    host.run_expect([0], "cp -p /etc/ssh/sshd_config /root/rk-sshd_config.orig")
    try:
        for path, text in OVERRIDES.items():
            host.run_expect([0], "printf %%s %s > %s" % (shlex.quote(text), path))
        host.run_expect([0], "printf %%s %s >> /etc/ssh/sshd_config" % shlex.quote(MATCH_BLOCKS))
        main_lines = host.file("/etc/ssh/sshd_config").content_string.splitlines()
        rkops_match = main_lines.index("Match User rkops") + 1
        before = sshd_state(host)
        run = playbook(extra_vars={"ssh_max_auth_tries": 4})  # a change that must not happen
        assert run.returncode != 0
        out = run.output
        assert "The effective sshd configuration would not be what rigkeeper wants; nothing was changed" in out
        assert ("passwordauthentication: sshd -T -C user=root") in out
        assert "/etc/ssh/sshd_config.d/00-aaa.conf:1 'PasswordAuthentication yes' (read before rigkeeper's drop-in)" in out
        assert ("/etc/ssh/sshd_config:%d 'PermitRootLogin yes' inside '/etc/ssh/sshd_config:%d: Match User rkops'"
                % (rkops_match + 2, rkops_match)) in out
        assert ("/etc/ssh/sshd_config.d/99-match.conf:3 'X11Forwarding yes' inside"
                " '/etc/ssh/sshd_config.d/99-match.conf:2: Match User rkadmin'") in out
        assert "sftponly" not in out
        assert "AllowAgentForwarding no" not in out
        assert sshd_state(host) == before
        assert "MaxAuthTries 3" in host.file(DROPIN).content_string
        # Nothing was reloaded: the running sshd still refuses passwords.
        assert ssh("rkadmin", "true").returncode == 255
    finally:
        host.run("rm -f %s; cp -p /root/rk-sshd_config.orig /etc/ssh/sshd_config" % " ".join(OVERRIDES))


# The way this run logs in ---------------------------------------------------------------------

def test_exclusive_list_without_the_connecting_key_is_refused(host, playbook, port, tmp_path):
    """Ansible logs in as rkadmin with the admin key; an exclusive list for rkadmin without it
    would end this and every later run: refused before any change, naming the key's fingerprint
    (computed here with ssh-keygen from the key file)."""
    before = sshd_state(host)
    keys = _keys_for(rkadmin={"user": "rkadmin", "keys": [public_key("spare")], "exclusive": True})
    run = playbook(inventory=over_ssh_inventory(tmp_path, port, key="admin"),
                   extra_vars={"ssh_authorized_keys": keys})
    assert run.returncode != 0
    assert ("Lockout guard: Ansible logs in to this host as rkadmin with the key %s (the private key"
            " file Ansible is configured with), found today in /home/rkadmin/.ssh/authorized_keys" % fingerprint("admin")) in run.output
    assert "Nothing was changed." in run.output
    assert sshd_state(host) == before
    assert key_lines(host, "/home/rkadmin/.ssh/authorized_keys") == [public_key("admin")]


@pytest.fixture
def passwords_on(host, playbook):
    """sshd takes passwords (as on a rig Ansible first reaches with one); converged back after."""
    run = playbook(extra_vars={"ssh_password_authentication": True})
    assert run.returncode == 0, run.output
    assert effective(host)["passwordauthentication"] == "yes"
    yield
    # The test ends converged (passwords off) when it passes; converge again only when it did not.
    if effective(host)["passwordauthentication"] != "no":
        run = playbook()
        assert run.returncode == 0, run.output


def test_a_password_connection_keeps_passwords_on(host, playbook, port, tmp_path, ssh, passwords_on):
    """Ansible logs in with a password (ansible_password, keys refused by the client): turning
    passwords off is refused before any change; with ssh_password_authentication_force_off it is
    done, and this run keeps its connection to the end."""
    inventory = over_ssh_inventory(tmp_path, port, password="rk-molecule-pw",
                                   common_args=["-o PubkeyAuthentication=no"])
    before = sshd_state(host)
    run = playbook(inventory=inventory)
    assert run.returncode != 0
    assert "Lockout guard: Ansible logs in to this host over SSH with a password" in run.output
    assert sshd_state(host) == before
    assert ssh("rkadmin", "id", "-un").stdout.strip() == "rkadmin"

    run = playbook(inventory=inventory, extra_vars={"ssh_password_authentication_force_off": True})
    assert run.returncode == 0, run.output
    assert run.failed == 0
    assert effective(host)["passwordauthentication"] == "no"
    assert ssh("rkadmin", "true").returncode == 255
