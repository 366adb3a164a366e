#!/usr/bin/python3
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Validate the whole sshd configuration as it will be, before it is installed or reloaded.

Installed by the rigkeeper ssh role as /usr/local/libexec/rigkeeper/sshd-check and run on the
managed host (as root: `sshd -T` reads the host keys):

    sshd-check --wanted JSON [--candidate LIVE=PATH]... [--candidates-json FILE|-]

It copies sshd_config and the drop-in directory to a scratch directory, puts each candidate in
place of the live file it will replace, points the Include lines at the copy, runs `sshd -t` on the
result, then `sshd -T -C user=U,host=localhost,addr=127.0.0.1[,lport=P]` for root and for every
user in the wanted document, and checks that each wanted setting is in effect, or something at
least as strict is (a Match block that tightens a value for one user is fine; one that loosens it
is not). Every difference is reported, with each line of the configuration that sets the keyword
(file, line, text, and the Match block it is in), not only the first. Exit status 0: safe.

The wanted document (JSON): {"settings": [[Keyword, value], ...], "users": [...], "ours": [file
names of the role's drop-ins], "lport": 22}. Keywords are written as in sshd_config; values are
compared the way `sshd -T` prints them.

The decisions (parsing, expected values, strictness, explanations) are pure functions below,
unit-tested in tests/unit/test_ssh_check.py; main() only does the I/O.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SSH_DIR = "/etc/ssh"
CONFIG = "/etc/ssh/sshd_config"
DROPIN_DIR = "/etc/ssh/sshd_config.d"
SSHD = "/usr/sbin/sshd"
SPEC = "host=localhost,addr=127.0.0.1"
MAX_DEPTH = 16

# Keywords that may appear several times and add up (sshd_config(5)): compared as a list.
MULTI = {"hostkey", "port", "listenaddress", "hostcertificate"}

# How `sshd -T` prints values that sshd_config spells otherwise.
_SPELLING = {
    ("permitrootlogin", "prohibit-password"): "without-password",
    ("allowtcpforwarding", "all"): "yes",
    ("allowstreamlocalforwarding", "all"): "yes",
}

# Strictness, weakest first: an effective value at or after the wanted one is as strict or more.
_ORDERS = {
    "permitrootlogin": ["yes", "without-password", "forced-commands-only", "no"],
    "passwordauthentication": ["yes", "no"],
    "kbdinteractiveauthentication": ["yes", "no"],
    "challengeresponseauthentication": ["yes", "no"],
    "permitemptypasswords": ["yes", "no"],
    "hostbasedauthentication": ["yes", "no"],
    "x11forwarding": ["yes", "no"],
    "allowagentforwarding": ["yes", "no"],
    "permittunnel": ["yes", "point-to-point", "ethernet", "no"],
    "gatewayports": ["yes", "clientspecified", "no"],
    "permituserenvironment": ["yes", "no"],
    "ignorerhosts": ["no", "shosts-only", "yes"],
    "strictmodes": ["no", "yes"],
    "compression": ["yes", "delayed", "no"],
    "usedns": ["yes", "no"],
}
# Forwarding: "local" and "remote" each sit between "yes" and "no" and are not ordered.
_FORWARDING = {"yes": 0, "local": 1, "remote": 1, "no": 2}
# Integers where a smaller value (but not 0, which means "no limit") is stricter.
_SMALLER_IS_STRICTER = {"maxauthtries", "logingracetime", "maxsessions"}

_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*?)\s*$")


def normalize(keyword, value):
    """(keyword, value) as `sshd -T` prints them: keyword lower case, booleans yes/no."""
    keyword = keyword.lower()
    value = str(value).strip()
    if value.lower() in ("yes", "no", "true", "false"):
        value = {"true": "yes", "false": "no"}.get(value.lower(), value.lower())
    return keyword, _SPELLING.get((keyword, value), value)


def expected_settings(settings):
    """{keyword: value or [values]} from [[Keyword, value], ...] (MULTI keywords as lists)."""
    wanted = {}
    for keyword, value in settings:
        keyword, value = normalize(keyword, value)
        if keyword in MULTI:
            wanted.setdefault(keyword, []).append(value)
        else:
            wanted.setdefault(keyword, value)
    return wanted


def effective_settings(text):
    """`sshd -T` output as {keyword: value or [values]}."""
    effective = {}
    for line in (text or "").splitlines():
        if " " not in line:
            continue
        keyword, value = line.split(" ", 1)
        if keyword in MULTI:
            effective.setdefault(keyword, []).append(value)
        else:
            effective[keyword] = value
    return effective


def at_least_as_strict(keyword, wanted, actual):
    """True when `actual` (as sshd -T prints it) is the wanted value or a stricter one."""
    if actual == wanted:
        return True
    if actual is None:
        return False
    if keyword in MULTI:
        return sorted(actual) == sorted(wanted)
    if keyword in _ORDERS:
        order = _ORDERS[keyword]
        if wanted in order and actual in order:
            return order.index(actual) >= order.index(wanted)
        return False
    if keyword in ("allowtcpforwarding", "allowstreamlocalforwarding"):
        if wanted in _FORWARDING and actual in _FORWARDING:
            if _FORWARDING[actual] == 1 and _FORWARDING[wanted] == 1:
                return False  # local vs remote: neither is stricter
            return _FORWARDING[actual] >= _FORWARDING[wanted]
        return False
    if keyword in _SMALLER_IS_STRICTER:
        try:
            a, w = int(actual), int(wanted)
        except ValueError:
            return False
        return 0 < a <= w or w == 0
    return False


def compare(wanted, effective):
    """[(keyword, wanted, actual)] for each wanted setting not in effect (nor a stricter one)."""
    problems = []
    for keyword, value in wanted.items():
        actual = effective.get(keyword)
        if not at_least_as_strict(keyword, value, actual):
            problems.append((keyword, value, actual))
    return problems


def _include_targets(args, files, ssh_dir):
    """The files an Include line reads, in the order sshd reads them (glob(3), sorted)."""
    targets = []
    for pattern in args.split():
        path = pattern if pattern.startswith("/") else os.path.join(ssh_dir, pattern)
        if any(ch in path for ch in "*?["):
            hidden_ok = os.path.basename(path).startswith(".")
            targets.extend(sorted(p for p in files if fnmatch.fnmatchcase(p, path)
                                  and os.path.dirname(p) == os.path.dirname(path)
                                  and (hidden_ok or not os.path.basename(p).startswith("."))))
        elif path in files:
            targets.append(path)
    return targets


def parse_tree(files, main=CONFIG, ssh_dir=SSH_DIR):
    """Every setting sshd reads, in order, following Include lines.

    files: {path: text} of the configuration (live paths). Returns a list of dicts:
    {file, line, keyword (lower case), value, text, match: None or "FILE:LINE: Match ..."}.
    A Match block lasts until the next Match or the end of the file it is in (OpenSSH reads an
    included file's Match blocks as closed at its end); an Include inside a Match block reads the
    included file inside that block.
    """
    out = []

    def walk(path, outer_match, depth):
        if depth > MAX_DEPTH:
            return
        match = outer_match
        for number, raw in enumerate(files.get(path, "").splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            found = _LINE.match(stripped)
            if not found:
                continue
            keyword, value = found.group(1).lower(), found.group(2)
            if keyword == "match":
                match = "%s:%d: %s" % (path, number, stripped)
                continue
            if keyword == "include":
                for target in _include_targets(value, files, ssh_dir):
                    walk(target, match, depth + 1)
                continue
            out.append({"file": path, "line": number, "keyword": keyword, "value": value,
                        "text": stripped, "match": match})

    walk(main, None, 0)
    return out


def _user_matches(patterns, user):
    """sshd's pattern list (match_pattern_list): a negated match wins, else any positive one."""
    positive = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(user, pattern.lstrip("!")):
            if negated:
                return False
            positive = True
    return positive


def match_may_apply(match, users):
    """Whether a Match line ('FILE:LINE: Match ...') can apply to one of `users`. Only User
    criteria are judged here; a block with any other criterion (Group, Address, ...) may apply."""
    criteria = match.split(": ", 1)[-1].split()[1:]
    if not criteria or criteria[0].lower() == "all":
        return True
    pairs = dict(zip((c.lower() for c in criteria[0::2]), criteria[1::2]))
    if set(pairs) - {"user"}:
        return True
    return any(_user_matches(pairs.get("user", ""), user) for user in users)


def explain(problem, tree, ours, specs):
    """One message for a setting not in effect: what sshd -T shows and the lines that make it so:
    a setting outside rigkeeper's drop-ins read before them (sshd keeps the first value), and
    Match blocks that can apply to the users concerned. Lines read after ours, which lose, and
    Match blocks for other users are left out; when nothing is left, every line is named."""
    keyword, wanted, actual = problem
    users = [spec.split(",", 1)[0].split("=", 1)[1] for spec in specs]

    def shown(v):
        return ", ".join(v) if isinstance(v, list) else ("(not set)" if v is None else v)

    head = "%s: sshd -T -C %s shows '%s %s', rigkeeper wants '%s %s' (or stricter)" % (
        keyword, " / ".join(specs), keyword, shown(actual), keyword, shown(wanted))
    entries = [(i, e) for i, e in enumerate(tree) if e["keyword"] == keyword]
    our_first = next((i for i, e in entries if os.path.basename(e["file"]) in ours and not e["match"]), None)
    others = [(i, e) for i, e in entries if os.path.basename(e["file"]) not in ours]
    culprits = [(i, e) for i, e in others
                if (e["match"] and match_may_apply(e["match"], users))
                or (not e["match"] and (our_first is None or i < our_first or keyword in MULTI))]
    lines = []
    for index, entry in culprits or others:
        where = "%s:%d '%s'" % (entry["file"], entry["line"], entry["text"])
        if entry["match"]:
            where += " inside '%s'" % entry["match"]
        elif our_first is not None and index < our_first:
            where += " (read before rigkeeper's drop-in)"
        lines.append(where)
    if lines:
        return head + "; set by " + "; ".join(lines)
    return head + "; no line outside rigkeeper's drop-ins sets it (sshd's default, or a file sshd reads that this check cannot see)"


def rewrite_includes(text, dropin_dir, scratch_dir, ssh_dir=SSH_DIR):
    """Point every Include at the drop-in directory to the scratch copy instead."""
    out = []
    for raw in text.splitlines(True):
        found = _LINE.match(raw.strip())
        if found and found.group(1).lower() == "include":
            indent = raw[: len(raw) - len(raw.lstrip())]
            args = []
            for pattern in found.group(2).split():
                path = pattern if pattern.startswith("/") else os.path.join(ssh_dir, pattern)
                if path.startswith(dropin_dir.rstrip("/") + "/"):
                    path = scratch_dir.rstrip("/") + path[len(dropin_dir.rstrip("/")):]
                    args.append(path)
                else:
                    args.append(pattern)
            raw = "%sInclude %s\n" % (indent, " ".join(args))
        out.append(raw)
    return "".join(out)


def specs(users, lport=None):
    """The connection specs checked: root first, then each user once."""
    seen, result = set(), []
    for user in ["root"] + list(users or []):
        if user and user not in seen:
            seen.add(user)
            spec = "user=%s,%s" % (user, SPEC)
            if lport:
                spec += ",lport=%s" % lport
            result.append(spec)
    return result


# --- I/O -------------------------------------------------------------------------------------

def _read_tree(config, dropin_dir):
    files = {}
    with open(config) as handle:
        files[config] = handle.read()
    if os.path.isdir(dropin_dir):
        for name in sorted(os.listdir(dropin_dir)):
            path = os.path.join(dropin_dir, name)
            if os.path.isfile(path):
                with open(path, errors="replace") as handle:
                    files[path] = handle.read()
    return files


def _run(argv):
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--wanted", required=True, help="JSON: settings, users, ours, lport")
    parser.add_argument("--candidate", action="append", default=[], metavar="LIVE=PATH")
    parser.add_argument("--candidates-json", metavar="FILE", help="JSON {live path: content}; - for stdin")
    parser.add_argument("--sshd", default=SSHD)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--dropin-dir", default=DROPIN_DIR)
    args = parser.parse_args(argv)

    wanted_doc = json.loads(args.wanted)
    files = _read_tree(args.config, args.dropin_dir)
    candidates = {}
    if args.candidates_json:
        source = sys.stdin if args.candidates_json == "-" else open(args.candidates_json)
        candidates.update(json.load(source))
    for item in args.candidate:
        live, path = item.split("=", 1)
        with open(path) as handle:
            candidates[live] = handle.read()
    for live in candidates:
        if live != args.config and os.path.dirname(live) != args.dropin_dir:
            print("sshd-check: %s is neither %s nor in %s" % (live, args.config, args.dropin_dir),
                  file=sys.stderr)
            return 2
    files.update(candidates)

    scratch = tempfile.mkdtemp(prefix="rigkeeper-sshd-check.")
    try:
        scratch_dir = os.path.join(scratch, "sshd_config.d")
        os.mkdir(scratch_dir)
        for path, text in files.items():
            target = os.path.join(scratch, "sshd_config") if path == args.config \
                else os.path.join(scratch_dir, os.path.basename(path))
            with open(target, "w") as handle:
                handle.write(rewrite_includes(text, args.dropin_dir, scratch_dir))
        scratch_config = os.path.join(scratch, "sshd_config")

        def live_paths(text):
            return text.replace(scratch_dir, args.dropin_dir).replace(scratch_config, args.config)

        tree = parse_tree(files, args.config)
        ours = set(wanted_doc.get("ours") or [])
        if ours and not any(os.path.basename(e["file"]) in ours for e in tree):
            print("%s does not read rigkeeper's drop-ins (%s): it has no Include of %s/*.conf"
                  % (args.config, ", ".join(sorted(ours)), args.dropin_dir), file=sys.stderr)
            return 1

        test = _run([args.sshd, "-t", "-f", scratch_config])
        if test.returncode != 0:
            sys.stderr.write(live_paths(test.stderr or test.stdout))
            return 1

        wanted = expected_settings(wanted_doc.get("settings") or [])
        by_problem = {}
        for spec in specs(wanted_doc.get("users"), wanted_doc.get("lport")):
            run = _run([args.sshd, "-T", "-C", spec, "-f", scratch_config])
            if run.returncode != 0:
                sys.stderr.write("sshd -T -C %s: %s" % (spec, live_paths(run.stderr)))
                return 1
            for problem in compare(wanted, effective_settings(run.stdout)):
                key = (problem[0], json.dumps(problem[2]))
                by_problem.setdefault(key, (problem, []))[1].append(spec.split(",", 1)[0])
        if by_problem:
            print("The effective sshd configuration would not be what rigkeeper wants; nothing was"
                  " changed. sshd keeps the first value it reads, and Match blocks override it for"
                  " the connections they match: a drop-in read before %s or a Match block cannot be"
                  " overridden by rigkeeper. Remove or change these lines, or set the role's"
                  " variable to the value you want:" % ", ".join(sorted(ours)), file=sys.stderr)
            for problem, users in by_problem.values():
                print("- " + explain(problem, tree, ours, users), file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
