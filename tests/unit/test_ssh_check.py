"""Unit tests of the ssh role's whole-configuration checker (roles/ssh/files/sshd_check.py): how
sshd reads the files (Include, Match), what counts as the wanted value or a stricter one, and
which lines a refusal names. The I/O part (sshd -t/-T on a scratch copy) runs in Molecule."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "ssh" / "files"))

import sshd_check as c  # noqa: E402

MAIN = "/etc/ssh/sshd_config"
D = "/etc/ssh/sshd_config.d/"
OURS = {"00-rigkeeper.conf", "00-rigkeeper-listen.conf"}


@pytest.mark.parametrize("keyword, value, expected", [
    ("PasswordAuthentication", "no", ("passwordauthentication", "no")),
    ("X11Forwarding", True, ("x11forwarding", "yes")),
    ("PermitRootLogin", "prohibit-password", ("permitrootlogin", "without-password")),
    ("AllowTcpForwarding", "all", ("allowtcpforwarding", "yes")),
    ("LogLevel", "VERBOSE", ("loglevel", "VERBOSE")),
    ("Port", 2222, ("port", "2222")),
])
def test_normalize_spells_values_as_sshd_T(keyword, value, expected):
    assert c.normalize(keyword, value) == expected


def test_expected_settings_collects_repeated_keywords():
    wanted = c.expected_settings([["HostKey", "/k1"], ["HostKey", "/k2"], ["MaxAuthTries", 3], ["Port", 22]])
    assert wanted == {"hostkey": ["/k1", "/k2"], "maxauthtries": "3", "port": ["22"]}


@pytest.mark.parametrize("keyword, wanted, actual, ok", [
    ("passwordauthentication", "no", "no", True),
    ("passwordauthentication", "no", "yes", False),
    ("passwordauthentication", "yes", "no", True),         # passwords wanted on, a Match turns them off
    ("permitrootlogin", "without-password", "no", True),
    ("permitrootlogin", "without-password", "yes", False),
    ("permitrootlogin", "no", "without-password", False),
    ("allowtcpforwarding", "yes", "local", True),
    ("allowtcpforwarding", "local", "yes", False),
    ("allowtcpforwarding", "local", "remote", False),
    ("allowtcpforwarding", "local", "no", True),
    ("maxauthtries", "3", "2", True),
    ("maxauthtries", "3", "6", False),
    ("logingracetime", "30", "0", False),                  # 0: no limit at all
    ("hostkey", ["/a", "/b"], ["/b", "/a"], True),
    ("hostkey", ["/a", "/b"], ["/a", "/b", "/ecdsa"], False),
    ("port", ["2222"], ["2222", "22"], False),
    ("kexalgorithms", "a,b", "a,b,c", False),
    ("loglevel", "VERBOSE", None, False),
])
def test_at_least_as_strict(keyword, wanted, actual, ok):
    assert c.at_least_as_strict(keyword, wanted, actual) is ok


def test_compare_lists_every_problem():
    wanted = c.expected_settings([["PasswordAuthentication", "no"], ["X11Forwarding", "no"],
                                  ["HostKey", "/e"], ["MaxAuthTries", "3"]])
    effective = c.effective_settings("passwordauthentication yes\nx11forwarding no\nhostkey /e\n"
                                     "hostkey /ecdsa\nmaxauthtries 3\n")
    assert c.compare(wanted, effective) == [
        ("passwordauthentication", "no", "yes"), ("hostkey", ["/e"], ["/e", "/ecdsa"])]


FILES = {
    MAIN: "# comment\nInclude /etc/ssh/sshd_config.d/*.conf\nX11Forwarding yes\n"
          "Match User rkops\n  PasswordAuthentication yes\nMatch User sftponly,!rkops\n  PasswordAuthentication yes\n",
    D + "00-aaa.conf": "PasswordAuthentication=yes\n",
    D + "00-rigkeeper.conf": "PasswordAuthentication no\nX11Forwarding no\nMatch User inc\n  MaxAuthTries 2\n",
    D + "50-cloud-init.conf": "PasswordAuthentication yes\nMaxAuthTries 6\n",
    D + "notes.txt": "PasswordAuthentication yes\n",
    D + ".hidden.conf": "PasswordAuthentication yes\n",
}


def test_parse_tree_follows_includes_in_glob_order_and_closes_match_at_end_of_file():
    tree = c.parse_tree(FILES)
    assert [(e["file"].rsplit("/", 1)[1], e["line"], e["keyword"], e["value"], bool(e["match"])) for e in tree] == [
        ("00-aaa.conf", 1, "passwordauthentication", "yes", False),
        ("00-rigkeeper.conf", 1, "passwordauthentication", "no", False),
        ("00-rigkeeper.conf", 2, "x11forwarding", "no", False),
        ("00-rigkeeper.conf", 4, "maxauthtries", "2", True),
        # The Match block of 00-rigkeeper.conf ended with that file.
        ("50-cloud-init.conf", 1, "passwordauthentication", "yes", False),
        ("50-cloud-init.conf", 2, "maxauthtries", "6", False),
        ("sshd_config", 3, "x11forwarding", "yes", False),
        ("sshd_config", 5, "passwordauthentication", "yes", True),
        ("sshd_config", 7, "passwordauthentication", "yes", True),
    ]
    assert tree[7]["match"] == MAIN + ":4: Match User rkops"


def test_parse_tree_reads_an_include_inside_a_match_block_inside_it():
    files = {MAIN: "Match Address 10.0.0.0/8\n  Include /etc/ssh/extra.conf\n", "/etc/ssh/extra.conf": "PermitRootLogin yes\n"}
    (entry,) = c.parse_tree(files)
    assert (entry["file"], entry["match"]) == ("/etc/ssh/extra.conf", MAIN + ":1: Match Address 10.0.0.0/8")


@pytest.mark.parametrize("match, users, applies", [
    (MAIN + ":4: Match User rkops", ["root", "rkops"], True),
    (MAIN + ":4: Match User rkops", ["root", "rkadmin"], False),
    (MAIN + ":4: Match User rk*", ["rkadmin"], True),
    (MAIN + ":6: Match User sftponly,!rkops", ["rkops"], False),
    (MAIN + ":6: Match Group sftponly", ["rkops"], True),       # groups are not judged here: may apply
    (MAIN + ":6: Match all", ["root"], True),
])
def test_match_may_apply(match, users, applies):
    assert c.match_may_apply(match, users) is applies


def test_explain_names_the_earlier_drop_in_and_the_users_match_block_only():
    tree = c.parse_tree(FILES)
    message = c.explain(("passwordauthentication", "no", "yes"), tree, OURS,
                        ["user=root,host=localhost", "user=rkops,host=localhost"])
    assert message.startswith("passwordauthentication: sshd -T -C user=root,host=localhost / user=rkops,host=localhost"
                              " shows 'passwordauthentication yes', rigkeeper wants 'passwordauthentication no'")
    assert D + "00-aaa.conf:1 'PasswordAuthentication=yes' (read before rigkeeper's drop-in)" in message
    assert MAIN + ":5 'PasswordAuthentication yes' inside '" + MAIN + ":4: Match User rkops'" in message
    # Read after ours (loses), a Match for someone else, a file no Include reads: not named.
    for innocent in ("50-cloud-init.conf", MAIN + ":7", "notes.txt", ".hidden.conf"):
        assert innocent not in message


def test_explain_without_a_culprit_says_so():
    message = c.explain(("loglevel", "VERBOSE", "INFO"), c.parse_tree(FILES), OURS, ["user=root,host=localhost"])
    assert message.endswith("no line outside rigkeeper's drop-ins sets it (sshd's default, or a file sshd reads"
                            " that this check cannot see)")


def test_explain_names_every_host_key_line_outside_ours():
    files = {MAIN: "HostKey /etc/ssh/ssh_host_ecdsa_key\nInclude /etc/ssh/sshd_config.d/*.conf\n",
             D + "00-rigkeeper.conf": "HostKey /etc/ssh/ssh_host_ed25519_key\n"}
    message = c.explain(("hostkey", ["/etc/ssh/ssh_host_ed25519_key"],
                         ["/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"]),
                        c.parse_tree(files), OURS, ["user=root,host=localhost"])
    assert MAIN + ":1 'HostKey /etc/ssh/ssh_host_ecdsa_key'" in message


@pytest.mark.parametrize("line, expected", [
    ("Include /etc/ssh/sshd_config.d/*.conf\n", "Include /tmp/x/sshd_config.d/*.conf\n"),
    ("include sshd_config.d/*.conf\n", "Include /tmp/x/sshd_config.d/*.conf\n"),
    ("  Include /etc/ssh/other.conf /etc/ssh/sshd_config.d/a.conf\n", "  Include /etc/ssh/other.conf /tmp/x/sshd_config.d/a.conf\n"),
    ("PasswordAuthentication no\n", "PasswordAuthentication no\n"),
])
def test_rewrite_includes_points_at_the_scratch_copy(line, expected):
    assert c.rewrite_includes(line, "/etc/ssh/sshd_config.d", "/tmp/x/sshd_config.d") == expected


def test_specs_check_root_first_and_each_user_once():
    assert c.specs(["rkops", "root", "rkops"], 2222) == [
        "user=root,host=localhost,addr=127.0.0.1,lport=2222", "user=rkops,host=localhost,addr=127.0.0.1,lport=2222"]
