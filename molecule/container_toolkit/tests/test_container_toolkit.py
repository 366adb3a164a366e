"""container_toolkit on the simulated rig, with a real dockerd running inside it.

Before converge (prepare.yml) the rig had the 580 driver, an owner's daemon.json (journald log
driver, a registry mirror, a data-root, vfs, another runtime) and an old nvidia-docker.list of the
same repository with another Signed-By. Converge asked for toolkit 1.17.8-1 (1.18.0-1 is newer in
the repository), NVML workaround "both" and CDI. The tests that run the playbook again come last;
each leaves the rig converged again, the very last one with other wants.
"""

import json
import re

import pytest

DAEMON_JSON = "/etc/docker/daemon.json"
OWNER_KEYS = {
    "log-driver": "journald",
    "registry-mirrors": ["https://mirror.example.org"],
    "data-root": "/var/lib/docker-rig",
    "storage-driver": "vfs",
}
OWNER_RUNTIME = {"runc-debug": {"path": "runc", "runtimeArgs": ["--debug"]}}
PACKAGES = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1"]
PINNED = "1.17.8-1"
KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
STALE = "/etc/apt/sources.list.d/nvidia-docker.list"
PREFS = "/etc/apt/preferences.d/rigkeeper-nvidia-container-toolkit.pref"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
CDI_RECORD = "/etc/cdi/.nvidia.yaml.driver-version"
UDEV_RULE = "/etc/udev/rules.d/71-nvidia-dev-char.rules"


def daemon_json(host):
    return json.loads(host.file(DAEMON_JSON).content_string)


def docker_info(host):
    out = host.check_output("docker info 2>/dev/null")
    runtimes = re.search(r"(?m)^\s*Runtimes:(.*)$", out).group(1).split()
    default = re.search(r"(?m)^\s*Default Runtime:\s*(\S+)", out).group(1)
    return out, runtimes, default


def runtime_log(host):
    log = host.file("/run/rigkeeper-sim/runtime.log")
    return log.content_string if log.exists else ""


@pytest.fixture(scope="module")
def busybox_image(host):
    """A one-file image built inside the rig (no registry is reachable): busybox-static."""
    host.run_expect([0], "mkdir -p /tmp/rk-image/bin && cp /bin/busybox /tmp/rk-image/bin/busybox")
    host.run_expect([0], "tar -C /tmp/rk-image -c . | docker import - rk-busybox")
    return "rk-busybox"


def run_container(host, image, *args):
    """Create and start a container; returns (its id, its output)."""
    cid = host.check_output(f"docker create {' '.join(args)} {image} /bin/busybox echo from-the-container")
    try:
        out = host.check_output(f"docker start --attach {cid}")
    finally:
        host.run(f"docker rm --force {cid}")
    return cid, out


# --- State after converge ---------------------------------------------------------------------

def test_docker_from_the_distribution_is_running(host):
    assert host.package("docker.io").is_installed
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled


def test_toolkit_pinned_below_the_newest_and_held(host):
    for name in PACKAGES:
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == PINNED, name
    held = host.check_output("dpkg --get-selections " + " ".join(PACKAGES)).split()
    assert held[1::2] == ["hold"] * 4
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "1.18.0-1" in policy, "the newer version must be available, or the pin proves nothing"
    assert re.search(r"Candidate: 1\.17\.8-1", policy)
    prefs = host.file(PREFS).content_string
    assert "Package: " + " ".join(PACKAGES) in prefs and "Pin: version 1.17.8-1" in prefs


def test_repository_source_keyring_and_old_list(host):
    lines = [ln for ln in host.file(SOURCES).content_string.splitlines() if ln and not ln.startswith("#")]
    assert lines == [f"deb [signed-by={KEYRING}] file:///srv/rigkeeper-sim/repo/libnvidia-container /"]
    assert not host.file(KEYRING).content.startswith(b"-----BEGIN")
    # The old list's entry is commented out in place, and the file was backed up first.
    stale = host.file(STALE).content_string.splitlines()
    assert [ln for ln in stale if ln.startswith("deb")] == []
    assert any(ln.startswith("# disabled by rigkeeper: deb [signed-by=/usr/share/keyrings/nvidia-docker.gpg]")
               for ln in stale)
    assert "nvidia-docker.gpg" in host.file("/var/backups/rigkeeper/apt/nvidia-docker.list").content_string
    # With the old list gone apt reads its sources again ("Conflicting values set for option
    # Signed-By" made every apt command fail).
    out = host.run("apt-cache policy nvidia-container-toolkit")
    assert out.rc == 0 and "Conflicting" not in out.stderr


