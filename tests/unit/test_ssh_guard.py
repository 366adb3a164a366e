"""Unit tests of the ssh role's lockout guard (plugins/filter/ssh_guard.py): pure
functions, no rig needed."""

import base64
import hashlib
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError


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


# The key Ansible connects with ------------------------------------------------------------

# Real keys (ssh-keygen -t ed25519), so that fingerprints can be checked against ssh-keygen's.
ADMIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGTAS287FamWW1GQZfn/+UigUpbCgMdZ7Wri8MpWuyU admin"
# `ssh-keygen -l -f admin.pub`: 256 SHA256:dauCKY63qqftAtKbkMDFjGyTXTW9+DbOpd9tSKEKrxQ admin (ED25519)
ADMIN_FP = "SHA256:dauCKY63qqftAtKbkMDFjGyTXTW9+DbOpd9tSKEKrxQ"
SPARE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpCa6+DHt2M8FDvOv67Jp+yItLoborPXpVMfAgozY7v spare"
AGENT = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOi1TYOUESbC9fquVru6fWK5W08Yw3rQ69U7u/ZFTmM2 agent"


def _fp(line):
    raw = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


@pytest.mark.parametrize("line, blob", [
    (ADMIN, " ".join(ADMIN.split()[:2])),
    ('from="10.0.0.0/8",command="echo a b" ' + ADMIN, " ".join(ADMIN.split()[:2])),
    ("ssh-ed25519", None),
    ("# " + ADMIN, None),
    (None, None),
])
def test_key_blob(line, blob):
    assert g.ssh_key_blob(line) == blob


def test_key_fingerprint_is_ssh_keygens():
    assert g.ssh_key_fingerprint(ADMIN) == ADMIN_FP
    assert g.ssh_key_fingerprint('command="x" ' + ADMIN) == ADMIN_FP
    with pytest.raises(AnsibleFilterError):
        g.ssh_key_fingerprint("not a key")


def test_connection_keys_keep_the_first_source_and_skip_noise():
    text = "\n".join(["file " + ADMIN, "agent " + ADMIN, "agent " + AGENT, "agent The agent has no identities.",
                      "identity " + SPARE, "garbage line", ""])
    keys = g.ssh_connection_keys(text)
    assert [(k["source"], k["fingerprint"]) for k in keys] == [
        ("file", _fp(ADMIN)), ("agent", _fp(AGENT)), ("identity", _fp(SPARE))]
    assert g.ssh_connection_keys("") == []


def _conn(*pairs):
    return g.ssh_connection_keys("\n".join("%s %s" % pair for pair in pairs))


@pytest.mark.parametrize("keys, plan, files, refused", [
    # Exclusive list without the key the connection uses: refused, naming its fingerprint.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE], "exclusive": True}],
     {"authorized_keys": ADMIN}, [ADMIN]),
    # ... with it: fine.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE, ADMIN], "exclusive": True}],
     {"authorized_keys": ADMIN}, []),
    # The key is also in authorized_keys2, which the role does not rewrite: fine.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE], "exclusive": True}],
     {"authorized_keys": ADMIN, "authorized_keys2": ADMIN}, []),
    # Additive mode keeps keys outside its block: fine.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE], "exclusive": False}],
     {"authorized_keys": ADMIN}, []),
    # Additive mode replaces its own block: a key only there goes.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE], "exclusive": False}],
     {"authorized_keys": "\n".join([MARKER.replace("{mark}", "BEGIN"), ADMIN, MARKER.replace("{mark}", "END")])},
     [ADMIN]),
    # The configured key file's key must stay even when an agent key would still log in.
    (_conn(("file", ADMIN), ("agent", AGENT)), [{"user": "alice", "keys": [AGENT], "exclusive": True}],
     {"authorized_keys": ADMIN + "\n" + AGENT}, [ADMIN]),
    # Agent only: one of its authorized keys staying is enough.
    (_conn(("agent", ADMIN), ("agent", AGENT)), [{"user": "alice", "keys": [AGENT], "exclusive": True}],
     {"authorized_keys": ADMIN + "\n" + AGENT}, []),
    # ... none staying: refused, naming both.
    (_conn(("agent", ADMIN), ("agent", AGENT)), [{"user": "alice", "keys": [SPARE], "exclusive": True}],
     {"authorized_keys": ADMIN + "\n" + AGENT}, [ADMIN, AGENT]),
    # The connection's key is in no file (a certificate, AuthorizedKeysCommand): not the role's to judge.
    (_conn(("file", ADMIN)), [{"user": "alice", "keys": [SPARE], "exclusive": True}],
     {"authorized_keys": AGENT}, []),
    # The role does not manage the connecting user's keys: fine.
    (_conn(("file", ADMIN)), [{"user": "bob", "keys": [SPARE], "exclusive": True}],
     {"authorized_keys": ADMIN}, []),
    # No key known for the connection (a password login): nothing to protect here.
    ([], [{"user": "alice", "keys": [SPARE], "exclusive": True}], {"authorized_keys": ADMIN}, []),
])
def test_connection_key_problems(keys, plan, files, refused):
    slurped = [_slurp("alice", name, text) for name, text in files.items()]
    problems = g.ssh_connection_key_problems("alice", keys, plan, False, slurped, PASSWD, MARKER)
    assert len(problems) == (1 if refused else 0), problems
    for line in refused:
        assert _fp(line) in problems[0]
    if refused:
        assert problems[0].startswith("Ansible logs in to this host as alice with the key ")
        assert "/home/alice/.ssh/authorized_keys" in problems[0]
