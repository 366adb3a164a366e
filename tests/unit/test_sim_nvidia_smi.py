"""The simulator's fake GPU (tests/sim/pkgsrc/nvsim.py), run as a subprocess on the host.

RIGKEEPER_SIM_ROOT points the fake at tmp_path (its /etc, /run and /usr/lib), RIGKEEPER_SIM_UID
fakes the caller's uid. Shapes are compared with the real outputs in ../shared/fixtures/nvidia-smi.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NVSIM = REPO / "tests" / "sim" / "pkgsrc" / "nvsim.py"
CONFIGS = REPO / "tests" / "sim" / "configs"

V535 = "535.261.03"
V550 = "550.163.01"
V580 = "580.95.05"


class Sim:
    """A simulated host rooted at a temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "etc/rigkeeper-sim").mkdir(parents=True)
        (root / "usr/lib/rigkeeper-sim").mkdir(parents=True)
        self.use_config("2x4090.json")
        self.install_kmod(V580)  # booted with the 580 module loaded

    def use_config(self, name: str) -> None:
        shutil.copy(CONFIGS / name, self.root / "etc/rigkeeper-sim/gpus.json")

    def install_kmod(self, version: str | None) -> None:
        """What the simulator's kernel (simkernel.py) does at boot: the loaded module's version
        (None: no module loaded). nvsim.py never loads one itself."""
        p = self.loaded
        if version is None:
            p.unlink(missing_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(version + "\n")

    @property
    def loaded(self) -> Path:
        return self.root / "run/rigkeeper-sim/sys/module/nvidia/version"

    def reboot(self, module: str | None = V580) -> None:
        """/run is a tmpfs: a container restart empties it; then the kernel loads `module` (None:
        no NVIDIA module loads at this boot)."""
        shutil.rmtree(self.root / "run", ignore_errors=True)
        self.install_kmod(module)

    def run(self, *args: str, version: str = V580, uid: int = 0, tool: str = "nvidia-smi"):
        env = dict(os.environ, RIGKEEPER_SIM_ROOT=str(self.root), RIGKEEPER_SIM_UID=str(uid),
                   RIGKEEPER_SIM_NOW="1751362200")
        return subprocess.run([sys.executable, str(NVSIM), tool, version, *args], env=env,
                              capture_output=True, text=True, timeout=30)

    def ok(self, *args: str, **kw) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        return r.stdout

    def query(self, fields: str, *extra: str, **kw) -> list[list[str]]:
        out = self.ok(f"--query-gpu={fields}", "--format=csv,noheader", *extra, **kw)
        return [line.split(", ") for line in out.splitlines()]


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path)
    yield s
    for pidfile in (tmp_path / "var/run/nvidia-persistenced/nvidia-persistenced.pid",
                    tmp_path / "run/rigkeeper-sim/nv-fabricmanager.pid"):
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


# --- -q -x against the real XML ---------------------------------------------------------------

# Element paths the facts module and the roles read (relative to <gpu>), per schema era.
FIELDS = ["product_name", "product_brand", "product_architecture", "persistence_mode",
          "mig_mode/current_mig", "uuid", "minor_number", "vbios_version", "pci/pci_bus_id",
          "pci/pci_gpu_link_info/pcie_gen/max_link_gen", "pci/pci_gpu_link_info/pcie_gen/current_link_gen",
          "pci/pci_gpu_link_info/link_widths/max_link_width",
          "pci/pci_gpu_link_info/link_widths/current_link_width", "fb_memory_usage/total", "compute_mode",
          "gpu_power_readings/current_power_limit", "gpu_power_readings/requested_power_limit",
          "gpu_power_readings/default_power_limit", "gpu_power_readings/min_power_limit",
          "gpu_power_readings/max_power_limit", "fabric/state"]
DRAW = {"535": ["gpu_power_readings/power_draw"],
        "570": ["gpu_power_readings/average_power_draw", "gpu_power_readings/instant_power_draw"]}


