# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Decisions of the ssh role, as pure functions: who can log in with a password, which lines of an
authorized_keys file are keys, who would be left without a key after the role's change, and
whether the key Ansible itself logs in with survives it.

The role applies these decisions; it does not make them in Jinja. No Ansible state is read here.
"""

from __future__ import annotations

import base64
import hashlib
import re

from ansible.errors import AnsibleFilterError

# Key types sshd accepts in authorized_keys (sshd(8), AUTHORIZED_KEYS FILE FORMAT).
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss",
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")
# Options may quote spaces (command="a b"), so tokenise with quotes kept together.
_TOKENS = re.compile(r'(?:[^\s"]|"(?:\\.|[^"\\])*")+')


def ssh_is_public_key(line):
    """True when `line` is an authorized_keys entry: [options] keytype base64 [comment]."""
    if not isinstance(line, str):
        return False
    line = line.strip()
    if not line or line.startswith("#"):
        return False
    tokens = _TOKENS.findall(line)
    for i, token in enumerate(tokens[:-1]):
        if token in KEY_TYPES:
            return bool(_BASE64.match(tokens[i + 1]))
    return False


def ssh_key_blob(line):
    """'type base64' of an authorized_keys or .pub line (options and comment dropped), or None."""
    if not isinstance(line, str) or line.strip().startswith("#"):
        return None
    tokens = _TOKENS.findall(line.strip())
    for i, token in enumerate(tokens[:-1]):
        if token in KEY_TYPES and _BASE64.match(tokens[i + 1]):
            return "%s %s" % (token, tokens[i + 1])
    return None


def ssh_key_fingerprint(line):
    """The SHA256 fingerprint of a public key line, as ssh-keygen -l prints it (SHA256:...)."""
    blob = ssh_key_blob(line)
    if blob is None:
        raise AnsibleFilterError("ssh_key_fingerprint: not a public key line: %.60s" % (line,))
    try:
        raw = base64.b64decode(blob.split(" ", 1)[1], validate=True)
    except ValueError:
        raise AnsibleFilterError("ssh_key_fingerprint: the key's base64 does not decode: %.60s" % (line,))
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def ssh_key_lines(text, marker=None):
    """The key lines of an authorized_keys text. With `marker` ('# {mark} ...', as blockinfile
    takes it), lines inside that managed block are left out."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise AnsibleFilterError("ssh_key_lines: expected the text of an authorized_keys file")
    begin = end = None
    if marker:
        begin = marker.replace("{mark}", "BEGIN")
        end = marker.replace("{mark}", "END")
    keys, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if begin is not None and stripped == begin:
            inside = True
            continue
        if end is not None and stripped == end:
            inside = False
            continue
        if not inside and ssh_is_public_key(stripped):
            keys.append(stripped)
    return keys


def ssh_password_users(passwd, shadow, nologin_shells, include_root=False):
    """Accounts that can log in with a password now: a usable hash in shadow and a login shell.

    passwd: getent passwd as a dict (user -> [x, uid, gid, gecos, home, shell]);
    shadow: getent shadow as a dict (user -> [hash, ...]). Root counts only with include_root
    (when sshd lets root in with a password today).
    """
    if not isinstance(passwd, dict) or not isinstance(shadow, dict):
        raise AnsibleFilterError("ssh_password_users: passwd and shadow must be getent dicts")
    users = []
    for user, fields in sorted(passwd.items()):
        if user == "root" and not include_root:
            continue
        shell = fields[5] if fields and len(fields) > 5 else ""
        if (shell or "") in nologin_shells:
            continue
        entry = shadow.get(user) or [""]
        pw_hash = entry[0] or ""
        # Empty: no password (PermitEmptyPasswords is off); "!" / "*": locked or none.
        if not pw_hash or pw_hash[0] in "!*":
            continue
        users.append(user)
    return users


