"""The ssh role on a socket-activated sshd (ssh.socket), moving it from port 22 to 2222 while
Ansible is connected through it: asserted from outside the rig and on the rig's units and files."""

import pytest

from conftest import login

SOCKET_DROPIN = "/etc/systemd/system/ssh.socket.d/00-rigkeeper-listen.conf"


def units(host):
    out = host.check_output("systemctl show -p Id -p UnitFileState -p ActiveState -p Listen ssh.socket ssh.service")
    return [dict(line.split("=", 1) for line in block.splitlines()) for block in out.split("\n\n")]


def ports(host, user="rkadmin"):
    out = host.check_output("/usr/sbin/sshd -T -C user=%s,host=localhost,addr=127.0.0.1" % user)
    return [line.split()[1] for line in out.splitlines() if line.startswith("port ")]


def test_sshd_is_still_socket_activated(host):
    socket, service = units(host)
    assert (socket["UnitFileState"], socket["ActiveState"]) == ("enabled", "active")
    assert service["UnitFileState"] == "disabled"


def test_the_socket_listens_on_the_new_port_only(host):
    socket, _ = units(host)
    assert socket["Listen"] == "[::]:2222 (Stream)"


def test_debian_path_a_listenstream_dropin_without_a_generator(host):
    # No Ubuntu generator on Debian 12: the role wrote the socket's addresses itself.
    assert not host.file("/usr/lib/systemd/system-generators/sshd-socket-generator").exists
    lines = [l for l in host.file(SOCKET_DROPIN).content_string.splitlines() if l and not l.startswith("#")]
    assert lines == ["[Socket]", "ListenStream=", "ListenStream=2222"]


@pytest.mark.parametrize("user", ["root", "rkadmin"])
def test_sshd_T_shows_the_port(host, user):
    assert ports(host, user) == ["2222"]


def test_a_login_on_the_new_port_works_from_outside():
    run = login(2222, "id", "-un")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "rkadmin"


def test_the_old_port_takes_no_login():
    run = login(22, "true")
    assert run.returncode == 255
    assert "rkadmin" not in run.stdout


def test_the_runs_own_connection_outlived_the_move(host):
    """converge.yml's last task wrote this through the run's first connection, after the role's
    handlers had moved ssh.socket: that connection came in on port 22, the socket was on 2222."""
    note = dict(line.split("=", 1) for line in host.file("/root/rk-after-port-change").content_string.splitlines())
    client, client_port, server, server_port = note["SSH_CONNECTION"].split()
    assert server_port == "22"
    assert note["LISTEN"] == "[::]:2222 (Stream)"


def test_a_port_sshd_cannot_take_is_rolled_back(host, converge):
    """Port 2223 is taken inside the rig: ssh.socket cannot bind it, the run fails saying so,
    puts the previous files back and sshd keeps answering on 2222."""
    host.run_expect([0], "systemd-run --unit rk-port-squatter python3 -m http.server --bind :: 2223")
    try:
        host.run_expect([0], "for i in $(seq 50); do ss -ltn | grep -q ':2223 ' && exit 0; sleep 0.1; done; exit 1")
        run = converge({"ssh_port": 2223})
        assert run.returncode != 0
        assert "sshd did not answer on port 2223 after the listen change" in run.output
        assert "The previous listen configuration was put back" in run.output
        socket, _ = units(host)
        assert (socket["ActiveState"], socket["Listen"]) == ("active", "[::]:2222 (Stream)")
        assert "ListenStream=2222" in host.file(SOCKET_DROPIN).content_string
        # The rollback stopped sshd; this login starts it from the socket again (and with it
        # /run/sshd, which sshd -T needs).
        assert login(2222, "true").returncode == 0
        assert ports(host) == ["2222"]
    finally:
        host.run("systemctl stop rk-port-squatter")