def gpu_paths(gpu: ET.Element) -> set[str]:
    out = set()

    def walk(e, prefix):
        for c in e:
            p = f"{prefix}/{c.tag}" if prefix else c.tag
            out.add(p)
            walk(c, p)
    walk(gpu, "")
    return out


@pytest.mark.parametrize("version,fixture,era", [
    (V535, "netdata_rtx4090_v12_drv535.xml", "535"),
    (V580, "telegraf_rtx3060_v12_drv570.xml", "570"),
])
def test_xml_has_the_real_element_paths(sim, fixtures_dir, version, fixture, era):
    sim.install_kmod(version)
    ours = ET.fromstring(sim.ok("-q", "-x", version=version))
    real = ET.parse(fixtures_dir / fixture).getroot()
    for top in ("driver_version", "cuda_version", "attached_gpus"):
        assert ours.find(top) is not None and real.find(top) is not None
    assert ours.find("gpu").get("id") == "00000000:01:00.0"
    ours_paths, real_paths = gpu_paths(ours.find("gpu")), gpu_paths(real.find("gpu"))
    for f in FIELDS + DRAW[era]:
        assert f in real_paths, f"fixture lacks {f}"
        assert f in ours_paths, f"simulated -q -x lacks {f}"
    # Beyond the fields we read: the whole per-GPU tree has the shape of the real one, in order.
    # (remapped_rows / ecc_errors depend on the board; the 570 fixture is a GeForce 3060.)
    assert ours_paths == real_paths
    assert [c.tag for c in ours.find("gpu")] == [c.tag for c in real.find("gpu")]


def test_xml_header_and_value_formats(sim, fixtures_dir):
    text = sim.ok("-q", "-x")
    real = (fixtures_dir / "telegraf_dual_rtx2070_v13_drv590.xml").read_text()
    assert text.splitlines()[0] == real.splitlines()[0] == '<?xml version="1.0" ?>'
    assert text.splitlines()[1] == '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">'
    assert "\n\t</gpu>\n\n\t<gpu id=" in text and "\n\t</gpu>\n\n</nvidia_smi_log>\n" in text  # like real
    root = ET.fromstring(text)
    assert root.findtext("driver_version") == V580
    assert root.findtext("cuda_version") == "13.0"
    assert root.findtext("attached_gpus") == "2"
    g = root.findall("gpu")[1]
    assert g.findtext("product_name") == "NVIDIA GeForce RTX 4090"
    assert g.findtext("product_architecture") == "Ada Lovelace"
    assert g.findtext("minor_number") == "1"
    assert g.findtext("fb_memory_usage/total") == "24564 MiB"
    assert g.findtext("pci/pci_gpu_link_info/link_widths/max_link_width") == "16x"
    pw = g.find("gpu_power_readings")
    assert [pw.findtext(k) for k in ("current_power_limit", "default_power_limit", "min_power_limit",
                                     "max_power_limit")] == ["450.00 W", "450.00 W", "150.00 W", "600.00 W"]
    assert re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", g.findtext("uuid"))
    uuids = {x.findtext("uuid") for x in root.findall("gpu")}
    assert len(uuids) == 2


def test_degraded_preset_reports_x4_link(sim):
    sim.use_config("degraded-x4.json")
    g1 = ET.fromstring(sim.ok("-q", "-x")).findall("gpu")[1]
    assert g1.findtext("pci/pci_gpu_link_info/link_widths/current_link_width") == "4x"
    assert g1.findtext("pci/pci_gpu_link_info/link_widths/max_link_width") == "16x"
    assert sim.query("pcie.link.width.current,pcie.link.width.max") == [["16", "16"], ["4", "16"]]


# --- --query-gpu against the real captures ----------------------------------------------------

