#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: nvidia_gpu_facts
short_description: Gather NVIDIA GPU and GPU-host facts
description:
  - Reads C(nvidia-smi -q -x) once and returns one fact dict per GPU (name, architecture, UUID, bus id,
    power default/min/max/current, persistence, PCIe generation and width, memory, MIG mode), plus
    the GPU topology (C(nvidia-smi topo -m)) and the P2P read matrix (C(nvidia-smi topo -p2p r))
    on hosts with more than one GPU.
  - Also returns host facts that GPU provisioning decisions need - CPU vendor, RAM, the running
    kernel command line, IOMMU and PCIe ACS state, Secure Boot, installed versus running driver
    version, pending reboot, systemd.
  - A host without C(nvidia-smi), without a driver, or with a driver/library version mismatch is
    a normal case, described by RV(ansible_facts.nvidia_gpu.present=false) and
    RV(ansible_facts.nvidia_gpu.error); the module does not fail for it.
  - The keys returned are the contract in C(docs/facts.md).
  - Never changes anything on the host.
version_added: 0.1.0
author:
  - rigkeeper developers (@rigkeeper)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
options:
  nvidia_smi:
    description:
      - Path of the C(nvidia-smi) binary.
      - When not set, C(nvidia-smi) is searched in E(PATH) and the usual system directories.
    type: path
  cmdline_path:
    description:
      - File holding the running kernel's command line.
    type: path
    default: /proc/cmdline
  module_version_path:
    description:
      - Files tried in order for the loaded C(nvidia) kernel module's version. The first one that
        exists and holds a version wins.
      - When none does, C(/proc/driver/nvidia/version) is parsed as a fallback.
    type: list
    elements: path
    default: [/sys/module/nvidia/version]
  lib_dirs:
    description:
      - Directories searched for C(libnvidia-ml.so.<version>), whose name gives the driver version
        installed on disk.
    type: list
    elements: path
    default:
      - /usr/lib/x86_64-linux-gnu
      - /usr/lib/aarch64-linux-gnu
      - /usr/lib64
      - /usr/lib
  sys_module_dir:
    description:
      - Where the kernel lists its loaded modules (nouveau's presence and use count are read there).
    type: path
    default: /sys/module
  kernel_release_path:
    description:
      - File holding the running kernel's release (what C(uname -r) prints).
    type: path
    default: /proc/sys/kernel/osrelease
  iommu_dir:
    description:
      - Where the kernel lists its active IOMMUs (any entry means the IOMMU is on). Unset - C(/sys/class/iommu).
    type: path
  grub_cfg_path:
    description:
      - GRUB's generated configuration; its first menu entry is the kernel the next boot runs.
    type: path
    default: /boot/grub/grub.cfg
  mok_key_path:
    description:
      - The local Machine Owner Key DKMS signs modules with (Ubuntu's shim-signed); with Secure
        Boot on, C(mokutil --test-key) tells whether it is enrolled.
    type: path
    default: /var/lib/shim-signed/mok/MOK.der
  gather_topology:
    description:
      - Run C(nvidia-smi topo -m) and C(nvidia-smi topo -p2p r) when the host has more than one GPU.
      - A failure of either yields V(null) for that fact, not a module failure.
    type: bool
    default: true
notes:
  - Bus ids are normalised to the form nvidia-smi prints, C(00000000:01:00.0) (8-digit domain,
    upper-case hex). Use them, not UUIDs, as GPU keys - UUIDs are masked or duplicated in some
    real outputs.
  - C(lspci -D -vvv) needs root to show the ACS capability; without it
    C(ansible_facts.rigkeeper_host.acs.checked) is V(false).
  - Commands run with C(LC_ALL=C).
requirements:
  - nvidia-smi (optional; its absence is reported, not an error)
  - lspci from pciutils (optional, for ACS)
  - mokutil (optional, for Secure Boot)
  - modinfo from kmod (optional, for the NVIDIA module of the kernel GRUB boots)
  - dpkg-query (optional, tells the driver's own libraries from a .run installer's leftovers)
'''

EXAMPLES = r'''
- name: Gather GPU facts
  nvidia_gpu_facts:

- name: Show the power range of each GPU
  ansible.builtin.debug:
    msg: "{{ item.bus_id }} {{ item.product_name }}: {{ item.power_min_w }}-{{ item.power_max_w }} W"
  loop: "{{ ansible_facts.nvidia_gpu.gpus }}"

- name: Use a specific nvidia-smi and skip the topology probes
  nvidia_gpu_facts:
    nvidia_smi: /usr/local/nvidia/bin/nvidia-smi
    gather_topology: false

- name: Stop when the driver is broken
  ansible.builtin.fail:
    msg: "nvidia-smi does not answer: {{ ansible_facts.nvidia_gpu.error }}"
  when: not ansible_facts.nvidia_gpu.present
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    nvidia_gpu:
      description: GPU facts. See C(docs/facts.md) for every key.
      returned: always
      type: dict
      contains:
        present:
          description: C(nvidia-smi) exists and answered.
          type: bool
        error:
          description: Why not present (no C(nvidia-smi), NVML error text such as C(Driver/library version mismatch)); null when present.
          type: str
        nvidia_smi:
          description: Path of the binary used.
          type: str
        driver_version:
          description: Driver version as nvidia-smi reports it.
          type: str
          sample: "580.95.05"
        cuda_version:
          description: Highest CUDA version the driver supports.
          type: str
          sample: "13.0"
        count:
          description: Number of GPUs listed.
          type: int
        nvswitch:
          description: NVSwitch fabric present (a GPU reports a fabric state, or C(/dev/nvidia-nvswitch<N>) exists).
          type: bool
        gpus:
          description: One dict per GPU in nvidia-smi order.
          type: list
          elements: dict
          sample:
            - index: 0
              minor_number: 0
              bus_id: "00000000:01:00.0"
              product_name: NVIDIA GeForce RTX 4090
              product_brand: GeForce
              architecture: Ada Lovelace
              uuid: GPU-71d1acc2-662d-2166-bf9f-65272d2fc437
              serial: null
              vbios_version: 95.02.18.80.5F
              memory_total_mib: 24564
              persistence_mode: true
              compute_mode: Default
              mig_mode: null
              power_draw_w: 26.84
              power_limit_w: 450.0
              power_default_w: 450.0
              power_min_w: 10.0
              power_max_w: 600.0
              power_enforced_w: 450.0
              pcie_gen_current: 1
              pcie_gen_max: 3
              pcie_width_current: 16
              pcie_width_max: 16
        topology:
          description: C(nvidia-smi topo -m) between GPUs; null with one GPU or when the probe fails.
          type: dict
          sample: {labels: [GPU0, GPU1], matrix: {GPU0: {GPU0: X, GPU1: PHB}, GPU1: {GPU0: PHB, GPU1: X}}}
        p2p_read:
          description: C(nvidia-smi topo -p2p r); null with one GPU or when the probe fails.
          type: dict
          sample: {GPU0: {GPU0: X, GPU1: OK}, GPU1: {GPU0: OK, GPU1: X}}
        compute_apps:
          description: GPU compute processes (C(nvidia-smi --query-compute-apps)); null when nvidia-smi does not answer.
          type: list
          elements: dict
          sample: [{gpu_bus_id: "00000000:01:00.0", pid: 4242, process_name: python3, used_memory_mib: 20480}]
    rigkeeper_host:
      description: Host facts. See C(docs/facts.md) for every key.
      returned: always
      type: dict
      contains:
        cpu_vendor:
          description: C(amd), C(intel), C(arm) or C(unknown).
          type: str
        mem_total_mib:
          description: Memory from C(/proc/meminfo), MiB.
          type: int
        cmdline:
          description: The running kernel's command line.
          type: str
        cmdline_args:
          description: Parsed command line; flags map to null.
          type: dict
          sample: {amd_iommu: "off", quiet: null}
        iommu:
          description: C(enabled) (any C(/sys/class/iommu) entry), C(groups) (count), C(cmdline) (IOMMU arguments).
          type: dict
        acs:
          description: C(checked) (lspci ran and could read capabilities), C(enabled_bridges) (bridges with C(SrcValid+)).
          type: dict
        secure_boot:
          description: From C(mokutil --sb-state); null when mokutil is absent.
          type: bool
        reboot_required:
          description: C(/var/run/reboot-required) exists, or the running driver differs from the installed one.
          type: bool
        driver_installed_version:
          description: From the C(libnvidia-ml.so.<version>) file on disk.
          type: str
        driver_running_version:
          description: Loaded kernel module version.
          type: str
        driver_mismatch:
          description: Both versions known and different.
          type: bool
        systemd:
          description: C(/run/systemd/system) exists.
          type: bool
        kernel_release:
          description: The running kernel (C(uname -r)).
          type: str
        kernels:
          description: Installed kernels (C(/lib/modules/<release>) with a C(/boot/vmlinuz-<release>)), oldest first.
          type: list
          elements: str
        boot_kernel:
          description: The kernel GRUB's default entry boots next.
          type: str
        boot_kernel_module:
          description: C(modinfo -k <boot_kernel> nvidia) (version, signer, filename), null when that kernel has no NVIDIA module.
          type: dict
        nouveau:
          description: C(loaded) (nouveau holds the GPUs), C(in_use) (its use count is above 0, e.g. the console runs on it).
          type: dict
        mok_enrolled:
          description: With Secure Boot on, whether the local MOK (O(mok_key_path)) is enrolled; null when unknown.
          type: bool
        runfile:
          description: Leftovers of NVIDIA's .run installer, C(uninstaller) (C(/usr/bin/nvidia-uninstall) exists) and
            C(stray_libraries) (libnvidia-ml files no package owns).
          type: dict
        reboot_required_file:
          description: C(/var/run/reboot-required) exists (the OS asks for a reboot, e.g. after a kernel update).
          type: bool
        reboot_required_pkgs:
          description: The packages C(/var/run/reboot-required.pkgs) names.
          type: list
          elements: str
        os:
          description: >-
            The distribution from C(/etc/os-release) (id, name, version_id, codename, machine), also under
            the names of Ansible's distribution facts (distribution, distribution_release,
            distribution_version, distribution_major_version, architecture).
          type: dict
'''

import glob
# The unit tests patch platform.machine and reach the facts helpers through this module.
import platform  # noqa: F401 pylint: disable=unused-import

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_facts import (  # noqa: F401 pylint: disable=unused-import
    _read, _listdir, _output, _run, find_nvidia_smi, _tool, _matrix, gather_gpu_facts, _lspci_text,
    _mokutil_text, _module_version_text, _lib_paths, _owned, _kernels, _boot_module_text,
    _lib_names, _mok_texts, gather_host_facts, gather, DEFAULT_LIB_DIRS, HOST_PATHS, SEARCH_DIRS,
)


def build_module():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type='path'),
            cmdline_path=dict(type='path', default='/proc/cmdline'),
            module_version_path=dict(type='list', elements='path',
                                     default=['/sys/module/nvidia/version']),
            lib_dirs=dict(type='list', elements='path', default=list(DEFAULT_LIB_DIRS)),
            gather_topology=dict(type='bool', default=True),
            sys_module_dir=dict(type='path', default='/sys/module'),
            kernel_release_path=dict(type='path', default='/proc/sys/kernel/osrelease'),
            grub_cfg_path=dict(type='path', default='/boot/grub/grub.cfg'),
            mok_key_path=dict(type='path', default='/var/lib/shim-signed/mok/MOK.der'),
            iommu_dir=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
    return module


def main():
    module = build_module()
    # GPU and host facts side by side: nvidia-smi's reads and the host's are independent.
    module.exit_json(changed=False, ansible_facts=gather(module, sorted(glob.glob(HOST_PATHS['nvswitch_glob']))))


if __name__ == '__main__':
    main()