def test_daemon_json_keeps_the_owner_keys_and_adds_nvidia(host):
    cfg = daemon_json(host)
    for key, value in OWNER_KEYS.items():
        assert cfg[key] == value, key
    assert cfg["runtimes"]["runc-debug"] == OWNER_RUNTIME["runc-debug"]
    assert cfg["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert cfg["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert cfg["features"] == {"cdi": True}
    assert "default-runtime" not in cfg
    # The owner's file was backed up before it was rewritten.
    backups = host.check_output(f"ls {DAEMON_JSON}.*~").split()
    assert len(backups) == 1
    original = json.loads(host.file(backups[0]).content_string)
    assert original == {**OWNER_KEYS, "runtimes": OWNER_RUNTIME}


def test_docker_runs_with_the_merged_configuration(host):
    out, runtimes, default = docker_info(host)
    assert "nvidia" in runtimes and "runc-debug" in runtimes
    assert default == "runc"
    assert re.search(r"(?m)^\s*Logging Driver: journald$", out)
    assert re.search(r"(?m)^\s*Docker Root Dir: /var/lib/docker-rig$", out)
    assert re.search(r"(?m)^\s*Cgroup Driver: cgroupfs$", out)
    assert "https://mirror.example.org/" in out


def test_a_container_starts_with_the_nvidia_runtime(host, busybox_image):
    cid, out = run_container(host, busybox_image, "--runtime=nvidia")
    assert out.strip() == "from-the-container"
    # The (simulated) nvidia-container-runtime logged the OCI calls for this container.
    calls = [ln for ln in runtime_log(host).splitlines() if cid in ln]
    assert any(" nvidia-container-runtime " in ln and " create " in ln for ln in calls), calls


def test_a_container_without_runtime_flag_does_not_use_nvidia(host, busybox_image):
    cid, out = run_container(host, busybox_image)
    assert out.strip() == "from-the-container"
    assert cid not in runtime_log(host)


def test_nvml_workaround_udev_rule_and_links(host):
    rule = host.file(UDEV_RULE)
    assert rule.mode == 0o644
    assert ('RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"'
            in rule.content_string)
    assert 'DEVPATH=="/bus/pci/drivers/nvidia"' in rule.content_string
    # The handler created the links once (2 GPUs, nvidiactl, nvidia-modeset).
    for devno, node in (("195:0", "nvidia0"), ("195:1", "nvidia1"), ("195:255", "nvidiactl"),
                        ("195:254", "nvidia-modeset")):
        link = host.file(f"/dev/char/{devno}")
        assert link.is_symlink and link.linked_to == f"/dev/{node}"


def test_cdi_spec_for_the_installed_driver(host):
    driver = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").splitlines()[0]
    assert host.file(CDI_RECORD).content_string == driver + "\n"
    spec = host.file(CDI_SPEC).content_string
    assert "kind: nvidia.com/gpu" in spec
    names = re.findall(r'(?m)^\s*name: "?([^"\n]+)"?$', spec)
    assert names == ["0", "1", "all"]


# --- Runs against a changed rig, or with other wants ------------------------------------------

def test_broken_daemon_json_is_refused_before_any_change(host, playbook):
    original = host.file(DAEMON_JSON).content_string
    host.run_expect([0], f"printf '%s' '{{\"log-driver\": \"journald\",' > {DAEMON_JSON}")
    try:
        # Another toolkit version: had anything run, the packages would have moved.
        run = playbook({"container_toolkit_version": "1.18.0-1"})
        assert run.returncode != 0 and run.changed == 0
        assert "daemon.json" in run.output or "Expecting" in run.output
        assert host.file(DAEMON_JSON).content_string == '{"log-driver": "journald",'
        assert host.package("nvidia-container-toolkit").version == PINNED
    finally:
        host.run_expect([0], f"cat > {DAEMON_JSON} <<'EOF'\n{original}EOF")
    assert daemon_json(host)["runtimes"]["nvidia"]


def test_check_mode_reports_a_removed_runtime_and_converge_restores_it(host, playbook):
    """Someone removes the runtime by hand (and restarts Docker); --check reports it and writes
    nothing; a run restores it, keeps the owner's keys and restarts Docker. The CDI record is made
    stale at the same time: the run regenerates the spec for the installed driver."""
    cfg = daemon_json(host)
    del cfg["runtimes"]["nvidia"]
    host.run_expect([0], f"cat > {DAEMON_JSON} <<'EOF'\n{json.dumps(cfg, indent=2)}\nEOF")
    host.run_expect([0], "systemctl restart docker")
    host.run_expect([0], f"echo 535.00.00 > {CDI_RECORD} && touch -d '2000-01-01' {CDI_SPEC}")

    check = playbook(check=True)
    assert check.returncode == 0, check.output
    assert check.changed >= 2
    assert "Merge the nvidia runtime into daemon.json" in check.output
    assert '"nvidia"' in check.output  # the diff shows the runtime coming back
    assert "nvidia" not in daemon_json(host)["runtimes"]
    assert "nvidia" not in docker_info(host)[1]

    run = playbook()
    assert run.returncode == 0, run.output
    cfg = daemon_json(host)
    assert cfg["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert all(cfg[k] == v for k, v in OWNER_KEYS.items())
    assert "nvidia" in docker_info(host)[1]
    assert host.file(CDI_RECORD).content_string.startswith("580.")
    assert host.file(CDI_SPEC).mtime.year > 2000  # generated again, not the stale one


def started_at(host, name):
    return host.check_output(f"docker inspect --format '{{{{.State.StartedAt}}}}' {name}")


def test_a_restart_needing_change_is_refused_while_a_container_runs(host, playbook, busybox_image):
    """log-opts is not a key moby's reload applies: the run needs a restart, which would stop the
    running container (live-restore off). Refused before daemon.json changes."""
    text = host.file(DAEMON_JSON).content_string
    host.run_expect([0], f"docker run -d --name rk-job {busybox_image} /bin/busybox sleep 100000")
    try:
        started = started_at(host, "rk-job")
        pid = host.check_output("systemctl show -P MainPID docker")
        run = playbook({"container_toolkit_daemon_options": {"log-opts": {"max-size": "10m"}}})
        assert run.returncode != 0
        assert host.file(DAEMON_JSON).content_string == text
        assert host.check_output("docker inspect --format '{{.State.Running}}' rk-job") == "true"
        assert started_at(host, "rk-job") == started
        assert host.check_output("systemctl show -P MainPID docker") == pid
        # The refusal names the container and the ways out (the state above is what proves it).
        assert "rk-job" in run.output and "container_toolkit_docker_restart_force" in run.output
    finally:
        host.run("docker rm --force rk-job")


def test_a_candidate_docker_refuses_is_rolled_back(host, playbook):
    """Debian 12's dockerd (20.10) has no --validate: a key it does not know passes the JSON check,
    and dockerd refuses to start on it. The previous file must come back, Docker run on it again,
    and the run fail."""
    text = host.file(DAEMON_JSON).content_string
    assert "--validate" not in host.run("dockerd --help").stdout, "this test is for a dockerd without --validate"
    run = playbook({"container_toolkit_daemon_options": {"rk-no-such-option": True}})
    assert run.returncode != 0
    assert host.file(DAEMON_JSON).content_string == text
    assert host.service("docker").is_running
    assert "nvidia" in docker_info(host)[1]
    # dockerd did see the candidate (and refused it): the rollback was exercised, not skipped.
    journal = host.check_output("journalctl -u docker --no-pager -n 200")
    assert "rk-no-such-option" in journal
    assert "Docker did not come back" in run.output and "was put back" in run.output and "it runs again" in run.output


def test_default_runtime_and_pin_released(host, playbook, busybox_image):
    """Last: other wants. nvidia as the default runtime, no version pin: the pin and holds go,
    the packages stay, the owner's keys stay, and a second run changes nothing."""
    wants = {"container_toolkit_default_runtime": True, "container_toolkit_version": None}
    run = playbook(wants)
    assert run.returncode == 0, run.output
    assert daemon_json(host)["default-runtime"] == "nvidia"
    assert docker_info(host)[2] == "nvidia"
    cid, out = run_container(host, busybox_image)
    assert out.strip() == "from-the-container"
    assert any(cid in ln and " create " in ln for ln in runtime_log(host).splitlines())
    assert not host.file(PREFS).exists
    assert host.check_output("dpkg --get-selections " + " ".join(PACKAGES)).split()[1::2] == ["install"] * 4
    assert all(daemon_json(host)[k] == v for k, v in OWNER_KEYS.items())
    again = playbook(wants)
    assert again.returncode == 0 and again.changed == 0, again.output


def test_toolkit_118_uses_nvidia_cdi_refresh_instead_of_its_own_spec(host, playbook):
    """Toolkit 1.18 ships nvidia-cdi-refresh.path/.service: they stay enabled and make
    /var/run/cdi/nvidia.yaml; the spec rigkeeper generated for 1.17 goes (two specs naming the same
    devices conflict)."""
    run = playbook({"container_toolkit_version": "1.18.0-1"})
    assert run.returncode == 0, run.output
    assert host.package("nvidia-container-toolkit-base").version == "1.18.0-1"
    for unit in ("nvidia-cdi-refresh.path", "nvidia-cdi-refresh.service"):
        assert host.check_output(f"systemctl is-enabled {unit}") == "enabled", unit
    assert host.check_output("systemctl is-active nvidia-cdi-refresh.path") == "active"
    spec = host.file("/var/run/cdi/nvidia.yaml")
    assert spec.exists and "kind: nvidia.com/gpu" in spec.content_string
    assert not host.file(CDI_SPEC).exists and not host.file(CDI_RECORD).exists
    assert daemon_json(host)["features"] == {"cdi": True}