QUERY = ("index,name,uuid,pci.bus_id,driver_version,persistence_mode,power.draw,power.limit,"
         "power.default_limit,power.min_limit,power.max_limit,enforced.power.limit,memory.total,"
         "pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,compute_mode")


def real_query_columns(capture: Path) -> dict[str, tuple[str, str]]:
    """field -> (header cell, value cell) from a gpuexporter capture's idle --query-gpu section."""
    lines = capture.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# $ nvidia-smi --query-gpu=") and "idle" in lines[i - 1]:
            fields = line.split("=", 1)[1].split(" --")[0].split(",")
            return dict(zip(fields, zip(lines[i + 2].split(", "), lines[i + 3].split(", "))))
    raise AssertionError(f"no query section in {capture}")


def unit_of(value: str) -> str | None:
    m = re.fullmatch(r"-?[\d.]+ (\S+)", value)
    return m.group(1) if m else None


def test_query_gpu_header_and_units_match_real_captures(sim, fixtures_dir):
    real = real_query_columns(fixtures_dir /
                              "gpuexporter_capture__linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt")
    out = sim.ok(f"--query-gpu={QUERY}", "--format=csv").splitlines()
    header, row0 = out[0].split(", "), out[1].split(", ")
    for field, ours_header, ours_value in zip(QUERY.split(","), header, row0):
        real_header, real_value = real[field]
        assert ours_header == real_header, field
        assert unit_of(ours_value) == unit_of(real_value), (field, ours_value, real_value)
    assert row0[:6] == ["0", "NVIDIA GeForce RTX 4090", "GPU-3f9a1c52-7d4e-4b1a-9e2f-6c8d0a4b1e01",
                        "00000000:01:00.0", V580, "Disabled"]
    assert row0[7:12] == ["450.00 W", "450.00 W", "150.00 W", "600.00 W", "450.00 W"]
    assert row0[12:] == ["24564 MiB", "4", "4", "16", "16", "Default"]
    nounits = sim.ok("--query-gpu=power.limit,memory.total,pcie.link.width.current",
                     "--format=csv,noheader,nounits")
    assert nounits == "450.00, 24564, 16\n450.00, 24564, 16\n"


def test_query_gpu_rejects_unknown_field_and_bad_format(sim):
    r = sim.run("--query-gpu=name,bogus.field", "--format=csv")
    assert r.returncode == 2 and 'Field "bogus.field" is not a valid field to query.' in r.stdout
    assert sim.run("--query-gpu=name").returncode == 2


def test_query_compute_apps(sim):
    assert sim.ok("--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader") == ""
    apps = [{"gpu": 1, "pid": 4242, "process_name": "python3", "used_memory_mib": 20480}]
    (sim.root / "run/rigkeeper-sim").mkdir(parents=True, exist_ok=True)
    (sim.root / "run/rigkeeper-sim/compute-apps.json").write_text(json.dumps(apps))
    assert sim.ok("--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader") == \
        "4242, python3, 20480 MiB\n"
    assert sim.ok("--query-compute-apps=gpu_bus_id,pid,used_gpu_memory", "--format=csv") == \
        "gpu_bus_id, pid, used_gpu_memory [MiB]\n00000000:02:00.0, 4242, 20480 MiB\n"
    assert sim.query("memory.used", "-i", "1") == [["20482 MiB"]]
    assert "python3" in sim.ok()


# --- -pl / -pm --------------------------------------------------------------------------------

def test_power_limit_out_of_range_fails_like_the_real_one(sim):
    r = sim.run("-i", "1", "-pl", "700")
    assert r.returncode == 2
    assert r.stdout == ("Provided power limit 700.00 W is not a valid power limit which should be between "
                        "150.00 W and 600.00 W for GPU 00000000:02:00.0\n"
                        "Terminating early due to previous errors.\n")
    assert sim.query("power.limit") == [["450.00 W"], ["450.00 W"]]


