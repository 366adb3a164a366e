"""Unit tests of the ssh role's decisions (roles/ssh/filter_plugins/ssh_guard.py): pure functions,
no rig needed."""

import base64
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.getcwd()),
                                "roles", "ssh", "filter_plugins"))

import ssh_guard as g  # noqa: E402

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr6mGmHkQv4b2kZb7n1xw7Q2y1yq1e0b0d0a0c0b0a0 alice@laptop"
KEY2 = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob"
MARKER = "# {mark} rigkeeper ssh role: managed keys"
PASSWD = {
    "root": ["x", "0", "0", "root", "/root", "/bin/bash"],
    "alice": ["x", "1000", "1000", "", "/home/alice", "/bin/bash"],
    "bob": ["x", "1001", "1001", "", "/home/bob", "/bin/bash"],
    "svc": ["x", "998", "998", "", "/var/lib/svc", "/usr/sbin/nologin"],
    "locked": ["x", "1002", "1002", "", "/home/locked", "/bin/bash"],
}
SHADOW = {
    "root": ["$6$salt$hash"],
    "alice": ["$6$salt$hash"],
    "bob": ["$y$j9T$hash"],
    "svc": ["$6$salt$hash"],
    "locked": ["!$6$salt$hash"],
}
NOLOGIN = ["", "/usr/sbin/nologin", "/bin/false"]


@pytest.mark.parametrize("line, expected", [
    (KEY, True),
    (KEY2, True),
    ('from="10.0.0.0/8",command="echo a b" ' + KEY, True),
    ("ssh-ed25519", False),
    ("ssh-ed25519 not*base64", False),
    ("# " + KEY, False),
    ("", False),
    ("ssh-foo AAAA", False),
    (None, False),
])
def test_is_public_key(line, expected):
    assert g.ssh_is_public_key(line) is expected


def test_key_lines_skip_comments_and_the_managed_block():
    text = "\n".join(["# header", KEY, MARKER.replace("{mark}", "BEGIN"), KEY2,
                      MARKER.replace("{mark}", "END"), "garbage"])
    assert g.ssh_key_lines(text) == [KEY, KEY2]
    assert g.ssh_key_lines(text, MARKER) == [KEY]
    assert g.ssh_key_lines(None) == []


@pytest.mark.parametrize("include_root, expected", [(False, ["alice", "bob"]), (True, ["alice", "bob", "root"])])
def test_password_users(include_root, expected):
    assert g.ssh_password_users(PASSWD, SHADOW, NOLOGIN, include_root) == expected


def test_authorized_keys_files_expand_tokens():
    files = g.ssh_authorized_keys_files(
        ["alice", "ghost"], PASSWD, ["port 22", "authorizedkeysfile .ssh/authorized_keys /etc/ssh/keys/%u %h/k_%U %%x"])
    assert files == [
        ["alice", "/home/alice/.ssh/authorized_keys"],
        ["alice", "/etc/ssh/keys/alice"],
        ["alice", "/home/alice/k_1000"],
        ["alice", "/home/alice/%x"],
    ]
    assert g.ssh_authorized_keys_files(["alice"], PASSWD, []) == [
        ["alice", "/home/alice/.ssh/authorized_keys"], ["alice", "/home/alice/.ssh/authorized_keys2"]]


def _slurp(user, name, text):
    result = {"item": [user, "/home/%s/.ssh/%s" % (user, name)]}
    if text is not None:
        result["content"] = base64.b64encode(text.encode()).decode()
    return result


@pytest.mark.parametrize("plan, slurped, locked_out", [
    # Not listed: safe only with a key already on disk, in either file.
    ([], [_slurp("alice", "authorized_keys", None)], ["alice"]),
    ([], [_slurp("alice", "authorized_keys", "# nothing\n")], ["alice"]),
    ([], [_slurp("alice", "authorized_keys2", KEY)], []),
    # Exclusive: the listed keys replace authorized_keys; authorized_keys2 still counts.
    ([{"user": "alice", "keys": [], "exclusive": True}], [_slurp("alice", "authorized_keys", KEY)], ["alice"]),
    ([{"user": "alice", "keys": [], "exclusive": True}], [_slurp("alice", "authorized_keys2", KEY)], []),
    ([{"user": "alice", "keys": [KEY], "exclusive": True}], [], []),
    # Additive: keys outside the managed block stay, keys inside it are replaced.
    ([{"user": "alice", "keys": []}], [_slurp("alice", "authorized_keys", KEY)], []),
    ([{"user": "alice", "keys": []}],
     [_slurp("alice", "authorized_keys", "\n".join([MARKER.replace("{mark}", "BEGIN"), KEY,
                                                    MARKER.replace("{mark}", "END")]))], ["alice"]),
])
def test_lockout_problems(plan, slurped, locked_out):
    problems = g.ssh_lockout_problems(["alice"], plan, False, slurped, PASSWD, MARKER)
    assert [p.split(" ", 1)[0] for p in problems] == locked_out


def test_lockout_problem_for_a_user_without_an_account():
    assert g.ssh_lockout_problems(["ghost"], [], False, [], PASSWD, MARKER) == [
        "ghost must keep a way in but has no account on this host"]


def test_plan_problems():
    plan = [
        {"user": "alice", "keys": [KEY]},
        {"user": "alice", "keys": [KEY2]},
        {"user": "ghost", "keys": ["not a key"]},
    ]
    assert g.ssh_plan_problems(plan, PASSWD) == [
        "alice is listed twice in ssh_authorized_keys; merge the entries",
        "ghost does not exist on this host (the ssh role does not create users)",
        "ghost: not a public key line: not a key",
    ]
