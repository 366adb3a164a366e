# -*- coding: utf-8 -*-
# Apache-2.0
"""Presentation filters: facts as text a person reads in a terminal or CI log. No decisions here."""
from __future__ import annotations


def _fmt(value, unit="", digits=0):
    if value is None:
        return "-"
    if isinstance(value, float):
        value = round(value, digits) if digits else int(round(value))
    return f"{value}{unit}"


def rk_gpu_table(nvidia_gpu, rigkeeper_host=None):
    """One line per GPU plus a host summary, as a list of strings (Ansible prints lists line by line)."""
    gpu = nvidia_gpu or {}
    host = rigkeeper_host or {}
    lines = []
    if not gpu.get("present"):
        lines.append(f"no GPU facts: {gpu.get('error') or 'nvidia-smi not found'}")
    else:
        lines.append(f"driver {gpu.get('driver_version')}  CUDA {gpu.get('cuda_version')}  "
                     f"GPUs {gpu.get('count')}  NVSwitch {'yes' if gpu.get('nvswitch') else 'no'}")
        header = f"{'#':>2} {'bus id':<17} {'name':<28} {'arch':<13} {'VRAM':>8} {'power now/def/min/max W':>24} " \
                 f"{'PCIe gen':>8} {'width':>7} {'persist':>7}"
        lines.append(header)
        for g in gpu.get("gpus", []):
            power = "/".join(_fmt(g.get(k)) for k in ("power_limit_w", "power_default_w", "power_min_w", "power_max_w"))
            gen = f"{_fmt(g.get('pcie_gen_current'))}/{_fmt(g.get('pcie_gen_max'))}"
            width = f"x{_fmt(g.get('pcie_width_current'))}/x{_fmt(g.get('pcie_width_max'))}"
            persist = {True: "on", False: "off"}.get(g.get("persistence_mode"), "-")
            lines.append(f"{_fmt(g.get('index')):>2} {str(g.get('bus_id') or '-'):<17} "
                         f"{str(g.get('product_name') or '-')[:28]:<28} {str(g.get('architecture') or '-'):<13} "
                         f"{_fmt(g.get('memory_total_mib'), ' MiB'):>8} {power:>24} {gen:>8} {width:>7} {persist:>7}")
        p2p = gpu.get("p2p_read")
        if p2p:
            pairs = sorted({v for row in p2p.values() for v in row.values() if v != "X"})
            lines.append(f"P2P read: {', '.join(pairs) or '-'}")
    if host:
        lines.append(f"host: CPU {host.get('cpu_vendor')}, RAM {_fmt(host.get('mem_total_mib'), ' MiB')}, "
                     f"IOMMU {'on' if (host.get('iommu') or {}).get('enabled') else 'off'}, "
                     f"driver installed {host.get('driver_installed_version') or '-'} / "
                     f"running {host.get('driver_running_version') or '-'}"
                     f"{' (MISMATCH: reboot pending)' if host.get('driver_mismatch') else ''}")
        lines.append(f"cmdline: {host.get('cmdline') or '-'}")
    return lines


class FilterModule:
    def filters(self):
        return {"rk_gpu_table": rk_gpu_table}