def test_power_limit_set_then_reboot_resets(sim):
    out = sim.ok("-i", "1", "-pl", "300")
    assert out.splitlines()[0] == "Power limit for GPU 00000000:02:00.0 was set to 300.00 W from 450.00 W."
    assert out.splitlines()[-1] == "All done."
    assert sim.query("power.limit") == [["450.00 W"], ["300.00 W"]]
    assert sim.query("enforced.power.limit", "-i", "00000000:02:00.0") == [["300.00 W"]]
    xml = ET.fromstring(sim.ok("-q", "-x", "-i", "1"))
    assert xml.findtext("gpu/gpu_power_readings/current_power_limit") == "300.00 W"
    second = sim.ok("-i", "1", "-pl", "280")
    assert "was set to 280.00 W from 300.00 W." in second
    sim.reboot()
    assert sim.query("power.limit") == [["450.00 W"], ["450.00 W"]]


def test_power_limit_all_gpus_and_selection_forms(sim):
    out = sim.ok("-pl", "400")
    assert out.count("was set to 400.00 W from 450.00 W.") == 2
    uuid1 = "GPU-8b27e0d4-1c6f-4e93-a5b8-2f7d9c0e4a02"
    sim.ok("-i", uuid1, "-pl", "350")
    sim.ok("-i", "01:00.0", "-pl", "360")
    assert sim.query("power.limit") == [["360.00 W"], ["350.00 W"]]
    assert sim.query("index", "-i", "1,0") == [["1"], ["0"]]
    r = sim.run("-i", "7", "-pl", "300")
    assert r.returncode == 6 and sim.query("power.limit")[0] == ["360.00 W"]


def test_persistence_mode_set_and_reset_on_reboot(sim):
    assert sim.query("persistence_mode") == [["Disabled"], ["Disabled"]]
    out = sim.ok("-pm", "1")
    assert out == ("Enabled persistence mode for GPU 00000000:01:00.0.\n"
                   "Enabled persistence mode for GPU 00000000:02:00.0.\nAll done.\n")
    assert sim.query("persistence_mode") == [["Enabled"], ["Enabled"]]
    assert sim.ok("-i", "0", "-pm", "1") == "Persistence mode is already Enabled for GPU 00000000:01:00.0.\nAll done.\n"
    assert "Warning: persistence mode is disabled" not in sim.ok("-i", "0", "-pl", "300")
    sim.reboot()
    assert sim.query("persistence_mode,power.limit") == [["Disabled", "450.00 W"], ["Disabled", "450.00 W"]]


def test_non_root_cannot_change_limits_or_persistence(sim):
    r = sim.run("-i", "0", "-pl", "300", uid=1000)
    assert r.returncode == 4
    assert r.stdout == ("Failed to set power management limit for GPU 00000000:01:00.0: Insufficient Permissions\n"
                        "Terminating early due to previous errors.\n")
    r = sim.run("-pm", "1", uid=1000)
    assert r.returncode == 4
    assert r.stdout.startswith("Unable to set persistence mode for GPU 00000000:01:00.0: Insufficient Permissions\n")
    # Asking for the state it already has succeeds (nvidia-smi short-circuits before the write).
    assert sim.run("-pm", "0", uid=1000).returncode == 0
    # Reading works for anyone.
    assert sim.query("power.limit,persistence_mode", uid=1000) == [["450.00 W", "Disabled"]] * 2


def test_reset_without_persistence_option(sim):
    cfg = json.loads((CONFIGS / "2x4090.json").read_text())
    cfg["reset_state_without_persistence"] = True
    (sim.root / "etc/rigkeeper-sim/gpus.json").write_text(json.dumps(cfg))
    sim.ok("-i", "0", "-pl", "300")
    assert sim.query("power.limit", "-i", "0") == [["450.00 W"]]
    sim.ok("-pm", "1")
    sim.ok("-i", "0", "-pl", "300")
    assert sim.query("power.limit", "-i", "0") == [["300.00 W"]]


