"""gpu_power on the simulated rig: limits set now, back after a reboot (boot unit), back after an NVIDIA
package is reinstalled (apt hook), back after a new driver version and its reboot, and drift reported
by check mode. Every assertion reads the rig's real state (nvidia-smi, files, units, journal).

Tests run in file order and share the rig."""
import os
import subprocess
import sys

SCENARIO_DIR = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
PROJECT_DIR = os.environ["MOLECULE_PROJECT_DIRECTORY"]
RIG = "rk-" + os.environ["MOLECULE_SCENARIO_NAME"]
sys.path.insert(0, os.path.join(PROJECT_DIR, "tests", "sim"))
import simctl  # noqa: E402  (the simulator's reboot: container restart, wait for systemd)

GPU0, GPU1 = "00000000:01:00.0", "00000000:02:00.0"
WANTED = {GPU0: 350.0, GPU1: 360.0}
DEFAULTS = {GPU0: 450.0, GPU1: 450.0}
UNIT = "rigkeeper-gpu-power.service"
SCRIPT = "/usr/local/sbin/rigkeeper-gpu-power"
OLD, NEW = "580.82.07", "580.95.05"


def limits(host):
    out = host.check_output("nvidia-smi --query-gpu=pci.bus_id,power.limit --format=csv,noheader,nounits")
    return {bus: float(watts) for bus, watts in (line.split(", ") for line in out.splitlines())}


def query(host, field):
    return host.check_output(f"nvidia-smi --query-gpu={field} --format=csv,noheader").splitlines()


def set_limit(host, bus, watts):
    host.check_output(f"nvidia-smi -i {bus} -pl {watts}")


def unit_props(host, *names):
    out = host.check_output(f"systemctl show {UNIT} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in out.splitlines())


def journal_this_boot(host):
    """The unit's log from its current run only (the rig's journal spans the container's restarts)."""
    invocation = unit_props(host, "InvocationID")["InvocationID"]
    assert invocation, f"{UNIT} has not run"
    return host.check_output(f"journalctl _SYSTEMD_INVOCATION_ID={invocation} --no-pager -o cat")


def apt(host, args):
    res = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get -y -q {args} 2>&1")
    assert res.rc == 0, res.stdout[-3000:]
    return res.stdout


def playbook(name, *args):
    """Run a playbook of this scenario against the rig; returns (stdout, changed count from the recap)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
           "-i", os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory"),
           os.path.join(SCENARIO_DIR, name), *args]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    recap = [line for line in res.stdout.splitlines() if line.startswith(RIG) and "changed=" in line]
    assert recap, res.stdout[-2000:]
    return res.stdout, int(recap[-1].split("changed=")[1].split()[0])


def test_limits_set_and_persistence_on(host):
    assert limits(host) == WANTED
    assert query(host, "persistence_mode") == ["Enabled", "Enabled"]


def test_config_file(host):
    conf = host.file("/etc/rigkeeper/gpu-power.conf")
    assert conf.user == "root" and conf.mode == 0o644
    lines = [line for line in conf.content_string.splitlines() if line and not line.startswith("#")]
    assert lines == [f"{GPU0} 350", f"{GPU1} 360"]
    assert host.run(f"{SCRIPT} --check-config /etc/rigkeeper/gpu-power.conf").rc == 0


def test_boot_unit_enabled_and_ordered(host):
    assert host.service(UNIT).is_enabled
    props = unit_props(host, "After", "Wants", "Type", "RemainAfterExit")
    assert "nvidia-persistenced.service" in props["After"].split()
    assert "rigkeeper-acs-disable.service" in props["After"].split()
    assert "nvidia-persistenced.service" in props["Wants"].split()
    assert props["Type"] == "oneshot" and props["RemainAfterExit"] == "yes"


def test_apt_hook_installed(host):
    dump = host.check_output("apt-config dump DPkg::Post-Invoke")
    assert f"[ ! -x {SCRIPT} ] || {SCRIPT} --from-apt || true" in dump


def test_reboot_resets_limits_and_the_unit_restores_them(host):
    simctl.restart(RIG)
    assert limits(host) == WANTED
    props = unit_props(host, "ActiveState", "Result")
    assert props == {"ActiveState": "active", "Result": "success"}
    journal = journal_this_boot(host)
    # The unit, not anything else, brought them back at this boot (each reboot resets the fake GPUs).
    assert f"GPU {GPU0}: power limit 450.00 W -> 350 W" in journal
    assert f"GPU {GPU1}: power limit 450.00 W -> 360 W" in journal


def test_check_mode_reports_drift_and_changes_nothing(host):
    set_limit(host, GPU0, 400)
    out, changed = playbook("converge.yml", "--check")
    assert changed == 1, out[-3000:]
    assert "power limit drift" in out and f"{GPU0} 350.0" in out
    assert limits(host) == {GPU0: 400.0, GPU1: 360.0}, "check mode must not set limits"


def test_converge_repairs_drift(host):
    out, changed = playbook("converge.yml")
    assert changed == 1, out[-3000:]
    assert limits(host) == WANTED


def test_apt_hook_restores_limits_after_a_package_reinstall(host):
    # What an NVIDIA maintainer script that reloads the module or restarts persistenced does to the
    # limits within the same driver version: back to the defaults.
    for bus, watts in DEFAULTS.items():
        set_limit(host, bus, int(watts))
    assert limits(host) == DEFAULTS
    out = apt(host, "install --reinstall nvidia-utils-580")
    assert f"rigkeeper-gpu-power: GPU {GPU0}: power limit 450.00 W -> 350 W" in out
    assert limits(host) == WANTED
    assert f"GPU {GPU0}: power limit 450.00 W -> 350 W" in host.check_output(
        "journalctl -t rigkeeper-gpu-power --no-pager -o cat")


def test_new_driver_version_waits_for_the_reboot_then_the_unit_applies(host):
    assert query(host, "driver_version") == [OLD, OLD]
    host.check_output("rm -f /etc/apt/preferences.d/rk-test-driver-pin")
    out = apt(host, "install nvidia-driver-580")
    # A new version cannot run before the reboot: the hook says so, and apt still succeeds.
    assert "Driver/library version mismatch" in out
    assert "rigkeeper-gpu-power: the NVIDIA driver does not answer, no limit applied" in out
    assert host.run("nvidia-smi").rc != 0

    simctl.restart(RIG)
    assert query(host, "driver_version") == [NEW, NEW]
    assert limits(host) == WANTED
    assert f"GPU {GPU1}: power limit 450.00 W -> 360 W" in journal_this_boot(host)
