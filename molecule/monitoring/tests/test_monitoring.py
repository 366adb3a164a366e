"""The host's self-audit on a converged rig, through real parts: Debian's node_exporter in the rig,
scraped from outside it on its published loopback port, and Debian's Prometheus server on the control
node with the alert rules the repository ships. The tests run in order: clean state, cost, nothing
changed by a run, drift injected and seen (metrics, then a pending alert), repaired by site.yml and
cleared, a missing wanted state, and a reboot after which the timer runs again."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

ROOT = rk_testlib.ROOT
RULES = ROOT / "roles" / "monitoring" / "files" / "prometheus" / "rigkeeper-alerts.yml"
ROLES = ["nvidia_driver", "cuda_toolkit", "container_toolkit", "kernel_params", "gpu_power", "headless", "ssh",
         "monitoring"]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def exporter_address() -> str:
    out = subprocess.run(["docker", "port", rk_testlib.instance(), "9100/tcp"], capture_output=True, text=True,
                         check=True).stdout
    # "127.0.0.1:49153": published on loopback only.
    (line,) = [ln for ln in out.splitlines() if ln.strip()]
    assert line.startswith("127.0.0.1:"), line
    return line.strip()


def scrape() -> dict:
    """{name: [(labels, value)]} from node_exporter's /metrics, read from outside the rig."""
    with urllib.request.urlopen("http://%s/metrics" % exporter_address(), timeout=10) as resp:
        text = resp.read().decode()
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def value(metrics: dict, name: str, **labels) -> float:
    found = [v for lab, v in metrics.get(name, []) if all(lab.get(k) == str(want) for k, want in labels.items())]
    assert len(found) == 1, (name, labels, metrics.get(name))
    return found[0]