# --- the driver -------------------------------------------------------------------------------

def test_nothing_loads_on_demand(sim):
    """An installed driver whose module is not loaded (a fresh box before its reboot, nouveau
    holding the GPUs) answers with the real "couldn't communicate" text; asking does not load it."""
    sim.install_kmod(None)
    r = sim.run("--query-gpu=driver_version", "--format=csv,noheader")
    assert r.returncode == 9 and "couldn't communicate with the NVIDIA driver" in r.stdout
    assert not sim.loaded.exists()
    sim.install_kmod(V580)
    assert sim.query("driver_version") == [[V580], [V580]]


def test_version_mismatch_after_upgrade_without_reboot(sim):
    sim.install_kmod(V535)
    sim.ok("-L", version=V535)            # booted with 535
    r = sim.run("-L", version=V580)       # 580's userspace installed, the 535 module still loaded
    assert r.returncode == 18
    assert r.stdout == "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95\n"
    sim.reboot(module=None)               # nothing is loaded until the kernel loads a module at boot
    assert sim.run("-L", version=V580).returncode == 9
    sim.reboot(module=V580)
    assert sim.run("-L", version=V580).returncode == 0


def test_only_the_gpus_the_module_drives_are_listed(sim):
    """A GPU the loaded module left out (fallen off the bus, or a legacy card on 590+) is gone from
    every listing, and the others are re-indexed."""
    driven = sim.loaded.parent / "gpus"
    driven.write_text("00000000:02:00.0\n")
    assert sim.query("index,pci.bus_id") == [["0", "00000000:02:00.0"]]
    driven.write_text("")
    r = sim.run("-L")
    assert (r.returncode, r.stdout) == (6, "No devices were found\n")


def test_no_driver(sim):
    sim.install_kmod(None)
    r = sim.run()
    assert r.returncode == 9
    assert r.stdout == ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                        "Make sure that the latest NVIDIA driver is installed and running.\n")


