"""plugins/filter/rigkeeper_p2p.py: the program's results, the diagnosis (table-driven: each cause
alone, then together), the table and report cases, the nvcc targets, the P2P modules' refusals."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from rigkeeper_p2p import (
    P2P,
    rk_dkms_status,
    rk_p2p_cases,
    rk_p2p_collect,
    rk_p2p_diagnose,
    rk_p2p_gencode,
    rk_p2p_modules_plan,
    rk_p2p_nccl,
    rk_p2p_result,
    rk_p2p_table,
)

DATA = Path(__file__).parent / "data" / "p2p"


# --------------------------------------------------------------------------------------------
# Builders: facts and program output in the shapes the module and the program produce
# --------------------------------------------------------------------------------------------
def gpu(i, name="NVIDIA GeForce RTX 4090", brand="GeForce", bar1=256, mem=24564, width=(16, 16), gen=(4, 4),
        bridges=None):
    return {"index": i, "label": f"GPU{i}", "bus_id": f"00000000:0{i + 1}:00.0", "name": name, "brand": brand,
            "architecture": "Ada Lovelace", "memory_total_mib": mem, "bar1_total_mib": bar1, "compute_cap": "8.9",
            "pcie_gen_current": gen[0], "pcie_gen_max": gen[1], "pcie_width_current": width[0],
            "pcie_width_max": width[1], "bridges": bridges}


def facts(read="CNS", link="PHB", gpus=None, bridges=None):
    gpus = gpus or [gpu(0), gpu(1)]
    return {"present": True, "error": None, "count": len(gpus), "gpus": gpus,
            "topology": {"GPU0": {"GPU0": "X", "GPU1": link}, "GPU1": {"GPU0": link, "GPU1": "X"}},
            "matrices": {}, "pairs": [{"a": 0, "b": 1, "labels": ["GPU0", "GPU1"],
                                       "bus_ids": [gpus[0]["bus_id"], gpus[1]["bus_id"]], "link": link,
                                       "read": read, "write": read, "nvlink": "NS", "atomics": "NS",
                                       "bridges": bridges}]}


def side(uni, bi, lat, bad=0):
    return {"uni_gbps": {"a_to_b": uni, "b_to_a": uni}, "bi_gbps": bi, "latency_us": {"a_to_b": lat, "b_to_a": lat},
            "mismatched_words": {"a_to_b": bad, "b_to_a": bad}}


def pair_doc(can=False, on=None, off=None, err="peer access is not supported between these two devices"):
    return {"program": "rigkeeper-p2p-bench", "schema": 1, "mode": "pair", "cuda": {"runtime": 12080, "driver": 13000},
            "devices": [], "size_bytes": 67108864, "iterations": 10,
            "pair": {"a": 0, "b": 1, "can_access_peer": {"a_to_b": can, "b_to_a": can},
                     "peer_enable_error": {"a_to_b": None if can else err, "b_to_a": None if can else err},
                     "p2p_off": off or side(17.3, 22.1, 14.5), "p2p_on": on}, "error": None}


def run(doc=None, rc=0, stderr="stage: devices\nstage: enable_peer\n", msg=None):
    r = {"rc": rc, "stdout": json.dumps(doc) + "\n" if doc else "", "stderr": stderr}
    if msg:
        r["msg"] = msg
    return r


def results(pair_run, timeout=60):
    return {"pairs": {"0-1": rk_p2p_result(pair_run)}, "local": {}, "timeout_s": timeout}


HOST_CLEAN = {"iommu": {"enabled": False, "cmdline": {}}, "acs": {"checked": True, "enabled_bridges": []}}
OK_ON = side(24.4, 49.9, 1.9)


# --------------------------------------------------------------------------------------------
# rk_p2p_result: one run of the program
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r,status,stage", [
    (run(pair_doc()), "ok", "enable_peer"),
    (run(None, rc=124, stderr="stage: devices\nstage: p2p_on_uni\n"), "hang", "p2p_on_uni"),
    (run(None, rc=137, stderr="stage: allocate\n"), "hang", "allocate"),
    (run(None, rc=1, stderr="", msg="async task did not complete within the requested time - 80s"), "hang", None),
    (run({"program": "rigkeeper-p2p-bench", "schema": 1, "devices": [],
          "error": {"call": "cudaGetDeviceCount(&count)", "code": 100, "name": "cudaErrorNoDevice",
                    "message": "no CUDA-capable device is detected"}}, rc=2, stderr="stage: devices\n"), "error", "devices"),
    (run(None, rc=127, stderr="timeout: failed to run command: No such file or directory\n"), "error", None),
    ({"rc": 0, "stdout": "noise\n{\"other\": 1}\n", "stderr": ""}, "error", None),
])
def test_program_result(r, status, stage):
    res = rk_p2p_result(r)
    assert (res["status"], res["stage"]) == (status, stage)
    if status == "error":
        assert res["message"]


def test_program_result_names_the_cuda_error():
    r = run({"program": "rigkeeper-p2p-bench", "error": {"call": "cudaGetLastError()", "code": 209,
                                                       "name": "cudaErrorNoKernelImageForDevice",
                                                       "message": "no kernel image is available for execution on the device"}},
            rc=2)
    assert rk_p2p_result(r)["message"] == ("cudaGetLastError() failed: no kernel image is available for execution "
                                           "on the device (cudaErrorNoKernelImageForDevice, 209)")


def test_real_h200_device_output_parses():
    """The program's JSON as the real nvcc 13.0 build printed it on an H200 (tests/unit/data/p2p)."""
    text = (DATA / "h200_580.159.04_device0.json").read_text()
    res = rk_p2p_result({"rc": 0, "stdout": text, "stderr": "stage: verify\n"})
    assert res["status"] == "ok"
    local = res["doc"]["local"]
    assert local["d2d_copy_gbps"] == pytest.approx(2137.565)
    assert local["d2d_memory_gbps"] == pytest.approx(2 * local["d2d_copy_gbps"], abs=0.01)
    assert res["doc"]["devices"][0]["compute_capability"] == "9.0"


