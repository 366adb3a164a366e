#!/usr/bin/env python3
"""rigkeeper simulator: the fake NVIDIA GPU.

One file holds the logic of three fake programs, so that they share one notion of "the GPUs" and
"the driver":

  nvidia-smi           (payload of nvidia-utils-<branch>)
  nvidia-persistenced  (payload of nvidia-compute-utils-<branch>)
  nv-fabricmanager     (payload of nvidia-fabricmanager-<branch>)

The repository generator (tests/sim/repo/build_repo.py) installs a copy of this file per package
(/usr/lib/rigkeeper-sim/nvidia_smi.py, .../nvidia_persistenced.py, .../nv_fabricmanager.py: dpkg
does not let two unrelated packages own one path) and a tiny /usr/bin wrapper that bakes in the
package's exact upstream version, e.g. ``nvsim.smi_main(sys.argv[1:], version="580.95.05")``.

Contract with the rest of the simulator (see tests/sim/README.md):
  /etc/rigkeeper-sim/gpus.json                 the GPUs (schema in the README; presets in tests/sim/configs)
  /run/rigkeeper-sim/sys/module/nvidia/version "loaded kernel module" (the simulator's kernel,
                                               simkernel.py in the image, loads it at boot)
  /run/rigkeeper-sim/sys/module/nvidia/gpus    the bus ids that module drives
  /run/rigkeeper-sim/state.json                power limits, persistence (tmpfs: a reboot resets it)
  /run/rigkeeper-sim/compute-apps.json         optional fake running processes
Environment: RIGKEEPER_SIM_ROOT prefixes every path above (unit tests), RIGKEEPER_SIM_UID fakes the
effective uid (non-root paths testable as root).

Real messages and exit codes are quoted from public sources; each is cited where it is used. Texts
that no source confirmed are marked "UNVERIFIED".
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import signal
import sys

# ---------------------------------------------------------------------------------------------
# Paths and environment
# ---------------------------------------------------------------------------------------------


def _root() -> str:
    return os.environ.get("RIGKEEPER_SIM_ROOT", "").rstrip("/")


def path(p: str) -> str:
    """Absolute simulator path, under RIGKEEPER_SIM_ROOT when set."""
    return _root() + p


CONFIG = "/etc/rigkeeper-sim/gpus.json"
RUN = "/run/rigkeeper-sim"
LIB = "/usr/lib/rigkeeper-sim"
LOADED_VERSION = RUN + "/sys/module/nvidia/version"
LOADED_GPUS = RUN + "/sys/module/nvidia/gpus"
STATE = RUN + "/state.json"
COMPUTE_APPS = RUN + "/compute-apps.json"
FM_PIDFILE = RUN + "/nv-fabricmanager.pid"
NVML_LIB_DIR = "/usr/lib/x86_64-linux-gnu"
PERSISTENCED_DIR = "/var/run/nvidia-persistenced"
PERSISTENCED_PIDFILE = PERSISTENCED_DIR + "/nvidia-persistenced.pid"


def euid() -> int:
    fake = os.environ.get("RIGKEEPER_SIM_UID")
    return int(fake) if fake not in (None, "") else os.geteuid()


# Exit codes: nvidia-smi(1) "RETURN VALUE" (docs.nvidia.com/deploy/nvidia-smi, quoted in
# NVIDIA DCGM/nvidia-smi docs): 0 success, 2 invalid argument or flag, 3 operation not available,
# 4 no permission, 6 object not found, 9 driver not loaded, 12 NVML library not found, 255 other.
# 18 is NVML_ERROR_LIB_RM_VERSION_MISMATCH: `nvidia-smi; echo $?` prints 18 on a mismatch
# (anderskm/gputil#55; mozilla/translations#1167 "nvidia-smi failed with return code 18").
EXIT_OK = 0
EXIT_INVALID_ARG = 2
EXIT_NOT_SUPPORTED = 3
EXIT_NO_PERMISSION = 4
EXIT_NOT_FOUND = 6
EXIT_DRIVER_NOT_LOADED = 9
EXIT_VERSION_MISMATCH = 18

# CUDA version the driver reports, by branch (the "CUDA Version" header of nvidia-smi; FACTS.md
# table of minimum drivers: 535 -> 12.2, 545 -> 12.3, 550 -> 12.4, 580 -> 13.0).
CUDA_BY_BRANCH = {"535": "12.2", "545": "12.3", "550": "12.4", "555": "12.5", "560": "12.6",
                  "565": "12.7", "570": "12.8", "575": "12.9", "580": "13.0", "590": "13.1"}

# Used when /etc/rigkeeper-sim/gpus.json is missing. The package build replaces None with the JSON
# of tests/sim/configs/2x4090.json; run from the source tree, that file is read instead.
DEFAULT_CONFIG_JSON = None


class SimError(Exception):
    """Ends the program with a message on stdout and an exit code, as nvidia-smi does."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------------------------
# Configuration, state, driver
# ---------------------------------------------------------------------------------------------


def _read(p: str) -> str | None:
    try:
        with open(path(p), encoding="utf-8") as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def load_config() -> dict:
    raw = _read(CONFIG)
    if raw is None:
        here = os.path.dirname(os.path.abspath(__file__))
        # In the source tree the presets sit next door; installed, the builtin default applies.
        fallback = os.path.join(here, "..", "configs", "2x4090.json")
        if os.path.exists(fallback):
            with open(fallback, encoding="utf-8") as f:
                return json.load(f)
        if DEFAULT_CONFIG_JSON is None:
            raise SimError(f"rigkeeper-sim: no GPU description at {path(CONFIG)}", 255)
        return json.loads(DEFAULT_CONFIG_JSON)
    return json.loads(raw)


def gpu_key(gpu: dict) -> str:
    return gpu["pci_bus_id"]


@contextlib.contextmanager
def locked_state(write: bool):
    """Read (and optionally rewrite) /run/rigkeeper-sim/state.json under a lock."""
    run = path(RUN)
    state_path = path(STATE)
    if write:
        os.makedirs(run, exist_ok=True)
        lock = open(os.path.join(run, ".state.lock"), "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)
    else:
        lock = None
    try:
        try:
            with open(state_path, encoding="utf-8") as f:
                state = json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            state = {}
        state.setdefault("gpus", {})
        yield state
        if write:
            tmp = state_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2, sort_keys=True)
            os.replace(tmp, state_path)
    finally:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


def gpu_state(state: dict, gpu: dict) -> dict:
    """Per-GPU runtime state with its power-on defaults: default limit, persistence Disabled."""
    s = state["gpus"].get(gpu_key(gpu), {})
    return {
        "power_limit_w": float(s.get("power_limit_w", gpu["power"]["default_w"])),
        "persistence": bool(s.get("persistence", False)),
    }


def set_gpu_state(state: dict, gpu: dict, **values) -> None:
    s = state["gpus"].setdefault(gpu_key(gpu), {})
    s.update(values)


def short_version(version: str) -> str:
    """NVML library version as nvidia-smi prints it: 580.95.05 -> 580.95."""
    return ".".join(version.split(".")[:2])


def branch_of(version: str) -> str:
    return version.split(".")[0]


def installed_nvml_version(baked: str) -> str:
    """Version of the installed libnvidia-ml.so.<version> (libnvidia-compute-<branch>).

    nvidia-smi loads NVML from that library; when it is absent (unit tests, or only nvidia-utils
    installed) the version baked into nvidia-utils stands in.
    """
    d = path(NVML_LIB_DIR)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return baked
    prefix = "libnvidia-ml.so."
    versions = [n[len(prefix):] for n in names if n.startswith(prefix) and n.count(".") >= 4]
    return sorted(versions)[-1] if versions else baked


def load_module() -> str | None:
    """The loaded kernel module's version, or None when no NVIDIA module is loaded.

    Nothing is loaded on demand: on a real host nvidia-modprobe can load an installed module only
    when nothing else holds the GPUs (nouveau does on a fresh Ubuntu box) and Secure Boot accepts
    it, and a new driver's module cannot replace a loaded one without a reboot. The simulator's
    kernel (simkernel.py in the image) loads the module at boot, or on an explicit
    `modprobe nvidia` that a real kernel would accept; here it is only read.
    """
    return _read(LOADED_VERSION) or None


def driven_bus_ids() -> set[str] | None:
    """Bus ids the loaded module drives (sys/module/nvidia/gpus: GPUs its branch or flavour does
    not support, or that fell off the bus, are left out), or None when not recorded (all)."""
    raw = _read(LOADED_GPUS)
    if raw is None:
        return None
    return {ln.strip().upper() for ln in raw.splitlines() if ln.strip()}


def visible(cfg: dict) -> dict:
    """The preset as NVML sees it: only the GPUs the loaded module drives, re-indexed."""
    driven = driven_bus_ids()
    if driven is None:
        return cfg
    return dict(cfg, gpus=[g for g in cfg["gpus"] if g["pci_bus_id"].upper() in driven])


# Messages: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make
# sure that the latest NVIDIA driver is installed and running." is the well-known text (exit 9 =
# "NVIDIA driver is not loaded"). The mismatch pair is quoted verbatim in tinygrad/
# open-gpu-kernel-modules#47 and intel/llvm#17614 ("Failed to initialize NVML: Driver/library
# version mismatch" / "NVML library version: 550.144").
NO_DRIVER_MSG = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                 "Make sure that the latest NVIDIA driver is installed and running.")


def driver_version_or_fail(userspace: str) -> str:
    loaded = load_module()
    if loaded is None:
        raise SimError(NO_DRIVER_MSG, EXIT_DRIVER_NOT_LOADED)
    nvml = installed_nvml_version(userspace)
    if loaded != nvml:
        raise SimError("Failed to initialize NVML: Driver/library version mismatch\n"
                       f"NVML library version: {short_version(nvml)}", EXIT_VERSION_MISMATCH)
    return loaded