def _plan_by_user(plan, default_exclusive):
    by_user = {}
    for entry in plan or []:
        by_user[entry["user"]] = {
            "keys": list(entry.get("keys") or []),
            "exclusive": bool(entry.get("exclusive", default_exclusive)),
        }
    return by_user


def ssh_plan_problems(plan, passwd):
    """What is wrong with ssh_authorized_keys before anything is written: unknown or repeated
    users, lines that are not public keys. Returns a list of messages (empty: fine)."""
    problems, seen = [], set()
    for entry in plan or []:
        user = entry.get("user")
        if user in seen:
            problems.append("%s is listed twice in ssh_authorized_keys; merge the entries" % user)
        seen.add(user)
        if user not in (passwd or {}):
            problems.append("%s does not exist on this host (the ssh role does not create users)" % user)
        for key in entry.get("keys") or []:
            if not ssh_is_public_key(key):
                problems.append("%s: not a public key line: %.60s" % (user, key))
    return problems


def ssh_authorized_keys_files(users, passwd, effective_lines):
    """[user, path] for each file sshd reads keys from, per user, from `sshd -T`'s
    authorizedkeysfile (tokens %h %u %U %% expanded, relative paths under the home directory)."""
    spec = ".ssh/authorized_keys .ssh/authorized_keys2"
    for line in effective_lines or []:
        if line.startswith("authorizedkeysfile "):
            spec = line.split(" ", 1)[1]
    pairs = []
    for user in users or []:
        if user not in (passwd or {}):
            continue
        home, uid = passwd[user][4], passwd[user][1]
        for pattern in spec.split():
            if pattern == "none":
                continue
            path = re.sub(r"%([%hUu])",
                          lambda m: {"%": "%", "h": home, "u": user, "U": uid}[m.group(1)], pattern)
            pairs.append([user, path if path.startswith("/") else home.rstrip("/") + "/" + path])
    return pairs


def _slurped_files(slurped):
    """user -> {path: text} from a slurp looped over [user, path] pairs (no content: no file)."""
    files = {}
    for result in slurped or []:
        item = result.get("item")
        user, path = (item[0], item[1]) if isinstance(item, (list, tuple)) else (item, result.get("source"))
        content = result.get("content")
        text = base64.b64decode(content).decode("utf-8", "replace") if content else ""
        files.setdefault(user, {})[path] = text
    return files


def ssh_lockout_problems(users, plan, default_exclusive, slurped, passwd, marker):
    """Who would be left without an authorized key once the role has written its keys.

    users: accounts that must keep a way in; plan: ssh_authorized_keys (empty when the role does
    not manage keys); slurped: the slurp results looped over ssh_authorized_keys_files;
    passwd: getent passwd as a dict; marker: additive mode's block marker.
    The role writes ~/.ssh/authorized_keys; keys in the other files sshd reads stay valid.
    Returns one message per account that would be locked out (empty: safe).
    """
    by_user = _plan_by_user(plan, default_exclusive)
    existing = _slurped_files(slurped)
    passwd = passwd or {}
    problems = []
    for user in users or []:
        if user not in passwd:
            problems.append("%s must keep a way in but has no account on this host" % user)
            continue
        managed = "%s/.ssh/authorized_keys" % passwd[user][4].rstrip("/")
        files = existing.get(user, {})
        others = sum(len(ssh_key_lines(text)) for path, text in files.items() if path != managed)
        current = files.get(managed, "")
        listed = by_user.get(user)
        if listed is None:
            if not others and not ssh_key_lines(current):
                problems.append("%s has no key in ssh_authorized_keys and none in the files sshd reads"
                                " (%s)" % (user, ", ".join(sorted(files)) or managed))
        elif listed["exclusive"]:
            if not listed["keys"] and not others:
                problems.append(
                    "%s would be left with an empty %s (exclusive mode, no keys listed)" % (user, managed))
        elif not listed["keys"] and not others and not ssh_key_lines(current, marker):
            problems.append("%s has no key listed and none kept in %s" % (user, managed))
    return problems