def test_nvml_version_comes_from_the_installed_library(sim):
    """unattended-upgrades bumping libnvidia-compute alone: NVML no longer matches the module."""
    sim.ok("-L")
    lib = sim.root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libnvidia-ml.so.580.105.08").write_text("")
    (lib / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.580.105.08")
    r = sim.run("-L")
    assert r.returncode == 18 and "NVML library version: 580.105" in r.stdout


def test_reported_versions_by_branch(sim):
    for version, cuda, draw in ((V535, "12.2", "power_draw"), (V550, "12.4", "power_draw"),
                                (V580, "13.0", "instant_power_draw")):
        sim.reboot()
        sim.install_kmod(version)
        root = ET.fromstring(sim.ok("-q", "-x", version=version))
        assert (root.findtext("driver_version"), root.findtext("cuda_version")) == (version, cuda)
        assert root.find(f"gpu/gpu_power_readings/{draw}") is not None
        assert f"CUDA Version: {cuda}" in sim.ok(version=version)
    assert sim.ok("--version", version=V580) == (
        f"NVIDIA-SMI version  : {V580}\nNVML version        : 580.95\nDRIVER version      : {V580}\n"
        "CUDA Version        : 13.0\n")


# --- CLI surface ------------------------------------------------------------------------------

def test_unknown_option(sim):
    r = sim.run("--frobnicate")
    assert r.returncode == 2
    assert r.stdout == "ERROR: Option frobnicate is not recognized. Please run 'nvidia-smi -h'.\n"


def test_list_and_table(sim, fixtures_dir):
    assert sim.ok("-L") == ("GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-3f9a1c52-7d4e-4b1a-9e2f-6c8d0a4b1e01)\n"
                            "GPU 1: NVIDIA GeForce RTX 4090 (UUID: GPU-8b27e0d4-1c6f-4e93-a5b8-2f7d9c0e4a02)\n")
    table = sim.ok().splitlines()
    capture = (fixtures_dir / "gpuexporter_capture__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt").read_text()
    real = capture.split("# idle :: nvidia-smi (default table)", 1)[1].split("\n################", 2)[1]
    real_lines = [ln for ln in real.splitlines() if ln.startswith(("|", "+"))]
    # Same frame: every line of the real table has the width of ours, and the fixed lines match.
    assert {len(ln) for ln in table[1:] if ln} == {len(ln) for ln in real_lines}
    for fixed in real_lines[3:7] + real_lines[-6:-2]:
        assert fixed in table
    assert "|   0  NVIDIA GeForce RTX 4090        Off |   00000000:01:00.0 Off |                  N/A |" in table
    assert "|  0%   34C    P8             21W /  450W |       2MiB /  24564MiB |      0%      Default |" in table


def test_topo_matrix_and_p2p(sim, fixtures_dir):
    topo = sim.ok("topo", "-m")
    assert topo.splitlines()[0] == "\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m"
    assert topo.splitlines()[1] == "GPU0\t X \tPHB\t0-31\t0\t\tN/A"
    capture = (fixtures_dir / "gpuexporter_capture__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt").read_text()
    legend = capture.split("Legend:", 1)[1].split("\n\n\n", 1)[0]
    assert legend in topo
    p2p = sim.ok("topo", "-p2p", "r").splitlines()
    # The shape of a real 580.159.04 capture (tests/unit/data/p2p, one H200): underlined header,
    # a tab after every cell.
    assert p2p[:3] == [" \t\x1b[4mGPU0\tGPU1\t\x1b[0m", " GPU0\tX\tCNS\t", " GPU1\tCNS\tX\t"]
    sim.use_config("nvswitch-8xh100.json")
    topo = sim.ok("topo", "-m").splitlines()
    assert topo[1].split("\t")[1:9] == [" X "] + ["NV18"] * 7
    assert topo[5].split("\t")[9:11] == ["56-111,168-223", "1"]
    assert sim.ok("topo", "-p2p", "r").splitlines()[1] == " GPU0\t" + "\t".join(["X"] + ["OK"] * 7) + "\t"


def test_q_text_power_section(sim):
    out = sim.ok("-q", "-d", "POWER", "-i", "0")
    assert "==============NVSMI LOG==============" in out
    assert re.search(r"\n    GPU Power Readings\n", out)
    assert re.search(r"\n        Max Power Limit\s+: 600.00 W\n", out)
    assert "Product Name" not in out


def test_project_parser_reads_simulated_output(sim):
    """The facts module's own parsers (plugins/module_utils/rigkeeper_nvsmi.py) accept what the fake prints."""
    nvsmi = pytest.importorskip("ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_nvsmi")
    sim.ok("-i", "1", "-pl", "300")
    parsed = nvsmi.parse_xml(sim.ok("-q", "-x"))
    assert parsed["driver_version"] == V580 and parsed["count"] == 2 and parsed["nvswitch"] is False
    g1 = parsed["gpus"][1]
    assert (g1["power_limit_w"], g1["power_min_w"], g1["power_max_w"], g1["pcie_width_max"]) == (300.0, 150.0, 600.0, 16)
    assert nvsmi.parse_topo_matrix(sim.ok("topo", "-m"))["matrix"]["GPU0"]["GPU1"] == "PHB"
    assert nvsmi.parse_p2p_matrix(sim.ok("topo", "-p2p", "r"))["GPU1"]["GPU0"] == "CNS"
    rows = nvsmi.parse_query_csv(sim.ok(f"--query-gpu={QUERY}", "--format=csv"))
    assert rows[1]["power.limit"] == 300.0
    sim.use_config("nvswitch-8xh100.json")
    assert nvsmi.parse_xml(sim.ok("-q", "-x"))["nvswitch"] is True


# --- nvidia-persistenced and nv-fabricmanager --------------------------------------------------

def _stop(pidfile: Path) -> None:
    """SIGTERM the daemon and wait until it has cleaned up (it removes its pid file last)."""
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    for _ in range(250):
        if not pidfile.exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{pidfile} still there")


def test_persistenced_forks_and_honours_persistence_flags(sim):
    pidfile = sim.root / "var/run/nvidia-persistenced/nvidia-persistenced.pid"
    r = sim.run("--no-persistence-mode", "--verbose", tool="nvidia-persistenced")
    assert r.returncode == 0 and pidfile.exists()
    assert sim.query("persistence_mode") == [["Disabled"], ["Disabled"]]
    # With the daemon running, nvidia-smi -pm goes through it.
    assert sim.ok("-i", "0", "-pm", "1").startswith("Enabled persistence mode via daemon for GPU 00000000:01:00.0.")
    _stop(pidfile)
    sim.ok("-pm", "0")
    r = sim.run("--persistence-mode", tool="nvidia-persistenced")
    assert r.returncode == 0
    assert sim.query("persistence_mode") == [["Enabled"], ["Enabled"]]
    _stop(pidfile)
    assert sim.query("persistence_mode") == [["Disabled"], ["Disabled"]]


def test_persistenced_refuses_without_root_or_driver(sim):
    fail = "nvidia-persistenced failed to initialize. Check syslog for more details.\n"
    r = sim.run(tool="nvidia-persistenced", uid=1000)
    assert (r.returncode, r.stdout) == (1, fail)
    sim.install_kmod(None)
    r = sim.run(tool="nvidia-persistenced")
    assert (r.returncode, r.stdout) == (1, fail)


def test_fabricmanager_needs_nvswitch_and_the_exact_driver(sim):
    r = sim.run(tool="nv-fabricmanager")
    assert r.returncode == 1 and "[NV_WARN_NOTHING_TO_DO]" in r.stdout
    sim.use_config("nvswitch-8xh100.json")
    assert sim.query("fabric.state", "-i", "0") == [["In Progress"]]
    r = sim.run(tool="nv-fabricmanager", version=V550)
    assert r.returncode == 1
    assert r.stdout == (f"fabric manager NVIDIA GPU driver interface version {V550} don't match with driver "
                        f"version {V580}. Please update with matching NVIDIA driver package.\n")
    r = sim.run("-c", "/usr/share/nvidia/nvswitch/fabricmanager.cfg", tool="nv-fabricmanager")
    assert r.returncode == 0
    assert sim.query("fabric.state,fabric.status", "-i", "0") == [["Completed", "Success"]]
    assert ET.fromstring(sim.ok("-q", "-x", "-i", "7")).findtext("gpu/fabric/state") == "Completed"


def test_presets_are_consistent():
    for p in sorted(CONFIGS.glob("*.json")):
        cfg = json.loads(p.read_text())
        gpus = cfg["gpus"]
        assert cfg["schema"] == 1, p.name
        assert len({g["uuid"] for g in gpus}) == len(gpus), p.name
        assert len({g["pci_bus_id"] for g in gpus}) == len(gpus), p.name
        for g in gpus:
            pw = g["power"]
            assert pw["min_w"] <= pw["default_w"] <= pw["max_w"], p.name
    by_name = {p.name: json.loads(p.read_text()) for p in CONFIGS.glob("*.json")}
    assert set(by_name) >= {"2x4090.json", "2x3090.json", "degraded-x4.json", "nvswitch-8xh100.json",
                            "4090-single.json"}
    assert by_name["2x3090.json"]["gpus"][0]["power"] == {"default_w": 350.0, "min_w": 100.0, "max_w": 350.0,
                                                           "draw_w": 19.42}
    assert by_name["nvswitch-8xh100.json"]["nvswitch"] is True and len(by_name["nvswitch-8xh100.json"]["gpus"]) == 8
