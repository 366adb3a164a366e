"""P2P facts: plugins/module_utils/rigkeeper_p2p.py on real inputs, the topo matrix parsers on every shape
(../shared/fixtures captures, a real 580.159.04 capture, the simulator's output), and the
nvidia_p2p_facts module with run_command mocked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_nvsmi import parse_p2p_matrix, parse_topo_matrix, strip_ansi
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_p2p_facts import (
    bar1_by_bus_id,
    bridge_chain,
    build_p2p_facts,
    compute_caps,
    p2p_pairs,
    path_bridges,
)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "p2p"
NVSIM = REPO / "tests/sim/pkgsrc/nvsim.py"
CONFIGS = REPO / "tests/sim/configs"


# --------------------------------------------------------------------------------------------
# BAR1, compute capability (real fixtures)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("netdata_rtx4090_v12_drv535.xml", {"00000000:84:00.0": (256, 24564)}),
    ("telegraf_rtx3090_v13_drv590.xml", {"00000000:09:00.0": (256, 24576)}),
    ("telegraf_dual_rtxa5000_v13_drv590.xml", {"00000000:81:00.0": (256, 24564), "00000000:C1:00.0": (256, 24564)}),
    ("telegraf_a100-sxm4-80gb_v12_drv535.xml", {"00000000:01:00.0": (131072, 81920)}),
])
def test_bar1_from_real_xml(fixtures_dir, name, expected):
    got = bar1_by_bus_id((fixtures_dir / name).read_text())
    assert {k: (v["bar1_total_mib"], v["memory_total_mib"]) for k, v in got.items()} == expected


def test_bar1_of_garbage_is_empty():
    assert bar1_by_bus_id("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == {}
    assert bar1_by_bus_id("") == {}


def test_compute_caps_csv():
    text = "00000000:01:00.0, 8.9\n00000000:02:00.0, 8.9\n00000000:03:00.0, [N/A]\nNo devices were found\n"
    assert compute_caps(text) == {"00000000:01:00.0": "8.9", "00000000:02:00.0": "8.9"}


# --------------------------------------------------------------------------------------------
# PCIe paths
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,chain", [
    ("/sys/devices/pci0000:00/0000:00:01.1/0000:01:00.0", ["0000:00:01.1"]),
    ("/sys/devices/pci0000:40/0000:40:01.1/0000:41:00.0/0000:42:08.0/0000:43:00.0",
     ["0000:40:01.1", "0000:41:00.0", "0000:42:08.0"]),
    ("/sys/devices/pci0000:00/0000:00:06.0", []),
    ("/sys/devices/virtual/foo", None),
    (None, None),
])
def test_bridge_chain(path, chain):
    assert bridge_chain(path) == chain


@pytest.mark.parametrize("a,b,path", [
    # Two root ports: both chains, no common ancestor (traffic through the root complex).
    (["0000:00:01.1"], ["0000:00:01.2"], ["0000:00:01.1", "0000:00:01.2"]),
    # Behind one PCIe switch: the switch's downstream ports and its upstream port (the common ancestor).
    (["0000:00:01.1", "0000:01:00.0", "0000:02:08.0"], ["0000:00:01.1", "0000:01:00.0", "0000:02:10.0"],
     ["0000:01:00.0", "0000:02:08.0", "0000:02:10.0"]),
    (None, ["0000:00:01.2"], None),
])
def test_path_bridges(a, b, path):
    assert path_bridges(a, b) == path


# --------------------------------------------------------------------------------------------
# topo -m / topo -p2p: every shape we have
# --------------------------------------------------------------------------------------------
def test_real_h200_p2p_matrix_shape():
    """nvidia-smi 580.159.04 on one H200: underlined header, a tab after each cell, legend without DR."""
    text = (DATA / "h200_580.159.04_topo-p2p-r.txt").read_text()
    assert text.splitlines()[0] == " \t\x1b[4mGPU0\t\x1b[0m"
    assert parse_p2p_matrix(text) == {"GPU0": {"GPU0": "X"}}
    assert parse_p2p_matrix((DATA / "h200_580.159.04_topo-p2p-a.txt").read_text()) == {"GPU0": {"GPU0": "X"}}
    assert parse_topo_matrix((DATA / "h200_580.159.04_topo-m.txt").read_text()) == {
        "labels": ["GPU0"], "matrix": {"GPU0": {"GPU0": "X"}}}


def test_pasted_multi_gpu_p2p_with_dr_legend():
    """The layout of multi-GPU outputs pasted in issues (noonghunna/club-3090#1124), whose legend has DR."""
    text = (" \tGPU0\tGPU1\t\n GPU0\tX\tGNS\t\n GPU1\tGNS\tX\t\n\nLegend:\n\n  X    = Self\n  OK   = Status Ok\n"
            "  CNS  = Chipset not supported\n  GNS  = GPU not supported\n  TNS  = Topology not supported\n"
            "  NS   = Not supported\n  DR   = Disabled by regkey\n  U    = Unknown\n")
    assert parse_p2p_matrix(text) == {"GPU0": {"GPU0": "X", "GPU1": "GNS"}, "GPU1": {"GPU0": "GNS", "GPU1": "X"}}


def sim(tmp_path, preset, *args, version="580.95.05", p2p_module=False, iommu=False):
    root = tmp_path / "root"
    (root / "etc/rigkeeper-sim").mkdir(parents=True, exist_ok=True)
    (root / "etc/rigkeeper-sim/gpus.json").write_text((CONFIGS / preset).read_text())
    mod = root / "run/rigkeeper-sim/sys/module/nvidia"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "version").write_text(version + "\n")
    (mod / "p2p").write_text("1\n" if p2p_module else "0\n")
    if iommu:
        (root / "run/rigkeeper-sim/sys/class/iommu/ivhd0").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RIGKEEPER_SIM_ROOT=str(root))
    return subprocess.run([sys.executable, str(NVSIM), "nvidia-smi", version, *args], env=env, capture_output=True,
                          text=True, timeout=30).stdout