def ssh_connection_keys(text):
    """The public keys Ansible's SSH connection can log in with, from the controller probe's
    output (tasks/guard.yml): lines 'SOURCE KEY...', SOURCE one of file (the configured private
    key file), agent (ssh-add -L) or identity (ssh's own IdentityFile list, `ssh -G`).
    Returns [{source, blob, fingerprint}], one per key (the first source that names it)."""
    keys, seen = [], set()
    for line in (text or "").splitlines():
        source, _sep, rest = line.strip().partition(" ")
        if source not in ("file", "agent", "identity"):
            continue
        blob = ssh_key_blob(rest)
        if blob is None or blob in seen:
            continue
        seen.add(blob)
        keys.append({"source": source, "blob": blob, "fingerprint": ssh_key_fingerprint(blob)})
    return keys


def _blobs(lines):
    return {ssh_key_blob(line) for line in lines} - {None}


def ssh_connection_key_problems(user, connection_keys, plan, default_exclusive, slurped, passwd, marker):
    """Would the role remove the key Ansible logs in with? One message when it would (empty: safe).

    user: the account Ansible logs in as over SSH; connection_keys: ssh_connection_keys(); plan,
    default_exclusive, slurped, passwd, marker: as for ssh_lockout_problems. The keys that log in
    today are the connection's keys found in the files sshd reads for `user`. When the configured
    key file's key is one of them, that key must still be there after the change (the inventory
    says to log in with it); otherwise at least one of them must. Keys that are in no file (a
    certificate, AuthorizedKeysCommand) are not the role's to remove and are not checked.
    """
    if not user or not connection_keys or user not in (passwd or {}):
        return []
    listed = _plan_by_user(plan, default_exclusive).get(user)
    if listed is None:
        return []
    files = _slurped_files(slurped).get(user, {})
    managed = "%s/.ssh/authorized_keys" % passwd[user][4].rstrip("/")
    current = set()
    for text in files.values():
        current |= _blobs(ssh_key_lines(text))
    others = set()
    for path, text in files.items():
        if path != managed:
            others |= _blobs(ssh_key_lines(text))
    after = _blobs(listed["keys"]) | others
    if not listed["exclusive"]:
        after |= _blobs(ssh_key_lines(files.get(managed, ""), marker))
    in_use = [k for k in connection_keys if k["blob"] in current]
    if not in_use:
        return []
    must = [k for k in in_use if k["source"] == "file"] or in_use
    if any(k["blob"] in after for k in must):
        return []
    mode = "exclusive" if listed["exclusive"] else "additive"
    found_in = sorted(p for p, text in files.items() if _blobs(ssh_key_lines(text)) & {k["blob"] for k in must})
    return ["Ansible logs in to this host as %s with the key %s, found today in %s;"
            " ssh_authorized_keys (%s mode) would leave %s without it and the next run could not"
            " log in. Add that key to %s's keys in ssh_authorized_keys, or connect with a key that"
            " stays" % (user, " or ".join("%s (%s)" % (k["fingerprint"], _SOURCES[k["source"]]) for k in must),
                        ", ".join(found_in), mode, user, user)]


_SOURCES = {"file": "the private key file Ansible is configured with", "agent": "ssh-agent",
            "identity": "an IdentityFile of ssh's configuration"}


class FilterModule(object):
    def filters(self):
        return {
            "ssh_is_public_key": ssh_is_public_key,
            "ssh_key_lines": ssh_key_lines,
            "ssh_password_users": ssh_password_users,
            "ssh_plan_problems": ssh_plan_problems,
            "ssh_lockout_problems": ssh_lockout_problems,
            "ssh_authorized_keys_files": ssh_authorized_keys_files,
            "ssh_key_fingerprint": ssh_key_fingerprint,
            "ssh_connection_keys": ssh_connection_keys,
            "ssh_connection_key_problems": ssh_connection_key_problems,
        }