def wait_for_run(after: float, timeout: float = 120) -> dict:
    """The metrics of the first self-audit that finished after ``after`` (the timer's next run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metrics = scrape()
            if value(metrics, "rigkeeper_selfaudit_last_run_timestamp_seconds") > after:
                return metrics
        except (OSError, AssertionError):
            pass
        time.sleep(2)
    raise AssertionError("no self-audit finished after %s within %s s" % (after, timeout))


def test_node_exporter_serves_a_clean_self_audit(host):
    pkg = host.package("prometheus-node-exporter")
    assert pkg.is_installed
    assert host.service("prometheus-node-exporter").is_running
    assert host.service("rigkeeper-selfaudit.timer").is_enabled
    assert host.service("rigkeeper-selfaudit.timer").is_running
    wanted = host.file("/etc/rigkeeper/wanted.json")
    assert (wanted.user, wanted.mode) == ("root", 0o600)
    version = json.loads(host.check_output("cat /etc/rigkeeper/wanted.json"))["version"]
    metrics = scrape()
    # node_exporter's own metrics: the real exporter answers, and its textfile collector read ours.
    assert value(metrics, "node_textfile_scrape_error") == 0
    assert value(metrics, "rigkeeper_selfaudit_success") == 1
    assert value(metrics, "rigkeeper_wanted_state_info", version=version) == 1
    assert {lab["role"]: v for lab, v in metrics["rigkeeper_role_drift"]} == dict((r, 0.0) for r in ROLES)
    assert value(metrics, "rigkeeper_reboot_pending") == 0
    assert value(metrics, "rigkeeper_driver_mismatch") == 0
    assert value(metrics, "rigkeeper_gpus") == 2
    smi = host.check_output("nvidia-smi --query-gpu=pci.bus_id,power.limit,temperature.gpu --format=csv,noheader,nounits")
    for line in smi.splitlines():
        bus, limit, temp = [c.strip() for c in line.split(",")]
        assert value(metrics, "rigkeeper_gpu_power_limit_watts", pci_bus_id=bus) == float(limit)
        assert value(metrics, "rigkeeper_gpu_power_limit_wanted_watts", pci_bus_id=bus) == float(limit)
        assert value(metrics, "rigkeeper_gpu_temperature_celsius", pci_bus_id=bus) == float(temp)
        assert value(metrics, "rigkeeper_gpu_persistence_mode", pci_bus_id=bus) == 1
    # GeForce: no ECC reported, so no ECC series at all (not a zero that would read as "checked").
    assert "rigkeeper_gpu_ecc_errors_uncorrected_volatile" not in metrics


def test_self_audit_costs_under_a_second_of_cpu(host):
    t0 = time.time()
    host.run_expect([0], "systemctl start rigkeeper-selfaudit.service")
    metrics = wait_for_run(t0, timeout=10)
    cpu = value(metrics, "rigkeeper_selfaudit_cpu_seconds")
    wall = value(metrics, "rigkeeper_selfaudit_duration_seconds")
    # In the run's output (pytest's warnings summary) for the budget: the floor is 1 s of CPU.
    warnings.warn("self-audit on the simulated rig: %.3f s CPU, %.3f s wall" % (cpu, wall))
    assert 0 < cpu < 1.0, cpu


def test_a_self_audit_run_changes_nothing_but_its_outputs(host):
    host.run_expect([0], "touch /run/rk-before && sleep 1.1")
    host.run_expect([0], "systemctl start rigkeeper-selfaudit.service")
    changed = host.check_output(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /run -o -path /dev -o -path /tmp -o -path /var/tmp"
        " -o -path /var/log \\) -prune -o -newer /run/rk-before -print").split()
    # Only the metrics file, the state file (and their directories' entries for the renames).
    assert sorted(set(changed)) == sorted({
        "/var/lib/prometheus/node-exporter", "/var/lib/prometheus/node-exporter/rigkeeper.prom",
        "/var/lib/rigkeeper", "/var/lib/rigkeeper/selfaudit.json"}), changed


@pytest.fixture(scope="module")
def prometheus():
    """Debian's Prometheus server on loopback, scraping the rig every 2 s with the shipped rules."""
    binary = shutil.which("prometheus")
    assert binary, "the prometheus package is missing (./rk test installs it)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="rk-prometheus-"))
    (work / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "rig", "static_configs": [{"targets": [exporter_address()]}]}],
    }))
    log = open(work / "prometheus.log", "w")
    proc = subprocess.Popen([binary, "--config.file=%s" % (work / "prometheus.yml"),
                             "--storage.tsdb.path=%s" % (work / "data"), "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=log, stderr=subprocess.STDOUT)
    api = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(api + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def alerts(api: str) -> list:
    with urllib.request.urlopen(api + "/api/v1/alerts", timeout=5) as resp:
        return json.loads(resp.read())["data"]["alerts"]


def wait_for_alert(api: str, name: str, present: bool, timeout: float = 60, **labels) -> list:
    deadline = time.monotonic() + timeout
    while True:
        hits = [a for a in alerts(api) if a["labels"].get("alertname") == name
                and all(a["labels"].get(k) == v for k, v in labels.items())]
        if bool(hits) == present:
            return hits
        assert time.monotonic() < deadline, (name, labels, present, alerts(api))
        time.sleep(1)


def test_drift_is_scraped_and_raises_the_alert(host, prometheus):
    # Prometheus scrapes the clean rig first: the target is up, no rigkeeper alert is active.
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(prometheus + "/api/v1/query?query=up", timeout=5) as resp:
            result = json.loads(resp.read())["data"]["result"]
        if result and result[0]["value"][1] == "1":
            break
        assert time.monotonic() < deadline, result
        time.sleep(1)
    assert not [a for a in alerts(prometheus) if a["labels"]["alertname"].startswith("Rigkeeper")]

    bus0 = host.check_output("nvidia-smi -i 0 --query-gpu=pci.bus_id --format=csv,noheader").strip()
    # The wanted limit is what gpu_power wrote for the card (its boot unit applies it).
    conf = dict(line.split()[:2] for line in host.check_output("cat /etc/rigkeeper/gpu-power.conf").splitlines()
                if line.strip() and not line.startswith("#"))
    wanted = float(conf[bus0])
    injected = time.time()
    host.run_expect([0], "nvidia-smi -i 0 -pl %d" % (wanted - 50))
    host.run_expect([0], "systemctl disable rigkeeper-gpu-power.service")
    metrics = wait_for_run(injected)  # the timer's next run (every 30 s)
    assert value(metrics, "rigkeeper_role_drift", role="gpu_power") == 1
    assert value(metrics, "rigkeeper_check_drift", role="gpu_power", check="limits") == 1
    assert value(metrics, "rigkeeper_check_drift", role="gpu_power", check="unit") == 1
    assert value(metrics, "rigkeeper_role_drift", role="ssh") == 0
    assert value(metrics, "rigkeeper_gpu_power_limit_watts", pci_bus_id=bus0) == wanted - 50
    assert value(metrics, "rigkeeper_gpu_power_limit_wanted_watts", pci_bus_id=bus0) == wanted

    drift = wait_for_alert(prometheus, "RigkeeperDrift", True, role="gpu_power")
    assert drift[0]["state"] in ("pending", "firing")
    lost = wait_for_alert(prometheus, "RigkeeperPowerLimitLost", True, pci_bus_id=bus0)
    assert lost[0]["state"] in ("pending", "firing")


def test_site_repairs_and_the_metrics_and_alert_clear(host, prometheus):
    res = rk_testlib.playbook("playbooks/site.yml")
    assert res.returncode == 0, res.stdout[-4000:]
    repaired = time.time()
    metrics = wait_for_run(repaired)
    assert {lab["role"]: v for lab, v in metrics["rigkeeper_role_drift"]} == dict((r, 0.0) for r in ROLES)
    assert host.service("rigkeeper-gpu-power.service").is_enabled
    wait_for_alert(prometheus, "RigkeeperDrift", False, role="gpu_power")
    wait_for_alert(prometheus, "RigkeeperPowerLimitLost", False)


def test_a_missing_wanted_state_is_a_failed_run_not_silence(host):
    host.run_expect([0], "mv /etc/rigkeeper/wanted.json /root/wanted.json")
    try:
        t0 = time.time()
        res = host.run("systemctl start rigkeeper-selfaudit.service")
        assert res.rc != 0
        metrics = wait_for_run(t0, timeout=10)
        assert value(metrics, "rigkeeper_selfaudit_success") == 0
        assert "rigkeeper_role_drift" not in metrics
        assert "cannot be read" in host.check_output("cat /var/lib/rigkeeper/selfaudit.json")
    finally:
        host.run_expect([0], "mv /root/wanted.json /etc/rigkeeper/wanted.json")
    t1 = time.time()
    host.run_expect([0], "systemctl start rigkeeper-selfaudit.service")
    assert value(wait_for_run(t1, timeout=10), "rigkeeper_selfaudit_success") == 1


def test_the_timer_survives_a_reboot(host):
    before = time.time()
    rk_testlib.reboot(host)
    assert host.service("rigkeeper-selfaudit.timer").is_enabled
    assert host.service("rigkeeper-selfaudit.timer").is_running
    # The first run after boot (5 s here), read through node_exporter, which came back too.
    metrics = wait_for_run(before, timeout=90)
    assert value(metrics, "rigkeeper_selfaudit_success") == 1
    assert {lab["role"]: v for lab, v in metrics["rigkeeper_role_drift"]} == dict((r, 0.0) for r in ROLES)