@pytest.mark.parametrize("preset,version,module,read,link", [
    ("2x4090.json", "580.95.05", False, "CNS", "PHB"),
    ("2x4090.json", "580.95.05", True, "CNS", "PHB"),         # P2P modules, but BAR1 256 MiB: stays CNS
    ("2x4090-rebar.json", "580.95.05", True, "OK", "PHB"),    # P2P modules with large BAR: OK
    ("2x4090-rebar.json", "580.95.05", False, "CNS", "PHB"),
    ("2x4090-hang.json", "545.29.06", False, "OK", "PHB"),    # 545 claims P2P
    ("2x4090-hang.json", "580.95.05", False, "CNS", "PHB"),
    ("2x3090-iommu.json", "580.95.05", False, "OK", "PHB"),
    ("nvswitch-8xh100.json", "580.95.05", False, "OK", "NV18"),
    ("degraded-x4.json", "580.95.05", False, "CNS", "PHB"),
])
def test_simulator_matrices_parse_and_follow_the_preset(tmp_path, preset, version, module, read, link):
    topo = parse_topo_matrix(sim(tmp_path, preset, "topo", "-m", version=version, p2p_module=module))
    assert topo["matrix"]["GPU0"]["GPU1"] == link
    for letter in "rw":
        p2p = parse_p2p_matrix(sim(tmp_path, preset, "topo", "-p2p", letter, version=version, p2p_module=module))
        assert p2p["GPU0"]["GPU1"] == read and p2p["GPU1"]["GPU0"] == read and p2p["GPU0"]["GPU0"] == "X"
    atomics = parse_p2p_matrix(sim(tmp_path, preset, "topo", "-p2p", "a", version=version, p2p_module=module))
    assert atomics["GPU0"]["GPU1"] == json.loads((CONFIGS / preset).read_text())["p2p"]["atomics"]


def test_simulator_p2p_output_keeps_the_real_shape(tmp_path):
    real = (DATA / "h200_580.159.04_topo-p2p-r.txt").read_text()
    ours = sim(tmp_path, "4090-single.json", "topo", "-p2p", "r")
    assert strip_ansi(ours).splitlines()[:2] == strip_ansi(real).splitlines()[:2]
    assert ours.split("Legend:")[1] == real.split("Legend:")[1]


def test_pairs_from_matrices():
    topo = {"GPU0": {"GPU1": "PHB", "GPU2": "SYS"}, "GPU1": {"GPU0": "PHB", "GPU2": "SYS"},
            "GPU2": {"GPU0": "SYS", "GPU1": "SYS"}}
    read = {"GPU0": {"GPU1": "OK", "GPU2": "TNS"}, "GPU1": {"GPU0": "OK", "GPU2": "TNS"}}
    pairs = p2p_pairs(["GPU0", "GPU1", "GPU2"], topo, {"read": read, "write": None})
    assert [(p["labels"], p["link"], p["read"], p["write"]) for p in pairs] == [
        (["GPU0", "GPU1"], "PHB", "OK", None), (["GPU0", "GPU2"], "SYS", "TNS", None),
        (["GPU1", "GPU2"], "SYS", "TNS", None)]


# --------------------------------------------------------------------------------------------
# The module, with run_command mocked
# --------------------------------------------------------------------------------------------
import nvidia_p2p_facts  # noqa: E402  (plugins/modules/ on sys.path via tests/conftest.py)

SMI = "/usr/bin/nvidia-smi"


