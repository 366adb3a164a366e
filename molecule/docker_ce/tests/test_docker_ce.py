"""docker_ce: a rig with Docker CE from Docker's (simulated) repository and a long-running
container (prepare.yml). Converge ran container_toolkit with the defaults (source "keep").

Each test asserts on the rig: dpkg's database, `docker inspect`, dockerd's PID, daemon.json. The
tests that run the playbook again come last; each must leave the engine, the file and the
container as they were.
"""

import json

ENGINE = "5:26.1.5-1~ubuntu.24.04~noble"
CONTAINERD = "1.7.24-1"
DAEMON_JSON = "/etc/docker/daemon.json"
NVIDIA = {"path": "nvidia-container-runtime", "args": []}


def before(host):
    return json.loads(host.file("/root/rk-before.json").content_string)


def container(host, name="rk-long"):
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


def dockerd_pid(host):
    return host.check_output("systemctl show -P MainPID docker").strip()


def live(host):
    return json.loads(host.check_output("docker info --format '{{json .}}'"))


def assert_untouched(host, daemon_json_text):
    """The engine, its container and daemon.json as they were before a refused run."""
    assert host.file(DAEMON_JSON).content_string == daemon_json_text
    was = before(host)
    c = container(host)
    assert c["Id"] == was["id"] and c["State"]["Running"] and c["State"]["StartedAt"] == was["started"]
    assert dockerd_pid(host) == was["dockerd_pid"], "dockerd was restarted"
    assert host.package("docker-ce").version == ENGINE and not host.package("docker.io").is_installed


# --- After converge ---------------------------------------------------------------------------

def test_docker_ce_kept_at_its_versions_and_docker_io_not_installed(host):
    for name, version in (("docker-ce", ENGINE), ("docker-ce-cli", ENGINE), ("containerd.io", CONTAINERD),
                          ("docker-buildx-plugin", "0.16.1-1~ubuntu.24.04~noble"),
                          ("docker-compose-plugin", "2.29.1-1~ubuntu.24.04~noble")):
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == version, name
    for name in ("docker.io", "containerd", "runc", "docker-cli"):
        assert not host.package(name).is_installed, name
    # The owner's source list is the owner's: the role did not write its own.
    assert host.file("/etc/apt/sources.list.d/docker.list").content_string == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] file:///srv/rigkeeper-sim/repo/docker noble stable\n")
    assert host.service("docker").is_running and host.service("containerd").is_running


def test_the_running_container_was_never_stopped(host):
    was = before(host)
    c = container(host)
    assert c["Id"] == was["id"]
    assert c["State"]["Running"] is True and c["RestartCount"] == 0
    assert c["State"]["StartedAt"] == was["started"], "the container was restarted"


def test_nvidia_runtime_registered_by_a_reload_not_a_restart(host):
    info = live(host)
    assert "nvidia" in info["Runtimes"]
    assert info["DefaultRuntime"] == "runc"
    # Same dockerd process as before the role: a SIGHUP, not a restart.
    assert dockerd_pid(host) == before(host)["dockerd_pid"]
    cfg = json.loads(host.file(DAEMON_JSON).content_string)
    assert cfg == {"storage-driver": "vfs", "log-driver": "json-file", "runtimes": {"nvidia": NVIDIA}}
    # The engine answers as Docker 26.1.5 (the simulator's binaries).
    assert info["ServerVersion"].startswith("26.1.5")


def test_a_container_runs_with_the_nvidia_runtime(host):
    cid = host.check_output("docker create --network none --runtime=nvidia rk-busybox /bin/busybox echo from-the-container")
    try:
        assert host.check_output(f"docker start --attach {cid}").strip() == "from-the-container"
    finally:
        host.run(f"docker rm --force {cid}")
    log = host.file("/run/rigkeeper-sim/runtime.log").content_string
    assert any(cid in ln and " create " in ln for ln in log.splitlines())


# --- Runs that must refuse, leaving everything as it was --------------------------------------

def test_an_unknown_key_is_refused_by_dockerd_validate(host, playbook):
    """Forced, so that the restart guard does not stop the run first: only dockerd --validate stands
    between the bad key and a Docker that would not start."""
    text = host.file(DAEMON_JSON).content_string
    backups = host.run(f"ls {DAEMON_JSON}.*~").stdout.split()
    run = playbook({"container_toolkit_daemon_options": {"rk-no-such-option": True},
                    "container_toolkit_docker_restart_force": True})
    assert run.returncode != 0
    assert_untouched(host, text)
    assert "refused by its check (dockerd --validate)" in run.output and "rk-no-such-option" in run.output
    # ansible's copy backs the live file up before it runs the check: a new backup may be left, and it
    # must be the live file itself.
    for new in set(host.run(f"ls {DAEMON_JSON}.*~").stdout.split()) - set(backups):
        assert host.file(new).content_string == text


def test_a_restart_needing_change_is_refused_while_the_container_runs(host, playbook):
    text = host.file(DAEMON_JSON).content_string
    run = playbook({"container_toolkit_daemon_options": {"log-opts": {"max-size": "10m"}}})
    assert run.returncode != 0
    assert_untouched(host, text)
    assert "rk-long" in run.output and "log-opts" in run.output
    assert "log-opts" not in json.loads(text)


def test_a_swap_to_docker_io_is_refused_unasked(host, playbook):
    text = host.file(DAEMON_JSON).content_string
    run = playbook({"container_toolkit_docker_source": "distro"})
    assert run.returncode != 0
    assert "docker-ce " + ENGINE in run.output and "container_toolkit_docker_replace" in run.output
    assert_untouched(host, text)
    assert host.package("containerd.io").version == CONTAINERD