def pid_alive(pidfile: str) -> bool:
    raw = _read(pidfile)
    if not raw:
        return False
    try:
        os.kill(int(raw), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def persistenced_running() -> bool:
    return pid_alive(PERSISTENCED_PIDFILE)


def fabricmanager_running() -> bool:
    return pid_alive(FM_PIDFILE)


def compute_apps(gpus: list[dict]) -> list[dict]:
    """Fake processes from /run/rigkeeper-sim/compute-apps.json.

    Schema: [{"gpu": <index | bus id | uuid>, "pid": 4242, "process_name": "python3",
              "used_memory_mib": 20480}]
    """
    raw = _read(COMPUTE_APPS)
    if not raw:
        return []
    apps = []
    for app in json.loads(raw):
        sel = str(app.get("gpu", 0))
        for i, g in enumerate(gpus):
            if sel in (str(i), g["uuid"]) or (not sel.isdigit() and _same_bus(sel, g["pci_bus_id"])):
                apps.append(dict(app, index=i, gpu=g))
                break
    return apps


# ---------------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------------


def watts(v: float) -> str:
    return f"{v:.2f} W"


def now() -> _dt.datetime:
    fixed = os.environ.get("RIGKEEPER_SIM_NOW")  # epoch seconds, for reproducible test output
    return _dt.datetime.fromtimestamp(float(fixed)) if fixed else _dt.datetime.now()


def xml_timestamp(t: _dt.datetime) -> str:
    # Real: "Mon Aug 7 11:10:06 2023" (day not padded), netdata_rtx4090_v12_drv535.xml.
    return f"{t:%a} {t:%b} {t.day} {t:%H:%M:%S} {t.year}"


def table_timestamp(t: _dt.datetime) -> str:
    # Real: "Fri Jun 26 11:59:44 2026       " (ctime layout, trailing spaces), gpuexporter captures.
    return f"{t:%a %b} {t.day:2d} {t:%H:%M:%S %Y}       "


def csv_timestamp(t: _dt.datetime) -> str:
    return t.strftime("%Y/%m/%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def era(version: str) -> str:
    """Which real -q -x shape this driver branch prints.

    535/545: like netdata_rtx4090_v12_drv535.xml (power_draw; gpu_module_id);
    550..565: like the 550.54.14 v12 capture (adds gpu_memory_power_readings, c2c_mode, bbx flush);
    570..589: like telegraf_rtx3060_v12_drv570.xml (average/instant power draw, platformInfo,
              power_smoothing, power_profiles); a 580.82.07 v12 sample shows 580 keeps DTD v12.
    """
    b = int(branch_of(version))
    if b < 550:
        return "535"
    if b < 570:
        return "550"
    return "570"


# ---------------------------------------------------------------------------------------------
# nvidia-smi: -q -x
# ---------------------------------------------------------------------------------------------

# A node is (tag, value) with value a str (leaf), a list of nodes (element), or None (empty element
# printed as <tag>\n</tag>, like <processes>).


def _na(v):
    return "N/A" if v is None else v


def gpu_xml_nodes(gpu: dict, idx: int, st: dict, ver: str, cfg: dict, apps: list[dict]) -> list:
    e = era(ver)
    p = gpu["power"]
    pcie = gpu["pcie"]
    clk = gpu["clocks_mhz"]
    bus = gpu["pci_bus_id"]
    dom, b, devfn = bus.split(":")
    dev = devfn.split(".")[0]
    geforce = gpu.get("brand") == "GeForce"
    used = gpu.get("memory_used_mib", 0) + sum(a.get("used_memory_mib", 0) for a in apps if a["index"] == idx)
    total = gpu["memory_total_mib"]
    reserved = gpu.get("memory_reserved_mib", 0)
    draw = watts(p.get("draw_w", 20.0))
    limit = watts(st["power_limit_w"])
    pstate = gpu.get("pstate", "P8")
    mig = gpu.get("mig")
    ecc = gpu.get("ecc")
    nvswitch = bool(cfg.get("nvswitch"))

    n: list = []
    add = n.append
    add(("product_name", gpu["name"]))
    add(("product_brand", gpu.get("brand", "NVIDIA")))
    add(("product_architecture", gpu.get("architecture", "Unknown")))
    add(("display_mode", "Disabled"))
    add(("display_active", "Disabled"))
    add(("persistence_mode", "Enabled" if st["persistence"] else "Disabled"))
    add(("addressing_mode", "None" if e == "535" or geforce else "N/A"))
    add(("mig_mode", [("current_mig", _na(mig)), ("pending_mig", _na(mig))]))
    add(("mig_devices", "\n%sNone\n%s"))  # rendered specially: real output puts None on its own line
    add(("accounting_mode", "Disabled"))
    add(("accounting_mode_buffer_size", "4000"))
    add(("driver_model", [("current_dm", "N/A"), ("pending_dm", "N/A")]))
    add(("serial", gpu.get("serial", "N/A")))
    add(("uuid", gpu["uuid"]))
    add(("minor_number", str(idx)))
    add(("vbios_version", gpu.get("vbios_version", "N/A")))
    add(("multigpu_board", "No"))
    add(("board_id", "0x%x" % int(b, 16) + "00"))
    add(("board_part_number", "N/A"))
    add(("gpu_part_number", gpu.get("gpu_part_number", "N/A")))
    add(("gpu_fru_part_number", "N/A"))
    if e == "570":
        add(("platformInfo", [("chassis_serial_number", "N/A"), ("slot_number", "N/A"),
                              ("tray_index", "N/A"), ("host_id", "N/A"), ("peer_type", "N/A"),
                              ("module_id", str(idx + 1) if nvswitch else "1"),
                              ("gpu_fabric_guid", "N/A")]))
    else:
        add(("gpu_module_id", str(idx + 1) if nvswitch else "1"))
    add(("inforom_version", [("img_version", "G002.0000.00.03"), ("oem_object", "2.0"),
                             ("ecc_object", "7.16" if ecc else "6.16" if e == "535" else "N/A"),
                             ("pwr_object", "N/A")]))
    if e != "535":
        add(("inforom_bbx_flush", [("latest_timestamp", "N/A"), ("latest_duration", "N/A")]))
    add(("gpu_operation_mode", [("current_gom", "N/A"), ("pending_gom", "N/A")]))
    gsp = ("gsp_firmware_version", ver if (e == "570" or not geforce) else "N/A")
    if e == "535":
        add(gsp)
    else:
        add(("c2c_mode", "N/A"))
    virt = [("virtualization_mode", "None"), ("host_vgpu_mode", "N/A")]
    if e != "535":
        virt.append(("vgpu_heterogeneous_mode", "N/A"))
    add(("gpu_virtualization_mode", virt))
    if e == "570":
        dep = "Requested functionality has been deprecated"
        add(("gpu_reset_status", [("reset_required", dep), ("drain_and_reset_recommended", dep)]))
        add(("gpu_recovery_action", "None"))
    else:
        add(("gpu_reset_status", [("reset_required", "No"), ("drain_and_reset_recommended", "N/A")]))
    if e != "535":
        add(gsp)
    add(("ibmnpu", [("relaxed_ordering_mode", "N/A")]))
    pci = [("pci_bus", b), ("pci_device", dev), ("pci_domain", dom[-4:])]
    if e != "535":
        pci += [("pci_base_class", "3"), ("pci_sub_class", "0")]
    pci += [("pci_device_id", gpu["pci_device_id"][2:].upper()),
            ("pci_bus_id", bus),
            ("pci_sub_system_id", gpu.get("pci_sub_system_id", "0x00000000")[2:].upper()),
            ("pci_gpu_link_info", [
                ("pcie_gen", [("max_link_gen", str(min(pcie["gen_max"], pcie.get("gen_host_max", pcie["gen_max"])))),
                              ("current_link_gen", str(pcie["gen_current"])),
                              ("device_current_link_gen", str(pcie["gen_current"])),
                              ("max_device_link_gen", str(pcie.get("gen_device_max", pcie["gen_max"]))),
                              ("max_host_link_gen", str(pcie.get("gen_host_max", pcie["gen_max"])))]),
                ("link_widths", [("max_link_width", f"{pcie['width_max']}x"),
                                 ("current_link_width", f"{pcie['width_current']}x")])]),
            ("pci_bridge_chip", [("bridge_chip_type", "N/A"), ("bridge_chip_fw", "N/A")]),
            ("replay_counter", "0"), ("replay_rollover_counter", "0"),
            ("tx_util", "0 KB/s"), ("rx_util", "0 KB/s")]
    if e == "570":
        pci += [("atomic_caps_outbound", "N/A"), ("atomic_caps_inbound", "N/A")]
    else:
        pci += [("atomic_caps_inbound", "N/A"), ("atomic_caps_outbound", "N/A")]
    add(("pci", pci))
    fan = gpu.get("fan_percent")
    add(("fan_speed", "N/A" if fan is None else f"{fan} %"))
    add(("performance_state", pstate))
    reasons = ["gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown",
               "hw_thermal_slowdown", "hw_power_brake_slowdown", "sync_boost", "sw_thermal_slowdown",
               "display_clocks_setting"]
    add(("clocks_event_reasons", [(f"clocks_event_reason_{r}", "Active" if r == "gpu_idle" and pstate == "P8" else "Not Active")
                                  for r in reasons]))
    if e != "535":
        add(("sparse_operation_mode", "N/A"))
    add(("fb_memory_usage", [("total", f"{total} MiB"), ("reserved", f"{reserved} MiB"),
                             ("used", f"{used} MiB"), ("free", f"{total - reserved - used} MiB")]))
    bar1 = gpu.get("bar1_total_mib", 256)
    add(("bar1_memory_usage", [("total", f"{bar1} MiB"), ("used", "1 MiB"), ("free", f"{bar1 - 1} MiB")]))
    add(("cc_protected_memory_usage", [("total", "0 MiB"), ("used", "0 MiB"), ("free", "0 MiB")]))
    add(("compute_mode", "Default"))
    add(("utilization", [("gpu_util", "0 %"), ("memory_util", "0 %"), ("encoder_util", "0 %"),
                         ("decoder_util", "0 %"), ("jpeg_util", "0 %"), ("ofa_util", "0 %")]))
    stats = [("session_count", "0"), ("average_fps", "0"), ("average_latency", "0")]
    add(("encoder_stats", list(stats)))
    add(("fbc_stats", list(stats)))
    if e == "570":
        add(("dram_encryption_mode", [("current_dram_encryption", "N/A"), ("pending_dram_encryption", "N/A")]))
    ecc_mode = ecc if ecc else ("Disabled" if e == "535" else "N/A")
    add(("ecc_mode", [("current_ecc", ecc_mode), ("pending_ecc", ecc_mode)]))
    zero = "0" if ecc else "N/A"
    if e == "570":
        vol = [("sram_correctable", zero), ("sram_uncorrectable_parity", zero),
               ("sram_uncorrectable_secded", zero), ("dram_correctable", zero), ("dram_uncorrectable", zero)]
        add(("ecc_errors", [("volatile", vol), ("aggregate", vol + [("sram_threshold_exceeded", "No" if ecc else "N/A")]),
                            ("aggregate_uncorrectable_sram_sources",
                             [(f"sram_{s}", zero) for s in ("l2", "sm", "microcontroller", "pcie", "other")])]))
    else:
        vol = [("sram_correctable", zero), ("sram_uncorrectable", zero),
               ("dram_correctable", zero), ("dram_uncorrectable", zero)]
        add(("ecc_errors", [("volatile", vol), ("aggregate", list(vol))]))
    add(("retired_pages", [
        ("multiple_single_bit_retirement", [("retired_count", "N/A"), ("retired_pagelist", "N/A")]),
        ("double_bit_retirement", [("retired_count", "N/A"), ("retired_pagelist", "N/A")]),
        ("pending_blacklist", "N/A"), ("pending_retirement", "N/A")]))
    # Row-remapper block: on the 535 GeForce capture, and on ECC boards; "N/A" on the 570 GeForce one.
    if ecc or e != "570":
        add(("remapped_rows", [
            ("remapped_row_corr", "0"), ("remapped_row_unc", "0"), ("remapped_row_pending", "No"),
            ("remapped_row_failure", "No"),
            ("row_remapper_histogram", [("row_remapper_histogram_max", "192 bank(s)"),
                                        ("row_remapper_histogram_high", "0 bank(s)"),
                                        ("row_remapper_histogram_partial", "0 bank(s)"),
                                        ("row_remapper_histogram_low", "0 bank(s)"),
                                        ("row_remapper_histogram_none", "0 bank(s)")])]))
    else:
        add(("remapped_rows", "N/A"))
    t = gpu.get("temperature_c", 35)
    if e == "535":
        add(("temperature", [("gpu_temp", f"{t} C"), ("gpu_temp_tlimit", f"{83 - t} C"),
                             ("gpu_temp_max_tlimit_threshold", "-7 C"), ("gpu_temp_slow_tlimit_threshold", "-2 C"),
                             ("gpu_temp_max_gpu_tlimit_threshold", "0 C"), ("gpu_target_temperature", "84 C"),
                             ("memory_temp", "N/A"), ("gpu_temp_max_mem_tlimit_threshold", "N/A")]))
    else:
        add(("temperature", [("gpu_temp", f"{t} C"), ("gpu_temp_tlimit", "N/A"),
                             ("gpu_temp_max_threshold", "98 C"), ("gpu_temp_slow_threshold", "95 C"),
                             ("gpu_temp_max_gpu_threshold", "93 C"), ("gpu_target_temperature", "84 C"),
                             ("memory_temp", "N/A"), ("gpu_temp_max_mem_threshold", "N/A")]))
    add(("supported_gpu_target_temp", [("gpu_target_temp_min", "65 C"), ("gpu_target_temp_max", "88 C")]))
    limits = [("current_power_limit", limit), ("requested_power_limit", limit),
              ("default_power_limit", watts(p["default_w"])), ("min_power_limit", watts(p["min_w"])),
              ("max_power_limit", watts(p["max_w"]))]
    na_limits = [(k, "N/A") for k, _ in limits]
    if e == "570":
        add(("gpu_power_readings", [("power_state", pstate), ("average_power_draw", draw),
                                    ("instant_power_draw", draw)] + limits))
        add(("gpu_memory_power_readings", [("average_power_draw", "N/A"), ("instant_power_draw", "N/A")]))
        add(("module_power_readings", [("power_state", pstate), ("average_power_draw", "N/A"),
                                       ("instant_power_draw", "N/A")] + na_limits))
        add(("power_smoothing", "N/A"))
        add(("power_profiles", [("power_profile_requested_profiles", "N/A"),
                                ("power_profile_enforced_profiles", "N/A")]))
    else:
        add(("gpu_power_readings", [("power_state", pstate), ("power_draw", draw)] + limits))
        if e == "550":
            add(("gpu_memory_power_readings", [("power_draw", "N/A")]))
        add(("module_power_readings", [("power_state", pstate), ("power_draw", "N/A")] + na_limits))
    add(("clocks", [("graphics_clock", f"{clk['graphics']} MHz"), ("sm_clock", f"{clk['sm']} MHz"),
                    ("mem_clock", f"{clk['memory']} MHz"), ("video_clock", f"{clk['video']} MHz")]))
    add(("applications_clocks", [("graphics_clock", "N/A"), ("mem_clock", "N/A")]))
    add(("default_applications_clocks", [("graphics_clock", "N/A"), ("mem_clock", "N/A")]))
    add(("deferred_clocks", [("mem_clock", "N/A")]))
    add(("max_clocks", [("graphics_clock", f"{clk['max_graphics']} MHz"), ("sm_clock", f"{clk['max_sm']} MHz"),
                        ("mem_clock", f"{clk['max_memory']} MHz"), ("video_clock", f"{clk['max_video']} MHz")]))
    add(("max_customer_boost_clocks", [("graphics_clock", "N/A")]))
    add(("clock_policy", [("auto_boost", "N/A"), ("auto_boost_default", "N/A")]))
    add(("voltage", [("graphics_volt", "880.000 mV" if geforce and e == "535" else "N/A")]))
    if nvswitch:
        fab_state, fab_status = ("Completed", "Success") if fabricmanager_running() else ("In Progress", "N/A")
    else:
        fab_state, fab_status = "N/A", "N/A"
    fabric = [("state", fab_state), ("status", fab_status)]
    if e == "550":
        fabric += [("cliqueId", "N/A"), ("clusterUuid", "N/A"), ("health", [("bandwidth", "N/A")])]
    elif e == "570":
        fabric += [("cliqueId", "N/A"), ("clusterUuid", "N/A"),
                   ("health", [("bandwidth", "N/A"), ("route_recovery_in_progress", "N/A"),
                               ("route_unhealthy", "N/A"), ("access_timeout_recovery", "N/A")])]
    add(("fabric", fabric))
    sup = []
    for mem in (clk["max_memory"], clk["memory"]):
        top = clk["max_graphics"] if mem == clk["max_memory"] else 645
        sup.append(("supported_mem_clock", [("value", f"{mem} MHz")] +
                    [("supported_graphics_clock", f"{c} MHz") for c in range(top, 209, -15)]))
    add(("supported_clocks", sup))
    procs = []
    for a in apps:
        if a["index"] != idx:
            continue
        procs.append(("process_info", [("gpu_instance_id", "N/A"), ("compute_instance_id", "N/A"),
                                       ("pid", str(a["pid"])), ("type", a.get("type", "C")),
                                       ("process_name", a.get("process_name", "")),
                                       ("used_memory", f"{a.get('used_memory_mib', 0)} MiB")]))
    add(("processes", procs or None))
    add(("accounted_processes", None))
    if e == "570":
        add(("capabilities", [("egm", "disabled")]))
    return n


def _render(nodes: list, depth: int, out: list) -> None:
    ind = "\t" * depth
    for tag, val in nodes:
        if tag == "mig_devices":
            out.append(f"{ind}<mig_devices>\n{ind}\tNone\n{ind}</mig_devices>")
        elif val is None:
            out.append(f"{ind}<{tag}>\n{ind}</{tag}>")
        elif isinstance(val, list):
            out.append(f"{ind}<{tag}>")
            _render(val, depth + 1, out)
            out.append(f"{ind}</{tag}>")
        else:
            v = str(val).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(f"{ind}<{tag}>{v}</{tag}>")


def render_xml(cfg: dict, gpus: list[tuple[int, dict]], states: dict, ver: str, apps: list[dict]) -> str:
    out = ['<?xml version="1.0" ?>', '<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">', "<nvidia_smi_log>"]
    out.append(f"\t<timestamp>{xml_timestamp(now())}</timestamp>")
    out.append(f"\t<driver_version>{ver}</driver_version>")
    out.append(f"\t<cuda_version>{CUDA_BY_BRANCH.get(branch_of(ver), '12.2')}</cuda_version>")
    out.append(f"\t<attached_gpus>{len(cfg['gpus'])}</attached_gpus>")
    for k, (idx, g) in enumerate(gpus):
        if k:
            out.append("")
        out.append(f'\t<gpu id="{g["pci_bus_id"]}">')
        _render(gpu_xml_nodes(g, idx, states[idx], ver, cfg, apps), 2, out)
        out.append("\t</gpu>")
    out.append("")
    out.append("</nvidia_smi_log>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# nvidia-smi: -q (text). A readable rendering of the same tree, labelled like the real -q.
# ---------------------------------------------------------------------------------------------

LABELS = {
    "product_name": "Product Name", "product_brand": "Product Brand",
    "product_architecture": "Product Architecture", "display_mode": "Display Mode",
    "display_active": "Display Active", "persistence_mode": "Persistence Mode",
    "addressing_mode": "Addressing Mode", "mig_mode": "MIG Mode", "current_mig": "Current",
    "pending_mig": "Pending", "accounting_mode": "Accounting Mode",
    "accounting_mode_buffer_size": "Accounting Mode Buffer Size", "driver_model": "Driver Model",
    "current_dm": "Current", "pending_dm": "Pending", "serial": "Serial Number", "uuid": "GPU UUID",
    "minor_number": "Minor Number", "vbios_version": "VBIOS Version", "multigpu_board": "MultiGPU Board",
    "board_id": "Board ID", "board_part_number": "Board Part Number", "gpu_part_number": "GPU Part Number",
    "gpu_fru_part_number": "FRU Part Number", "gpu_module_id": "Module ID", "pci": "PCI",
    "pci_bus": "Bus", "pci_device": "Device", "pci_domain": "Domain", "pci_device_id": "Device Id",
    "pci_bus_id": "Bus Id", "pci_sub_system_id": "Sub System Id", "pci_gpu_link_info": "GPU Link Info",
    "pcie_gen": "PCIe Generation", "max_link_gen": "Max", "current_link_gen": "Current",
    "device_current_link_gen": "Device Current", "max_device_link_gen": "Device Max",
    "max_host_link_gen": "Host Max", "link_widths": "Link Width", "max_link_width": "Max",
    "current_link_width": "Current", "fan_speed": "Fan Speed", "performance_state": "Performance State",
    "fb_memory_usage": "FB Memory Usage", "bar1_memory_usage": "BAR1 Memory Usage",
    "total": "Total", "reserved": "Reserved", "used": "Used", "free": "Free",
    "compute_mode": "Compute Mode", "utilization": "Utilization", "gpu_util": "Gpu",
    "memory_util": "Memory", "encoder_util": "Encoder", "decoder_util": "Decoder",
    "ecc_mode": "ECC Mode", "current_ecc": "Current", "pending_ecc": "Pending",
    "temperature": "Temperature", "gpu_temp": "GPU Current Temp",
    "gpu_power_readings": "GPU Power Readings", "power_state": "Power State",
    "power_draw": "Power Draw", "average_power_draw": "Average Power Draw",
    "instant_power_draw": "Instantaneous Power Draw", "current_power_limit": "Current Power Limit",
    "requested_power_limit": "Requested Power Limit", "default_power_limit": "Default Power Limit",
    "min_power_limit": "Min Power Limit", "max_power_limit": "Max Power Limit",
    "module_power_readings": "Module Power Readings", "clocks": "Clocks",
    "graphics_clock": "Graphics", "sm_clock": "SM", "mem_clock": "Memory", "video_clock": "Video",
    "max_clocks": "Max Clocks", "fabric": "Fabric", "state": "State", "status": "Status",
    "processes": "Processes",
}
# -d groups: section tags each display type selects (subset of the real list).
DISPLAY = {
    "POWER": {"gpu_power_readings", "gpu_memory_power_readings", "module_power_readings"},
    "MEMORY": {"fb_memory_usage", "bar1_memory_usage", "cc_protected_memory_usage"},
    "PERFORMANCE": {"performance_state", "clocks_event_reasons"},
    "CLOCK": {"clocks", "applications_clocks", "default_applications_clocks", "max_clocks"},
    "TEMPERATURE": {"temperature"},
    "UTILIZATION": {"utilization"},
    "ECC": {"ecc_mode", "ecc_errors"},
    "COMPUTE": {"compute_mode"},
    "PIDS": {"processes"},
}


def _label(tag: str) -> str:
    return LABELS.get(tag, tag.replace("_", " ").title())


def _render_text(nodes: list, depth: int, out: list) -> None:
    ind = "    " * depth
    for tag, val in nodes:
        if tag in ("supported_clocks", "accounted_processes", "mig_devices"):
            continue
        if isinstance(val, list):
            out.append(f"{ind}{_label(tag)}")
            _render_text(val, depth + 1, out)
        elif val is None:
            out.append(f"{ind}{_label(tag):<{54 - len(ind)}}: None")
        else:
            out.append(f"{ind}{_label(tag):<{54 - len(ind)}}: {val}")


def render_text(cfg, gpus, states, ver, apps, display: set[str] | None) -> str:
    out = ["", "==============NVSMI LOG==============", ""]
    out.append(f"{'Timestamp':<54}: {now():%a %b %d %H:%M:%S %Y}")
    out.append(f"{'Driver Version':<54}: {ver}")
    out.append(f"{'CUDA Version':<54}: {CUDA_BY_BRANCH.get(branch_of(ver), '12.2')}")
    out.append("")
    out.append(f"{'Attached GPUs':<54}: {len(cfg['gpus'])}")
    for idx, g in gpus:
        out.append(f"GPU {g['pci_bus_id']}")
        nodes = gpu_xml_nodes(g, idx, states[idx], ver, cfg, apps)
        if display:
            keep = set().union(*(DISPLAY[d] for d in display))
            nodes = [x for x in nodes if x[0] in keep]
        _render_text(nodes, 1, out)
        out.append("")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# nvidia-smi: --query-gpu / --query-compute-apps
# ---------------------------------------------------------------------------------------------

# field -> (unit shown in the header and after numbers, getter). Header names and units as in the
# real captures (gpuexporter_capture_*: "power.limit [W]" with values "450.00 W", "memory.total
# [MiB]" / "24564 MiB", "fan.speed [%]" / "0 %", pcie fields bare).
ALIASES = {"gpu_name": "name", "gpu_serial": "serial", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id",
           "persistence-mode": "persistence_mode", "power.draw.instant": "power.draw.instant",
           "clocks.gr": "clocks.current.graphics", "clocks.sm": "clocks.current.sm",
           "clocks.mem": "clocks.current.memory", "clocks.video": "clocks.current.video",
           "utilization.gpu": "utilization.gpu", "temperature.gpu": "temperature.gpu"}


def _query_fields(ctx) -> dict:
    return {
        "timestamp": (None, lambda g, i, s: csv_timestamp(now())),
        "driver_version": (None, lambda g, i, s: ctx.version),
        "count": (None, lambda g, i, s: str(len(ctx.cfg["gpus"]))),
        "name": (None, lambda g, i, s: g["name"]),
        "serial": (None, lambda g, i, s: "[N/A]" if g.get("serial", "N/A") == "N/A" else g["serial"]),
        "uuid": (None, lambda g, i, s: g["uuid"]),
        "pci.bus_id": (None, lambda g, i, s: g["pci_bus_id"]),
        "pci.domain": (None, lambda g, i, s: "0x" + g["pci_bus_id"].split(":")[0][-4:]),
        "pci.bus": (None, lambda g, i, s: "0x" + g["pci_bus_id"].split(":")[1]),
        "pci.device": (None, lambda g, i, s: "0x" + g["pci_bus_id"].split(":")[2].split(".")[0]),
        "pci.device_id": (None, lambda g, i, s: g["pci_device_id"]),
        "pci.sub_device_id": (None, lambda g, i, s: g.get("pci_sub_system_id", "[N/A]")),
        "pcie.link.gen.current": (None, lambda g, i, s: str(g["pcie"]["gen_current"])),
        "pcie.link.gen.gpucurrent": (None, lambda g, i, s: str(g["pcie"]["gen_current"])),
        "pcie.link.gen.max": (None, lambda g, i, s: str(min(g["pcie"]["gen_max"], g["pcie"].get("gen_host_max", 99)))),
        "pcie.link.gen.gpumax": (None, lambda g, i, s: str(g["pcie"].get("gen_device_max", g["pcie"]["gen_max"]))),
        "pcie.link.gen.hostmax": (None, lambda g, i, s: str(g["pcie"].get("gen_host_max", g["pcie"]["gen_max"]))),
        "pcie.link.width.current": (None, lambda g, i, s: str(g["pcie"]["width_current"])),
        "pcie.link.width.max": (None, lambda g, i, s: str(g["pcie"]["width_max"])),
        "index": (None, lambda g, i, s: str(i)),
        "display_mode": (None, lambda g, i, s: "Disabled"),
        "display_active": (None, lambda g, i, s: "Disabled"),
        "persistence_mode": (None, lambda g, i, s: "Enabled" if s["persistence"] else "Disabled"),
        "accounting.mode": (None, lambda g, i, s: "Disabled"),
        "vbios_version": (None, lambda g, i, s: g.get("vbios_version", "[N/A]")),
        "fan.speed": ("%", lambda g, i, s: "[N/A]" if g.get("fan_percent") is None else f"{g['fan_percent']} %"),
        "pstate": (None, lambda g, i, s: g.get("pstate", "P8")),
        "memory.total": ("MiB", lambda g, i, s: f"{g['memory_total_mib']} MiB"),
        "memory.reserved": ("MiB", lambda g, i, s: f"{g.get('memory_reserved_mib', 0)} MiB"),
        "memory.used": ("MiB", lambda g, i, s: f"{ctx.used_mib(g, i)} MiB"),
        "memory.free": ("MiB", lambda g, i, s: f"{g['memory_total_mib'] - g.get('memory_reserved_mib', 0) - ctx.used_mib(g, i)} MiB"),
        "compute_mode": (None, lambda g, i, s: "Default"),
        "compute_cap": (None, lambda g, i, s: g.get("compute_cap", "[N/A]")),
        "utilization.gpu": ("%", lambda g, i, s: "0 %"),
        "utilization.memory": ("%", lambda g, i, s: "0 %"),
        "ecc.mode.current": (None, lambda g, i, s: g.get("ecc") or "[N/A]"),
        "ecc.mode.pending": (None, lambda g, i, s: g.get("ecc") or "[N/A]"),
        "temperature.gpu": (None, lambda g, i, s: str(g.get("temperature_c", 35))),
        "power.management": (None, lambda g, i, s: "Enabled"),
        "power.draw": ("W", lambda g, i, s: watts(g["power"].get("draw_w", 20.0))),
        "power.draw.average": ("W", lambda g, i, s: watts(g["power"].get("draw_w", 20.0))),
        "power.draw.instant": ("W", lambda g, i, s: watts(g["power"].get("draw_w", 20.0))),
        "power.limit": ("W", lambda g, i, s: watts(s["power_limit_w"])),
        "enforced.power.limit": ("W", lambda g, i, s: watts(s["power_limit_w"])),
        "power.default_limit": ("W", lambda g, i, s: watts(g["power"]["default_w"])),
        "power.min_limit": ("W", lambda g, i, s: watts(g["power"]["min_w"])),
        "power.max_limit": ("W", lambda g, i, s: watts(g["power"]["max_w"])),
        "clocks.current.graphics": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['graphics']} MHz"),
        "clocks.current.sm": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['sm']} MHz"),
        "clocks.current.memory": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['memory']} MHz"),
        "clocks.current.video": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['video']} MHz"),
        "clocks.max.graphics": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['max_graphics']} MHz"),
        "clocks.max.sm": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['max_sm']} MHz"),
        "clocks.max.memory": ("MHz", lambda g, i, s: f"{g['clocks_mhz']['max_memory']} MHz"),
        "mig.mode.current": (None, lambda g, i, s: g.get("mig") or "[N/A]"),
        "mig.mode.pending": (None, lambda g, i, s: g.get("mig") or "[N/A]"),
        "fabric.state": (None, lambda g, i, s: ctx.fabric(g)[0]),
        "fabric.status": (None, lambda g, i, s: ctx.fabric(g)[1]),
    }