class FakeModule:
    def __init__(self, commands, params=None):
        self.commands = commands
        self.calls = []
        self.params = dict({"nvidia_smi": SMI, "sys_pci_dir": "/nonexistent"}, **(params or {}))

    def run_command(self, args):
        self.calls.append(list(args))
        value = self.commands.get(tuple(args), (1, "", "unexpected"))
        if isinstance(value, Exception):
            raise value
        return value

    def get_bin_path(self, *_a, **_k):
        return None


def test_module_reads_everything_once(fixtures_dir, tmp_path):
    xml = (fixtures_dir / "telegraf_dual_rtxa5000_v13_drv590.xml").read_text()
    topo = ("\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
            "GPU0\t X \tSYS\t0-31\t0\t\tN/A\nGPU1\tSYS\t X \t32-63\t1\t\tN/A\n")
    p2p = " \t\x1b[4mGPU0\tGPU1\t\x1b[0m\n GPU0\tX\tTNS\t\n GPU1\tTNS\tX\t\n"
    pci = tmp_path / "pci"
    devices = tmp_path / "devices/pci0000:80/0000:80:01.1/0000:81:00.0"
    devices.mkdir(parents=True)
    pci.mkdir()
    (pci / "0000:81:00.0").symlink_to(devices)
    commands = {(SMI, "-q", "-x"): (0, xml, ""),
                (SMI, "--query-gpu=pci.bus_id,compute_cap", "--format=csv,noheader"):
                    (0, "00000000:81:00.0, 8.6\n00000000:C1:00.0, 8.6\n", ""),
                (SMI, "topo", "-m"): (0, topo, "")}
    for letter in "rwna":
        commands[(SMI, "topo", "-p2p", letter)] = (0, p2p, "") if letter != "n" else (2, "error", "")
    module = FakeModule(commands, {"sys_pci_dir": str(pci)})
    facts = nvidia_p2p_facts.gather(module)
    assert facts["present"] is True and facts["count"] == 2
    assert [g["bar1_total_mib"] for g in facts["gpus"]] == [256, 256]
    assert [g["compute_cap"] for g in facts["gpus"]] == ["8.6", "8.6"]
    assert facts["gpus"][0]["bridges"] == ["0000:80:01.1"] and facts["gpus"][1]["bridges"] is None
    (pair,) = facts["pairs"]
    assert (pair["link"], pair["read"], pair["write"], pair["nvlink"], pair["bridges"]) == ("SYS", "TNS", "TNS", None, None)
    assert len(module.calls) == 7


@pytest.mark.parametrize("rc,out,error", [
    (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
        "NVIDIA driver is installed and running.\n", "NVIDIA-SMI has failed"),
    (18, "Failed to initialize NVML: Driver/library version mismatch\n", "version mismatch"),
])
def test_module_without_a_driver_is_a_fact_not_a_failure(rc, out, error):
    facts = nvidia_p2p_facts.gather(FakeModule({(SMI, "-q", "-x"): (rc, out, "")}))
    assert facts["present"] is False and error in facts["error"] and facts["pairs"] == []


def test_module_without_nvidia_smi():
    module = FakeModule({}, {"nvidia_smi": None})
    facts = nvidia_p2p_facts.gather(module)
    assert (facts["present"], facts["error"]) == (False, "nvidia-smi not found")


def test_build_facts_keeps_unknowns_none():
    gpus = [{"index": 0, "bus_id": "00000000:01:00.0", "product_name": "X", "product_brand": None,
             "architecture": None, "memory_total_mib": None, "pcie_gen_current": None, "pcie_gen_max": None,
             "pcie_width_current": None, "pcie_width_max": None}]
    facts = build_p2p_facts(gpus, None, {}, {}, {}, {})
    assert facts["gpus"][0]["bar1_total_mib"] is None and facts["pairs"] == [] and facts["present"] is True


def test_real_h200_report_diagnoses_the_same_again():
    """The role's report from the real H200 run: its facts, diagnosed again from the stored numbers,
    give the same verdict (the filter and the role agree on real data)."""
    from rigkeeper_p2p import rk_p2p_diagnose, rk_p2p_result

    rep = json.loads((DATA / "h200_580.159.04_p2p-check-report.json").read_text())
    gpu = rep["gpus"][0]
    assert (gpu["bar1_total_mib"], gpu["memory_total_mib"], gpu["compute_cap"]) == (262144, 143771, "9.0")
    assert (gpu["pcie_gen_max"], gpu["pcie_width_max"], gpu["bridges"]) == (5, 16, [])
    facts = {"present": True, "count": 1, "gpus": rep["gpus"], "pairs": []}
    doc = {"program": "rigkeeper-p2p-bench", "local": rep["diagnosis"]["local"][0]["local"], "error": None}
    again = rk_p2p_diagnose(facts, {"local": {"0": rk_p2p_result({"rc": 0, "stdout": json.dumps(doc)})}}, {}, {})
    assert again["summary"] == rep["diagnosis"]["summary"] == "P2P OK: single GPU, local copies OK"
