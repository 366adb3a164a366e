"""The host's self-audit (plugins/module_utils/rigkeeper_selfaudit.py) and its metrics
(plugins/module_utils/rigkeeper_metrics.py): the exposition text, checked by Prometheus's own promtool; the
run's files; the wanted state it refuses; the code shipped to the host running with the standard
library only; the monitoring role's compiled wanted state."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.rigkeeper.gpu.plugins.module_utils import rigkeeper_metrics as metrics
from ansible_collections.rigkeeper.gpu.plugins.module_utils import rigkeeper_selfaudit as selfaudit

import rigkeeper_wanted
import test_wanted

ROOT = Path(__file__).resolve().parents[2]
GPU = {"index": 0, "bus_id": "00000000:01:00.0", "product_name": 'NVIDIA "Test" GeForce\\RTX', "uuid": "GPU-0",
       "power_limit_w": 300.0, "persistence_mode": True, "pcie_gen_current": 1, "pcie_gen_max": 4,
       "pcie_width_current": 16, "pcie_width_max": 16, "temperature_c": 41.0, "power_draw_w": 25.5,
       "utilization_gpu_pct": 37.0, "memory_used_mib": 2, "memory_total_mib": 24564, "ecc_enabled": None,
       "ecc_corrected_volatile": None, "ecc_uncorrected_volatile": None,
       "clocks_event_reasons": {"gpu_idle": True, "sw_power_cap": False}}
AUDIT = {
    "success": True, "finished": 1796146562.5, "duration_s": 0.8, "cpu_s": 0.45, "interval_s": 300,
    "version": "0.1.0",
    "roles": {"gpu_power": {"status": "drift", "findings": [], "counts": {"drift": 1, "ok": 3}},
              "ssh": {"status": "ok", "findings": [], "counts": {"ok": 4}},
              "cuda_toolkit": {"status": "error", "findings": [], "counts": {"error": 1}}},
    "checks": {"gpu_power/limits": "drift", "gpu_power/unit": "ok", "cuda_toolkit/profile": "error",
               "ssh/dropin": "absent"},
    "reboot": [{"id": "nvidia_driver/driver_running", "label": "x", "reasons": []}],
    "reboot_since": 1796140000,
    "facts": {"nvidia_gpu": {"count": 1, "gpus": [GPU], "driver_version": "580.95.05"},
              "rigkeeper_host": {"driver_installed_version": "580.105.08", "driver_running_version": "580.95.05",
                                 "driver_mismatch": True}},
    "wanted_limits": {"00000000:01:00.0": 450.0},
    "expected_gpus": 2,
    "p2p": {"time": 1796100000, "pairs": [{"a": 0, "b": 1, "bus_ids": ["00000000:01:00.0", "00000000:02:00.0"],
                                           "status": "fail"}]},
}


def samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            out[name_labels] = value
    return out


def test_every_family_has_help_and_type_and_the_values_are_right():
    text = metrics.render(AUDIT)
    got = samples(text)
    names = set(k.split("{")[0] for k in got)
    for name in names:
        assert "# HELP %s " % name in text and "# TYPE %s gauge" % name in text
    assert got['rigkeeper_role_drift{role="gpu_power"}'] == "1"
    assert got['rigkeeper_role_drift{role="ssh"}'] == "0"
    assert got['rigkeeper_role_error{role="cuda_toolkit"}'] == "1"
    assert got['rigkeeper_check_drift{check="dropin",role="ssh"}'] == "1"  # absent counts as drift
    assert got['rigkeeper_check_error{check="profile",role="cuda_toolkit"}'] == "1"
    assert got['rigkeeper_reboot_pending'] == "1"
    assert got['rigkeeper_reboot_pending_reason{reason="nvidia_driver/driver_running"}'] == "1"
    assert got['rigkeeper_reboot_pending_since_timestamp_seconds'] == "1796140000"
    assert got['rigkeeper_driver_mismatch'] == "1"
    assert got['rigkeeper_driver_info{installed="580.105.08",running="580.95.05"}'] == "1"
    assert (got['rigkeeper_gpus'], got['rigkeeper_gpus_expected']) == ("1", "2")
    labels = 'gpu="0",pci_bus_id="00000000:01:00.0"'
    assert got['rigkeeper_gpu_power_limit_watts{%s}' % labels] == "300"
    assert got['rigkeeper_gpu_power_limit_wanted_watts{%s}' % labels] == "450"
    assert got['rigkeeper_gpu_utilization_ratio{%s}' % labels] == "0.37"
    assert got['rigkeeper_gpu_memory_used_bytes{%s}' % labels] == str(2 * 1024 * 1024)
    assert got['rigkeeper_gpu_clocks_event_reason_active{%s,reason="gpu_idle"}' % labels] == "1"
    assert got['rigkeeper_gpu_clocks_event_reason_active{%s,reason="sw_power_cap"}' % labels] == "0"
    # The name's quote and backslash escaped as the text format wants.
    assert 'name="NVIDIA \\"Test\\" GeForce\\\\RTX"' in text
    # No ECC on this card: no ECC series (a zero would read as "checked, none").
    assert "rigkeeper_gpu_ecc" not in text
    assert got['rigkeeper_p2p_pair_ok{gpu_a="0",gpu_b="1",pci_bus_id_a="00000000:01:00.0",'
               'pci_bus_id_b="00000000:02:00.0"}'] == "0"


def test_no_reboot_pending_has_no_since_and_a_failed_run_only_its_own_families():
    ok = dict(AUDIT, reboot=[], reboot_since=None)
    assert "rigkeeper_reboot_pending 0" in metrics.render(ok)
    assert "rigkeeper_reboot_pending_since" not in metrics.render(ok)
    failed = metrics.render({"success": False, "finished": 1.0, "duration_s": 0.1, "cpu_s": 0.1, "interval_s": 60})
    assert samples(failed) == {"rigkeeper_selfaudit_last_run_timestamp_seconds": "1",
                               "rigkeeper_selfaudit_duration_seconds": "0.1", "rigkeeper_selfaudit_cpu_seconds": "0.1",
                               "rigkeeper_selfaudit_success": "0", "rigkeeper_selfaudit_interval_seconds": "60"}


def test_promtool_accepts_the_exposition_text():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (./rk test installs the prometheus package)")
        pytest.skip("promtool is not installed")
    for audit in (AUDIT, {"success": False, "finished": 1.0, "duration_s": 0.1, "cpu_s": 0.1, "interval_s": 60}):
        res = subprocess.run([promtool, "check", "metrics"], input=metrics.render(audit), capture_output=True,
                             text=True)
        # promtool lints names too (units, _total on counters, ...): no complaint at all.
        assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_an_unknown_metric_name_is_a_bug_not_a_silent_family():
    with pytest.raises(KeyError):
        metrics.Families().add("rigkeeper_nope", 1)


@pytest.mark.parametrize("content, reason", [
    (None, "cannot be read"),
    ("{not json", "is not JSON"),
    ('{"resources": []}', "was not written by rigkeeper"),
    ('{"writer": "rigkeeper", "resources": [{"kind": "file"}]}', "without id or kind"),
])
def test_a_wanted_state_it_cannot_use_is_refused(tmp_path, content, reason):
    path = tmp_path / "wanted.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(selfaudit.WantedError, match=reason):
        selfaudit.load_wanted(str(path))


def config(tmp_path):
    return {"wanted_path": str(tmp_path / "wanted.json"), "metrics_path": str(tmp_path / "tf" / "rigkeeper.prom"),
            "state_path": str(tmp_path / "state" / "selfaudit.json"), "p2p_path": str(tmp_path / "none.json"),
            "interval_s": 60}


def test_a_run_writes_metrics_and_state_and_keeps_when_the_reboot_was_first_seen(tmp_path, monkeypatch):
    (tmp_path / "tf").mkdir()
    found = dict((k, AUDIT[k]) for k in ("version", "roles", "checks", "reboot", "facts", "wanted_limits",
                                          "expected_gpus", "p2p"))
    monkeypatch.setattr(selfaudit, "audit", lambda cfg: json.loads(json.dumps(found)))
    clock = iter([1000.0, 1000.5, 1000.6, 1000.7, 2000.0, 2000.5, 2000.6, 2000.7])
    rc, state = selfaudit.run(config(tmp_path), now=lambda: next(clock))
    assert rc == 0 and state["reboot_since"] == 1000.0
    prom = (tmp_path / "tf" / "rigkeeper.prom")
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert "rigkeeper_reboot_pending_since_timestamp_seconds 1000\n" in prom.read_text()
    assert oct((tmp_path / "state" / "selfaudit.json").stat().st_mode & 0o777) == "0o600"
    rc, state = selfaudit.run(config(tmp_path), now=lambda: next(clock))
    assert state["reboot_since"] == 1000.0  # the second run still waits for the same reboot
    assert "rigkeeper_reboot_pending_since_timestamp_seconds 1000\n" in prom.read_text()
    assert [p.name for p in (tmp_path / "tf").iterdir()] == ["rigkeeper.prom"]  # no temporary file left


def test_a_failed_run_still_writes_metrics(tmp_path):
    (tmp_path / "tf").mkdir()
    rc, state = selfaudit.run(config(tmp_path))
    assert rc == 1 and "cannot be read" in state["error"]
    assert "rigkeeper_selfaudit_success 0\n" in (tmp_path / "tf" / "rigkeeper.prom").read_text()


def test_the_shipped_code_runs_with_the_standard_library_only(tmp_path):
    """What the monitoring role ships, alone in a directory, under python3 -I -S (no site-packages,
    so no Ansible): it imports and runs; a wanted state it cannot read is exit 1 with metrics."""
    for name in rigkeeper_wanted.SELFAUDIT_FILES:
        shutil.copy(ROOT / "plugins" / "module_utils" / name, tmp_path / name)
    (tmp_path / "tf").mkdir()
    (tmp_path / "c.json").write_text(json.dumps(config(tmp_path)))
    res = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "rigkeeper_selfaudit.py"), "--config",
                          str(tmp_path / "c.json")], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert "FAILED: WantedError" in res.stderr
    assert "rigkeeper_selfaudit_success 0" in (tmp_path / "tf" / "rigkeeper.prom").read_text()
    res = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "rigkeeper_selfaudit.py"), "--config",
                          str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert res.returncode == 2 and "self-audit configuration" in res.stderr


ALL = ["nvidia_driver", "cuda_toolkit", "container_toolkit", "kernel_params", "gpu_power", "headless", "ssh",
       "monitoring"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return test_wanted.compile_all(tmp_path_factory.mktemp("mon"), compile_roles=ALL)


def test_monitoring_compiles_the_shipped_code_units_and_node_exporter(compiled):
    mon = compiled["wanted"]["monitoring"]
    res = mon["res"]
    for name in rigkeeper_wanted.SELFAUDIT_FILES:
        code = res["code_" + name[:-3]]
        assert code["path"] == "/usr/local/lib/rigkeeper/" + name
        assert code["content"] == (ROOT / "plugins" / "module_utils" / name).read_text()
    conf = json.loads(res["config"]["content"])
    assert conf["metrics_path"] == "/var/lib/prometheus/node-exporter/rigkeeper.prom"
    assert conf["wanted_path"] == "/etc/rigkeeper/wanted.json" and conf["interval_s"] == 300
    assert "OnUnitActiveSec=300s" in res["timer_file"]["content"]
    assert "rigkeeper_selfaudit.py --config /etc/rigkeeper/selfaudit.json" in res["service_file"]["content"]
    assert (res["timer"]["enabled"], res["timer"]["active"]) == (True, True)
    assert res["node_exporter"]["name"] == "prometheus-node-exporter"
    # The record: monitoring is managed, and its wanted state is in the host's root-only copy.
    wanted = json.loads(compiled["wanted"]["record"]["res"]["wanted"]["content"])
    assert wanted["roles"] == ALL and any(r["id"] == "monitoring/timer" for r in wanted["resources"])
    assert compiled["wanted"]["record"]["res"]["wanted"]["mode"] == "0600"


def test_external_node_exporter_is_left_alone(tmp_path):
    got = test_wanted.compile_all(tmp_path, compile_roles=["monitoring"], monitoring_node_exporter="external")
    assert "node_exporter" not in got["wanted"]["monitoring"]["res"]


@pytest.mark.parametrize("extra, reason", [
    ({"monitoring_interval": 10}, "at most every 30 s"),
    ({"monitoring_interval": "often"}, "must be a number"),
    ({"monitoring_textfile_dir": "relative/dir"}, "absolute path"),
    ({"monitoring_node_exporter": "docker"}, "'package' or 'external'"),
])
def test_bad_monitoring_wants_are_refused_before_anything_changes(tmp_path, extra, reason):
    got = test_wanted.compile_all(tmp_path, compile_roles=["monitoring"], fail_on_error=False, **extra)
    finding = got["roles"]["monitoring"]["findings"][0]
    assert got["roles"]["monitoring"]["status"] == "error" and reason in finding["reasons"][0], finding


def test_the_default_roles_leave_monitoring_off():
    assert "monitoring" in rigkeeper_wanted.ROLES and "monitoring" not in rigkeeper_wanted.DEFAULT_ROLES


def test_the_p2p_record_keeps_each_pair_and_nothing_measured():
    import rigkeeper_p2p
    diagnosis = {"summary": "P2P not OK: GPU0-GPU1", "pairs": [
        {"a": 0, "b": 1, "pair": "GPU0-GPU1", "bus_ids": ["00000000:01:00.0", "00000000:02:00.0"], "status": "fail",
         "measured": {"p2p_on": {"uni_gbps": 1.0}}, "findings": [{"id": "iommu_on"}]}]}
    record = rigkeeper_p2p.rk_p2p_record(diagnosis, "580.95.05", 1796146562.7)
    assert record == {"time": 1796146562, "driver": "580.95.05", "summary": "P2P not OK: GPU0-GPU1", "pairs": [
        {"a": 0, "b": 1, "pair": "GPU0-GPU1", "bus_ids": ["00000000:01:00.0", "00000000:02:00.0"], "status": "fail"}]}
    text = metrics.render(dict(AUDIT, p2p=record))
    assert 'rigkeeper_p2p_pair_ok{gpu_a="0",gpu_b="1"' in text and "rigkeeper_p2p_check_timestamp_seconds 1796146562" in text


@pytest.mark.parametrize("text, enabled, directory", [
    (None, True, "/var/lib/prometheus/node-exporter"),             # no file: the package's default
    ('# comment\nARGS=""\n', True, "/var/lib/prometheus/node-exporter"),
    ('ARGS="--collector.textfile.directory=/srv/prom/ --web.listen-address=127.0.0.1:9100"', True, "/srv/prom"),
    ("ARGS='--collector.textfile.directory /srv/tf'", True, "/srv/tf"),
    ('ARGS="--collector.textfile.directory=/a"\nARGS="--no-collector.textfile"', False,
     "/var/lib/prometheus/node-exporter"),                          # the last ARGS line counts
])
def test_what_node_exporter_reads_from_its_package_configuration(text, enabled, directory):
    got = rigkeeper_wanted.node_exporter_textfile(text, "/var/lib/prometheus/node-exporter")
    assert got == {"enabled": enabled, "dir": directory}


def test_unreadable_node_exporter_args_are_a_clear_error():
    with pytest.raises(rigkeeper_wanted.CompileError, match="ARGS cannot be read"):
        rigkeeper_wanted.node_exporter_textfile('ARGS="--collector.textfile.directory=/a', "/d")
