"""Smoke: the simulated rig answers like the hardware it stands for.

Converge only installed nvidia-driver-580 from the simulated archive as NVIDIA's guide says
(nouveau blacklisted, initramfs, reboot). Everything asserted here comes
from elsewhere: the GPU preset file the rig was started with (tests/sim/configs/2x4090.json, read on
the control node) and what the installed packages' nvidia-smi reports from it.
"""
import json
import os
from pathlib import Path

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PRESET = json.loads((ROOT / "tests/sim/configs/2x4090.json").read_text())
FIELDS = "index,name,uuid,pci.bus_id,memory.total,power.default_limit,power.min_limit,power.max_limit,driver_version"


def test_the_rig_runs_the_preset_it_was_given(host):
    # The shared prepare links the preset the scenario asked for (2x4090 by default).
    assert host.file("/etc/rigkeeper-sim/gpus.json").linked_to == "/usr/share/rigkeeper-sim/configs/2x4090.json"


def test_nvidia_smi_reports_the_preset_gpus(host):
    out = host.check_output(f"nvidia-smi --query-gpu={FIELDS} --format=csv,noheader,nounits")
    rows = [[cell.strip() for cell in line.split(",")] for line in out.splitlines()]
    assert len(rows) == len(PRESET["gpus"]) == 2
    for index, (row, gpu) in enumerate(zip(rows, PRESET["gpus"])):
        assert row[:5] == [str(index), gpu["name"], gpu["uuid"], gpu["pci_bus_id"], str(gpu["memory_total_mib"])]
        assert [float(x) for x in row[5:8]] == [gpu["power"][k] for k in ("default_w", "min_w", "max_w")]


def test_the_driver_nvidia_smi_reports_is_the_installed_package(host):
    version = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").splitlines()[0]
    package = host.package("nvidia-utils-580")
    assert package.is_installed
    assert package.version.startswith(version.strip() + "-")


def test_sshd_runs(host):
    assert host.service("ssh").is_running
