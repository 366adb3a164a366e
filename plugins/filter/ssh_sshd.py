# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""Decisions of the ssh role about sshd itself, as pure functions: what the host probe found, how
sshd_config must change so that its Include of the drop-ins comes first, and where ssh.socket
must listen.

The role applies these decisions; it does not make them in Jinja. No Ansible state is read here.
"""

from __future__ import annotations

import base64
import ipaddress
import re

from ansible.errors import AnsibleFilterError

_SECTION = re.compile(r"^## (\S+)$")
_SETTING = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*?)\s*$")
# `ssh-keygen -l`: "3072 SHA256:... comment (RSA)".
_KEYGEN_L = re.compile(r"^(\d+)\s+(\S+)\s")


def _sections(text):
    sections, name = {}, None
    for line in (text or "").splitlines():
        found = _SECTION.match(line)
        if found:
            name = found.group(1)
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return sections


def ssh_probe_parse(stdout):
    """The host probe's output (tasks/probe.yml) as data.

    Returns {kex, cipher, mac: [names]; host_keys: {type: {bits, fingerprint}}; moduli: None (no
    file) or {weak, strong}; socket_generator: path or ''; socket_dropin: whether the role's
    ssh.socket drop-in exists; socket_activated, service_active: bool;
    sshd_config: text or None; effective_rc: int; effective_lines: [sshd -T lines]}.
    """
    if not isinstance(stdout, str):
        raise AnsibleFilterError("ssh_probe_parse: expected the probe's stdout")
    s = _sections(stdout)
    for required in ("kex", "cipher", "mac", "units"):
        if required not in s:
            raise AnsibleFilterError("ssh_probe_parse: the probe printed no '%s' section" % required)

    def nonblank(name):
        return [line for line in s.get(name, []) if line.strip()]

    host_keys = {}
    for line in nonblank("hostkeys"):
        kind, _sep, rest = line.partition(" ")
        found = _KEYGEN_L.match(rest)
        host_keys[kind] = {"bits": int(found.group(1)), "fingerprint": found.group(2)} if found \
            else {"bits": 0, "fingerprint": ""}
    moduli = None
    if nonblank("moduli"):
        weak, strong = (nonblank("moduli")[0].split() + ["0", "0"])[:2]
        moduli = {"weak": int(weak), "strong": int(strong)}
    # systemctl show: one block per unit, in the order asked (socket, then service).
    units = "\n".join(s["units"]).split("\n\n")
    socket_block = units[0].splitlines() if units else []
    service_block = units[1].splitlines() if len(units) > 1 else []
    config = None
    if nonblank("sshd_config"):
        config = base64.b64decode("".join(nonblank("sshd_config"))).decode("utf-8", "replace")
    effective = s.get("effective", [])
    rc = 1
    if effective and effective[0].startswith("rc="):
        rc = int(effective[0][3:])
        effective = effective[1:]
    return {
        "kex": " ".join(s["kex"]).split(),
        "cipher": " ".join(s["cipher"]).split(),
        "mac": " ".join(s["mac"]).split(),
        "host_keys": host_keys,
        "moduli": moduli,
        "socket_generator": (nonblank("generator") or [""])[0],
        "socket_dropin": bool(nonblank("socket_dropin")),
        "socket_activated": "UnitFileState=enabled" in socket_block or "ActiveState=active" in socket_block,
        "service_active": "ActiveState=active" in service_block,
        "sshd_config": config,
        "effective_rc": rc,
        "effective_lines": effective if rc == 0 else [],
    }


def ssh_include_first(text, include_line):
    """sshd_config with `include_line` as its first setting.

    sshd keeps the first value it reads, so a setting above the Include would beat the drop-ins.
    When the first setting is already that Include, the text comes back unchanged; otherwise every
    copy of the line outside Match blocks is removed and the line is put at the very top (also
    when it was missing).
    """
    if text is None:
        raise AnsibleFilterError("ssh_include_first: no sshd_config text")
    want = include_line.split()
    lines = text.splitlines(True)
    first_setting = None
    in_match = False
    copies = []
    for index, line in enumerate(lines):
        found = _SETTING.match(line.strip()) if line.strip() and not line.strip().startswith("#") else None
        if not found:
            continue
        if first_setting is None:
            first_setting = index
        keyword = found.group(1).lower()
        if keyword == "match":
            in_match = True
        elif not in_match and keyword == "include" and line.split() == want:
            copies.append(index)
    if copies and copies[0] == first_setting:
        return text
    kept = [line for index, line in enumerate(lines) if index not in copies]
    return include_line + "\n" + "".join(kept)


def ssh_socket_listen_streams(port, addresses):
    """systemd ListenStream= values for ssh.socket (Debian's way: a drop-in, see README.Debian),
    from ssh_port and ssh_listen_addresses. [] when it is the default (port 22, every address):
    the packaged unit already listens there and no drop-in is needed."""
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise AnsibleFilterError("ssh_socket_listen_streams: port %r is not a number" % (port,))
    if not 0 < port < 65536:
        raise AnsibleFilterError("ssh_socket_listen_streams: port %d is out of range" % port)
    addresses = list(addresses or [])
    if not addresses:
        return [] if port == 22 else [str(port)]
    streams = []
    for address in addresses:
        address = str(address).strip()
        if address.startswith("["):
            host, _sep, rest = address[1:].partition("]")
            stream = "[%s]:%s" % (host, rest[1:] if rest.startswith(":") else port)
            _ip(host, address)
        elif address.count(":") == 1:
            host, _sep, own_port = address.partition(":")
            _ip(host, address)
            stream = "%s:%s" % (host, own_port)
        else:
            kind = _ip(address, address)
            stream = ("[%s]:%d" if kind == 6 else "%s:%d") % (address, port)
        if stream not in streams:
            streams.append(stream)
    return streams


def _ip(host, original):
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        raise AnsibleFilterError(
            "ssh_listen_addresses: %r is not an IP address; with socket activation systemd listens"
            " on ssh.socket's ListenStream=, which takes numeric addresses only" % original)


def ssh_check_users(login_users, keys_plan, connection_user=None):
    """The accounts whose effective configuration is checked (sshd -T -C user=...): root, the
    login users, the users in ssh_authorized_keys and the user Ansible connects as."""
    users = ["root"] + list(login_users or []) + [e.get("user") for e in (keys_plan or [])]
    if connection_user:
        users.append(connection_user)
    seen, result = set(), []
    for user in users:
        if user and user not in seen:
            seen.add(user)
            result.append(user)
    return result


class FilterModule(object):
    def filters(self):
        return {
            "ssh_probe_parse": ssh_probe_parse,
            "ssh_include_first": ssh_include_first,
            "ssh_socket_listen_streams": ssh_socket_listen_streams,
            "ssh_check_users": ssh_check_users,
        }