APP_FIELDS = {
    "timestamp": (None, lambda a: csv_timestamp(now())),
    "gpu_name": (None, lambda a: a["gpu"]["name"]),
    "gpu_bus_id": (None, lambda a: a["gpu"]["pci_bus_id"]),
    "gpu_serial": (None, lambda a: "[N/A]" if a["gpu"].get("serial", "N/A") == "N/A" else a["gpu"]["serial"]),
    "gpu_uuid": (None, lambda a: a["gpu"]["uuid"]),
    "pid": (None, lambda a: str(a["pid"])),
    "process_name": (None, lambda a: a.get("process_name", "")),
    "used_gpu_memory": ("MiB", lambda a: f"{a.get('used_memory_mib', 0)} MiB"),
}
APP_ALIASES = {"name": "process_name", "used_memory": "used_gpu_memory"}


def _strip_unit(value: str, unit: str | None) -> str:
    if unit and value.endswith(" " + unit):
        return value[: -len(unit) - 1]
    return value


def _csv(fields: list[str], table: dict, rows: list, fmt: set[str], getter) -> str:
    out = []
    if "noheader" not in fmt:
        hdr = []
        for f in fields:
            unit = table[f][0]
            hdr.append(f"{f} [{unit}]" if unit else f)
        out.append(", ".join(hdr))
    for row in rows:
        vals = []
        for f in fields:
            unit, fn = table[f]
            v = getter(fn, row)
            vals.append(_strip_unit(v, unit) if "nounits" in fmt else v)
        out.append(", ".join(vals))
    return "".join(line + "\n" for line in out)


