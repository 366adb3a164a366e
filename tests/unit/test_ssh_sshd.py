"""Unit tests of the ssh role's sshd decisions (plugins/filter/ssh_sshd.py): the host
probe's parser, the Include-first rewrite of sshd_config, ssh.socket's ListenStream values."""

import base64
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError


import ssh_sshd as s  # noqa: E402

INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf"
DEBIAN_CONFIG = """\

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
KbdInteractiveAuthentication no
X11Forwarding yes
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""


def _probe(**over):
    sections = {
        "kex": "sntrup761x25519-sha512@openssh.com\ncurve25519-sha256",
        "cipher": "chacha20-poly1305@openssh.com\naes256-gcm@openssh.com",
        "mac": "hmac-sha2-512-etm@openssh.com",
        "hostkeys": "ed25519 256 SHA256:abc root@rig (ED25519)\nrsa 2048 SHA256:def root@rig (RSA)\n"
                    "ecdsa 256 SHA256:ghi root@rig (ECDSA)",
        "moduli": "60 423",
        "generator": "",
        "socket_dropin": "",
        # systemctl show prints one block per unit, in the order asked, blank line between.
        "units": "Id=ssh.socket\nActiveState=inactive\nUnitFileState=disabled\n\n"
                 "Id=ssh.service\nActiveState=active\nUnitFileState=enabled",
        "sshd_config": base64.b64encode(DEBIAN_CONFIG.encode()).decode(),
        "effective": "rc=0\nport 22\npasswordauthentication yes",
    }
    sections.update(over)
    return "\n".join("## %s\n%s" % (name, text) for name, text in sections.items() if text is not None)


def test_probe_parse_reads_every_section():
    probe = s.ssh_probe_parse(_probe())
    assert probe["kex"] == ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"]
    assert probe["mac"] == ["hmac-sha2-512-etm@openssh.com"]
    assert probe["host_keys"] == {
        "ed25519": {"bits": 256, "fingerprint": "SHA256:abc"},
        "rsa": {"bits": 2048, "fingerprint": "SHA256:def"},
        "ecdsa": {"bits": 256, "fingerprint": "SHA256:ghi"},
    }
    assert probe["moduli"] == {"weak": 60, "strong": 423}
    assert (probe["socket_activated"], probe["service_active"], probe["socket_generator"]) == (False, True, "")
    assert probe["socket_dropin"] is False
    assert probe["sshd_config"] == DEBIAN_CONFIG
    assert (probe["effective_rc"], probe["effective_lines"]) == (0, ["port 22", "passwordauthentication yes"])


@pytest.mark.parametrize("over, key, expected", [
    # No moduli file: nothing to filter.
    ({"moduli": ""}, "moduli", None),
    # A key ssh-keygen cannot read counts as 0 bits (regenerated when it is the RSA key).
    ({"hostkeys": "rsa unreadable"}, "host_keys", {"rsa": {"bits": 0, "fingerprint": ""}}),
    # Socket activation: enabled or active socket unit.
    ({"units": "Id=ssh.socket\nActiveState=active\nUnitFileState=enabled\n\n"
               "Id=ssh.service\nActiveState=inactive\nUnitFileState=disabled"}, "socket_activated", True),
    ({"units": "Id=ssh.socket\nActiveState=active\nUnitFileState=enabled\n\n"
               "Id=ssh.service\nActiveState=inactive\nUnitFileState=disabled"}, "service_active", False),
    ({"socket_dropin": "/etc/systemd/system/ssh.socket.d/00-rigkeeper-listen.conf"}, "socket_dropin", True),
    ({"generator": "/usr/lib/systemd/system-generators/sshd-socket-generator"}, "socket_generator",
     "/usr/lib/systemd/system-generators/sshd-socket-generator"),
    # sshd -T failed (no /run/sshd, invalid config): rc kept, no lines believed.
    ({"effective": "rc=255\nMissing privilege separation directory: /run/sshd"}, "effective_lines", []),
    ({"effective": "rc=255\nMissing privilege separation directory: /run/sshd"}, "effective_rc", 255),
])
def test_probe_parse_cases(over, key, expected):
    assert s.ssh_probe_parse(_probe(**over))[key] == expected


def test_probe_parse_refuses_output_that_is_not_the_probes():
    with pytest.raises(AnsibleFilterError):
        s.ssh_probe_parse("bash: ssh: command not found")
    with pytest.raises(AnsibleFilterError):
        s.ssh_probe_parse(None)


@pytest.mark.parametrize("text, expected", [
    # Debian's file: only comments above the Include, which is its first setting: untouched.
    (DEBIAN_CONFIG, DEBIAN_CONFIG),
    # A setting above the Include would win over every drop-in: the Include moves to the top.
    ("PasswordAuthentication yes\n" + INCLUDE + "\nX11Forwarding yes\n",
     INCLUDE + "\nPasswordAuthentication yes\nX11Forwarding yes\n"),
    # Spacing differs but it is the same line; a copy inside a Match block stays where it is.
    ("Port 22\nInclude   /etc/ssh/sshd_config.d/*.conf\nMatch User x\n  " + INCLUDE + "\n",
     INCLUDE + "\nPort 22\nMatch User x\n  " + INCLUDE + "\n"),
    # No Include at all: added at the top.
    ("X11Forwarding yes\n", INCLUDE + "\nX11Forwarding yes\n"),
    # An Include of another directory is not ours and stays.
    ("Include /etc/ssh/other/*.conf\n" + INCLUDE + "\n",
     INCLUDE + "\nInclude /etc/ssh/other/*.conf\n"),
    # The Include was the last line, without a final newline.
    ("PermitRootLogin yes\n" + INCLUDE, INCLUDE + "\nPermitRootLogin yes\n"),
])
def test_include_first(text, expected):
    assert s.ssh_include_first(text, INCLUDE) == expected
    # Idempotent: a second pass changes nothing.
    assert s.ssh_include_first(expected, INCLUDE) == expected


@pytest.mark.parametrize("port, addresses, streams", [
    (22, [], []),
    (2222, [], ["2222"]),
    (22, ["192.0.2.10"], ["192.0.2.10:22"]),
    (2222, ["192.0.2.10", "2001:db8::1"], ["192.0.2.10:2222", "[2001:db8::1]:2222"]),
    (2222, ["[2001:db8::1]:2200", "192.0.2.10:2201"], ["[2001:db8::1]:2200", "192.0.2.10:2201"]),
    ("2222", ["192.0.2.10", "192.0.2.10"], ["192.0.2.10:2222"]),
])
def test_socket_listen_streams(port, addresses, streams):
    assert s.ssh_socket_listen_streams(port, addresses) == streams


@pytest.mark.parametrize("port, addresses, message", [
    (2222, ["rig.example"], "is not an IP address"),
    (0, [], "out of range"),
    ("ssh", [], "not a number"),
])
def test_socket_listen_streams_refusals(port, addresses, message):
    with pytest.raises(AnsibleFilterError, match=message):
        s.ssh_socket_listen_streams(port, addresses)


def test_check_users():
    assert s.ssh_check_users(["alice"], [{"user": "bob"}, {"user": "alice"}], "rkadmin") == [
        "root", "alice", "bob", "rkadmin"]
    assert s.ssh_check_users([], [], "") == ["root"]
