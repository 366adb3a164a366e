"""playbooks/p2p_check.yml on three rigs (4090 stock CNS, 3090 with the IOMMU on, a 545 pair that
hangs): each host's JSON report and the report callback's cases against the rig's real state; the
program built once in rigkeeper's directory and nothing else changed; no program left running after
the hang; and the playbook with its defaults fails each host, naming the pair and the fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

EXPECTED = {
    # host: (topo read, findings of GPU0-GPU1 in order, the peer access the program saw)
    "rk-p2p_check-4090": ("CNS", ["geforce_no_p2p", "bar1_below_vram"], False),
    "rk-p2p_check-3090": ("OK", ["iommu_on", "peer_copy_corrupt"], True),
    "rk-p2p_check-hang": ("OK", ["hang", "known_bad_branch", "bar1_below_vram"], None),
}


def name(host) -> str:
    return host.backend.get_hostname()


def report(host) -> dict:
    path = rk_testlib.ephemeral() / "reports" / "p2p" / f"{name(host)}.json"
    return json.loads(path.read_text())


def test_the_matrix_in_the_report_is_the_rigs(host):
    rep = report(host)
    read, _findings, _access = EXPECTED[name(host)]
    real = host.run("nvidia-smi topo -p2p r").stdout
    assert f" GPU0\tX\t{read}\t" in real
    assert rep["matrices"]["read"]["GPU0"]["GPU1"] == read
    assert rep["topology"]["GPU0"]["GPU1"] == "PHB"
    assert rep["driver"] == host.run("cat /run/rigkeeper-sim/sys/module/nvidia/version").stdout.strip()


def test_each_pair_is_diagnosed_with_its_fix(host):
    rep = report(host)
    _read, findings, access = EXPECTED[name(host)]
    (pair,) = rep["diagnosis"]["pairs"]
    assert pair["pair"] == "GPU0-GPU1" and pair["status"] == "fail"
    assert [f["id"] for f in pair["findings"]] == findings
    fixes = " ".join(f["fix"] for f in pair["findings"])
    want = {"geforce_no_p2p": "nvidia_driver_p2p_modules: true", "bar1_below_vram": "Re-Size BAR Support",
            "iommu_on": "kernel_params_iommu: off", "known_bad_branch": "nvidia_driver_branch=580",
            "hang": "NCCL_P2P_DISABLE=1", "peer_copy_corrupt": "NCCL_P2P_DISABLE=1"}
    for f in findings:
        assert want[f] in fixes, f
    measured = pair["measured"]
    if access is None:
        assert measured is None and pair["run"]["status"] == "hang" and pair["run"]["stage"] == "p2p_on_uni"
    else:
        assert measured["can_access"] is access
        assert measured["p2p_off"]["uni_gbps"] > 0


def test_4090_peer_access_refused_with_cudas_text(host):
    if name(host) != "rk-p2p_check-4090":
        pytest.skip("the stock 4090 pair")
    pair = report(host)["diagnosis"]["pairs"][0]
    assert pair["measured"]["peer_enable_error"] == "peer access is not supported between these two devices"
    assert pair["measured"]["p2p_on"] is None


def test_3090_iommu_faults_are_in_the_kernel_log(host):
    if name(host) != "rk-p2p_check-3090":
        pytest.skip("the IOMMU rig")
    assert host.file("/run/rigkeeper-sim/sys/class/iommu/ivhd0").is_directory
    assert "AMD-Vi: Event logged [IO_PAGE_FAULT" in host.file("/run/rigkeeper-sim/dmesg").content_string
    on = report(host)["diagnosis"]["pairs"][0]["measured"]["p2p_on"]
    assert on["mismatched_words"] == 2 * 64 * 1024 * 1024 // 4  # every word, both ways


def test_hang_was_ended_and_left_nothing_running(host):
    if name(host) != "rk-p2p_check-hang":
        pytest.skip("the hanging pair")
    # [p]: testinfra runs this through sh -c, whose own command line would match a bare p2p_bench.
    assert host.run("pgrep -af '[p]2p_bench'").rc == 1
    assert host.run("dpkg-query -W -f '${Version}' nvidia-utils-545").stdout.startswith("545.29.06")


def test_every_gpu_measured_on_its_own(host):
    local = report(host)["diagnosis"]["local"]
    assert [(x["gpu"], x["status"]) for x in local] == [("GPU0", "ok"), ("GPU1", "ok")]
    assert local[0]["local"]["d2d_copy_gbps"] > 0 and local[0]["local"]["h2d_gbps"] > 20


def test_the_program_is_built_once_and_nothing_else_changed(host):
    rep = report(host)
    binary = rep["program"]["binary"]
    assert rep["program"]["release"].startswith("Cuda compilation tools, release 12.8")
    entries = host.run("ls -1 /var/lib/rigkeeper/p2p-check").stdout.split()
    # One build, and the last check's record for the host's self-audit (monitoring role).
    builds = [e for e in entries if e != "last.json"]
    assert "last.json" in entries
    assert len(builds) == 1 and binary == f"/var/lib/rigkeeper/p2p-check/{builds[0]}/p2p_bench"
    assert host.file(binary).mode == 0o755 and host.file(binary).user == "root"
    # Files changed since the end of prepare, outside rigkeeper's own directory and the runtime,
    # log and temporary trees: none.
    changed = host.run(
        "find / -xdev -newer /var/tmp/rk-prepared -type f "
        "-not -path '/proc/*' -not -path '/sys/*' -not -path '/run/*' -not -path '/tmp/*' -not -path '/var/tmp/*' "
        "-not -path '/var/log/*' -not -path '/root/.ansible*' -not -path '/var/lib/rigkeeper/p2p-check/*' "
        "-not -path '/var/lib/systemd/*' -not -path '/var/cache/*' -not -path '/srv/p2p-fork/*'").stdout.split()
    assert changed == []


def test_the_host_keeps_each_pairs_result_for_its_self_audit(host):
    """p2p_check_dir/last.json: what rigkeeper_p2p_pair_ok exports; the same verdict as the report."""
    record = json.loads(host.file("/var/lib/rigkeeper/p2p-check/last.json").content_string)
    pairs = report(host)["diagnosis"]["pairs"]
    assert [(p["a"], p["b"], p["bus_ids"], p["status"]) for p in record["pairs"]] == [
        (p["a"], p["b"], p["bus_ids"], p["status"]) for p in pairs]
    assert record["pairs"][0]["status"] == "fail"  # every preset here has a finding on GPU0-GPU1
    assert record["driver"] == report(host)["driver"] and record["time"] > 1.7e9
    assert host.file("/var/lib/rigkeeper/p2p-check/last.json").user == "root"


def test_one_report_case_per_host_and_pair():
    summary = rk_testlib.report(rk_testlib.ephemeral() / "reports", "converge")
    for host, (_read, _f, _a) in EXPECTED.items():
        checks = summary["hosts"][host]
        assert checks["p2p GPU0-GPU1"]["status"] == "fail"
        assert checks["p2p GPU0 local"]["status"] == "ok" and checks["p2p GPU1 local"]["status"] == "ok"
    assert summary["fail_count"] == 3


@pytest.fixture(scope="module")
def default_run():
    """The playbook as a user runs it (p2p_check_fail_on_findings true), with a short hang limit."""
    started = __import__("time").monotonic()
    res = rk_testlib.playbook("playbooks/p2p_check.yml", "-e", "p2p_check_pair_timeout=6",
                              report_dir=rk_testlib.ephemeral() / "reports-default")
    return res, __import__("time").monotonic() - started


def test_the_default_run_fails_every_host_naming_the_pair_and_ends(default_run):
    res, took = default_run
    assert res.returncode == 2, res.stdout[-3000:]
    out = res.stdout
    for host in EXPECTED:
        assert f"P2P check failed on {host}: P2P not OK: GPU0-GPU1" in out, host
    assert "Fix: nvidia_driver_p2p_modules: true" in out and "Fix: kernel_params_iommu: off" in out
    assert took < 150, took
    junit = (rk_testlib.ephemeral() / "reports-default" / "p2p_check.junit.xml").read_text()
    assert junit.count('name="p2p GPU0-GPU1"') == 3


def test_the_table_is_in_the_play_output(default_run):
    res, _ = default_run
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.split()[:2] == ["GPU0-GPU1", "PHB"]]
    # pair, link, read, peer, uni off / on, bi off / on, latency off / on, data, result
    assert any(r[2:4] == ["CNS", "no"] and r[-3:] == ["FAIL", "geforce_no_p2p,", "bar1_below_vram"] for r in rows), rows
    assert any(r[2:4] == ["OK", "HANG"] and r[-4:] == ["FAIL", "hang,", "known_bad_branch,", "bar1_below_vram"]
               for r in rows), rows
    assert any(r[2:4] == ["OK", "yes"] and "BAD" in r and r[-1] == "peer_copy_corrupt" for r in rows), rows


def test_check_mode_reads_the_matrices_only():
    out = rk_testlib.ephemeral() / "reports-check"
    res = rk_testlib.playbook("playbooks/p2p_check.yml", "--limit", "rk-p2p_check-4090",
                              "-e", "p2p_check_fail_on_findings=false", report_dir=out, check=True)
    assert res.returncode == 0, res.stdout[-2000:]
    rep = json.loads((out / "p2p" / "rk-p2p_check-4090.json").read_text())
    assert rep["check_mode"] is True
    pair = rep["diagnosis"]["pairs"][0]
    assert pair["measured"] is None and pair["read"] == "CNS" and pair["note"] is None
    assert [f["id"] for f in pair["findings"]] == ["geforce_no_p2p", "bar1_below_vram"]
    recap = res.stdout.split("PLAY RECAP")[-1]
    assert "changed=0" in recap and "failed=0" in recap