def test_collect_keys_pairs_and_gpus():
    runs = {"results": [{"item": {"a": 0, "b": 1}, **run(pair_doc())},
                        {"item": {"a": 0, "b": 2}, "skipped": True}]}
    assert list(rk_p2p_collect(runs, "pair")) == ["0-1"]
    loc = rk_p2p_collect({"results": [{"item": {"index": 3}, **run(pair_doc())}]}, "local")
    assert list(loc) == ["3"]
    with pytest.raises(AnsibleFilterError):
        rk_p2p_collect(runs, "both")


# --------------------------------------------------------------------------------------------
# The diagnosis: one row per cause, on a pair that is otherwise healthy
# --------------------------------------------------------------------------------------------
DATACENTER = [gpu(0, "NVIDIA RTX A6000", "NVIDIA RTX", bar1=65536, mem=49140),
              gpu(1, "NVIDIA RTX A6000", "NVIDIA RTX", bar1=65536, mem=49140)]

CASES = [
    # id, facts, pair run, host, config, expected status, expected finding ids (in order)
    ("p2p-ok", facts("OK", gpus=copy.deepcopy(DATACENTER)), run(pair_doc(True, OK_ON)), HOST_CLEAN, {},
     "ok", []),
    ("geforce-cns-stock", facts("CNS"), run(pair_doc()), HOST_CLEAN, {},
     "fail", ["geforce_no_p2p", "bar1_below_vram"]),
    ("geforce-cns-rebar", facts("CNS", gpus=[gpu(0, bar1=32768), gpu(1, bar1=32768)]), run(pair_doc()), HOST_CLEAN, {},
     "fail", ["geforce_no_p2p"]),
    ("iommu-zeroed", facts("OK", gpus=copy.deepcopy(DATACENTER)),
     run(pair_doc(True, side(24.4, 49.9, 1.9, bad=16777216))),
     {"iommu": {"enabled": True, "cmdline": {"iommu": "pt"}}, "acs": {}}, {},
     "fail", ["iommu_on", "peer_copy_corrupt"]),
    ("hang-545", facts("OK"), run(None, rc=124, stderr="stage: p2p_off_verify\nstage: p2p_on_uni\n"), HOST_CLEAN,
     {"known_bad": "running driver 545.29.06: driver branch 545 is refused for GPU0, GPU1"},
     "fail", ["hang", "known_bad_branch", "bar1_below_vram"]),
    ("acs-on-path", facts("OK", gpus=copy.deepcopy(DATACENTER), bridges=["0000:00:01.1", "0000:00:01.2"]),
     run(pair_doc(True, side(2.6, 3.0, 30.0))),
     {"iommu": {"enabled": False}, "acs": {"checked": True, "enabled_bridges": ["0000:00:01.1", "0000:40:01.1"]}}, {},
     "fail", ["acs_on_path", "slow"]),
    ("acs-off-path-unexplained-slow", facts("OK", gpus=copy.deepcopy(DATACENTER), bridges=["0000:00:01.2"]),
     run(pair_doc(True, side(2.6, 3.0, 30.0))),
     {"iommu": {"enabled": False}, "acs": {"checked": True, "enabled_bridges": ["0000:40:01.1"]}}, {},
     "fail", ["slow", "unexplained"]),
    ("x16-x2-trap", facts("OK", gpus=[DATACENTER[0], dict(DATACENTER[1], pcie_width_current=2)]),
     run(pair_doc(True, side(1.5, 2.9, 2.1))), HOST_CLEAN, {},
     "fail", ["pcie_link_below_max", "slow"]),
    ("gns", facts("GNS", gpus=[gpu(0, "NVIDIA GeForce RTX 5090", bar1=32768, mem=32607),
                              gpu(1, "NVIDIA GeForce RTX 5090", bar1=32768, mem=32607)]), run(pair_doc()), HOST_CLEAN, {},
     "fail", ["gpu_not_supported"]),
    ("across-sockets", facts("TNS", link="SYS", gpus=copy.deepcopy(DATACENTER)), run(pair_doc()), HOST_CLEAN, {},
     "fail", ["topology_not_supported"]),
    ("no-driver", facts("CNS"), run({"program": "rigkeeper-p2p-bench", "devices": [],
                                    "error": {"call": "cudaGetDeviceCount(&count)", "code": 100,
                                              "name": "cudaErrorNoDevice",
                                              "message": "no CUDA-capable device is detected"}}, rc=2),
     HOST_CLEAN, {}, "fail", ["geforce_no_p2p", "bar1_below_vram", "program_error"]),
    ("refused-though-topo-ok", facts("OK", gpus=copy.deepcopy(DATACENTER)), run(pair_doc(False)), HOST_CLEAN, {},
     "fail", ["peer_refused", "unexplained"]),
    ("not-measured-ok", facts("OK", gpus=copy.deepcopy(DATACENTER)), None, HOST_CLEAN, {}, "ok", []),
    ("not-measured-ok-on-545", facts("OK"), None, HOST_CLEAN, {"known_bad": "branch 545"},
     "fail", ["known_bad_branch", "bar1_below_vram"]),
    ("not-measured-cns", facts("CNS"), None, HOST_CLEAN, {}, "fail", ["geforce_no_p2p", "bar1_below_vram"]),
    ("nvlink-not-judged-slow", facts("OK", link="NV4", gpus=copy.deepcopy(DATACENTER)),
     run(pair_doc(True, side(2.0, 3.0, 2.0))), HOST_CLEAN, {}, "ok", []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_diagnosis(case):
    _id, f, r, host, config, status, ids = case
    res = results(r) if r is not None else {"not_run": "no CUDA toolkit nvcc on the host"}
    d = rk_p2p_diagnose(f, res, host, config)
    (pair,) = d["pairs"]
    assert pair["status"] == status
    assert [x["id"] for x in pair["findings"]] == ids
    assert d["ok"] is (status == "ok")
    for finding in pair["findings"]:
        assert finding["fix"] and finding["source"], finding


def test_every_cause_names_a_fix_and_a_source():
    for cid, row in P2P["causes"].items():
        assert row["fix"].strip() and row["summary"].strip() and row["source"].strip(), cid


@pytest.mark.parametrize("cause,needle", [
    ("geforce_no_p2p", "nvidia_driver_p2p_modules: true"),
    ("iommu_on", "kernel_params_iommu: off"),
    ("acs_on_path", "kernel_params_acs_disable: true"),
    ("bar1_below_vram", "Re-Size BAR Support"),
    ("known_bad_branch", "nvidia_driver_branch"),
    ("pcie_link_below_max", "BIOS"),
])
def test_fix_names_the_variable_or_bios_setting(cause, needle):
    assert needle in P2P["causes"][cause]["fix"]


def test_hang_says_where_and_how_long():
    d = rk_p2p_diagnose(facts("OK"), results(run(None, rc=124, stderr="stage: p2p_on_uni\n"), timeout=45), HOST_CLEAN,
                        {"known_bad": "branch 545"})
    hang = d["pairs"][0]["findings"][0]
    assert hang["id"] == "hang" and "after 45 s, at stage p2p_on_uni" in hang["message"]


def test_cuda_error_carries_its_fix():
    r = run({"program": "rigkeeper-p2p-bench", "error": {"call": "cudaGetDeviceCount(&count)", "code": 803,
                                                       "name": "cudaErrorSystemDriverMismatch",
                                                       "message": "system has unsupported display driver / cuda driver combination"}},
            rc=2)
    d = rk_p2p_diagnose(facts("OK", gpus=copy.deepcopy(DATACENTER)), results(r), HOST_CLEAN, {})
    err = [f for f in d["pairs"][0]["findings"] if f["id"] == "program_error"][0]
    assert "reboot" in err["message"] and "cudaErrorSystemDriverMismatch" in err["message"]


def test_p2p_modules_on_but_still_cns_says_so():
    d = rk_p2p_diagnose(facts("CNS", gpus=[gpu(0, bar1=32768), gpu(1, bar1=32768)]), results(run(pair_doc())),
                        HOST_CLEAN, {"p2p_modules": True})
    assert "nvidia_driver_p2p_modules is on" in d["pairs"][0]["findings"][0]["message"]


def test_acs_with_unknown_path_counts_every_enabled_bridge():
    d = rk_p2p_diagnose(facts("OK", gpus=copy.deepcopy(DATACENTER), bridges=None),
                        results(run(pair_doc(True, side(2.6, 3.0, 30.0)))),
                        {"acs": {"enabled_bridges": ["0000:40:01.1"]}}, {})
    acs = d["pairs"][0]["findings"][0]
    assert acs["id"] == "acs_on_path" and "path between the GPUs is unknown" in acs["message"]


def test_no_gpu_facts():
    d = rk_p2p_diagnose({"present": False, "error": "nvidia-smi not found"}, None, {}, {})
    assert d["ok"] is False and d["pairs"] == []
    assert rk_p2p_cases(d) == [{"check": "p2p", "ok": False, "message": "P2P not checked: nvidia-smi not found"}]


def test_unknown_config_key_is_refused():
    with pytest.raises(AnsibleFilterError, match="unknown config keys"):
        rk_p2p_diagnose(facts(), None, {}, {"knownbad": "x"})


def test_single_gpu_local_result_h200():
    one = {"present": True, "count": 1, "gpus": [dict(gpu(0, "NVIDIA H200", "NVIDIA", bar1=262144, mem=143771),
                                                      pcie_gen_max=5, pcie_gen_current=5)], "pairs": []}
    doc = json.loads((DATA / "h200_580.159.04_device0.json").read_text())
    d = rk_p2p_diagnose(one, {"pairs": {}, "local": {"0": rk_p2p_result(run(doc))}}, HOST_CLEAN, {})
    assert d["ok"] and d["local"][0]["status"] == "ok"
    (case,) = rk_p2p_cases(d)
    assert case["check"] == "p2p GPU0 local" and case["ok"] and "2137.6 GB/s" in case["message"]


def test_local_host_link_below_the_slot():
    one = {"present": True, "count": 1, "gpus": [dict(gpu(0), pcie_width_current=4)], "pairs": []}
    doc = {"program": "rigkeeper-p2p-bench", "local": {"device": 0, "d2d_copy_gbps": 450.0, "d2d_memory_gbps": 900.0,
                                                       "h2d_gbps": 6.8, "d2h_gbps": 6.9, "mismatched_words": 0},
           "error": None}
    d = rk_p2p_diagnose(one, {"local": {"0": rk_p2p_result(run(doc))}}, HOST_CLEAN, {})
    assert [f["id"] for f in d["local"][0]["findings"]] == ["pcie_link_below_max"]


# --------------------------------------------------------------------------------------------
# Table and cases
# --------------------------------------------------------------------------------------------
def test_table_and_cases_for_a_cns_pair():
    d = rk_p2p_diagnose(facts("CNS"), results(run(pair_doc())), HOST_CLEAN, {})
    lines = rk_p2p_table(d, "P2P on rig")
    assert lines[0] == "P2P on rig"
    row = [ln for ln in lines if ln.startswith("GPU0-GPU1")][0]
    assert row.split()[:5] == ["GPU0-GPU1", "PHB", "CNS", "no", "17.3"]
    assert "FAIL geforce_no_p2p, bar1_below_vram" in row
    assert any("Fix: nvidia_driver_p2p_modules: true" in ln for ln in lines)
    (case,) = rk_p2p_cases(d)
    assert case["check"] == "p2p GPU0-GPU1" and case["ok"] is False
    assert case["message"].startswith("geforce_no_p2p: GeForce cards have no P2P")


def test_table_marks_a_hang():
    d = rk_p2p_diagnose(facts("OK"), results(run(None, rc=124)), HOST_CLEAN, {})
    row = [ln for ln in rk_p2p_table(d) if ln.startswith("GPU0-GPU1")][0]
    assert "HANG" in row and "FAIL hang" in row


def test_cases_for_an_ok_pair():
    d = rk_p2p_diagnose(facts("OK", gpus=copy.deepcopy(DATACENTER)), results(run(pair_doc(True, OK_ON))), HOST_CLEAN, {})
    assert rk_p2p_cases(d) == [{"check": "p2p GPU0-GPU1", "ok": True,
                                "message": "OK (PHB, read OK, 24.4 GB/s one way with peer access)"}]


# --------------------------------------------------------------------------------------------
# NCCL, nvcc targets, dkms status
# --------------------------------------------------------------------------------------------
ALL_REDUCE = """# nThread 1 nGpus 2 minBytes 8388608 maxBytes 67108864 step: 2(factor) warmup iters: 5 iters: 20
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
     8388608       2097152     float     sum      -1    412.3   20.35   20.35      0    410.9   20.41   20.41      0
    67108864      16777216     float     sum      -1   2741.0   24.48   24.48      {wrong}   2738.2   24.51   24.51      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 22.4375
#
"""


def test_nccl_all_reduce():
    assert rk_p2p_nccl(ALL_REDUCE.format(wrong=0)) == {
        "ok": True, "busbw_gbps": 22.4375, "wrong": 0,
        "message": "all_reduce_perf: average bus bandwidth 22.4 GB/s, no wrong results"}
    bad = rk_p2p_nccl(ALL_REDUCE.format(wrong=3))
    assert bad["ok"] is False and bad["wrong"] == 3
    assert rk_p2p_nccl("# nThread 1\n", rc=124)["message"] == "all_reduce_perf hung (timeout)"
    assert rk_p2p_nccl("", rc=1)["ok"] is False


def test_gencode_per_distinct_capability():
    assert rk_p2p_gencode(["8.9", "8.9", "8.6"]) == [
        "-gencode", "arch=compute_89,code=[sm_89,compute_89]", "-gencode", "arch=compute_86,code=[sm_86,compute_86]"]
    assert rk_p2p_gencode([]) == []
    with pytest.raises(AnsibleFilterError, match="MAJOR.MINOR"):
        rk_p2p_gencode(["sm_89"])


def test_dkms_status_lines():
    text = ("nvidia/580.95.05, 6.8.0-51-generic, x86_64: installed\n"
            "nvidia-p2p/580.95.05: added\n"
            "nvidia-p2p/580.95.05, 6.8.0-60-generic, x86_64: built\n"
            "Warning: something\n")
    assert [(e["module"], e["kernel"], e["state"]) for e in rk_dkms_status(text)] == [
        ("nvidia", "6.8.0-51-generic", "installed"), ("nvidia-p2p", None, "added"),
        ("nvidia-p2p", "6.8.0-60-generic", "built")]


# --------------------------------------------------------------------------------------------
# The P2P modules' refusals (roles/nvidia_driver, nvidia_driver_p2p_modules)
# --------------------------------------------------------------------------------------------
REBAR = [{"label": "GPU0", "bar1_total_mib": 32768, "memory_total_mib": 24564},
         {"label": "GPU1", "bar1_total_mib": 32768, "memory_total_mib": 24564}]
GOOD_HOST = {"iommu": {"enabled": False}, "secure_boot": False, "mok_enrolled": None}
PATH_SRC = {"path": "/srv/p2p", "version_mk": "NVIDIA_VERSION = 580.95.05\n"}
GIT_SRC = {"url": "https://github.com/tinygrad/open-gpu-kernel-modules.git", "ref": None,
           "ls_remote": "1f40371d287b0e7079e972e7468c09e0a29e2768\trefs/heads/580.95.05-p2p\n"}

PLAN_CASES = [
    ("all-good-path", "580.95.05", "open", "dkms", GOOD_HOST, REBAR, PATH_SRC, []),
    ("all-good-git", "580.95.05", "open", "dkms", GOOD_HOST, REBAR, GIT_SRC, []),
    ("proprietary", "580.95.05", "proprietary", "dkms", GOOD_HOST, REBAR, PATH_SRC, ["flavor"]),
    ("precompiled", "580.95.05", "open", "precompiled", GOOD_HOST, REBAR, PATH_SRC, ["modules"]),
    ("no-version", None, "open", "dkms", GOOD_HOST, REBAR, PATH_SRC, ["version"]),
    ("fork-other-version", "580.95.05", "open", "dkms", GOOD_HOST, REBAR,
     {"path": "/srv/p2p", "version_mk": "NVIDIA_VERSION = 580.82.07\n"}, ["fork_version"]),
    ("fork-no-version-mk", "580.95.05", "open", "dkms", GOOD_HOST, REBAR, {"path": "/srv/p2p", "version_mk": None},
     ["fork_version"]),
    ("git-no-ref", "545.29.06", "open", "dkms", GOOD_HOST, REBAR, GIT_SRC, ["fork_version"]),
    ("git-unreachable", "580.95.05", "open", "dkms", GOOD_HOST, REBAR,
     {"url": "https://example.invalid/x.git", "ls_remote": None, "ls_remote_error": "git is not installed on the host"},
     ["fork_version"]),
    ("iommu-on", "580.95.05", "open", "dkms", {"iommu": {"enabled": True, "cmdline": {"iommu": "pt"}}}, REBAR, PATH_SRC,
     ["iommu"]),
    ("bar1-small", "580.95.05", "open", "dkms", GOOD_HOST,
     [dict(g, bar1_total_mib=256) for g in REBAR], PATH_SRC, ["bar1"]),
    ("bar1-unknown", "580.95.05", "open", "dkms", GOOD_HOST, [], PATH_SRC, ["bar1"]),
    ("secure-boot-no-mok", "580.95.05", "open", "dkms", dict(GOOD_HOST, secure_boot=True, mok_enrolled=False), REBAR,
     PATH_SRC, ["secure_boot"]),
    ("secure-boot-with-mok", "580.95.05", "open", "dkms", dict(GOOD_HOST, secure_boot=True, mok_enrolled=True), REBAR,
     PATH_SRC, []),
    ("everything-wrong", "580.95.05", "proprietary", "precompiled",
     {"iommu": {"enabled": True}, "secure_boot": True, "mok_enrolled": None},
     [dict(g, bar1_total_mib=256) for g in REBAR], {"path": "/srv/p2p", "version_mk": "NVIDIA_VERSION = 1.0\n"},
     ["flavor", "modules", "fork_version", "iommu", "bar1", "secure_boot"]),
]


@pytest.mark.parametrize("case", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_modules_plan(case):
    _id, version, flavor, modules, host, gpus, source, refused = case
    plan = rk_p2p_modules_plan(version, flavor=flavor, modules=modules, host=host, gpus=gpus, source=source)
    assert [r["id"] for r in plan["refusals"]] == refused
    assert plan["ok"] is (not refused)
    for r in plan["refusals"]:
        assert len(r["message"]) > 40, r


def test_modules_plan_messages_name_what_to_do():
    plan = rk_p2p_modules_plan("580.95.05", flavor="proprietary", modules="precompiled",
                               host={"iommu": {"enabled": True}, "secure_boot": True},
                               gpus=[dict(g, bar1_total_mib=256) for g in REBAR],
                               source={"path": "/srv/p2p", "version_mk": "NVIDIA_VERSION = 580.82.07\n"})
    text = {r["id"]: r["message"] for r in plan["refusals"]}
    assert "nvidia_driver_flavor: open" in text["flavor"]
    assert "nvidia_driver_modules: dkms" in text["modules"]
    assert "580.82.07" in text["fork_version"] and "nvidia_driver_version: 580.82.07" in text["fork_version"]
    assert "kernel_params_iommu: off" in text["iommu"]
    assert "Re-Size BAR Support" in text["bar1"] and "GPU0 256 MiB < 24564 MiB" in text["bar1"]
    assert "mokutil --import" in text["secure_boot"]


def test_modules_plan_ref_defaults_to_the_forks_naming():
    assert rk_p2p_modules_plan("565.57.01", "open", "dkms", GOOD_HOST, REBAR,
                               {"url": "u", "ls_remote": "abc\trefs/heads/565.57.01-p2p\n"})["ref"] == "565.57.01-p2p"
    plan = rk_p2p_modules_plan("565.57.01", "open", "dkms", GOOD_HOST, REBAR,
                               {"url": "u", "ref": "my-p2p", "ls_remote": "abc\trefs/tags/my-p2p\n"})
    assert plan["ok"] and plan["ref"] == "my-p2p"