# ---------------------------------------------------------------------------------------------
# nvidia-smi: the program
# ---------------------------------------------------------------------------------------------

LEGEND_TOPO = """
Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""
LEGEND_P2P = """
Legend:

  X    = Self
  OK   = Status Ok
  CNS  = Chipset not supported
  GNS  = GPU not supported
  TNS  = Topology not supported
  NS   = Not supported
  U    = Unknown
"""

# Unknown option: "ERROR: Option pci is not recognized. Please run 'nvidia-smi -h'." (535.216.01,
# tamisoft/nvidia-smi2ha#2). The exit code was not found in a source: 2 ("A supplied argument or
# flag is invalid") per the man page's RETURN VALUE.
BAD_COMBINATION = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."  # UNVERIFIED text


class SmiContext:
    def __init__(self, version: str):
        self.version = version
        self.cfg = visible(load_config())
        self.apps = compute_apps(self.cfg["gpus"])

    def used_mib(self, g: dict, i: int) -> int:
        return g.get("memory_used_mib", 0) + sum(a.get("used_memory_mib", 0) for a in self.apps if a["index"] == i)

    def fabric(self, g: dict) -> tuple[str, str]:
        if not self.cfg.get("nvswitch"):
            return ("[N/A]", "[N/A]")
        return ("Completed", "Success") if fabricmanager_running() else ("In Progress", "[N/A]")


VALUE_OPTS = {"-i": "id", "--id": "id", "-pl": "pl", "--power-limit": "pl", "-pm": "pm",
              "--persistence-mode": "pm", "--query-gpu": "query_gpu",
              "--query-compute-apps": "query_apps", "--format": "format", "-d": "display",
              "--display": "display", "-f": "filename", "--filename": "filename", "-l": "loop",
              "--loop": "loop", "-lms": "loop", "--loop-ms": "loop", "-sc": "scope", "--scope": "scope"}
FLAG_OPTS = {"-q": "query", "--query": "query", "-x": "xml", "--xml-format": "xml", "-L": "list",
             "--list-gpus": "list", "-h": "help", "--help": "help", "--version": "version",
             "-u": "unit", "--unit": "unit", "--dtd": "dtd"}


def parse_smi_args(argv: list[str]) -> dict:
    opts: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in VALUE_OPTS:
            if not eq:
                if i + 1 >= len(argv):
                    raise SimError(f"ERROR: Option {a} is missing its value. Please run 'nvidia-smi -h'.", EXIT_INVALID_ARG)
                i += 1
                val = argv[i]
            opts[VALUE_OPTS[name]] = val
        elif a in FLAG_OPTS:
            opts[FLAG_OPTS[a]] = True
        else:
            raise SimError(f"ERROR: Option {a.lstrip('-') if a.startswith('-') else a} is not recognized. "
                           "Please run 'nvidia-smi -h'.", EXIT_INVALID_ARG)
        i += 1
    return opts


def select_gpus(gpus: list[dict], sel: str | None) -> list[tuple[int, dict]]:
    indexed = list(enumerate(gpus))
    if sel is None:
        return indexed
    chosen = []
    for token in sel.split(","):
        token = token.strip()
        match = None
        for i, g in indexed:
            if token.isdigit() and int(token) == i:
                match = (i, g)
            elif token.upper() == g["uuid"].upper() or ("GPU-" + token).upper() == g["uuid"].upper():
                match = (i, g)
            elif not token.isdigit() and _same_bus(token, g["pci_bus_id"]):
                match = (i, g)
            if match:
                break
        if match is None:
            # UNVERIFIED wording for an -i that matches nothing; exit 6 = "A query to find an
            # object was unsuccessful".
            raise SimError("No devices were found", EXIT_NOT_FOUND)
        if match not in chosen:
            chosen.append(match)
    return chosen


def _same_bus(token: str, bus: str) -> bool:
    def norm(x: str) -> tuple:
        parts = x.lower().split(":")
        if len(parts) == 2:
            parts = ["0"] + parts
        if len(parts) != 3:
            return ()
        dom, b, devfn = parts
        try:
            d, fn = devfn.split(".") if "." in devfn else (devfn, "0")
            return (int(dom, 16), int(b, 16), int(d, 16), int(fn, 16))
        except ValueError:
            return ()
    n = norm(token)
    return bool(n) and n == norm(bus)


HELP = """NVIDIA System Management Interface -- v{version}

NVSMI provides monitoring information for Tesla and select Quadro devices.
The data is presented in either a plain text or an XML format, via stdout or a file.
NVSMI also provides several management operations for changing the device state.

(rigkeeper simulator) Supported here: <no arguments>, -L, -q [-x] [-d TYPE], -i ID[,ID...],
--query-gpu=FIELDS --format=csv[,noheader][,nounits], --query-compute-apps=FIELDS --format=csv,
-pm 0|1, -pl WATTS, topo -m, topo -p2p r|w|n|a|p, nvlink -s, --version.
"""


def smi_main(argv: list[str], version: str) -> int:
    try:
        out = _smi(argv, version)
    except SimError as e:
        sys.stdout.write(e.message + "\n")
        sys.stdout.flush()
        return e.code
    sys.stdout.write(out)
    sys.stdout.flush()
    return EXIT_OK


def _smi(argv: list[str], version: str) -> str:
    if argv[:1] == ["topo"]:
        return _topo(argv[1:], version)
    if argv[:1] == ["nvlink"]:
        return _nvlink(argv[1:], version)
    opts = parse_smi_args(argv)
    if opts.get("help"):
        return HELP.format(version=version)
    driver = driver_version_or_fail(version)
    ctx = SmiContext(driver)
    cfg = ctx.cfg
    if opts.get("version"):
        return (f"NVIDIA-SMI version  : {version}\nNVML version        : {short_version(driver)}\n"
                f"DRIVER version      : {driver}\nCUDA Version        : {CUDA_BY_BRANCH.get(branch_of(driver), '12.2')}\n")
    if not cfg["gpus"]:
        # The module is loaded but drives no GPU (exit 6, "object not found"; UNVERIFIED wording).
        raise SimError("No devices were found", EXIT_NOT_FOUND)
    chosen = select_gpus(cfg["gpus"], opts.get("id"))
    actions = [k for k in ("pl", "pm", "query_gpu", "query_apps", "list", "query") if k in opts]
    if len([a for a in actions if a in ("pl", "pm", "query_gpu", "query_apps", "list")]) > 1:
        raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
    if "pm" in opts:
        return _set_persistence(ctx, chosen, opts["pm"])
    if "pl" in opts:
        return _set_power_limit(ctx, chosen, opts["pl"])
    with locked_state(write=False) as state:
        states = {i: gpu_state(state, g) for i, g in enumerate(cfg["gpus"])}
    if "query_gpu" in opts or "query_apps" in opts:
        fmt = {f.strip() for f in opts.get("format", "").split(",") if f.strip()}
        if "csv" not in fmt or fmt - {"csv", "noheader", "nounits"}:
            raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
        if "query_gpu" in opts:
            table = _query_fields(ctx)
            fields = []
            for f in opts["query_gpu"].split(","):
                f = ALIASES.get(f.strip(), f.strip())
                if f not in table:
                    # UNVERIFIED wording (recalled): 'Field "x" is not a valid field to query.'
                    raise SimError(f'Field "{f}" is not a valid field to query.', EXIT_INVALID_ARG)
                fields.append(f)
            return _csv(fields, table, chosen, fmt, lambda fn, row: fn(row[1], row[0], states[row[0]]))
        fields = []
        for f in opts["query_apps"].split(","):
            f = APP_ALIASES.get(f.strip(), f.strip())
            if f not in APP_FIELDS:
                raise SimError(f'Field "{f}" is not a valid field to query.', EXIT_INVALID_ARG)
            fields.append(f)
        sel = {i for i, _ in chosen}
        rows = [a for a in ctx.apps if a["index"] in sel]
        return _csv(fields, APP_FIELDS, rows, fmt, lambda fn, row: fn(row))
    if opts.get("list"):
        return "".join(f"GPU {i}: {g['name']} (UUID: {g['uuid']})\n" for i, g in chosen)
    if opts.get("query"):
        if opts.get("xml"):
            return render_xml(cfg, chosen, states, driver, ctx.apps)
        display = None
        if opts.get("display"):
            display = {d.strip().upper() for d in opts["display"].split(",")}
            if display - set(DISPLAY):
                raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
        return render_text(cfg, chosen, states, driver, ctx.apps, display)
    if opts.get("xml") or opts.get("display"):
        raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
    return _table(ctx, chosen, states)


def _table(ctx: SmiContext, chosen, states) -> str:
    """The default summary, in the layout of the gpuexporter captures (89 columns)."""
    v = ctx.version
    cuda = CUDA_BY_BRANCH.get(branch_of(v), "12.2")
    wide = "+-----------------------------------------------------------------------------------------+"
    sep = "+-----------------------------------------+------------------------+----------------------+"

    def cols(a: str, b: str, c: str) -> str:
        return f"|{a}|{b}|{c}|"

    def spread(left: str, right: str, width: int) -> str:
        return left + " " * max(1, width - len(left) - len(right)) + right

    out = [table_timestamp(now()), wide,
           f"| NVIDIA-SMI {v:<23}Driver Version: {v:<15}CUDA Version: {cuda:<9}|",
           sep,
           "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
           "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
           "|                                         |                        |               MIG M. |",
           "|=========================================+========================+======================|"]
    for i, g in chosen:
        s = states[i]
        name = g["name"] if len(g["name"]) <= 27 else g["name"][:24] + "..."
        pm = "On" if s["persistence"] else "Off"
        ecc = "0" if g.get("ecc") else "N/A" if g.get("brand") == "GeForce" else "Off"
        fan = "N/A" if g.get("fan_percent") is None else f"{g['fan_percent']}%"
        draw = f"{int(g['power'].get('draw_w', 20))}W"
        cap = f"{int(round(s['power_limit_w']))}W"
        out.append(cols(spread(f"{i:>4}  {name}", f"{pm:<3} ", 41), f"{g['pci_bus_id']:>19} Off ", f"{ecc:>21} "))
        out.append(cols(spread(f"{fan:>4}   {g.get('temperature_c', 35)}C    {g.get('pstate', 'P8')}",
                               f"{draw} / {cap:>5} ", 41),
                        f"{ctx.used_mib(g, i):>8}MiB / {g['memory_total_mib']:>6}MiB ",
                        f"{'0%':>8}{'Default':>13} "))
        out.append(cols(" " * 41, " " * 24, f"{g.get('mig') or 'N/A':>21} "))
        out.append(sep)
    out += ["", wide,
            "| Processes:                                                                              |",
            "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
            "|        ID   ID                                                               Usage      |",
            "|=========================================================================================|"]
    sel = {i for i, _ in chosen}
    apps = [a for a in ctx.apps if a["index"] in sel]
    if not apps:
        out.append("|" + "  No running processes found".ljust(89) + "|")
    for a in apps:
        mem = f"{a.get('used_memory_mib', 0)}MiB"
        head = f"{a['index']:>5}   N/A  N/A {a['pid']:>15} {a.get('type', 'C'):>6}   "
        out.append("|" + head + spread(a.get("process_name", "")[:36], mem + " ", 89 - len(head)) + "|")
    out.append(wide)
    return "\n".join(out) + "\n"


def _topo(argv: list[str], version: str) -> str:
    driver = driver_version_or_fail(version)
    ctx = SmiContext(driver)
    gpus = ctx.cfg["gpus"]
    link = ctx.cfg.get("topology", {}).get("link", "PHB")
    matrix = ctx.cfg.get("topology", {}).get("matrix")
    if argv[:1] in (["-m"], ["--matrix"]):
        # Layout of the gpuexporter captures: underlined header, " X " on the diagonal,
        # "<numa>\t\tN/A" for NUMA Affinity / GPU NUMA ID.
        head = "\t\x1b[4m" + "\t".join(f"GPU{i}" for i in range(len(gpus))) + \
               "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m"
        rows = [head]
        for i, g in enumerate(gpus):
            cells = []
            for j in range(len(gpus)):
                cells.append(" X " if i == j else (matrix[i][j] if matrix else link))
            rows.append(f"GPU{i}\t" + "\t".join(cells) +
                        f"\t{g.get('cpu_affinity', '0-31')}\t{g.get('numa_affinity', '0')}\t\tN/A")
        return "\n".join(rows) + "\n" + LEGEND_TOPO + "\n"
    if argv[:1] == ["-p2p"]:
        kinds = {"r": "read", "w": "write", "n": "nvlink", "a": "atomics", "p": "prop"}
        if len(argv) < 2 or argv[1] not in kinds:
            # Real: `nvidia-smi topo -p2p -p` prints 'Option "-p2p" is missing its value.'
            # (aikitoria/open-gpu-kernel-modules#13); the exit code is UNVERIFIED.
            raise SimError('Option "-p2p" is missing its value.', EXIT_INVALID_ARG)
        # Layout of a real 580.159.04 capture (one H200, tests/hardware/p2p-readonly.sh): the
        # header underlined, a leading " \t", a tab after every cell. Pasted multi-GPU outputs
        # (noonghunna/club-3090#1124) show the same cells without the escapes.
        rows = [" \t\x1b[4m" + "".join(f"GPU{i}\t" for i in range(len(gpus))) + "\x1b[0m"]
        for i in range(len(gpus)):
            rows.append(f" GPU{i}\t" + "".join(
                ("X" if i == j else p2p_status(ctx.cfg, i, j, kinds[argv[1]], driver)) + "\t"
                for j in range(len(gpus))))
        return "\n".join(rows) + "\n" + LEGEND_P2P
    raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)


def _nvlink(argv: list[str], version: str) -> str:
    driver = driver_version_or_fail(version)
    ctx = SmiContext(driver)
    out = []
    for i, g in enumerate(ctx.cfg["gpus"]):
        out.append(f"GPU {i}: {g['name']} (UUID: {g['uuid']})")
        links = g.get("nvlinks", 0)
        if not links:
            # gpuexporter captures (nvlink -s on a GPU without NVLink)
            out.append("Device does not have or support Nvlink")
        for k in range(links):
            out.append(f"\t Link {k}: 26.562 GB/s")
    return "\n".join(out) + "\n"


# "Warning: persistence mode is disabled on this device. This settings will go back to default as
# soon as driver unloads (e.g. last application like nvidia-smi or cuda application terminates).
# Run with [--help | -h] switch to get more information on how to enable persistence mode." follows
# the "was set to" line when persistence is off (seen in a user's notes, wrapped by the terminal).
PM_WARNING = ("Warning: persistence mode is disabled on this device. This settings will go back to "
              "default as soon as driver unloads (e.g. last application like nvidia-smi or cuda "
              "application terminates). Run with [--help | -h] switch to get more information on "
              "how to enable persistence mode.")


def _set_power_limit(ctx: SmiContext, chosen, raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
    out = []
    root = euid() == 0
    # A non-root caller never writes, so it never takes the write lock (the run dir is root's).
    with locked_state(write=root) as state:
        for i, g in chosen:
            p = g["power"]
            bus = g["pci_bus_id"]
            # Range first, then permission (the value is validated against the limits NVML reports
            # before the set call). Verbatim texts: "Provided power limit 50.00 W is not a valid
            # power limit which should be between 200.00 W and 700.00 W for GPU 00000000:06:00.0" +
            # "Terminating early due to previous errors." (stackhpc/ansible-slurm-appliance#975 and
            # several READMEs). Exit code: not printed in any source found; 2 = "A supplied
            # argument or flag is invalid" (man page), which is NVML_ERROR_INVALID_ARGUMENT.
            if not (p["min_w"] <= value <= p["max_w"]):
                out.append(f"Provided power limit {value:.2f} W is not a valid power limit which should be "
                           f"between {p['min_w']:.2f} W and {p['max_w']:.2f} W for GPU {bus}")
                raise SimError("\n".join(out) + "\nTerminating early due to previous errors.", EXIT_INVALID_ARG)
            if not root:
                # "Failed to set power management limit for GPU 00000000:01:00.0: Insufficient
                # Permissions" (NVIDIA/nvidia-docker#495); followed by "Terminating early due to
                # previous errors." (a user's notes); exit 4 = "The current user does not have
                # permission" (man page; a Windows tool's source comment says it verified 4 for
                # this case, and another log shows rc=4 for the same refusal of -lgc).
                out.append(f"Failed to set power management limit for GPU {bus}: Insufficient Permissions")
                raise SimError("\n".join(out) + "\nTerminating early due to previous errors.", EXIT_NO_PERMISSION)
            old = gpu_state(state, g)
            set_gpu_state(state, g, power_limit_w=value)
            # "Power limit for GPU 00000000:05:00.0 was set to 125.00 W from 149.00 W." then
            # "All done." (several READMEs quoting real sessions)
            out.append(f"Power limit for GPU {bus} was set to {value:.2f} W from {old['power_limit_w']:.2f} W.")
            if not old["persistence"]:
                out.append(PM_WARNING)
                if ctx.cfg.get("reset_state_without_persistence"):
                    set_gpu_state(state, g, power_limit_w=p["default_w"])
    out.append("All done.")
    return "\n".join(out) + "\n"


def _set_persistence(ctx: SmiContext, chosen, raw: str) -> str:
    want = {"0": False, "DISABLED": False, "1": True, "ENABLED": True}.get(raw.strip().upper())
    if want is None:
        raise SimError(BAD_COMBINATION, EXIT_INVALID_ARG)
    word = "Enabled" if want else "Disabled"
    via = " via daemon" if persistenced_running() else ""
    out = []
    root = euid() == 0
    with locked_state(write=root) as state:
        for i, g in chosen:
            bus = g["pci_bus_id"]
            if gpu_state(state, g)["persistence"] == want:
                # "Persistence mode is already Enabled for GPU 00000000:01:00.0." then "All done.",
                # exit 0, also for non-root users: nvidia-smi short-circuits before the write
                # (several logs; one shows PM_RC=0 for a non-root call).
                out.append(f"Persistence mode is already {word} for GPU {bus}.")
                continue
            if not root:
                # "Unable to set persistence mode for GPU 00000000:00:04.0: Insufficient
                # Permissions" (several READMEs). The "Terminating early" line and exit 4 mirror
                # the -pl case (UNVERIFIED for -pm).
                out.append(f"Unable to set persistence mode for GPU {bus}: Insufficient Permissions")
                raise SimError("\n".join(out) + "\nTerminating early due to previous errors.", EXIT_NO_PERMISSION)
            set_gpu_state(state, g, persistence=want)
            # "Enabled persistence mode for GPU <target gpu>." / "All done." (NVIDIA "Persistence
            # Mode (Legacy)" doc). "... via daemon ..." when nvidia-persistenced runs (a user's
            # notes; the Disabled form by symmetry, UNVERIFIED).
            out.append(f"{word} persistence mode{via} for GPU {bus}.")
    out.append("All done.")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# nvidia-persistenced
# ---------------------------------------------------------------------------------------------


def _log_open(tool: str):
    """syslog in the rig (journald picks it up); a file under the run dir in unit tests."""
    if _root():
        logfile = path(RUN + f"/{tool}.log")
        os.makedirs(os.path.dirname(logfile), exist_ok=True)

        def log(msg: str) -> None:
            with open(logfile, "a", encoding="utf-8") as f:
                f.write(f"{tool}: {msg}\n")
        return log
    import syslog
    syslog.openlog(tool, syslog.LOG_PID, syslog.LOG_DAEMON)
    return lambda msg: syslog.syslog(syslog.LOG_NOTICE, msg)


def persistenced_main(argv: list[str], version: str) -> int:
    """Fake nvidia-persistenced: forks like the real daemon (Type=forking units).

    Honours --persistence-mode / --no-persistence-mode (default: persistence mode enabled, per
    nvidia-persistenced(1) of current drivers), --user/-u, --group/-g, --verbose/-V, --version/-v.
    Runs as root (it records --user and chowns its runtime dir to it, but does not drop privileges:
    the simulated driver state is a root-owned file).
    """
    persist = True
    user = group = None
    verbose = False
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, val = a.partition("=")
        if name in ("-u", "--user", "-g", "--group", "--nvidia-cfg-path"):
            if not eq:
                i += 1
                val = argv[i] if i < len(argv) else ""
            if name in ("-u", "--user"):
                user = val
            elif name in ("-g", "--group"):
                group = val
        elif a == "--persistence-mode":
            persist = True
        elif a == "--no-persistence-mode":
            persist = False
        elif a in ("-V", "--verbose"):
            verbose = True
        elif a in ("-v", "--version"):
            print(f"nvidia-persistenced:  version {version}\n")
            return 0
        elif a in ("-h", "--help"):
            print("nvidia-persistenced [options]\n  (rigkeeper simulator) --persistence-mode, "
                  "--no-persistence-mode, -u USER, -g GROUP, -V, -v")
            return 0
        else:
            print(f'nvidia-persistenced: Unrecognized option: "{a}"')  # UNVERIFIED text
            return 1
        i += 1
    log = _log_open("nvidia-persistenced")
    fail = "nvidia-persistenced failed to initialize. Check syslog for more details."
    if euid() != 0:
        log("The daemon must be run as root.")  # UNVERIFIED text
        print(fail)
        return 1
    uid = gid = None
    if user:
        import pwd
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            log(f"Failed to find user ID of user '{user}'.")  # UNVERIFIED text
            print(fail)
            return 1
        uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        import grp
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            print(fail)
            return 1
    loaded = load_module()
    if loaded is None or loaded != installed_nvml_version(version):
        log("Failed to query NVIDIA devices. Please ensure that the NVIDIA device files "
            "(/dev/nvidia*) exist, and that user has read and write permission for those files.")
        print(fail)
        return 1
    rundir = path(PERSISTENCED_DIR)
    os.makedirs(rundir, exist_ok=True)
    if uid is not None and euid() == 0 and os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(rundir, uid, gid if gid is not None else -1)
    cfg = visible(load_config())
    if persist:
        with locked_state(write=True) as state:
            for g in cfg["gpus"]:
                set_gpu_state(state, g, persistence=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        os.read(r, 1)  # wait until the child wrote its pid file, as Type=forking expects
        return 0
    os.close(r)
    os.setsid()
    with open(path(PERSISTENCED_PIDFILE), "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    log(f"Started ({os.getpid()})")
    if verbose:
        for g in cfg["gpus"]:
            bus = g["pci_bus_id"][4:].lower()
            log(f"device {bus} - registered")
            if persist:
                log(f"device {bus} - persistence mode enabled.")
        log("Local RPC services initialized")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.write(w, b"1")
    os.close(w)

    def stop(signum, frame):
        # The daemon holds the GPUs persistent; when it goes, so does persistence (UNVERIFIED:
        # what the real daemon logs on shutdown).
        if persist:
            with contextlib.suppress(Exception), locked_state(write=True) as state:
                for g in cfg["gpus"]:
                    set_gpu_state(state, g, persistence=False)
        with contextlib.suppress(OSError):
            os.unlink(path(PERSISTENCED_PIDFILE))
        log("Shutdown")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        signal.pause()


# ---------------------------------------------------------------------------------------------
# nv-fabricmanager
# ---------------------------------------------------------------------------------------------


def fabricmanager_main(argv: list[str], version: str) -> int:
    """Fake nv-fabricmanager: starts only on an NVSwitch system whose loaded driver is its own version.

    Messages (journal lines of real failures):
      "fabric manager NVIDIA GPU driver interface version 530.30.02 don't match with driver version
       530.41.03. Please update with matching NVIDIA driver package." (NVIDIA/gpu-operator#544,
       siderolabs/pkgs#720), exit status 1;
      "request to query NVSwitch device information from NVSwitch driver failed with error:WARNING
       Nothing to do [NV_WARN_NOTHING_TO_DO]" without NVSwitches (NVIDIA/gpu-operator#610), exit 1.
    """
    if argv[:1] in (["-v"], ["--version"]):
        print(f"Fabric Manager version is : {version}")  # UNVERIFIED layout
        return 0
    loaded = load_module()
    if loaded is None:
        print("fabric manager failed to open NVIDIA driver: NVIDIA driver is not loaded")  # UNVERIFIED text
        return 1
    if loaded != version:
        print(f"fabric manager NVIDIA GPU driver interface version {version} don't match with driver "
              f"version {loaded}. Please update with matching NVIDIA driver package.")
        return 1
    if not load_config().get("nvswitch"):
        print("request to query NVSwitch device information from NVSwitch driver failed with "
              "error:WARNING Nothing to do [NV_WARN_NOTHING_TO_DO]")
        return 1
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        os.read(r, 1)
        return 0
    os.close(r)
    os.setsid()
    os.makedirs(os.path.dirname(path(FM_PIDFILE)), exist_ok=True)
    with open(path(FM_PIDFILE), "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.write(w, b"1")
    os.close(w)

    def stop(signum, frame):
        with contextlib.suppress(OSError):
            os.unlink(path(FM_PIDFILE))
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        signal.pause()


# ---------------------------------------------------------------------------------------------
# P2P: one model behind `topo -p2p`, the p2p_bench stand-in and the P2P kernel modules
# ---------------------------------------------------------------------------------------------
#
# The preset's "p2p" block says what the stock driver reports for every pair ({"read": "CNS", ...});
# "by_branch" overrides it while a driver of that branch is loaded ({"545": {"read": "OK", "copy":
# "hang"}}: 545 reported P2P on consumer cards and all-reduce hung, FACTS.md "P2P breakage");
# "copy": "hang" makes every peer-enabled copy of such a pair never finish. Two things of the
# running machine change the answers:
#   - a P2P-enabled kernel module (the simulated kernel writes sys/module/nvidia/p2p = 1 when the
#     loaded module was built from a P2P fork, e.g. tinygrad/open-gpu-kernel-modules) turns CNS
#     into OK for read and write, but only on GPUs whose BAR1 covers their memory (the fork maps
#     all of VRAM into BAR1: its README, "needs large BAR support");
#   - an IOMMU that is on (sys/class/iommu not empty, written at boot from the preset's
#     platform.iommu unless the command line turns it off) lets peer access be enabled, but peer
#     copies over PCIe arrive zeroed and the kernel logs IO_PAGE_FAULT (tinygrad/open-gpu-kernel-
#     modules#18: "the copied tensor would be allocated but zeroed out"; pytorch/pytorch#52142 and
#     #13045 for the AMD-Vi lines). NVLink traffic does not go through the IOMMU.

LOADED_P2P = RUN + "/sys/module/nvidia/p2p"
IOMMU_DIR = RUN + "/sys/class/iommu"
DMESG = RUN + "/dmesg"

# PCIe bandwidth per lane and direction after line coding, GB/s (8b/10b for gen 1-2, 128b/130b
# from gen 3; gen 6 FLIT mode approximated).
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}
NVLINK_LINK_GBPS = 25.0
# Shape of the stand-in's numbers, against the link: invented proportions that keep the real
# relations (peer copies near the link rate, staged copies slower, both ways about twice one way).
# Anchors: 24.4 GB/s one way and about 50 GB/s both ways per RTX 4090 pair on PCIe 4.0 x16 with the
# P2P modules (tinygrad fork README); a device-to-device copy at 0.445 of the datasheet memory
# bandwidth and 55 GB/s host<->device on PCIe 5.0 x16, measured on one H200 (tests/hardware).
P2P_ON = {"uni": 0.78, "bi": 1.56, "latency_us": 1.9}
P2P_OFF = {"uni": 0.55, "bi": 0.70, "latency_us": 14.5}
HOST_LINK_FRACTION = 0.87
D2D_FRACTION = 0.445


def module_p2p() -> bool:
    return _read(LOADED_P2P) == "1"


def iommu_units() -> list[str]:
    try:
        return sorted(os.listdir(path(IOMMU_DIR)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _p2p_block(cfg: dict, driver: str | None) -> dict:
    block = dict(cfg.get("p2p") or {})
    by_branch = block.pop("by_branch", None) or {}
    if driver and branch_of(driver) in by_branch:
        block.update(by_branch[branch_of(driver)])
    return block


def _large_bar(g: dict) -> bool:
    return g.get("bar1_total_mib", 256) >= g["memory_total_mib"]


def p2p_status(cfg: dict, i: int, j: int, kind: str, driver: str | None) -> str:
    """What `topo -p2p <kind>` prints for GPUs i and j (indices of the visible GPUs)."""
    status = _p2p_block(cfg, driver).get(kind, "NS")
    gi, gj = cfg["gpus"][i], cfg["gpus"][j]
    if status == "CNS" and kind in ("read", "write") and module_p2p() and _large_bar(gi) and _large_bar(gj):
        status = "OK"
    return status


def topo_link(cfg: dict, i: int, j: int) -> str:
    topo = cfg.get("topology", {})
    matrix = topo.get("matrix")
    return matrix[i][j] if matrix else topo.get("link", "PHB")


def pcie_gbps(g: dict) -> float:
    p = g.get("pcie", {})
    return PCIE_LANE_GBPS.get(p.get("gen_current", 4), 1.969) * p.get("width_current", 16)


def peer_model(cfg: dict, i: int, j: int, driver: str) -> dict:
    """How peer copies between i and j behave: can_access, copy ('ok' | 'zeroed' | 'hang'), link."""
    can = p2p_status(cfg, i, j, "read", driver) == "OK"
    link = topo_link(cfg, i, j)
    copy = "ok"
    if can and _p2p_block(cfg, driver).get("copy") == "hang":
        copy = "hang"
    elif can and not link.startswith("NV") and iommu_units():
        copy = "zeroed"
    return {"can_access": can, "copy": copy, "link": link}


def _bandwidth(cfg: dict, i: int, j: int, peer: bool) -> dict:
    gi, gj = cfg["gpus"][i], cfg["gpus"][j]
    link = topo_link(cfg, i, j)
    if peer and link.startswith("NV"):
        base = NVLINK_LINK_GBPS * int(link[2:] or 1)
    else:
        base = min(pcie_gbps(gi), pcie_gbps(gj))
    shape = P2P_ON if peer else P2P_OFF
    return {"uni": round(shape["uni"] * base, 3), "bi": round(shape["bi"] * base, 3),
            "latency_us": shape["latency_us"]}


# CUDA runtime errors, as cudaGetErrorName / cudaGetErrorString return them. Texts: 35 tensorflow/
# tensorflow#990 ("cudaGetDeviceCount returned 35 -> CUDA driver version is insufficient for CUDA
# runtime version"); 100 compiler-explorer/infra#1519 (driver installed, module not loaded until the
# reboot: "cudaGetDeviceCount returned 100, no CUDA-capable device is detected") and NVIDIA/
# cuda-samples#34; 803 NVIDIA/nvidia-docker#1256 (kernel module and libcuda of different versions);
# 217 ggml-org/llama.cpp#3230 (8x RTX 4090: "CUDA error 217 ... peer access is not supported between
# these two devices"); 209 and 222 are the runtime's strings for a binary without code for the GPU
# and for PTX newer than the driver (CUDA Runtime API, cudaError; not checked against a capture).
CUDA_ERRORS = {
    35: ("cudaErrorInsufficientDriver", "CUDA driver version is insufficient for CUDA runtime version"),
    100: ("cudaErrorNoDevice", "no CUDA-capable device is detected"),
    209: ("cudaErrorNoKernelImageForDevice", "no kernel image is available for execution on the device"),
    217: ("cudaErrorPeerAccessUnsupported", "peer access is not supported between these two devices"),
    222: ("cudaErrorUnsupportedPtxVersion", "the provided PTX was compiled with an unsupported toolchain."),
    803: ("cudaErrorSystemDriverMismatch", "system has unsupported display driver / cuda driver combination"),
}
BENCH_PROGRAM = "rigkeeper-p2p-bench"


def _cuda_int(dotted: str) -> int:
    major, minor = (dotted.split(".") + ["0"])[:2]
    return int(major) * 1000 + int(minor) * 10


def installed_libcuda_version() -> str | None:
    """Version of the installed libcuda.so.<version> (libnvidia-compute-<branch>), or None."""
    try:
        names = os.listdir(path(NVML_LIB_DIR))
    except FileNotFoundError:
        return None
    prefix = "libcuda.so."
    versions = [n[len(prefix):] for n in names if n.startswith(prefix) and n.count(".") >= 4]
    return sorted(versions)[-1] if versions else None


class CudaError(Exception):
    def __init__(self, call: str, code: int):
        super().__init__(call)
        self.call, self.code = call, code


def _stage(name: str) -> None:
    sys.stderr.write(f"stage: {name}\n")
    sys.stderr.flush()


def _devices_json(gpus: list[dict]) -> list[dict]:
    out = []
    for i, g in enumerate(gpus):
        bus = g["pci_bus_id"].lower()
        out.append({"index": i, "name": g["name"], "bus_id": bus[4:] if len(bus.split(":")[0]) == 8 else bus,
                    "memory_mib": g["memory_total_mib"] - g.get("memory_reserved_mib", 0),
                    "compute_capability": g.get("compute_cap", "8.9"),
                    "multiprocessors": g.get("multiprocessors", 128)})
    return out


def _kernel_check(gpu: dict, build: dict, runtime: int, driver: int) -> None:
    """The first kernel launch: SASS for the GPU, else PTX the driver can JIT, else no image."""
    cc = int(gpu.get("compute_cap", "8.9").replace(".", ""))
    if cc in build.get("sass", []):
        return
    if any(p <= cc for p in build.get("ptx", [])):
        if runtime > driver:
            raise CudaError("cudaGetLastError()", 222)
        return
    raise CudaError("cudaGetLastError()", 209)


def _log_iommu_faults(a: dict, b: dict) -> None:
    units = iommu_units()
    lines = []
    for g in (a, b):
        bus = g["pci_bus_id"].lower()[-7:]
        if units and units[0].startswith("dmar"):
            # Intel VT-d's fault line (shape of reported logs; exact wording UNVERIFIED).
            lines.append(f"DMAR: [DMA Write NO_PASID] Request device [{bus}] fault addr 0x3f800010000 "
                         "[fault reason 0x05] PTE Write access is not set")
        else:
            lines.append(f"AMD-Vi: Event logged [IO_PAGE_FAULT device={bus} domain=0x000e "
                         "address=0x000003f80001b100 flags=0x0030]")
    full = path(DMESG)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _hang() -> None:
    """A peer copy that never completes (the 545 symptom): wait until killed."""
    while True:
        signal.pause()


def _bench_parse(argv: list[str]) -> dict | None:
    o = {"mode": None, "a": -1, "b": -1, "bytes": 64 << 20, "iters": 10, "latency_iters": 100}
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a == "--version":
                o["mode"] = "version"
            elif a == "--list":
                o["mode"] = "list"
            elif a == "--pair":
                o["mode"], o["a"], o["b"] = "pair", int(argv[i + 1]), int(argv[i + 2])
                i += 2
            elif a == "--device":
                o["mode"], o["a"] = "device", int(argv[i + 1])
                i += 1
            elif a in ("--size-mib", "--iters", "--latency-iters"):
                v = int(argv[i + 1])
                i += 1
                limits = {"--size-mib": 4096, "--iters": 10000, "--latency-iters": 100000}
                if not 1 <= v <= limits[a]:
                    return None
                if a == "--size-mib":
                    o["bytes"] = v << 20
                else:
                    o[a[2:].replace("-", "_")] = v
            else:
                return None
            i += 1
    except (IndexError, ValueError):
        return None
    return o if o["mode"] else None


def bench_main(argv: list[str], build: dict) -> int:
    """The stand-in for roles/p2p_check/files/p2p_bench.cu that the fake nvcc builds: the same
    command line, stages on stderr and JSON on stdout, with results that follow the preset."""
    o = _bench_parse(argv)
    if o is None:
        sys.stderr.write("usage: p2p_bench --version | --list | --pair A B | --device A "
                         "[--size-mib N] [--iters N] [--latency-iters N]\n")
        return 64
    head = {"program": BENCH_PROGRAM, "schema": 1}
    runtime = int(build.get("runtime", 12080))
    if o["mode"] == "version":
        print(json.dumps(dict(head, cuda_runtime_built=runtime)))
        return 0
    libcuda = installed_libcuda_version()
    driver = _cuda_int(CUDA_BY_BRANCH.get(branch_of(libcuda), "12.2")) if libcuda else 0
    doc = dict(head, cuda={"runtime": runtime, "driver": driver}, devices=[])
    try:
        _stage("devices")
        # cudart needs libcuda's API to be at least its major version (minor-version compatibility
        # inside a major, FACTS.md "CUDA toolkit -> minimum Linux driver").
        if driver == 0 or runtime // 1000 > driver // 1000:
            raise CudaError("cudaGetDeviceCount(&count)", 35)
        loaded = load_module()
        if loaded is None:
            raise CudaError("cudaGetDeviceCount(&count)", 100)
        if loaded != libcuda:
            raise CudaError("cudaGetDeviceCount(&count)", 803)
        cfg = visible(load_config())
        gpus = cfg["gpus"]
        if not gpus:
            raise CudaError("cudaGetDeviceCount(&count)", 100)
        doc["devices"] = _devices_json(gpus)
        sys.stderr.write(f"cuda: runtime {runtime} driver {driver} devices {len(gpus)}\n")
        if o["mode"] == "list":
            print(json.dumps(dict(doc, mode="list", error=None)))
            return 0
        if o["mode"] == "device":
            return _bench_device(o, cfg, doc, build, runtime, driver)
        return _bench_pair(o, cfg, doc, build, runtime, driver, loaded)
    except CudaError as e:
        name, message = CUDA_ERRORS[e.code]
        print(json.dumps(dict(doc, error={"call": e.call, "code": e.code, "name": name, "message": message})))
        return 2


def _bad_device(doc: dict, message: str) -> int:
    print(json.dumps(dict(doc, error={"call": "arguments", "code": -1, "name": "badDevice", "message": message})))
    return 64


def _bench_device(o, cfg, doc, build, runtime, driver) -> int:
    gpus = cfg["gpus"]
    if not 0 <= o["a"] < len(gpus):
        return _bad_device(doc, f"--device needs a device below {len(gpus)}")
    g = gpus[o["a"]]
    for name in ("allocate", "d2d", "h2d", "d2h", "verify"):
        _stage(name)
    _kernel_check(g, build, runtime, driver)
    copy = round(D2D_FRACTION * g.get("memory_bandwidth_gbps", 1008.0), 3)
    host = round(HOST_LINK_FRACTION * pcie_gbps(g), 3)
    print(json.dumps(dict(doc, mode="device", size_bytes=o["bytes"], iterations=o["iters"],
                          local={"device": o["a"], "d2d_copy_gbps": copy, "d2d_memory_gbps": round(2 * copy, 3),
                                 "h2d_gbps": host, "d2h_gbps": host, "mismatched_words": 0},
                          error=None)))
    return 0


def _measured(o, cfg, peer: bool, zeroed: bool) -> dict:
    bw = _bandwidth(cfg, o["a"], o["b"], peer)
    words = o["bytes"] // 4 if zeroed else 0
    return {"uni_gbps": {"a_to_b": bw["uni"], "b_to_a": bw["uni"]}, "bi_gbps": bw["bi"],
            "latency_us": {"a_to_b": bw["latency_us"], "b_to_a": bw["latency_us"]},
            "mismatched_words": {"a_to_b": words, "b_to_a": words}}


def _bench_pair(o, cfg, doc, build, runtime, driver, loaded) -> int:
    gpus = cfg["gpus"]
    a, b = o["a"], o["b"]
    if not (0 <= a < len(gpus) and 0 <= b < len(gpus)) or a == b:
        return _bad_device(doc, f"--pair needs two different devices below {len(gpus)}")
    model = peer_model(cfg, a, b, loaded)
    _stage("allocate")
    for name in ("p2p_off_uni", "p2p_off_bi", "p2p_off_latency", "p2p_off_verify"):
        _stage(name)
    _kernel_check(gpus[a], build, runtime, driver)
    _kernel_check(gpus[b], build, runtime, driver)
    off = _measured(o, cfg, peer=False, zeroed=False)
    _stage("enable_peer")
    err = None if model["can_access"] else CUDA_ERRORS[217][1]
    on = None
    if model["can_access"]:
        _stage("p2p_on_uni")
        if model["copy"] == "hang":
            _hang()
        for name in ("p2p_on_bi", "p2p_on_latency", "p2p_on_verify"):
            _stage(name)
        zeroed = model["copy"] == "zeroed"
        if zeroed:
            _log_iommu_faults(gpus[a], gpus[b])
        on = _measured(o, cfg, peer=True, zeroed=zeroed)
    print(json.dumps(dict(doc, mode="pair", size_bytes=o["bytes"], iterations=o["iters"],
                          pair={"a": a, "b": b,
                                "can_access_peer": {"a_to_b": model["can_access"], "b_to_a": model["can_access"]},
                                "peer_enable_error": {"a_to_b": err, "b_to_a": err},
                                "p2p_off": off, "p2p_on": on},
                          error=None)))
    return 0


# ---------------------------------------------------------------------------------------------

def _bench_tool(argv: list[str], version: str) -> int:
    """Development entry for the stand-in program (unit tests): the build comes from
    RIGKEEPER_SIM_BUILD (JSON), as the fake nvcc bakes it into the programs it writes."""
    return bench_main(argv, json.loads(os.environ.get("RIGKEEPER_SIM_BUILD") or '{"runtime": 12080, "sass": [89], "ptx": [89]}'))


TOOLS = {"nvidia-smi": smi_main, "nvidia-persistenced": persistenced_main, "nv-fabricmanager": fabricmanager_main,
         "p2p-bench": _bench_tool}


def main(argv: list[str] | None = None) -> int:
    """Development entry: nvsim.py <tool> <version> [args...]."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in TOOLS:
        print("usage: nvsim.py {nvidia-smi|nvidia-persistenced|nv-fabricmanager} VERSION [ARGS...]", file=sys.stderr)
        return 2
    return TOOLS[argv[0]](argv[2:], argv[1])


if __name__ == "__main__":
    sys.exit(main())
