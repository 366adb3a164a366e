# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy: wants + facts -> decisions, or a refusal that says what to do.

Pure functions, no Ansible state. Everything they know lives in one data table, ``POLICY``,
each entry carrying the ``source`` it comes from (../shared/FACTS.md). Bad input raises
``AnsibleFilterError`` with a message naming what is wrong and what to do about it.

Inputs follow docs/facts.md: ``nvidia_gpu`` (with its ``gpus`` list) and ``rigkeeper_host``.

Filters (see each function's docstring):

================================  ==========================================================
``rk_driver_decision``            driver branch + module flavour for these GPUs
``rk_driver_packages``            package names, pin globs and holds for a branch and source
``rk_module_plan``                DKMS or Canonical's signed precompiled modules (Secure Boot)
``rk_version_on_branch``          is a (Debian) version string on a branch
``rk_cuda_check``                 can this driver (version or branch) run this CUDA
``rk_cuda_packages``              CUDA toolkit package for a CUDA version
``rk_cudnn_packages``             cuDNN packages for a CUDA version and cuDNN major
``rk_power_plan``                 per-GPU power limit, range- and PSU-checked
``rk_iommu_args``                 kernel args for an IOMMU mode on this CPU vendor
``rk_mitigations_args``           kernel args for ``mitigations=off`` (opt-in)
``rk_kernel_args``                the three above merged with free-form extra args
``rk_cmdline_diff``               wanted kernel args vs. the running command line
``rk_preflight_checks``           the preflight findings
``rk_gpu_architecture``           architecture from a product name (fallback)
================================  ==========================================================
"""

from __future__ import annotations

import datetime
import fnmatch
import math
import re

from ansible.errors import AnsibleFilterError

# --------------------------------------------------------------------------------------------
# Sources (FACTS.md sections; "rule of thumb" where FACTS.md has none)
# --------------------------------------------------------------------------------------------
_SRC_BRANCHES = ("NVIDIA datacenter 'Supported Drivers and CUDA Toolkit Versions' page, 615 and 620 "
                 "editions (2026) [FACTS.md: Driver branches]")
_SRC_LAST_580 = ("580 is the last branch for Maxwell, Pascal and Volta: NVIDIA's CUDA toolkit, driver and "
                 "architecture matrix [FACTS.md: Driver branches]")
_SRC_KEPLER = ("NVIDIA Unix Driver Archive (nvidia.com/en-us/drivers/unix.html: 'Latest Legacy GPU version "
               "(470.xx series)') and NVIDIA developer forums 'Current graphics driver releases' (thread "
               "28500: 470.xx legacy releases for GKxxx 'Kepler' GPUs, no longer maintained); not yet in "
               "FACTS.md")
_SRC_DEFAULT = ("rigkeeper's choice: a mature LTSB, because new branches repeatedly broke consumer-card P2P "
                "(545, 555, 560: FACTS.md, P2P breakage); end-of-life dates from " + _SRC_BRANCHES)
_SRC_SECURE_BOOT = ("Secure Boot needs MOK-signed DKMS modules (enrolment needs the console), or Canonical's "
                    "signed precompiled linux-modules-nvidia-* packages [FACTS.md: Headless; Driver "
                    "branches: GPU Operator docs, 'precompiled signed drivers']")
_SRC_KEY_REJECTED = ("the kernel's refusal of a module no enrolled key signed, as modprobe prints it "
                     "(EKEYREJECTED; quoted in issue #12)")
_SRC_PRECOMPILED = ("Ubuntu archive (source linux-restricted-modules): linux-modules-nvidia-580-open-generic "
                    "Depends linux-modules-nvidia-580-open-<abi>-generic (= kernel version) and "
                    "nvidia-kernel-common-580 (>= driver version) (packages.ubuntu.com); "
                    "nvidia-headless-no-dkms-<br> installs the driver without DKMS [FACTS.md: Packages]")
_SRC_KERNEL_FOLLOWING = ("Canonical's precompiled modules follow the kernel, so they must not be held "
                         "[FACTS.md: Headless]")
_SRC_UU_MATCH = ("unattended-upgrades' 50unattended-upgrades: Package-Blacklist entries are Python regular "
                 "expressions matched from the start of package names (re.match; its examples include "
                 "'(lib)?xen(store)?')")
_SRC_590_NAMES = ("NVIDIA's Ubuntu packages from 590: names drop the branch, branch lock via "
                  "nvidia-driver-pinning-<branch> [FACTS.md: Driver branches]")
_SRC_CUDA = "CUDA 13.1 release notes, table 3 [FACTS.md: CUDA toolkit -> minimum Linux driver]"
_SRC_MINOR = "CUDA 13.1 release notes, minor-version compatibility [FACTS.md]"
_SRC_FLAVOR = ("NVIDIA CUDA repo: nvidia-open default from 560, Turing+ only; Blackwell needs "
               "open [FACTS.md: Packages]")
_SRC_PKG_UBUNTU = "Ubuntu archive package names [FACTS.md: Packages]"
_SRC_PKG_UBUNTU_PITFALL = ("Ubuntu jammy/noble archives: 535/550/565 -server packages are "
                           "transitional and pull 580, e.g. 535.309.01-0ubuntu0.24.04.2 "
                           "[FACTS.md: Packages, pitfall]")
_SRC_PKG_CUDA = "NVIDIA CUDA repo package names [FACTS.md: Packages]"
_SRC_PKG_DEBIAN = ("Debian 12 non-free: nvidia-driver 535.261.03-1, nvidia-tesla-535-driver "
                   "[FACTS.md: Packages]")
_SRC_PKG_CTK = "NVIDIA container toolkit packages [FACTS.md: Packages]"
_SRC_UU = ("unattended-upgrades bumping libnvidia-* under a running driver -> 'NVML: Driver/library "
           "version mismatch' (DeepOps #1186; FACTS.md: Packages)")
_SRC_CUDNN = "NVIDIA CUDA repo cuDNN package names [FACTS.md: Packages]"
_SRC_CUDNN13 = ("cudnn9-cuda-13 follows the cudnn9-cuda-12 naming in NVIDIA's CUDA repo "
                "(FACTS.md lists the -cuda-12 names)")
_SRC_P2P_545 = ("vllm-project/vllm#1801, huggingface/text-generation-inference#1559, "
                "NVIDIA/nccl#1127, vllm-project/vllm#5458 [FACTS.md: P2P breakage]")
_SRC_P2P_555 = "vllm-project/vllm#5458 [FACTS.md: P2P breakage]"
_SRC_P2P_560 = "dmlc/xgboost#11242 [FACTS.md: P2P breakage]"
_SRC_P2P_4090 = "NVIDIA/nccl-tests#117 [FACTS.md: P2P breakage]"
_SRC_IOMMU_P2P = "pytorch/pytorch#52142, pytorch/pytorch#84803 [FACTS.md: P2P breakage]"
_SRC_ACS = "NCCL troubleshooting, 'PCI Access Control Services' [FACTS.md: P2P breakage]"
_SRC_KERNEL = "FACTS.md: Kernel command line"
_SRC_RCU = "RCU_FAST_NO_HZ removed from the kernel in Dec 2021 [FACTS.md: Kernel command line]"
_SRC_PSU = "rule of thumb [no source in FACTS.md]"
_SRC_RAM = "rule of thumb [DESIGN.md preflight; no source in FACTS.md]"
_SRC_PCIE = "rule of thumb: idle GPUs lower the PCIe link generation, not its width"

# --------------------------------------------------------------------------------------------
# THE data table. Everything the functions below know, each entry with its source.
# --------------------------------------------------------------------------------------------
POLICY = {
    # Driver branches. type: 'LTSB' | 'production' | 'feature' (NVIDIA's "new feature branch") |
    # 'short-lived' | None (not recorded). eol: 'YYYY-MM' (the branch is past end of life from the
    # month after), or None. ended: True when FACTS.md lists the branch as ended without a date.
    'driver_branches': {
        535: {'type': 'LTSB', 'eol': '2026-06', 'ended': False, 'source': _SRC_BRANCHES},
        545: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        550: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        555: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        560: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        565: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        570: {'type': 'production', 'eol': '2026-02', 'ended': False, 'source': _SRC_BRANCHES},
        575: {'type': 'short-lived', 'eol': None, 'ended': True, 'source': _SRC_BRANCHES},
        # June 2028: an earlier version of FACTS.md said August, which was wrong.
        580: {'type': 'LTSB', 'eol': '2028-06', 'ended': False, 'source': _SRC_BRANCHES},
        # A new feature branch, short-lived: NVIDIA publishes no end-of-life date for it.
        590: {'type': 'feature', 'eol': None, 'ended': False, 'source': _SRC_BRANCHES},
        595: {'type': 'production', 'eol': '2027-03', 'ended': False, 'source': _SRC_BRANCHES},
        610: {'type': 'feature', 'eol': '2026-08', 'ended': False, 'source': _SRC_BRANCHES},
        620: {'type': 'LTSB', 'eol': '2029-09', 'ended': False, 'source': _SRC_BRANCHES},
    },
    # The last driver branch that drives an architecture; newer branches' kernel modules refuse
    # the card. verified: False (a source marked UNVERIFIED) turns the refusal into a warning.
    'architecture_last_branch': {
        'Kepler': {'last_branch': 470, 'verified': True, 'source': _SRC_KEPLER},
        'Maxwell': {'last_branch': 580, 'verified': True, 'source': _SRC_LAST_580},
        'Pascal': {'last_branch': 580, 'verified': True, 'source': _SRC_LAST_580},
        'Volta': {'last_branch': 580, 'verified': True, 'source': _SRC_LAST_580},
    },
    # The default branch (rk_driver_decision with branch=None): among LTSB branches not past end
    # of life that drive every GPU of the host (architecture_last_branch) and run every wanted CUDA
    # in full, the OLDEST with at least min_support_months of support left; when none has that
    # much, the newest of them. Why the oldest: a mature LTSB has had its regressions found and
    # fixed, while new branches repeatedly broke consumer-card P2P (545, 555 and 560 in FACTS.md:
    # NCCL/vLLM all-reduce hangs); why 12 months: a year of fixes before the next planned change.
    'default_branch': {
        'type': 'LTSB',
        'min_support_months': 12,
        'source': _SRC_DEFAULT,
    },
    # Known P2P problems. branches: None = every branch. A GPU is affected when it matches every
    # filter that is set (architectures / segments / models). action: refuse when the host has at
    # least refuse_min_gpus GPUs and one is affected; warn from warn_min_gpus GPUs.
    'known_issues': [
        {
            'id': 'p2p-545',
            'branches': [545],
            'architectures': ['Ampere', 'Ada Lovelace'],
            'segments': ['consumer', 'workstation'],
            'models': None,
            'refuse_min_gpus': 2,
            'warn_min_gpus': 1,
            'warn_without_gpu_facts': True,
            'summary': ("545.x reports P2P capability incorrectly on consumer/workstation Ampere and "
                        "Ada cards: NCCL, vLLM and TGI all-reduce hang or time out"),
            'advice': ("use {ltsb} (current LTSB) or 535 (known good in user reports), or pass "
                       "allow_known_bad=True to accept the risk"),
            'source': _SRC_P2P_545,
        },
        {
            'id': 'p2p-555',
            'branches': [555],
            'architectures': None,
            'segments': None,
            'models': None,
            'refuse_min_gpus': None,
            'warn_min_gpus': 1,
            'warn_without_gpu_facts': True,
            'summary': ("the 545 P2P misreport was seen again with 555: multi-GPU all-reduce can "
                        "hang"),
            'advice': "prefer {ltsb}; NCCL_P2P_DISABLE=1 is the workaround if NCCL hangs",
            'source': _SRC_P2P_555,
        },
        {
            'id': 'p2p-560',
            'branches': [560],
            'architectures': None,
            'segments': None,
            'models': None,
            'refuse_min_gpus': None,
            'warn_min_gpus': 1,
            'warn_without_gpu_facts': True,
            'summary': "an NCCL P2P hang may reproduce with 560 (fixed with 570)",
            'advice': "prefer {ltsb}; NCCL_P2P_DISABLE=1 is the workaround if NCCL hangs",
            'source': _SRC_P2P_560,
        },
        {
            'id': 'p2p-rtx4090',
            'branches': None,
            'architectures': None,
            'segments': None,
            'models': ['RTX 4090'],
            'refuse_min_gpus': None,
            'warn_min_gpus': 2,
            'warn_without_gpu_facts': False,
            'summary': ("the RTX 4090 has no P2P in stock drivers; early drivers claimed it and "
                        "all_reduce_perf hung"),
            'advice': "if NCCL hangs, run with NCCL_P2P_DISABLE=1 (works, slower)",
            'source': _SRC_P2P_4090,
        },
    ],
    # Kernel module flavours by architecture.
    'module_flavors': {
        'architectures': ['Kepler', 'Maxwell', 'Pascal', 'Volta', 'Turing', 'Ampere',
                          'Ada Lovelace', 'Hopper', 'Blackwell'],
        'open_min_architecture': 'Turing',
        'open_required': ['Blackwell'],
        'open_default_from_branch': 560,
        'source': _SRC_FLAVOR,
    },
    # Product-name fallback when nvidia-smi gives no architecture; first match wins.
    'architecture_names': [
        {'architecture': 'Blackwell', 'source': 'product naming (fallback only)',
         'patterns': [r'\bblackwell\b', r'\brtx 50\d0\b', r'\bg?b[12]00\b', r'\bgb[23]00\b']},
        {'architecture': 'Hopper', 'source': 'product naming (fallback only)',
         'patterns': [r'\bg?h(100|200|800|20)\b']},
        {'architecture': 'Ada Lovelace', 'source': 'product naming (fallback only)',
         'patterns': [r'\bada\b', r'\brtx 40\d0\b', r'\bl4\b', r'\bl40s?\b', r'\bl20\b']},
        {'architecture': 'Ampere', 'source': 'product naming (fallback only)',
         'patterns': [r'\brtx 30\d0\b', r'\brtx a\d{3,4}\b', r'\ba(2|10|10g|10m|16|30|40|100|800)\b',
                      r'\ba100[-\w]*']},
        {'architecture': 'Turing', 'source': 'product naming (fallback only)',
         'patterns': [r'\brtx 20\d0\b', r'\bgtx 16[56]0\b', r'\bt4\b', r'\bquadro rtx\b',
                      r'\btitan rtx\b', r'\bt(400|600|1000|1200)\b']},
        {'architecture': 'Volta', 'source': 'product naming (fallback only)',
         'patterns': [r'\bv100\b', r'\btitan v\b', r'\bgv100\b']},
        {'architecture': 'Pascal', 'source': 'product naming (fallback only)',
         'patterns': [r'\bgtx 10[5-8]0\b', r'\bgt 1030\b', r'\bp(4|6|40|100)\b', r'\bp100-',
                      r'\bquadro (gp100|p\d{3,4})\b', r'\btitan xp?\b', r'\bgrid p\d']},
        {'architecture': 'Maxwell', 'source': 'product naming (fallback only)',
         'patterns': [r'\bgtx (9[5-8]0|745|750)\b', r'\bm(4|6|10|40|60)\b', r'\bquadro m\d{3,4}\b']},
        {'architecture': 'Kepler', 'source': 'product naming (fallback only)',
         'patterns': [r'\bk(10|20|40|80)\b', r'\bgtx (6[5-9]0|7[6-8]0)\b', r'\bquadro k\d{3,4}\b']},
    ],
    # CUDA toolkit -> minimum Linux driver, and minor-version compatibility floors.
    'cuda': {
        'min_driver': {
            '11.8': {'min_driver': '520.61.05', 'source': _SRC_CUDA},
            '12.0': {'min_driver': '525.60.13', 'source': _SRC_CUDA},
            '12.1': {'min_driver': '530.30.02', 'source': _SRC_CUDA},
            '12.2': {'min_driver': '535.54.03', 'source': _SRC_CUDA},
            '12.3': {'min_driver': '545.23.06', 'source': _SRC_CUDA},
            '12.4': {'min_driver': '550.54.14', 'source': _SRC_CUDA},
            '12.5': {'min_driver': '555.42.02', 'source': _SRC_CUDA},
            '12.6': {'min_driver': '560.28.03', 'source': _SRC_CUDA},
            '12.8': {'min_driver': '570.26', 'source': _SRC_CUDA},
            '12.9': {'min_driver': '575.51.03', 'source': _SRC_CUDA},
            '13.0': {'min_driver': '580.65.06', 'source': _SRC_CUDA},
            '13.1': {'min_driver': '590.44.01', 'source': _SRC_CUDA},
        },
        'minor_compat': {
            11: {'floor': '450.80.02', 'source': _SRC_MINOR},
            12: {'floor': '525', 'source': _SRC_MINOR},
            13: {'floor': '580', 'source': _SRC_MINOR},
        },
        'missing': {
            '12.7': {'note': 'NVIDIA released 12.6 then 12.8; there is no 12.7', 'source': _SRC_CUDA},
        },
        'toolkit_package': {'pattern': 'cuda-toolkit-{major}-{minor}', 'source': _SRC_PKG_CUDA},
    },
    'cudnn': {
        8: {'cuda_majors': [11, 12], 'runtime': 'libcudnn8', 'dev': 'libcudnn8-dev', 'meta': None,
            'version_re': r'^8\.\d+\.\d+\.\d+-\d+\+cuda(\d+)\.(\d+)$',
            'version_example': '8.9.7.29-1+cuda12.2', 'source': _SRC_CUDNN},
        9: {'cuda_majors': [12, 13], 'runtime': 'libcudnn9-cuda-{major}',
            'dev': 'libcudnn9-dev-cuda-{major}', 'meta': 'cudnn9-cuda-{major}',
            'version_re': r'^9\.\d+\.\d+\.\d+-\d+$', 'version_example': '9.5.1.17-1',
            'source': _SRC_CUDNN + '; ' + _SRC_CUDNN13},
    },
    # Package families.
    'packages': {
        'family': {
            'patterns': ['nvidia-*', 'libnvidia-*', 'cuda-drivers*', 'xserver-xorg-video-nvidia*'],
            'source': _SRC_PKG_UBUNTU + '; ' + _SRC_PKG_CUDA,
        },
        'family_ubuntu': {
            'patterns': ['linux-modules-nvidia-*', 'linux-objects-nvidia-*',
                         'linux-signatures-nvidia-*'],
            'source': "Ubuntu precompiled linux-modules-nvidia-<br>-<flavour> [FACTS.md: Packages]",
        },
        # Family members that follow the kernel's ABI: never held (kernel updates would arrive
        # without their module) and never blacklisted for unattended-upgrades (they move with the
        # kernel updates).
        'kernel_following': {
            'patterns': ['linux-modules-nvidia-*', 'linux-objects-nvidia-*',
                         'linux-signatures-nvidia-*'],
            'source': _SRC_KERNEL_FOLLOWING,
        },
        'family_debian': {
            'patterns': ['xserver-xorg-video-nvidia*', 'libcuda1*', 'libnvcuvid1*', 'libnvoptix1*',
                         'libcudadebugger1*', 'libgl1-nvidia-*', 'libglx-nvidia*', 'libegl-nvidia*',
                         'libgles-nvidia*', 'firmware-nvidia-*'],
            'source': "Debian's unversioned NVIDIA names (" + _SRC_PKG_DEBIAN + ')',
        },
        # Family members Debian builds from their own source packages, each with its own version
        # (nvidia-persistenced 535.171.04-1~deb12u1 beside nvidia-driver 535.309.01-0+deb12u1):
        # never a leftover of another driver version there.
        'versioned_apart_debian': {
            'names': ['nvidia-persistenced', 'nvidia-settings', 'nvidia-xconfig', 'nvidia-modprobe'],
            'source': "Debian's separate source packages nvidia-persistenced, nvidia-settings, nvidia-xconfig, "
                      "nvidia-modprobe (packages.debian.org, bookworm; seen when Debian moved nvidia-driver to "
                      "535.309.01 and kept nvidia-persistenced at 535.171.04)",
        },
        'not_family': {
            'patterns': ['nvidia-container-*', 'libnvidia-container*', 'nvidia-docker*'],
            'source': _SRC_PKG_CTK + ': versioned apart from the driver',
        },
        'unattended_blacklist': {'source': _SRC_UU + '; ' + _SRC_UU_MATCH},
        'ubuntu_transitional_server': {'branches': [535, 550, 565], 'source': _SRC_PKG_UBUNTU_PITFALL},
        'cuda_unversioned_from': {'branch': 590, 'source': _SRC_590_NAMES},
        # 590+ from NVIDIA's CUDA repo: the pinning package goes in first (apt then resolves the
        # driver under the lock); the driver version is read from version_from, never from the
        # pinning package (whose version is its own).
        'cuda_pinning': {'pre_install': 'nvidia-driver-pinning-{branch}', 'version_from': 'libnvidia-compute',
                         'source': _SRC_590_NAMES + '; installed before the driver (NVIDIA Driver '
                                                    "Installation Guide, 'Recent Updates')"},
        # Canonical's signed precompiled kernel modules (Ubuntu archive only).
        'ubuntu_precompiled': {
            'install': ['nvidia-headless-no-dkms-{br}{variant}{open}', 'nvidia-utils-{br}{variant}',
                        'linux-modules-nvidia-{br}{variant}{open}-{flavour}'],
            'sources': ['ubuntu'],
            'source': _SRC_PRECOMPILED,
        },
        'debian_branches': {'branches': [535], 'source': _SRC_PKG_DEBIAN},
    },
    # Kernel command line.
    'kernel': {
        'iommu_modes': {
            'off': {'amd': {'present': ['amd_iommu=off'], 'absent': ['iommu']},
                    'intel': {'present': ['intel_iommu=off'], 'absent': ['iommu']},
                    'source': _SRC_KERNEL + '; IOMMU off for P2P: ' + _SRC_IOMMU_P2P},
            'pt': {'amd': {'present': ['iommu=pt'], 'absent': ['amd_iommu=off']},
                   'intel': {'present': ['iommu=pt'], 'absent': ['intel_iommu=off']},
                   'source': _SRC_KERNEL},
            'on': {'amd': {'present': ['amd_iommu=on'], 'absent': ['iommu']},
                   'intel': {'present': ['intel_iommu=on'], 'absent': ['iommu']},
                   'source': _SRC_KERNEL},
            'unmanaged': {'amd': {'present': [], 'absent': []},
                          'intel': {'present': [], 'absent': []},
                          'source': 'rigkeeper leaves the IOMMU arguments alone'},
        },
        'iommu_keys': {'keys': ['iommu', 'amd_iommu', 'intel_iommu'], 'source': _SRC_KERNEL},
        'mitigations': {'arg': 'mitigations=off', 'keys': ['mitigations'],
                        'source': _SRC_KERNEL + ': mitigations=off covers pti, spectre_v2, '
                                                'spec_store_bypass, l1tf and more on x86'},
        'refused_args': {
            'rcutree.rcu_idle_gp_delay': {
                'why': 'it is a no-op on current kernels (RCU_FAST_NO_HZ was removed)',
                'source': _SRC_RCU,
            },
        },
    },
    # Power.
    'power': {
        'psu_sustained_fraction': 0.8,
        'base_watts': 250,
        'source': (_SRC_PSU + ': keep sustained load at or below 80% of the PSU rating; consumer '
                   'Ampere/Ada cards spike well above board power for milliseconds'),
    },
    # Kernel modules and Secure Boot (rk_module_plan).
    'modules': {
        'secure_boot': {
            'mok_import': 'mokutil --import /var/lib/shim-signed/mok/MOK.der',
            'mok_test': 'mokutil --test-key /var/lib/shim-signed/mok/MOK.der',
            'kernel_error': "modprobe: ERROR: could not insert 'nvidia': Key was rejected by service",
            'kernel_error_source': _SRC_KEY_REJECTED,
            'source': _SRC_SECURE_BOOT,
        },
    },
    # Preflight.
    'preflight': {
        'checks': {
            'pcie_link': {'severity': 'warn', 'source': _SRC_PCIE},
            'ram_vs_vram': {'severity': 'warn', 'factor': 2, 'source': _SRC_RAM},
            'psu_budget': {'severity': 'warn', 'source': _SRC_PSU},
            'p2p_iommu': {'severity': 'warn', 'source': _SRC_IOMMU_P2P + '; ' + _SRC_ACS},
            'known_bad_driver': {'severity': 'fail', 'source': _SRC_P2P_545},
            'gpu_count': {'severity': 'fail', 'source': 'config.expected_gpu_count (inventory)'},
            'runfile': {'severity': 'fail',
                        'source': ("NVIDIA's .run installer installs outside dpkg and conflicts with the "
                                   "packaged driver; NVIDIA's installation guide: uninstall it with "
                                   "nvidia-uninstall before using the packages")},
        },
    },
}

_BRANCHES = POLICY['driver_branches']
_ARCH_ORDER = POLICY['module_flavors']['architectures']
_SEVERITIES = ('fail', 'warn', 'info')


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _err(msg):
    return AnsibleFilterError('rigkeeper: ' + msg)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, what, allow_none=False):
    """Number from an int/float or a numeric string; None passes when allow_none."""
    if value is None and allow_none:
        return None
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise _err(f'{what} must be a finite number, got {value!r}')
        return value
    if isinstance(value, str) and re.fullmatch(r'\s*\d+(\.\d+)?\s*', value):
        text = value.strip()
        return float(text) if '.' in text else int(text)
    raise _err(f'{what} must be a number (watts without a unit, e.g. 300), got {value!r}')


def _tidy(value):
    """450.0 -> 450; 12.5 stays 12.5; None stays None."""
    if _is_number(value) and float(value).is_integer():
        return int(value)
    return value


def _round_half_up(value):
    return int(math.floor(value + 0.5))


def _as_list(value, what):
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or isinstance(value, dict):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise _err(f'{what} must be a list, got {type(value).__name__}')


def _as_bool(value, what):
    if isinstance(value, bool):
        return value
    raise _err(f'{what} must be true or false, got {value!r}')


def _parse_branch(value, what='driver branch', known=True):
    """580, '580' or 'R580' -> 580; garbage raises."""
    text = None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    match = re.fullmatch(r'[Rr]?(\d{3,4})', text) if text is not None else None
    if not match:
        hint = ''
        if text and re.fullmatch(r'\d{3,4}\.\d[\d.]*', text):
            hint = f" (that looks like a full version: give only its branch, {text.split('.')[0]})"
        raise _err(f'{what} {value!r} is not a driver branch{hint}: use the branch number as an '
                   f"integer or string, e.g. 580 or '580'; known branches: {_known_branches()}")
    branch = int(match.group(1))
    if known and branch not in _BRANCHES:
        raise _err(f"{what} {branch} is not in rigkeeper's branch table (known: {_known_branches()}); "
                   "pick one of those, or add the branch with its source to POLICY['driver_branches']")
    return branch


def _known_branches():
    return ', '.join(str(b) for b in sorted(_BRANCHES))


def _parse_version(value, what='driver version'):
    """'535.54.03' -> (535, 54, 3); '535' -> (535,). Accepts int/float by their text."""
    if isinstance(value, bool) or value is None:
        raise _err(f'{what} {value!r} is not a driver version: use e.g. "580.95.05" or a branch "580"')
    text = str(value).strip() if _is_number(value) or isinstance(value, str) else None
    if text is None or not re.fullmatch(r'\d{3,4}(\.\d+){0,2}', text):
        raise _err(f'{what} {value!r} is not a driver version: use e.g. "580.95.05" or a branch "580"')
    return tuple(int(p) for p in text.split('.'))


def _vkey(version):
    return tuple(version) + (0,) * (3 - len(version))


def _parse_today(today):
    if today is None:
        return datetime.date.today()
    if isinstance(today, datetime.datetime):
        return today.date()
    if isinstance(today, datetime.date):
        return today
    if isinstance(today, str):
        try:
            return datetime.date.fromisoformat(today.strip())
        except ValueError:
            pass
    raise _err(f"today {today!r} is not a date: use 'YYYY-MM-DD' or leave it unset for today")


def _eol_passed(entry, day):
    if entry.get('ended'):
        return True
    eol = entry.get('eol')
    if not eol:
        return False
    year, month = (int(p) for p in eol.split('-'))
    return (day.year, day.month) > (year, month)


def _current_ltsb(day):
    """Newest LTSB branch not past end of life on ``day``, or None."""
    candidates = [b for b, e in _BRANCHES.items() if e['type'] == 'LTSB' and not _eol_passed(e, day)]
    return max(candidates) if candidates else None


def _month_index(year, month):
    return year * 12 + (month - 1)


def _months_left(entry, day):
    """Calendar months from ``day``'s month to the EOL month (580, EOL 2028-06, on 2026-12-01: 18);
    None without an EOL date."""
    eol = entry.get('eol')
    if not eol:
        return None
    year, month = (int(p) for p in eol.split('-'))
    return _month_index(year, month) - _month_index(day.year, day.month)


def _month_text(index):
    return f'{index // 12:04d}-{index % 12 + 1:02d}'


_TYPE_TEXT = {'feature': 'new feature branch'}


def _type_text(branch_type):
    return _TYPE_TEXT.get(branch_type, branch_type)


# --------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------
def _gpu_list(gpus, what='gpus'):
    """The ``gpus`` list; the whole ``nvidia_gpu`` dict is accepted too."""
    if isinstance(gpus, dict) and 'gpus' in gpus:
        gpus = gpus.get('gpus')
    if gpus is None:
        return []
    if not isinstance(gpus, (list, tuple)):
        raise _err(f'{what} must be the list nvidia_gpu.gpus (one dict per GPU), got '
                   f'{type(gpus).__name__}')
    out = []
    for pos, gpu in enumerate(gpus):
        if isinstance(gpu, str) and gpu.strip():
            # A bare model name (inventory's expected GPUs on a box with no driver yet).
            gpu = {'index': pos, 'product_name': gpu.strip()}
        if not isinstance(gpu, dict):
            raise _err(f'{what}[{pos}] must be a dict of GPU facts (docs/facts.md) or a model name, got '
                       f'{type(gpu).__name__}')
        out.append(gpu)
    return out


def _gpu_index(gpu, pos):
    index = gpu.get('index')
    return index if isinstance(index, int) and not isinstance(index, bool) else pos


def _gpu_label(gpu, pos):
    parts = [p for p in (gpu.get('bus_id'), gpu.get('product_name')) if p]
    return f"GPU {_gpu_index(gpu, pos)}" + (f" ({', '.join(parts)})" if parts else '')


def _canonical_arch(value):
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in ('', 'unknown', 'n/a', 'none'):
        return None
    if text in ('ada', 'ada lovelace', 'lovelace'):
        return 'Ada Lovelace'
    for arch in _ARCH_ORDER:
        if text == arch.lower():
            return arch
    return value.strip()  # an architecture newer than the table: kept, ranked as unknown


def rk_gpu_architecture(product_name):
    """GPU architecture guessed from its product name; a fallback only.

    nvidia-smi reports ``product_architecture`` on current drivers and the facts module passes it
    on; this covers older drivers and XML without it.

    :param product_name: e.g. ``"NVIDIA GeForce RTX 3090"``.
    :returns: ``'Kepler'``, ``'Maxwell'``, ``'Pascal'``, ``'Volta'``, ``'Turing'``, ``'Ampere'``,
        ``'Ada Lovelace'``, ``'Hopper'``, ``'Blackwell'`` or ``None`` when the name is not
        recognised (e.g. ``"Graphics Device"``).
    """
    if product_name is None:
        return None
    if not isinstance(product_name, str):
        raise _err(f'product_name must be a string, got {type(product_name).__name__}')
    name = product_name.lower()
    for row in POLICY['architecture_names']:
        if any(re.search(p, name) for p in row['patterns']):
            return row['architecture']
    return None


def _gpu_arch(gpu):
    return _canonical_arch(gpu.get('architecture')) or rk_gpu_architecture(gpu.get('product_name'))


def _arch_rank(arch):
    return _ARCH_ORDER.index(arch) if arch in _ARCH_ORDER else None


def _branch_limits(gpus):
    """GPUs whose architecture has a last branch: [{label, arch, last, verified, source}]."""
    table = POLICY['architecture_last_branch']
    rows = []
    for pos, gpu in enumerate(gpus):
        arch = _gpu_arch(gpu)
        row = table.get(arch)
        if row:
            rows.append({'label': _gpu_label(gpu, pos), 'arch': arch, 'last': row['last_branch'],
                         'verified': bool(row['verified']) and 'UNVERIFIED' not in row['source'],
                         'source': row['source']})
    return rows


def _limit_text(rows):
    """'GPU 0 (bus, model), GPU 1 (...) are Pascal, whose last driver branch is 580 (source)'."""
    groups = {}
    for row in rows:
        groups.setdefault((row['arch'], row['last'], row['source']), []).append(row['label'])
    parts = []
    for (arch, last, source), labels in groups.items():
        verb = 'is' if len(labels) == 1 else 'are'
        parts.append(f'{", ".join(labels)} {verb} {arch}, whose last driver branch is {last} ({source})')
    return '; '.join(parts)


def _limit_todo(limit, day):
    """What to do when the GPUs stop at branch ``limit``."""
    fitting = [b for b in _BRANCHES if b <= limit]
    if not fitting:
        return (f"no branch in rigkeeper's table drives them (their last branch, {limit}, is not in it and "
                'NVIDIA no longer maintains it): move those cards to another host')
    live = [b for b in fitting if not _eol_passed(_BRANCHES[b], day)]
    ltsb = [b for b in live if _BRANCHES[b]['type'] == 'LTSB']
    if ltsb or live:
        best = max(ltsb or live)
        entry = _BRANCHES[best]
        until = f' until {entry["eol"]}' if entry['eol'] else ''
        return (f'set nvidia_driver_branch: {best} ({_type_text(entry["type"])}{until}), or move those cards '
                'to another host')
    best = max(fitting)
    return (f'set nvidia_driver_branch: {best} (past end of life: no more fixes), or move those cards to '
            'another host')


def _gpu_segment(gpu):
    """'consumer' (GeForce/TITAN), 'workstation' (Quadro / NVIDIA RTX) or 'datacenter'."""
    name = str(gpu.get('product_name') or '').lower()
    brand = str(gpu.get('product_brand') or '').lower()
    if 'geforce' in name or 'titan' in name or brand.startswith(('geforce', 'titan')):
        return 'consumer'
    if (brand.startswith(('quadro', 'nvidia rtx')) or 'quadro' in name
            or re.search(r'\brtx (a\d{3,4}|pro|\d{4}\b.*\bada)', name)):
        return 'workstation'
    return 'datacenter'


def _issue_matches(issue, gpu):
    if issue['architectures'] is not None and _gpu_arch(gpu) not in issue['architectures']:
        return False
    if issue['segments'] is not None and _gpu_segment(gpu) not in issue['segments']:
        return False
    if issue['models'] is not None:
        name = str(gpu.get('product_name') or '').lower()
        if not any(m.lower() in name for m in issue['models']):
            return False
    return True


def _issue_findings(branch, gpus, day, branch_specific_only=False):
    """Known issues for ``branch`` on these GPUs: [{id, action, message}], action refuse|warn."""
    ltsb = _advised_ltsb(gpus, day)
    findings = []
    for issue in POLICY['known_issues']:
        if issue['branches'] is None:
            if branch_specific_only:
                continue
        elif branch not in issue['branches']:
            continue
        advice = issue['advice'].format(ltsb=ltsb)
        if not gpus:
            if issue['warn_without_gpu_facts']:
                findings.append({
                    'id': issue['id'], 'action': 'warn',
                    'message': (f'driver branch {branch}: {issue["summary"]} ({issue["source"]}); '
                                'no GPU facts yet, so rigkeeper cannot tell whether your GPUs are '
                                f'affected: {advice}'),
                })
            continue
        affected = [_gpu_label(g, p) for p, g in enumerate(gpus) if _issue_matches(issue, g)]
        if not affected:
            continue
        count = len(gpus)
        if issue['refuse_min_gpus'] and count >= issue['refuse_min_gpus']:
            action = 'refuse'
            head = f'driver branch {branch} is refused for {", ".join(affected)}'
        elif count >= issue['warn_min_gpus']:
            action = 'warn'
            scope = ' (single GPU: no P2P, but multi-GPU use would be affected)' if count == 1 else ''
            head = f'driver branch {branch} is known bad for {", ".join(affected)}{scope}'
            if issue['branches'] is None:
                head = f'{", ".join(affected)}'
        else:
            continue
        findings.append({
            'id': issue['id'], 'action': action,
            'message': f'{head}: {issue["summary"]} ({issue["source"]}); {advice}',
        })
    return findings


def _cuda_mode(cuda, branch):
    """'full', 'minor-compat' or None (cannot run) for every version of ``branch``."""
    try:
        return rk_cuda_check(cuda, str(branch))['mode']
    except AnsibleFilterError:
        return None


def _cuda_need(cudas, branches):
    """'CUDA 13.1 needs driver >= 590.44.01 (source)' for each CUDA one of ``branches`` cannot run in full."""
    table = POLICY['cuda']['min_driver']
    return '; '.join(f'CUDA {c} needs driver >= {table[c]["min_driver"]} ({table[c]["source"]})'
                     for c in cudas if any(_cuda_mode(c, b) != 'full' for b in branches))


def _pick_default(candidates, day, need):
    """(branch, 'oldest'|'newest') per POLICY['default_branch'] among eligible LTSB branches."""
    lefts = {b: _months_left(_BRANCHES[b], day) for b in candidates}
    long_enough = [b for b in candidates if lefts[b] is not None and lefts[b] >= need]
    if long_enough:
        return min(long_enough), 'oldest'
    return max(candidates), 'newest'


def _default_branch(gpus, cudas, day):
    """The default branch for these GPUs and CUDA versions on ``day``: (branch, reasons, warnings).

    The rule (data in POLICY['default_branch'], rationale recorded there): among LTSB branches
    not past end of life on ``day`` that drive every GPU of the host (no GPU's architecture has
    a last branch below it, POLICY['architecture_last_branch']) and run every wanted CUDA version
    in full (its minimum driver, not minor-version compatibility), take the OLDEST that still has
    at least ``min_support_months`` (12) months of support left, counted in calendar months from
    ``day``'s month to the end-of-life month; when none has that much, the NEWEST of them.

    Why: a mature LTSB is preferred over the newest because new branches repeatedly broke
    consumer-card P2P (545, 555, 560: FACTS.md), and 12 months of support leave a year of fixes
    before the next planned change. With the 2026 table: 580 (EOL 2028-06) until 2027-06, 620
    (EOL 2029-09) from 2027-07; on a host with a Maxwell, Pascal or Volta card 580 for as long as
    580 is supported (it is their last branch); a CUDA version whose minimum driver is above
    580 (13.1 needs 590.44.01) picks 620. No eligible LTSB is a refusal that says why and what
    to do: set the branch explicitly (580 runs CUDA 13.1 under minor-version compatibility), use
    an older CUDA, or move the cards.
    """
    cfg = POLICY['default_branch']
    need = cfg['min_support_months']
    hard = [r for r in _branch_limits(gpus) if r['verified']]
    limit = min((r['last'] for r in hard), default=None)
    live = sorted(b for b, e in _BRANCHES.items() if e['type'] == cfg['type'] and not _eol_passed(e, day))
    if not live:
        raise _err(f"no LTSB branch in rigkeeper's table is still supported on {day}: set the branch "
                   "explicitly and update POLICY['driver_branches'] from NVIDIA's Supported Drivers and "
                   'CUDA Toolkit Versions page')
    fits = [b for b in live if limit is None or b <= limit]
    if not fits:
        raise _err(f'no LTSB branch still supported on {day} ({", ".join(map(str, live))}) drives every '
                   f'GPU: {_limit_text([r for r in hard if r["last"] < min(live)])}. To do: '
                   f'{_limit_todo(limit, day)}')
    runs = [b for b in fits if all(_cuda_mode(c, b) == 'full' for c in cudas)]
    if not runs:
        newest = max(fits)
        gpu_text = f' (the GPUs stop at {limit}: {_limit_text(hard)})' if limit is not None else ''
        todo = []
        if all(_cuda_mode(c, newest) is not None for c in cudas):
            todo.append(f'set nvidia_driver_branch explicitly ({newest} runs it only under minor-version '
                        'compatibility, with limits for PTX JIT)')
        todo += ['use an older CUDA', 'move those cards to another host' if limit is not None else
                 "add a newer LTSB to POLICY['driver_branches'] once NVIDIA publishes one"]
        raise _err(f'no LTSB branch runs the wanted CUDA in full: {_cuda_need(cudas, fits)}; the LTSB '
                   f'branches that drive every GPU are {", ".join(map(str, fits))}{gpu_text}. To do: '
                   f'{", or ".join(todo)}')

    chosen, how = _pick_default(runs, day, need)
    entry = _BRANCHES[chosen]
    left = _months_left(entry, day)
    scope = (' that drives every GPU' if gpus else '') + (f' and runs CUDA {", ".join(cudas)} in full'
                                                         if cudas else '')
    reasons, warnings = [], []
    if how == 'oldest':
        # The month the chosen branch drops below min_support_months, and the default from then on.
        switch = _month_index(*(int(p) for p in entry['eol'].split('-'))) - need + 1
        later = datetime.date(switch // 12, switch % 12 + 1, 1)
        still = [b for b in runs if not _eol_passed(_BRANCHES[b], later)]
        successor = _pick_default(still, later, need)[0] if still else None
        if successor is not None and successor != chosen:
            nxt = (f'{successor} (EOL {_BRANCHES[successor]["eol"]}) becomes the default once {chosen} has '
                   f'less than {need} months left (from {_month_text(switch)})')
        else:
            nxt = (f'{chosen} stays the default until its end of life ({entry["eol"]}): no newer LTSB is '
                   'eligible')
        reasons.append(f'branch {chosen}: none requested; {chosen}: oldest LTSB with >= {need} months of '
                       f'support (EOL {entry["eol"]}, {left} months left on {day}){scope}; {nxt} '
                       f'({cfg["source"]})')
    else:
        reasons.append(f'branch {chosen}: none requested; no eligible LTSB has >= {need} months of support '
                       f'left on {day}, so the newest{scope}: {chosen} (EOL {entry["eol"]}, {left} months '
                       f'left) ({cfg["source"]})')
        warnings.append(f'driver branch {chosen} has {left} months of support left (EOL {entry["eol"]}, '
                        f'{entry["source"]}) and no eligible LTSB lasts longer: plan the move (newer cards, '
                        'or a newer LTSB once NVIDIA publishes one)')
    excluded = [b for b in live if b not in fits]
    if excluded:
        reasons.append(f'{", ".join(map(str, excluded))} not eligible: {_limit_text(hard)}')
    partial = [b for b in fits if b not in runs]
    if partial:
        reasons.append(f'{", ".join(map(str, partial))} not eligible: {_cuda_need(cudas, partial)}')
    return chosen, reasons, warnings


def _advised_ltsb(gpus, day, fallback=True):
    """The branch to advise in messages: the default for these GPUs; when there is none, the
    newest LTSB not past end of life (else the newest LTSB) with ``fallback``, else None."""
    try:
        return _default_branch(gpus, [], day)[0]
    except AnsibleFilterError:
        if not fallback:
            return None
        return _current_ltsb(day) or max(b for b, e in _BRANCHES.items() if e['type'] == 'LTSB')


def _check_branch_limits(chosen, gpus, day, warnings):
    """Refuse a branch newer than the last branch of a GPU's architecture (warn when UNVERIFIED)."""
    over = [r for r in _branch_limits(gpus) if chosen > r['last']]
    soft = [r for r in over if not r['verified']]
    hard = [r for r in over if r['verified']]
    if soft:
        limit = min(r['last'] for r in soft)
        warnings.append(f'driver branch {chosen} may not drive these GPUs: {_limit_text(soft)}; if the '
                        f'driver does not load: {_limit_todo(limit, day)}')
    if hard:
        limit = min(r['last'] for r in hard)
        raise _err(f'driver branch {chosen} does not drive these GPUs (its kernel modules refuse them): '
                   f'{_limit_text(hard)}. To do: {_limit_todo(limit, day)}')


# --------------------------------------------------------------------------------------------
# 1. Driver branch + module flavour
# --------------------------------------------------------------------------------------------
def rk_driver_decision(gpus, branch=None, cuda_versions=(), module_flavor='auto',
                       allow_known_bad=False, today=None):
    """Driver branch and kernel-module flavour for these GPUs.

    Usage: ``nvidia_gpu.gpus | rk_driver_decision(branch=nvidia_driver_branch, cuda_versions=['12.4'])``

    :param gpus: ``nvidia_gpu.gpus`` (the whole ``nvidia_gpu`` dict works too), or a list of model
        names (a fresh box without a driver: the inventory's expected models; the architecture then
        comes from the name). May be empty: then GPU-specific checks become warnings.
    :param branch: wanted branch, ``580``/``'580'``/``'R580'``; ``None`` picks the default by data
        (see :func:`_default_branch`): the oldest LTSB not past end of life that drives every GPU,
        runs every wanted CUDA in full and has >= 12 months of support left on ``today``, else the
        newest such LTSB (580 until 2027-06, then 620; 580 on Maxwell/Pascal/Volta hosts).
    :param cuda_versions: CUDA versions (``'12.4'``) the host must run; each is checked against the
        branch with :func:`rk_cuda_check` (branch = its lowest plausible version); a CUDA the branch
        cannot run is refused, one it runs under minor-version compatibility is a warning.
    :param module_flavor: ``'auto'``, ``'open'`` or ``'proprietary'``. ``auto``: open when a Blackwell
        GPU is present (required), proprietary when a pre-Turing GPU is present (open is not
        supported), else open from branch 560 on and proprietary before it.
    :param allow_known_bad: turn a known-bad refusal (545 on 2+ GPUs with consumer/workstation
        Ampere/Ada) into a warning.
    :param today: ``'YYYY-MM-DD'`` (or a date) for the end-of-life checks; ``None`` = today.
    :returns: ``{branch: '580', flavor: 'open'|'proprietary', type: 'LTSB'|'production'|'feature'|
        'short-lived'|None, eol: 'YYYY-MM'|None, warnings: [str], reasons: [str]}``.
    :raises AnsibleFilterError: garbage or unknown branch, a branch newer than the last branch of a
        GPU's architecture (590+ on Maxwell/Pascal/Volta, anything in the table on Kepler; the
        message names each GPU, its architecture, the last branch, the source and what to do),
        no eligible default, known-bad branch for these GPUs, impossible flavour, CUDA the branch
        cannot run.
    """
    gpus = _gpu_list(gpus)
    day = _parse_today(today)
    allow_known_bad = _as_bool(allow_known_bad, 'allow_known_bad')
    if module_flavor not in ('auto', 'open', 'proprietary'):
        raise _err(f"module_flavor {module_flavor!r} is not one of 'auto', 'open', 'proprietary'")
    cudas = [_parse_cuda(c) for c in _as_list(cuda_versions, 'cuda_versions')]
    warnings, reasons = [], []

    # Branch
    if branch is None:
        chosen, why, warned = _default_branch(gpus, cudas, day)
        reasons.extend(why)
        warnings.extend(warned)
    else:
        chosen = _parse_branch(branch)
        reasons.append(f'branch {chosen}: requested')
    _check_branch_limits(chosen, gpus, day, warnings)
    entry = _BRANCHES[chosen]

    advised = _advised_ltsb(gpus, day, fallback=False)
    if advised is None:
        move_to = ('no LTSB still supported drives every GPU of this host (see rk_driver_decision with no '
                   'branch): plan to replace those cards')
    elif advised != chosen:
        move_to = f'move to {advised} (LTSB until {_BRANCHES[advised]["eol"]})'
    else:
        move_to = "check NVIDIA's Supported Drivers and CUDA Toolkit Versions page for a supported branch"
    if entry['type'] is None:
        warnings.append(f'driver branch {chosen}: its type and end of life are not recorded '
                        f'({entry["source"]}); check NVIDIA\'s supported drivers page, or {move_to}')
    elif _eol_passed(entry, day):
        when = f'reached end of life in {entry["eol"]}' if entry.get('eol') else 'is past end of life'
        warnings.append(f'driver branch {chosen} ({_type_text(entry["type"])}) {when} '
                        f'({entry["source"]}) and gets no more fixes: {move_to}')
    elif entry['type'] == 'feature':
        until = (f'end of life {entry["eol"]}' if entry['eol'] else
                 'NVIDIA publishes no end of life for it')
        warnings.append(f'driver branch {chosen} is a new feature branch, short-lived ({until}; '
                        f'{entry["source"]}): for a rig that must stay stable, {move_to}')

    # Known issues
    refusals = []
    for finding in _issue_findings(chosen, gpus, day):
        if finding['action'] == 'refuse' and not allow_known_bad:
            refusals.append(finding['message'])
        elif finding['action'] == 'refuse':
            warnings.append(finding['message'].replace(' is refused for ', ' is known bad for ', 1)
                            + ' (allowed by allow_known_bad)')
        else:
            warnings.append(finding['message'])
    if refusals:
        raise _err(' | '.join(refusals))

    # Flavour
    flavor = _decide_flavor(chosen, gpus, module_flavor, warnings, reasons)

    # CUDA
    for cuda in cudas:
        result = rk_cuda_check(cuda, str(chosen))
        warnings.extend(result['warnings'])
        reasons.append(f'CUDA {result["cuda"]}: branch {chosen} runs it ({result["mode"]}; minimum '
                       f'driver {result["min_driver"]}, {result["source"]})')

    return {'branch': str(chosen), 'flavor': flavor, 'type': entry['type'], 'eol': entry['eol'],
            'warnings': warnings, 'reasons': reasons}


def _decide_flavor(branch, gpus, wanted, warnings, reasons):
    table = POLICY['module_flavors']
    src = table['source']
    open_min = _arch_rank(table['open_min_architecture'])
    labelled = [(_gpu_label(g, p), _gpu_arch(g)) for p, g in enumerate(gpus)]
    need_open = [f'{label} is {arch}' for label, arch in labelled if arch in table['open_required']]
    no_open = [f'{label} is {arch}' for label, arch in labelled
               if _arch_rank(arch) is not None and _arch_rank(arch) < open_min]
    unknown = [label for label, arch in labelled if _arch_rank(arch) is None]

    if need_open and no_open:
        raise _err(f'no kernel-module flavour drives all these GPUs: {"; ".join(need_open)} (needs '
                   f'open modules) while {"; ".join(no_open)} (open modules need '
                   f'{table["open_min_architecture"]} or newer) ({src}); split them across hosts')
    if wanted == 'open':
        if no_open:
            raise _err(f'module_flavor open: open kernel modules support {table["open_min_architecture"]} '
                       f'and newer, but {"; ".join(no_open)} ({src}); use module_flavor '
                       "'proprietary' (or 'auto')")
        flavor = 'open'
        reasons.append('flavor open: requested')
    elif wanted == 'proprietary':
        if need_open:
            raise _err(f'module_flavor proprietary: {"; ".join(need_open)} and Blackwell GPUs need the '
                       f"open kernel modules ({src}); use module_flavor 'open' (or 'auto')")
        flavor = 'proprietary'
        reasons.append('flavor proprietary: requested')
    elif need_open:
        flavor = 'open'
        reasons.append(f'flavor open: {"; ".join(need_open)}, which needs open modules ({src})')
    elif no_open:
        flavor = 'proprietary'
        reasons.append(f'flavor proprietary: {"; ".join(no_open)}; open modules need '
                       f'{table["open_min_architecture"]} or newer ({src})')
    elif branch >= table['open_default_from_branch']:
        flavor = 'open'
        reasons.append(f'flavor open: the default from branch {table["open_default_from_branch"]} '
                       f'on for Turing and newer ({src})')
    else:
        flavor = 'proprietary'
        reasons.append(f'flavor proprietary: the default before branch '
                       f'{table["open_default_from_branch"]} ({src})')
    if flavor == 'open' and wanted == 'auto' and (unknown or not gpus):
        which = ', '.join(unknown) if unknown else 'no GPU facts yet'
        warnings.append(f'architecture unknown ({which}); open kernel modules need '
                        f'{table["open_min_architecture"]} or newer: set module_flavor '
                        "'proprietary' for Pascal, Volta or older GPUs")
    return flavor


# --------------------------------------------------------------------------------------------
# 2. Packages
# --------------------------------------------------------------------------------------------
_FLAVOUR_RE = re.compile(r'[a-z][a-z0-9.+-]*')


def _glob_prefix(pattern):
    """'nvidia-container-*' -> 'nvidia-container-' (the literal part before the first wildcard)."""
    return re.split(r'[*?\[]', pattern, maxsplit=1)[0]


def _blacklist(patterns, not_family):
    """unattended-upgrades regexes (re.match on package names) for these family globs, skipping
    what ``not_family`` names (the container toolkit keeps its security updates)."""
    out = []
    for pattern in patterns:
        prefix = _glob_prefix(pattern)
        skip = [_glob_prefix(p)[len(prefix):] for p in not_family
                if _glob_prefix(p).startswith(prefix) and _glob_prefix(p) != prefix]
        regex = '^' + prefix.replace('.', r'\.')
        if skip:
            regex += '(?!' + '|'.join(x.replace('.', r'\.') for x in skip) + ')'
        if regex not in out:
            out.append(regex)
    return out


def rk_driver_packages(branch, source, flavor='proprietary', distro='ubuntu', server=False,
                       headless=False, modules='dkms', kernel_flavour='generic'):
    """Packages for a driver branch from a package source, and the globs that pin its family.

    Usage: ``decision.branch | rk_driver_packages('ubuntu', flavor=decision.flavor, server=true,
    modules=module_plan.modules)``

    :param branch: ``580`` or ``'580'`` (must be in the branch table).
    :param source: ``'ubuntu'`` (Ubuntu archive: ``nvidia-driver-<br>[-server][-open]``, headless
        ``nvidia-headless-<br>[-server][-open]`` + ``nvidia-utils-<br>[-server]``),
        ``'cuda'`` (NVIDIA's CUDA repo: ``cuda-drivers-<br>`` proprietary, ``nvidia-open-<br>`` open;
        from 590 the names drop the branch and ``nvidia-driver-pinning-<br>`` locks it), or
        ``'debian'`` (Debian 12 non-free, 535 only: ``nvidia-driver``, or
        ``nvidia-tesla-535-driver`` with ``server=True``).
    :param flavor: ``'proprietary'`` or ``'open'`` (take it from :func:`rk_driver_decision`).
    :param distro: ``'ubuntu'`` or ``'debian'`` (the host's); ``source='ubuntu'`` needs Ubuntu and
        ``source='debian'`` needs Debian.
    :param server: the Ubuntu ``-server`` (datacenter) packages; with ``'debian'`` the tesla driver;
        ignored (warning) for ``'cuda'``.
    :param headless: no X/desktop packages; mapped for ``source='ubuntu'`` only.
    :param modules: ``'dkms'`` (modules built on the host) or ``'precompiled'`` (take it from
        :func:`rk_module_plan`): Canonical's signed precompiled modules from the Ubuntu archive
        (source linux-restricted-modules; what a Secure Boot host without an enrolled MOK needs),
        ``source='ubuntu'`` only: ``nvidia-headless-no-dkms-<br>[-server][-open]``,
        ``nvidia-utils-<br>[-server]`` and the kernel-flavour meta
        ``linux-modules-nvidia-<br>[-server][-open]-<kernel_flavour>``, which depends on the module
        package of the current kernel ABI (``= kernel version``) and on
        ``nvidia-kernel-common-<br> (>= driver version)``. The X/desktop packages are not part of
        it (``headless=False`` gives a warning).
    :param kernel_flavour: the kernel flavour of the precompiled meta (``'generic'``,
        ``'generic-hwe-22.04'``, ``'lowlatency'``, ...); used with ``modules='precompiled'``.
    :returns: a dict:

        - ``pre_install``: packages to install *before* ``install`` in their own step, so apt
          resolves the driver under the lock: ``['nvidia-driver-pinning-<br>']`` for 590+ from the
          CUDA repo, else ``[]``.
        - ``install``: the driver packages (never the pinning package).
        - ``version_from``: the package whose version IS the driver version; resolve and verify
          the driver version from it, never from the pinning package (its version is its own) nor
          from a kernel-module meta (kernel versions): ``'libnvidia-compute'`` for 590+ from the CUDA
          repo, else ``install[0]``.
        - ``hold``: what this installs (``pre_install + install``) minus the kernel-following
          packages. Hold every *installed* package matching ``hold_patterns`` minus
          ``pin_exclude`` too.
        - ``pin_patterns``: globs naming the whole NVIDIA family (apt preferences);
          ``pin_exclude``: globs those catch that are versioned apart from the driver (the
          container toolkit).
        - ``hold_patterns``: ``pin_patterns`` minus ``kernel_following``.
        - ``kernel_following``: ``linux-modules-nvidia-*``, ``linux-objects-nvidia-*``,
          ``linux-signatures-nvidia-*``: they follow the kernel's ABI, so they are never held
          (kernel updates would arrive without their module) nor blacklisted.
        - ``pin_version``: ``'580.*'``. Use it as a *positive* pin only (``Pin: version 580.*``,
          priority >= 1000): some family members (``linux-modules-nvidia-*``, Ubuntu's
          ``nvidia-settings``) carry other version numbers.
        - ``other_branches``: every other branch in the table, as strings (``['535', ...]``), for
          apt preferences that block them by name.
        - ``unattended_blacklist``: Python regexes (unattended-upgrades applies ``re.match`` to
          package names) for the driver family only: not the container toolkit
          (``nvidia-container-*``, ``libnvidia-container*``, ``nvidia-docker*``: it keeps its
          security updates) and not the kernel-following packages.
        - ``version_named``: templates (``{upstream}``: the driver version, 580.95.05) of packages
          named for one driver version that the driver needs, installed with it when the archive
          offers them: Ubuntu's and NVIDIA's GSP firmware, ``nvidia-firmware-<br>[-server]-<version>``
          (``nvidia-firmware-<version>`` from 590 in NVIDIA's repository), which the open modules
          cannot start a GPU without (canonical/nvidia-graphics-drivers,
          debian/templates/nvidia-firmware-flavour-version.install.in). Named explicitly, not left
          to a dependency: the precompiled modules' packages are built apart from the driver's.
        - ``warnings``: [str].

        A package *name* does not pin a branch (transitional packages): verify the installed
        driver with :func:`rk_version_on_branch`.
    """
    br = _parse_branch(branch)
    if flavor not in ('proprietary', 'open'):
        raise _err(f"flavor {flavor!r} is not 'proprietary' or 'open' (take it from rk_driver_decision)")
    if distro not in ('ubuntu', 'debian'):
        raise _err(f"distro {distro!r} is not 'ubuntu' or 'debian' (rigkeeper supports Ubuntu 22.04/"
                   '24.04 and Debian 12)')
    if modules not in ('dkms', 'precompiled'):
        raise _err(f"modules {modules!r} is not 'dkms' or 'precompiled' (take it from rk_module_plan)")
    if not isinstance(kernel_flavour, str) or not _FLAVOUR_RE.fullmatch(kernel_flavour):
        raise _err(f"kernel_flavour {kernel_flavour!r} is not a kernel flavour like 'generic' (the part of "
                   "`uname -r` after the ABI, e.g. 6.8.0-51-generic -> 'generic')")
    server = _as_bool(server, 'server')
    headless = _as_bool(headless, 'headless')
    table = POLICY['packages']
    is_open = flavor == 'open'
    warnings = []
    patterns = list(table['family']['patterns'])
    pre_install = []
    version_from = None
    precompiled = table['ubuntu_precompiled']
    if modules == 'precompiled' and source not in precompiled['sources']:
        raise _err(f"modules 'precompiled' (Canonical's signed linux-modules-nvidia-* packages) exist only "
                   f"in the Ubuntu archive ({precompiled['source']}), not for source {source!r}: use "
                   "source 'ubuntu', or modules 'dkms' (with Secure Boot on: enrol a MOK, see "
                   'rk_module_plan)')

    if source == 'ubuntu':
        if distro != 'ubuntu':
            raise _err("source 'ubuntu' (the Ubuntu archive) needs an Ubuntu host; on Debian use "
                       "source 'debian' (non-free) or 'cuda' (NVIDIA's CUDA repo)")
        variant = '-server' if server else ''
        suffix = variant + ('-open' if is_open else '')
        if modules == 'precompiled':
            install = [name.format(br=br, variant=variant, open='-open' if is_open else '',
                                   flavour=kernel_flavour) for name in precompiled['install']]
            if not headless:
                warnings.append('modules precompiled installs the headless set without DKMS '
                                f'({install[0]}, {install[1]}): no X/desktop driver packages')
        elif headless:
            install = [f'nvidia-headless-{br}{suffix}', f'nvidia-utils-{br}{variant}']
        else:
            install = [f'nvidia-driver-{br}{suffix}']
        patterns += table['family_ubuntu']['patterns']
        pitfall = table['ubuntu_transitional_server']
        if server and br in pitfall['branches']:
            warnings.append(f'{install[0]} may be a transitional package that pulls 580 '
                            f'({pitfall["source"]}): pinning the name does not pin the branch; '
                            f'verify the installed driver version is on {br} after install')
    elif source == 'cuda':
        if headless:
            raise _err("headless=True is mapped only for source 'ubuntu': FACTS.md records no headless "
                       "package names for NVIDIA's CUDA repo; use headless=False (the X packages do "
                       "no harm on a server) or source 'ubuntu'")
        if server:
            warnings.append("server=True has no meaning for NVIDIA's CUDA repo (the -server packages "
                            'are Ubuntu archive names); ignored')
        unversioned = table['cuda_unversioned_from']
        if br >= unversioned['branch']:
            pinning = table['cuda_pinning']
            pre_install = [pinning['pre_install'].format(branch=br)]
            install = ['nvidia-open' if is_open else 'cuda-drivers']
            version_from = pinning['version_from']
            warnings.append(f'branch {br}: package names carry no branch; nvidia-driver-pinning-{br} '
                            f'locks it ({unversioned["source"]}): install it first, and read the '
                            f'driver version from {version_from}')
        else:
            install = [f'nvidia-open-{br}' if is_open else f'cuda-drivers-{br}']
    elif source == 'debian':
        if distro != 'debian':
            raise _err("source 'debian' (Debian non-free) needs a Debian host; on Ubuntu use source "
                       "'ubuntu' or 'cuda'")
        deb = table['debian_branches']
        if br not in deb['branches']:
            raise _err(f'Debian 12 non-free ships only branch '
                       f'{", ".join(map(str, deb["branches"]))} ({deb["source"]}); for {br} use '
                       "source 'cuda' (NVIDIA's debian12 repo)")
        if is_open:
            raise _err("flavor open is not mapped for Debian non-free (FACTS.md records only the "
                       "proprietary DKMS packages); use source 'cuda' (nvidia-open-<br>) or "
                       "flavor 'proprietary'")
        if headless:
            raise _err("headless=True is not mapped for Debian non-free (FACTS.md records no headless "
                       "package set); use headless=False (nvidia-driver) or source 'cuda'")
        install = [f'nvidia-tesla-{br}-driver'] if server else ['nvidia-driver']
        patterns += table['family_debian']['patterns']
    else:
        raise _err(f"source {source!r} is not 'ubuntu' (Ubuntu archive), 'cuda' (NVIDIA CUDA repo) "
                   "or 'debian' (Debian non-free)")

    patterns = list(dict.fromkeys(patterns))
    following = list(table['kernel_following']['patterns'])

    def _follows(name):
        return any(fnmatch.fnmatchcase(name, p) for p in following)

    hold_patterns = [p for p in patterns if p not in following]
    not_family = list(table['not_family']['patterns'])
    if source == 'ubuntu':
        version_named = [f'nvidia-firmware-{br}{variant}-{{upstream}}']
    elif source == 'cuda':
        version_named = ['nvidia-firmware-{upstream}' if br >= table['cuda_unversioned_from']['branch']
                         else f'nvidia-firmware-{br}-{{upstream}}']
    else:
        version_named = []
    return {
        'pre_install': pre_install,
        'install': install,
        'version_from': version_from or install[0],
        'hold': [name for name in pre_install + install if not _follows(name)],
        'pin_patterns': patterns,
        'pin_exclude': not_family,
        'hold_patterns': hold_patterns,
        'kernel_following': following,
        'pin_version': f'{br}.*',
        'other_branches': [str(b) for b in sorted(_BRANCHES) if b != br],
        'unattended_blacklist': _blacklist(hold_patterns, not_family),
        'version_named': version_named,
        'versioned_apart': list(table['versioned_apart_debian']['names']) if source == 'debian' else [],
        'warnings': warnings,
    }


def _as_tristate(value, what):
    if value is None or isinstance(value, bool):
        return value
    raise _err(f'{what} must be true, false or null (unknown), got {value!r}')


def rk_module_plan(secure_boot, mok_enrolled, source, modules='auto'):
    """How the NVIDIA kernel modules get onto the host, given Secure Boot: DKMS or precompiled.

    Usage: ``rigkeeper_host.secure_boot | rk_module_plan(mok_enrolled, nvidia_driver_source,
    modules='auto')``, then ``rk_driver_packages(..., modules=plan.modules)``.

    With Secure Boot on, the kernel loads only signed modules: a DKMS-built module loads only when
    it is signed with a Machine Owner Key enrolled in shim (the enrolment is confirmed at the console
    on the next boot), else the boot ends without a driver (``modprobe: ERROR: could not insert
    'nvidia': Key was rejected by service``). Canonical's precompiled
    ``linux-modules-nvidia-*`` packages (Ubuntu archive only) are signed and load without a MOK
    [FACTS.md: Headless; Driver branches].

    :param secure_boot: ``rigkeeper_host.secure_boot``: ``True``, ``False``, or ``None`` (unknown:
        no mokutil).
    :param mok_enrolled: whether the DKMS signing key (``/var/lib/shim-signed/mok/MOK.der`` on
        Ubuntu) is enrolled: ``True``, ``False`` or ``None`` (unknown); read with ``mokutil
        --test-key /var/lib/shim-signed/mok/MOK.der``. Only consulted for DKMS with Secure Boot on.
    :param source: the driver package source, ``'ubuntu'``, ``'cuda'`` or ``'debian'``.
    :param modules: ``'auto'``, ``'dkms'`` or ``'precompiled'``. ``auto``: precompiled for the
        Ubuntu source with Secure Boot on (Canonical signs them), else dkms.
    :returns: ``{modules: 'dkms'|'precompiled', reasons: [str], warnings: [str]}``.
    :raises AnsibleFilterError: precompiled for a source other than ubuntu; DKMS with Secure Boot
        on and no MOK known to be enrolled (``mok_enrolled`` false or unknown): the message says
        what to do (Ubuntu: modules precompiled; enrol a MOK with ``mokutil --import
        /var/lib/shim-signed/mok/MOK.der`` and confirm it at the console on the next boot; or turn
        Secure Boot off in the firmware); garbage input.
    """
    secure_boot = _as_tristate(secure_boot, 'secure_boot')
    mok_enrolled = _as_tristate(mok_enrolled, 'mok_enrolled')
    if source not in ('ubuntu', 'cuda', 'debian'):
        raise _err(f"source {source!r} is not 'ubuntu' (Ubuntu archive), 'cuda' (NVIDIA CUDA repo) "
                   "or 'debian' (Debian non-free)")
    if modules not in ('auto', 'dkms', 'precompiled'):
        raise _err(f"modules {modules!r} is not one of 'auto', 'dkms', 'precompiled'")
    sb = POLICY['modules']['secure_boot']
    precompiled_sources = POLICY['packages']['ubuntu_precompiled']['sources']
    reasons, warnings = [], []
    state = {True: 'on', False: 'off', None: 'unknown'}[secure_boot]

    if modules == 'precompiled':
        if source not in precompiled_sources:
            raise _err(f"modules 'precompiled': Canonical's signed linux-modules-nvidia-* packages exist "
                       f"only in the Ubuntu archive ({sb['source']}), not for source {source!r}: use "
                       "nvidia_driver_source: ubuntu, or modules: dkms"
                       + (' with an enrolled MOK' if secure_boot else ''))
        reasons.append(f"modules precompiled: requested (Canonical's signed modules; Secure Boot {state})")
        return {'modules': 'precompiled', 'reasons': reasons, 'warnings': warnings}

    if modules == 'auto' and secure_boot and source in precompiled_sources:
        reasons.append("modules precompiled: Secure Boot is on and the Ubuntu archive has Canonical's "
                       f"signed linux-modules-nvidia-* packages, which load without a MOK ({sb['source']})")
        return {'modules': 'precompiled', 'reasons': reasons, 'warnings': warnings}

    how = 'requested' if modules == 'dkms' else 'auto'
    if secure_boot is True and mok_enrolled is not True:
        known = 'no MOK is enrolled' if mok_enrolled is False else 'no enrolled MOK is known'
        options = []
        if source in precompiled_sources:
            options.append("modules: precompiled (Canonical's signed linux-modules-nvidia-* packages)")
        else:
            options.append("use nvidia_driver_source: ubuntu with Canonical's signed precompiled modules "
                           '(Ubuntu hosts only)')
        options.append(f'enrol a MOK: `{sb["mok_import"]}`, then confirm it at the console (MOK manager) on '
                       f'the next boot; check it with `{sb["mok_test"]}`, then rerun')
        options.append('turn Secure Boot off in the firmware')
        raise _err(f'modules dkms ({how}) refused: Secure Boot is on and {known}, so the kernel would refuse '
                   f"the DKMS-built module at boot (\"{sb['kernel_error']}\": {sb['kernel_error_source']}) "
                   f'and the host would come up without a driver ({sb["source"]}). To do, one of: '
                   f'{"; or ".join(options)}')
    if secure_boot is True:
        reasons.append(f'modules dkms ({how}): Secure Boot is on and a MOK is enrolled: DKMS signs the '
                       'modules with it')
    elif secure_boot is False:
        reasons.append(f'modules dkms ({how}): Secure Boot is off, so unsigned DKMS-built modules load')
    else:
        reasons.append(f'modules dkms ({how}): Secure Boot state unknown')
        warnings.append('Secure Boot state unknown (no mokutil on the host): if Secure Boot is on, the '
                        f"kernel refuses a DKMS module no enrolled MOK signed (\"{sb['kernel_error']}\"), "
                        'and the host comes up without a driver; install mokutil so rigkeeper can check'
                        + (', or set modules: precompiled' if source in precompiled_sources
                           else ''))
    return {'modules': 'dkms', 'reasons': reasons, 'warnings': warnings}


_DEB_VERSION_RE = re.compile(r'(?:(\d+):)?(\d+)(?:[.-][0-9A-Za-z.+~:-]*)?')


def rk_version_on_branch(version, branch):
    """Whether a driver or package version belongs to a branch.

    Handles nvidia-smi versions (``580.95.05``, ``570.26``) and Debian package versions with
    epoch and revision (``1:580.95.05-1``, ``535.309.01-0ubuntu0.24.04.2``): the branch is the
    first number of the upstream part.

    Note: a transitional package can carry a 535 version yet pull 580 [FACTS.md: Packages,
    pitfall]; check the *driver* version (``rigkeeper_host.driver_installed_version``), not the
    metapackage's.

    :param version: the version string.
    :param branch: ``580`` or ``'580'``.
    :returns: bool.
    :raises AnsibleFilterError: ``None``/empty/garbage version or branch (guard unknown versions
        with ``is not none``).
    """
    br = _parse_branch(branch, known=False)
    if isinstance(version, bool) or not (isinstance(version, str) or _is_number(version)):
        raise _err(f'version {version!r} is not a driver version string (e.g. "580.95.05" or '
                   '"535.309.01-0ubuntu0.24.04.2"); guard unknown versions with "is not none"')
    text = str(version).strip()
    match = _DEB_VERSION_RE.fullmatch(text)
    if not match:
        raise _err(f'version {version!r} is not a driver version string (e.g. "580.95.05" or '
                   '"535.309.01-0ubuntu0.24.04.2")')
    return int(match.group(2)) == br


# --------------------------------------------------------------------------------------------
# 3. CUDA
# --------------------------------------------------------------------------------------------
def _parse_cuda(value):
    """'12.4', '12.4.1', 12.4, '12-4' -> '12.4' (must be in the table)."""
    table = POLICY['cuda']
    if isinstance(value, bool) or not (isinstance(value, str) or isinstance(value, float)):
        raise _err(f'CUDA version {value!r} must be "major.minor", e.g. "12.4"')
    text = repr(value) if isinstance(value, float) else value.strip()
    match = re.fullmatch(r'(\d+)[.-](\d+)(?:[.-]\d+)*', text)
    if not match:
        raise _err(f'CUDA version {value!r} must be "major.minor", e.g. "12.4"')
    key = f'{int(match.group(1))}.{int(match.group(2))}'
    if key in table['missing']:
        missing = table['missing'][key]
        raise _err(f'CUDA {key} does not exist: {missing["note"]} ({missing["source"]}); use '
                   '12.6 or 12.8')
    if key not in table['min_driver']:
        raise _err(f"CUDA {key} is not in rigkeeper's CUDA table (known: "
                   f"{', '.join(table['min_driver'])}); pick one of those or add the row with its "
                   "minimum driver from NVIDIA's CUDA release notes")
    return key


def rk_cuda_check(cuda_version, driver):
    """Can this driver run this CUDA toolkit.

    :param cuda_version: ``'12.4'`` (``'12.4.1'`` is read as 12.4).
    :param driver: a full driver version ``'535.54.03'`` or a branch ``'535'``/``535``. A branch
        means "any version of that branch": its branch number is compared with the minimum's
        branch (the branch's lowest plausible version is assumed to meet a minimum inside it,
        e.g. branch 550 for CUDA 12.4's 550.54.14; verify the installed version against
        ``min_driver``).
    :returns: ``{ok: True, mode: 'full'|'minor-compat', warnings: [str], cuda: '12.4',
        driver: '535', min_driver: '550.54.14', source: str}``. ``minor-compat`` means the driver
        is below the table's minimum but at or above the CUDA major's minor-version-compatibility
        floor (11.x >= 450.80.02, 12.x >= 525, 13.x >= 580): it runs, with limits for PTX JIT.
    :raises AnsibleFilterError: unknown CUDA (12.7 does not exist), bad driver, or a driver below
        both the minimum and the floor (the message names the minimum and its source).
    """
    cuda = _parse_cuda(cuda_version)
    row = POLICY['cuda']['min_driver'][cuda]
    major = int(cuda.split('.')[0])
    compat = POLICY['cuda']['minor_compat'][major]
    minimum = _parse_version(row['min_driver'])
    floor = _parse_version(compat['floor'])
    version = _parse_version(driver, 'driver')
    text = str(driver).strip()  # as given: keeps '535.54.03', not '535.54.3'
    is_branch = len(version) == 1
    if is_branch:
        have, need, least = version[0], minimum[0], floor[0]
        shown = f'branch {version[0]}'
    else:
        have, need, least = _vkey(version), _vkey(minimum), _vkey(floor)
        shown = f'driver {text}'
    result = {'ok': True, 'mode': 'full', 'warnings': [], 'cuda': cuda, 'driver': text,
              'min_driver': row['min_driver'], 'source': row['source']}
    if have >= need:
        return result
    if have >= least:
        result['mode'] = 'minor-compat'
        result['warnings'].append(
            f'CUDA {cuda} runs on {shown} only through minor-version compatibility: full support '
            f'needs driver >= {row["min_driver"]} ({row["source"]}); {shown} is above the CUDA '
            f'{major}.x floor {compat["floor"]} ({compat["source"]}), with limits for PTX JIT and '
            f'newer features: use branch {minimum[0]} or newer for full support')
        return result
    raise _err(f'CUDA {cuda} needs NVIDIA driver >= {row["min_driver"]} ({row["source"]}), or '
               f'>= {compat["floor"]} under minor-version compatibility ({compat["source"]}); '
               f'{shown} is below both: use branch {minimum[0]} or newer, or an older CUDA')


def rk_cuda_packages(cuda_version):
    """CUDA toolkit package(s) for a CUDA version: ``'12.4'`` -> ``['cuda-toolkit-12-4']``.

    :raises AnsibleFilterError: unknown or nonexistent CUDA version (12.7).
    """
    cuda = _parse_cuda(cuda_version)
    major, minor = cuda.split('.')
    return [POLICY['cuda']['toolkit_package']['pattern'].format(major=major, minor=minor)]


def rk_cudnn_packages(cuda_version, cudnn_major=9, dev=True, version=None):
    """cuDNN packages matched to a CUDA version (NVIDIA's CUDA repo).

    cuDNN 8 (CUDA 11.x/12.x): ``libcudnn8`` (+ ``libcudnn8-dev``); its repo carries one build per
    CUDA major (``8.9.7.29-1+cuda12.2``), so pass ``version`` to pin the build for your CUDA.
    cuDNN 9 (CUDA 12.x/13.x): ``cudnn9-cuda-<major>`` (meta) + ``libcudnn9-cuda-<major>`` +
    ``libcudnn9-dev-cuda-<major>``; runtime only with ``dev=False``.

    :param cuda_version: ``'12.4'``.
    :param cudnn_major: ``8`` or ``9``.
    :param dev: include the headers/dev packages (and the cuDNN 9 metapackage).
    :param version: optional exact package version; names come back as ``name=version`` (the form
        ``ansible.builtin.apt`` takes). cuDNN 8: ``8.x.y.z-N+cudaX.Y`` with X = the CUDA major;
        cuDNN 9: ``9.x.y.z-N``.
    :returns: list of package names.
    :raises AnsibleFilterError: impossible combination (cuDNN 8 with CUDA 13, cuDNN 9 with 11.x),
        unknown CUDA, a version for another CUDA major.
    """
    cuda = _parse_cuda(cuda_version)
    cuda_major = int(cuda.split('.')[0])
    if isinstance(cudnn_major, str) and cudnn_major.strip().isdigit():
        cudnn_major = int(cudnn_major)
    table = POLICY['cudnn']
    if isinstance(cudnn_major, bool) or cudnn_major not in table:
        raise _err(f'cudnn_major {cudnn_major!r} is not 8 or 9')
    row = table[cudnn_major]
    dev = _as_bool(dev, 'dev')
    if cuda_major not in row['cuda_majors']:
        other = 9 if cudnn_major == 8 else 8
        built = ' and '.join(f'{m}.x' for m in row['cuda_majors'])
        raise _err(f'cuDNN {cudnn_major} is built for CUDA {built} '
                   f'only, not CUDA {cuda} ({row["source"]}); use cudnn_major={other}'
                   + ('' if cuda_major in table[other]['cuda_majors'] else ' or another CUDA'))
    names = []
    if dev and row['meta']:
        names.append(row['meta'].format(major=cuda_major))
    names.append(row['runtime'].format(major=cuda_major))
    if dev:
        names.append(row['dev'].format(major=cuda_major))
    if version is None:
        return names
    if not isinstance(version, str):
        raise _err(f'cuDNN version {version!r} must be a string like "{row["version_example"]}"')
    match = re.fullmatch(row['version_re'], version.strip())
    if not match:
        raise _err(f'cuDNN version {version!r} is not a cuDNN {cudnn_major} package version '
                   f'(e.g. "{row["version_example"]}")')
    if cudnn_major == 8 and int(match.group(1)) != cuda_major:
        raise _err(f'cuDNN version {version} is the build for CUDA {match.group(1)}.{match.group(2)}, '
                   f'not CUDA {cuda}: pick the "+cuda{cuda_major}.x" build')
    return [f'{name}={version.strip()}' for name in names]


# --------------------------------------------------------------------------------------------
# 4. Power
# --------------------------------------------------------------------------------------------
_SELECTORS = ('uuid', 'bus_id', 'index', 'model')
_PRECEDENCE = {'uuid': 3, 'bus_id': 3, 'index': 2, 'model': 1}


def _norm_bus_id(value):
    """'00000000:01:00.0', '0000:01:00.0', '01:00.0' -> (0, 1, 0, 0); None if unparsable."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r'(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])',
                         value.strip())
    if not match:
        return None
    return tuple(int(g or '0', 16) for g in match.groups())


def _check_wants(limits):
    wants = _as_list(limits, 'limits')
    checked = []
    for pos, want in enumerate(wants):
        where = f'limits[{pos}]'
        if not isinstance(want, dict):
            raise _err(f'{where} must be a dict like {{model: "RTX 4090", watts: 350}}, got {want!r}')
        unknown = sorted(set(want) - set(_SELECTORS) - {'watts', 'percent'})
        if unknown:
            raise _err(f'{where} has unknown keys {unknown}: use one of {list(_SELECTORS)} and one of '
                       "['watts', 'percent']")
        selectors = [s for s in _SELECTORS if s in want]
        if len(selectors) != 1:
            raise _err(f'{where} {want!r} must have exactly one selector of {list(_SELECTORS)}, has '
                       f'{selectors or "none"}')
        amounts = [a for a in ('watts', 'percent') if a in want]
        if len(amounts) != 1:
            raise _err(f'{where} {want!r} must have exactly one of watts or percent, has '
                       f'{amounts or "none"}')
        selector, amount = selectors[0], amounts[0]
        value = want[selector]
        if selector == 'index':
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _err(f'{where}: index must be a GPU index (0, 1, ...), got {value!r}')
        elif selector == 'bus_id':
            if _norm_bus_id(value) is None:
                raise _err(f'{where}: bus_id {value!r} is not a PCI address like "00000000:01:00.0" '
                           'or "01:00.0"')
        elif not isinstance(value, str) or not value.strip():
            raise _err(f'{where}: {selector} must be a non-empty string, got {value!r}')
        number = _number(want[amount], f'{where}.{amount}')
        if number <= 0:
            raise _err(f'{where}.{amount} must be above 0, got {want[amount]!r}')
        checked.append({'pos': pos, 'want': want, 'selector': selector, 'value': value,
                        'amount': amount, 'number': number})
    return checked


def _want_matches(want, gpu, pos):
    selector, value = want['selector'], want['value']
    if selector == 'index':
        return _gpu_index(gpu, pos) == value
    if selector == 'uuid':
        return isinstance(gpu.get('uuid'), str) and gpu['uuid'].strip().lower() == value.strip().lower()
    if selector == 'bus_id':
        return _norm_bus_id(gpu.get('bus_id')) == _norm_bus_id(value)
    return value.strip().lower() in str(gpu.get('product_name') or '').lower()


def _describe_want(want):
    unit = ' W' if want['amount'] == 'watts' else '%'
    return f'limits[{want["pos"]}] {want["selector"]}={want["value"]!r}, {_tidy(want["number"])}{unit}'


def rk_power_plan(gpus, limits=(), psu_watts=None, base_watts=250, psu_fraction=0.8,
                  transient_factor=None):
    """Power limit per GPU from the user's wants, checked against each card's range and the PSU.

    Usage: ``nvidia_gpu.gpus | rk_power_plan(gpu_power_limits, psu_watts=1600)``

    :param gpus: ``nvidia_gpu.gpus``.
    :param limits: list of wants; each has exactly one selector, ``model`` (case-insensitive
        substring of ``product_name``: ``"RTX 4090"``), ``index``, ``uuid`` or ``bus_id``
        (``"00000000:01:00.0"`` or ``"01:00.0"``), and exactly one of ``watts`` or ``percent``
        (of the card's default limit). The most specific want wins: uuid/bus_id > index > model.
        Two wants of the same rank on one GPU, a want matching no GPU, and a uuid matching several
        GPUs (masked/duplicated UUIDs: use bus_id) are refused.
    :param psu_watts: PSU rating in W; ``None`` skips the PSU check.
    :param base_watts: everything but the GPUs (CPU, board, drives, fans), in W.
    :param psu_fraction: share of the PSU rating sustained load may use. Rule of thumb (no cited
        source): keep sustained load at or below 80% of the rating (default 0.8); consumer
        Ampere/Ada cards spike well above board power for milliseconds, which the margin absorbs.
    :param transient_factor: optional multiplier for GPU power spikes; when set, GPU limits x factor
        + base must also fit the full PSU rating. No sourced value exists, so the default ``None``
        skips this check.
    :returns: list, one dict per GPU in ``gpus`` order: ``{index, bus_id, uuid, product_name,
        limit_w (int, rounded half up; None when the card reports no default and no want
        applies), default_w, min_w, max_w, source: 'default'|'model'|'index'|'uuid'|'bus_id',
        want (the winning want or None)}``.
    :raises AnsibleFilterError: malformed or conflicting wants, a want matching no GPU, a limit
        outside [min, max] (message names the GPU index, bus id, requested W and the range), a
        card without a settable range, or a total over the PSU budget.
    """
    gpus = _gpu_list(gpus)
    wants = _check_wants(limits)
    matched = {pos: [] for pos in range(len(gpus))}
    for want in wants:
        hits = [pos for pos, gpu in enumerate(gpus) if _want_matches(want, gpu, pos)]
        if not hits:
            present = ', '.join(_gpu_label(g, p) for p, g in enumerate(gpus)) or 'none'
            raise _err(f'{_describe_want(want)} matches no GPU (GPUs: {present}); fix the selector '
                       'or remove the want')
        if want['selector'] == 'uuid' and len(hits) > 1:
            raise _err(f'{_describe_want(want)} matches {len(hits)} GPUs (UUIDs are masked or '
                       'duplicated in this output): select by bus_id instead')
        for pos in hits:
            matched[pos].append(want)

    plan = []
    for pos, gpu in enumerate(gpus):
        label = _gpu_label(gpu, pos)
        default_w = _number(gpu.get('power_default_w'), f'{label} power_default_w', allow_none=True)
        min_w = _number(gpu.get('power_min_w'), f'{label} power_min_w', allow_none=True)
        max_w = _number(gpu.get('power_max_w'), f'{label} power_max_w', allow_none=True)
        entry = {'index': _gpu_index(gpu, pos), 'bus_id': gpu.get('bus_id'), 'uuid': gpu.get('uuid'),
                 'product_name': gpu.get('product_name'), 'limit_w': None,
                 'default_w': _tidy(default_w), 'min_w': _tidy(min_w), 'max_w': _tidy(max_w),
                 'source': 'default', 'want': None}
        candidates = matched[pos]
        if not candidates:
            entry['limit_w'] = None if default_w is None else _round_half_up(default_w)
            plan.append(entry)
            continue
        best = max(_PRECEDENCE[w['selector']] for w in candidates)
        winners = [w for w in candidates if _PRECEDENCE[w['selector']] == best]
        if len(winners) > 1:
            raise _err(f'{label}: {len(winners)} wants of equal precedence apply '
                       f'({"; ".join(_describe_want(w) for w in winners)}); keep one, or use a more '
                       'specific selector (uuid/bus_id > index > model)')
        want = winners[0]
        if want['amount'] == 'percent':
            if default_w is None:
                raise _err(f'{label}: {_describe_want(want)} is a percentage of the default limit, '
                           'but the card reports no default power limit; give watts instead')
            requested = default_w * want['number'] / 100.0
            shown = f'{_tidy(want["number"])}% of the {_tidy(default_w)} W default = {requested:g} W'
        else:
            requested = want['number']
            shown = f'{_tidy(requested)} W'
        limit = _round_half_up(requested)
        if min_w is None or max_w is None:
            raise _err(f'{label}: the card reports no power limit range (N/A), so nvidia-smi cannot '
                       f'set {shown} on it; remove the want ({_describe_want(want)})')
        if not min_w <= limit <= max_w:
            raise _err(f'{label}: requested {shown} ({_describe_want(want)}) is outside the card\'s '
                       f'range [{_tidy(min_w)} W, {_tidy(max_w)} W] (nvidia-smi -q: Min/Max Power '
                       f'Limit); choose a value in that range')
        entry.update(limit_w=limit, source=want['selector'], want=dict(want['want']))
        plan.append(entry)

    if psu_watts is not None:
        budget = _psu_budget(plan, gpus, psu_watts, base_watts, psu_fraction, transient_factor)
        if not budget['ok']:
            raise _err(budget['message'])
    return plan


def _psu_budget(plan, gpus, psu_watts, base_watts, psu_fraction, transient_factor):
    """{ok, gpu_w, total_w, budget_w, message} for a plan; raises on bad numbers."""
    psu = _number(psu_watts, 'psu_watts')
    base = _number(base_watts, 'base_watts')
    fraction = _number(psu_fraction, 'psu_fraction')
    factor = _number(transient_factor, 'transient_factor', allow_none=True)
    if psu <= 0:
        raise _err(f'psu_watts must be above 0, got {psu_watts!r}')
    if base < 0:
        raise _err(f'base_watts must be 0 or more, got {base_watts!r}')
    if not 0 < fraction <= 1:
        raise _err(f'psu_fraction must be in (0, 1] (e.g. 0.8), got {psu_fraction!r}')
    if factor is not None and factor < 1:
        raise _err(f'transient_factor must be 1 or more (or unset), got {transient_factor!r}')
    gpu_w = 0
    for pos, entry in enumerate(plan):
        watts = entry['limit_w']
        if watts is None:
            watts = _number(gpus[pos].get('power_limit_w'), 'power_limit_w', allow_none=True)
        if watts is None:
            watts = entry['max_w']
        if watts is None:
            raise _err(f'{_gpu_label(gpus[pos], pos)} reports no power limit, so the PSU budget '
                       'cannot be checked: set a watts want for it, or psu_watts: null')
        gpu_w += watts
    gpu_w = _tidy(gpu_w)
    total = _tidy(gpu_w + base)
    budget = psu * fraction
    pct = _tidy(round(fraction * 100, 2))
    rule = (f'Rule of thumb (no cited source): keep sustained load at or below {pct}% of the PSU '
            'rating; consumer Ampere/Ada cards also spike well above board power for milliseconds')
    result = {'ok': True, 'gpu_w': gpu_w, 'total_w': total, 'budget_w': _tidy(round(budget, 1)),
              'psu_watts': _tidy(psu), 'message': ''}
    n = len(plan)
    if total > budget:
        per_gpu = math.floor((budget - base) / n) if n else 0
        fits = (f'{n} GPUs fit at <= {per_gpu} W each' if per_gpu > 0 else
                f'base_watts {_tidy(base)} W alone exceeds it')
        result.update(ok=False, message=(
            f'PSU budget exceeded: GPU limits {gpu_w} W + base {_tidy(base)} W = {total} W is over '
            f'{pct}% of the {_tidy(psu)} W PSU ({result["budget_w"]} W). {rule}. Lower the power '
            f'limits ({fits}), or correct psu_watts / base_watts'))
    elif factor is not None and gpu_w * factor + base > psu:
        peak = _tidy(round(gpu_w * factor + base, 1))
        result.update(ok=False, message=(
            f'PSU transient budget exceeded: GPU limits {gpu_w} W x transient_factor {_tidy(factor)} '
            f'+ base {_tidy(base)} W = {peak} W is over the {_tidy(psu)} W PSU rating. {rule}. Lower '
            'the power limits or use a larger PSU'))
    else:
        result['message'] = (f'PSU budget ok: GPU limits {gpu_w} W + base {_tidy(base)} W = {total} W '
                             f'is within {pct}% of the {_tidy(psu)} W PSU ({result["budget_w"]} W)')
    return result


# --------------------------------------------------------------------------------------------
# 5. Kernel command line
# --------------------------------------------------------------------------------------------
def rk_iommu_args(cpu_vendor, mode='unmanaged'):
    """Kernel arguments for an IOMMU mode on this CPU vendor.

    :param cpu_vendor: ``rigkeeper_host.cpu_vendor`` (``'amd'``/``'intel'``; ``'arm'``/``'unknown'``
        only with ``mode='unmanaged'``).
    :param mode: ``'off'`` (``amd_iommu=off`` / ``intel_iommu=off``: what fixed multi-GPU P2P
        deadlocks and corruption, pytorch#52142/#84803), ``'pt'`` (``iommu=pt`` alone: IOMMU kept,
        host DMA passed through), ``'on'`` (``amd_iommu=on`` / ``intel_iommu=on``, no ``iommu=``),
        ``'unmanaged'`` (nothing).
    :returns: ``{present: ['key=value'], absent: [...]}``. ``present`` args must be on the command
        line (an arg with the same key and another value is replaced); an ``absent`` entry
        ``'key'`` removes that key with any value, ``'key=value'`` only that value.
    """
    modes = POLICY['kernel']['iommu_modes']
    if mode not in modes:
        raise _err(f"IOMMU mode {mode!r} is not one of {', '.join(repr(m) for m in modes)}")
    if mode == 'unmanaged':
        return {'present': [], 'absent': []}
    if cpu_vendor not in ('amd', 'intel'):
        raise _err(f'IOMMU mode {mode!r} needs an amd or intel CPU; this host reports cpu_vendor '
                   f"{cpu_vendor!r} and rigkeeper knows no IOMMU arguments for it ({_SRC_KERNEL}): "
                   "use mode 'unmanaged'")
    row = modes[mode][cpu_vendor]
    return {'present': list(row['present']), 'absent': list(row['absent'])}


def rk_mitigations_args(enabled_off=False):
    """Kernel arguments for CPU vulnerability mitigations (``mitigations=off`` is opt-in).

    ``mitigations=off`` covers pti, spectre_v2, spec_store_bypass, l1tf and more on x86
    [FACTS.md: Kernel command line]: faster, less safe; only for trusted, single-tenant boxes.

    :param enabled_off: ``True`` -> ``mitigations=off`` present; ``False`` -> ``mitigations=off``
        absent (mitigations at the kernel default); ``None`` -> leave it alone.
    :returns: ``{present: [...], absent: [...]}`` (see :func:`rk_iommu_args`).
    """
    if enabled_off is None:
        return {'present': [], 'absent': []}
    arg = POLICY['kernel']['mitigations']['arg']
    if _as_bool(enabled_off, 'enabled_off'):
        return {'present': [arg], 'absent': []}
    return {'present': [], 'absent': [arg]}


def _arg_key(arg):
    return arg.split('=', 1)[0]


def rk_kernel_args(cpu_vendor, iommu_mode='unmanaged', mitigations_off=None, extra_args=()):
    """All kernel arguments rigkeeper manages: IOMMU preset + mitigations + free-form extras.

    :param cpu_vendor: ``rigkeeper_host.cpu_vendor``.
    :param iommu_mode: see :func:`rk_iommu_args`.
    :param mitigations_off: see :func:`rk_mitigations_args` (``None`` = leave alone).
    :param extra_args: free-form args (``['pcie_aspm=off', 'quiet']``), one per item. Refused:
        ``rcutree.rcu_idle_gp_delay`` (a no-op on current kernels: RCU_FAST_NO_HZ was removed,
        FACTS.md), whitespace, quotes, ``$``/backticks (GRUB's defaults file is shell), a key
        given twice, and keys a preset already manages (``iommu``, ``amd_iommu``,
        ``intel_iommu`` unless the IOMMU mode is unmanaged; ``mitigations`` unless
        ``mitigations_off`` is None).
    :returns: ``{present: [...], absent: [...]}`` (see :func:`rk_iommu_args`).
    """
    iommu = rk_iommu_args(cpu_vendor, iommu_mode)
    mitigations = rk_mitigations_args(mitigations_off)
    managed = {}
    if iommu_mode != 'unmanaged':
        managed.update({k: f'iommu_mode={iommu_mode}' for k in POLICY['kernel']['iommu_keys']['keys']})
    if mitigations_off is not None:
        managed.update({k: 'mitigations_off' for k in POLICY['kernel']['mitigations']['keys']})
    refused = POLICY['kernel']['refused_args']
    extras, seen = [], {}
    for pos, arg in enumerate(_as_list(extra_args, 'extra_args')):
        if not isinstance(arg, str) or not arg.strip():
            raise _err(f'extra_args[{pos}] must be a non-empty string like "pcie_aspm=off", got {arg!r}')
        arg = arg.strip()
        if re.search(r'\s', arg):
            raise _err(f'extra_args[{pos}] {arg!r} holds several arguments: give one per list item')
        if re.search(r'["\'`$\\]', arg):
            raise _err(f'extra_args[{pos}] {arg!r} contains quotes, $, ` or \\: GRUB\'s defaults file is '
                       'a shell script, so these break or change it; remove them')
        key = _arg_key(arg)
        if key in refused:
            raise _err(f'extra_args[{pos}] {arg!r}: {key} is not allowed, {refused[key]["why"]} '
                       f'({refused[key]["source"]}); remove it')
        if key in managed:
            raise _err(f'extra_args[{pos}] {arg!r}: {key} is managed by {managed[key]}; set it there, '
                       'or set that option to unmanaged/None to pass it here')
        if key in seen:
            raise _err(f'extra_args {seen[key]!r} and {arg!r} set {key} twice; the kernel takes the '
                       'last one: keep one')
        seen[key] = arg
        extras.append(arg)
    return {'present': iommu['present'] + mitigations['present'] + extras,
            'absent': iommu['absent'] + mitigations['absent']}


# Kernel parameters the kernel honours every time they appear (each console= adds a console);
# for all others the last occurrence is the one in effect.
_CMDLINE_MULTI_VALUED = frozenset({'console'})


def _parse_cmdline(cmdline):
    """{key: [values in order]} (None for a bare flag)."""
    if isinstance(cmdline, dict):
        return {str(k): [None if v is None else str(v)] for k, v in cmdline.items()}
    if isinstance(cmdline, str):
        args = {}
        for token in cmdline.split():
            key, sep, value = token.partition('=')
            args.setdefault(key, []).append(value if sep else None)
        return args
    raise _err('cmdline must be rigkeeper_host.cmdline_args (dict) or rigkeeper_host.cmdline (str), '
               f'got {type(cmdline).__name__}')


def _cmdline_has(args, key, value):
    """Whether `key=value` is in effect: any occurrence for multi-valued keys, else the last."""
    values = args.get(key)
    if not values:
        return False
    return value in values if key in _CMDLINE_MULTI_VALUED else values[-1] == value


def rk_cmdline_diff(cmdline, kernel_args):
    """Compare the running kernel command line with the wanted arguments.

    :param cmdline: the raw ``rigkeeper_host.cmdline`` string (preferred: it keeps repeated
        arguments such as two ``console=``), or ``rigkeeper_host.cmdline_args``
        (``{"amd_iommu": "off", "quiet": None}``, one value per key).
    :param kernel_args: ``{present, absent}`` from :func:`rk_kernel_args`.
    :returns: ``{in_sync: bool, missing: [present args not in effect], unwanted: [absent entries
        in effect]}``. Not in sync after GRUB was updated means a reboot is pending. A repeated key
        counts by its last value (the kernel's rule), except ``console``, where every value counts.
    """
    args = _parse_cmdline(cmdline)
    if not isinstance(kernel_args, dict):
        raise _err('kernel_args must be the {present, absent} dict from rk_kernel_args')
    missing, unwanted = [], []
    for arg in _as_list(kernel_args.get('present'), 'kernel_args.present'):
        key, sep, value = str(arg).partition('=')
        if key not in args or (sep and not _cmdline_has(args, key, value)):
            missing.append(arg)
    for arg in _as_list(kernel_args.get('absent'), 'kernel_args.absent'):
        key, sep, value = str(arg).partition('=')
        if sep:
            if _cmdline_has(args, key, value):
                unwanted.append(arg)
        elif key in args:
            last = args[key][-1]
            unwanted.append(arg if last is None else f'{key}={last}')
    return {'in_sync': not missing and not unwanted, 'missing': missing, 'unwanted': unwanted}


# --------------------------------------------------------------------------------------------
# 6. Preflight
# --------------------------------------------------------------------------------------------
_PREFLIGHT_CONFIG_KEYS = ('p2p_wanted', 'expected_gpu_count', 'severities', 'psu_watts', 'base_watts',
                          'psu_fraction', 'transient_factor', 'power_limits', 'ram_vram_factor',
                          'allow_known_bad', 'today')


def _finding(check_id, ok, severity, message):
    return {'id': check_id, 'severity': 'info' if ok else severity, 'ok': ok, 'message': message}


def rk_preflight_checks(nvidia_gpu, rigkeeper_host, config=None):
    """Preflight findings for a host.

    :param nvidia_gpu: the ``nvidia_gpu`` fact dict (docs/facts.md).
    :param rigkeeper_host: the ``rigkeeper_host`` fact dict.
    :param config: dict, all keys optional: ``p2p_wanted`` (bool, default False),
        ``expected_gpu_count`` (int), ``psu_watts``, ``base_watts`` (250), ``psu_fraction`` (0.8),
        ``transient_factor``, ``power_limits`` (wants as for :func:`rk_power_plan`),
        ``ram_vram_factor`` (2), ``allow_known_bad`` (bool), ``today`` ('YYYY-MM-DD'), and
        ``severities``: ``{check_id: 'fail'|'warn'|'off'}`` ('off' drops the check).
    :returns: list of ``{id, severity: 'fail'|'warn'|'info', ok: bool, message}``, one per check in
        this order: ``pcie_link``, ``ram_vs_vram``, ``psu_budget``, ``p2p_iommu``,
        ``known_bad_driver``, ``gpu_count``, ``runfile``. A passing, skipped or informational result
        has ``ok: True`` and severity ``'info'``; a failing one has the check's severity (defaults:
        pcie_link, ram_vs_vram, psu_budget, p2p_iommu 'warn'; known_bad_driver, gpu_count,
        runfile 'fail'). Fail the play on ``not ok and severity == 'fail'``.
    """
    if not isinstance(nvidia_gpu, dict):
        raise _err('nvidia_gpu must be the nvidia_gpu fact dict (docs/facts.md)')
    if not isinstance(rigkeeper_host, dict):
        raise _err('rigkeeper_host must be the rigkeeper_host fact dict (docs/facts.md)')
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise _err(f'config must be a dict, got {type(config).__name__}')
    unknown = sorted(set(config) - set(_PREFLIGHT_CONFIG_KEYS))
    if unknown:
        raise _err(f'preflight config has unknown keys {unknown}; known: {list(_PREFLIGHT_CONFIG_KEYS)}')
    checks = POLICY['preflight']['checks']
    severities = {cid: row['severity'] for cid, row in checks.items()}
    overrides = config.get('severities') or {}
    if not isinstance(overrides, dict):
        raise _err('config.severities must be a dict {check_id: fail|warn|off}')
    for cid, sev in overrides.items():
        if cid not in checks:
            raise _err(f'config.severities: unknown check {cid!r}; known: {list(checks)}')
        if sev not in ('fail', 'warn', 'off'):
            raise _err(f"config.severities.{cid}: {sev!r} is not 'fail', 'warn' or 'off'")
        severities[cid] = sev

    present = bool(nvidia_gpu.get('present'))
    gpus = _gpu_list(nvidia_gpu.get('gpus'), 'nvidia_gpu.gpus')
    why_absent = nvidia_gpu.get('error') or 'nvidia-smi not available (driver not installed yet?)'
    runners = {
        'pcie_link': lambda sev: _check_pcie(gpus, sev),
        'ram_vs_vram': lambda sev: _check_ram(gpus, rigkeeper_host, config, sev),
        'psu_budget': lambda sev: _check_psu(gpus, config, sev),
        'p2p_iommu': lambda sev: _check_p2p_iommu(gpus, rigkeeper_host, config, sev),
        'known_bad_driver': lambda sev: _check_known_bad(nvidia_gpu, gpus, rigkeeper_host, config, sev),
        'gpu_count': lambda sev: _check_gpu_count(present, why_absent, gpus, nvidia_gpu, config, sev),
        'runfile': lambda sev: _check_runfile(rigkeeper_host, sev),
    }
    results = []
    for cid in checks:
        if severities[cid] == 'off':
            continue
        if cid not in ('gpu_count', 'runfile') and not present and not gpus:
            results.append(_finding(cid, True, severities[cid],
                                    f'not checked: no GPU facts ({why_absent}); rerun preflight '
                                    'after the driver is installed'))
            continue
        results.append(runners[cid](severities[cid]))
    return results


def _check_runfile(host, severity):
    runfile = host.get('runfile') or {}
    stray = runfile.get('stray_libraries') or []
    found = (['/usr/bin/nvidia-uninstall (NVIDIA\'s .run installer was used)'] if runfile.get('uninstaller') else []) + \
        [f'{p} (no package owns it)' for p in stray]
    if not found:
        return _finding('runfile', True, severity, 'no leftovers of NVIDIA\'s .run installer')
    # /usr/local/nvidia is where a container host mounts its driver in (the lent H200 server's
    # sandbox): no installer ran there, and no package may be installed over it either.
    where = ('a driver installed outside apt (NVIDIA\'s .run installer, or a container host\'s driver '
             'mounted in)' if any(p.startswith('/usr/local/nvidia/') for p in stray)
             else 'leftovers of NVIDIA\'s .run installer')
    return _finding('runfile', False, severity,
                    f'{where}: {"; ".join(found)}. They shadow the packaged driver '
                    '("Driver/library version mismatch", a library of another version loaded first) '
                    f'({POLICY["preflight"]["checks"]["runfile"]["source"]}). To do: run '
                    '`sudo nvidia-uninstall` (or remove the listed files), then run again; or accept it with '
                    'preflight_severities: {runfile: warn}')


def _check_pcie(gpus, severity):
    narrow, slow = [], []
    for pos, gpu in enumerate(gpus):
        label = _gpu_label(gpu, pos)
        wc, wm = gpu.get('pcie_width_current'), gpu.get('pcie_width_max')
        gc, gm = gpu.get('pcie_gen_current'), gpu.get('pcie_gen_max')
        if _is_number(wc) and _is_number(wm) and wc < wm:
            narrow.append(f'{label} links at x{wc} of x{wm}')
        elif _is_number(gc) and _is_number(gm) and gc < gm:
            slow.append(f'{label} at PCIe gen {gc} of {gm}')
    if narrow:
        return _finding('pcie_link', False, severity,
                        f'{"; ".join(narrow)}: the "x16 + x2 trap" (a slot wired x2/x4 or sharing '
                        'lanes through the chipset) throttles transfers and P2P. Move the card to a '
                        'CPU-attached x16 slot, check BIOS bifurcation and riser cables, then rerun')
    if slow:
        return _finding('pcie_link', True, severity,
                        f'{"; ".join(slow)}: normal at idle (GPUs lower the link generation to save '
                        'power; width is full). If it stays low under load, check BIOS PCIe '
                        'speed and risers (nvidia-smi --query-gpu=pcie.link.gen.current under load)')
    return _finding('pcie_link', True, severity, 'every GPU links at its maximum width')


def _check_ram(gpus, host, config, severity):
    factor = _number(config.get('ram_vram_factor', POLICY['preflight']['checks']['ram_vs_vram']['factor']),
                     'config.ram_vram_factor')
    ram = host.get('mem_total_mib')
    vram_parts = [g.get('memory_total_mib') for g in gpus]
    if not _is_number(ram) or not vram_parts or not all(_is_number(v) for v in vram_parts):
        return _finding('ram_vs_vram', True, severity,
                        'not checked: RAM or GPU memory size unknown in the facts')
    vram = sum(vram_parts)
    gib = lambda mib: f'{mib / 1024:.1f} GiB'  # noqa: E731
    if ram < factor * vram:
        return _finding('ram_vs_vram', False, severity,
                        f'RAM {gib(ram)} is below {_tidy(factor)}x total GPU memory {gib(vram)} '
                        f'({_SRC_RAM}): loading and checkpointing models stages through host memory '
                        f'and will swap or OOM. Add RAM (>= {gib(factor * vram)}) or accept it with '
                        'severities.ram_vs_vram: off')
    return _finding('ram_vs_vram', True, severity,
                    f'RAM {gib(ram)} >= {_tidy(factor)}x total GPU memory {gib(vram)}')


def _check_psu(gpus, config, severity):
    if config.get('psu_watts') is None:
        return _finding('psu_budget', True, severity,
                        'not checked: set psu_watts (the PSU rating) to check the power budget')
    defaults = POLICY['power']
    base = config.get('base_watts', defaults['base_watts'])
    fraction = config.get('psu_fraction', defaults['psu_sustained_fraction'])
    factor = config.get('transient_factor')
    try:
        plan = rk_power_plan(gpus, config.get('power_limits') or [], psu_watts=None)
        budget = _psu_budget(plan, gpus, config['psu_watts'], base, fraction, factor)
    except AnsibleFilterError as exc:
        return _finding('psu_budget', False, severity, str(exc.message if hasattr(exc, 'message') else exc))
    return _finding('psu_budget', budget['ok'], severity, budget['message'])


def _check_p2p_iommu(gpus, host, config, severity):
    p2p = config.get('p2p_wanted', False)
    _as_bool(p2p, 'config.p2p_wanted')
    if not p2p or len(gpus) < 2:
        why = 'p2p_wanted is false' if not p2p else 'fewer than 2 GPUs'
        return _finding('p2p_iommu', True, severity, f'not relevant: {why}')
    iommu = host.get('iommu') or {}
    acs = host.get('acs') or {}
    problems, todo = [], []
    if iommu.get('enabled'):
        cmd = iommu.get('cmdline') or {}
        pt = ' (iommu=pt is set; the reported fixes disabled the IOMMU)' if cmd.get('iommu') == 'pt' else ''
        problems.append(f'the IOMMU is enabled{pt} ({_SRC_IOMMU_P2P}: deadlocks, IO_PAGE_FAULT, silent '
                        'corruption)')
        todo.append("set the kernel_params IOMMU mode to 'off' (amd_iommu=off / intel_iommu=off) and "
                    'reboot')
    bridges = acs.get('enabled_bridges') or []
    if bridges:
        problems.append(f'ACS is on for bridge(s) {", ".join(bridges)} ({_SRC_ACS}: P2P is routed '
                        'through the root complex, slow or hanging)')
        todo.append('enable the ACS-disable boot unit (setpci -s <bdf> ECAP_ACS+0x6.w=0000 on every '
                    'boot)')
    if problems:
        return _finding('p2p_iommu', False, severity,
                        f'multi-GPU P2P is wanted but {"; and ".join(problems)}. To do: '
                        f'{"; ".join(todo)}; or run NCCL with NCCL_P2P_DISABLE=1 (no P2P, slower)')
    note = '' if acs.get('checked') else ' (ACS not checked: lspci unavailable)'
    return _finding('p2p_iommu', True, severity, f'IOMMU off and no ACS-enabled bridge{note}')


def _check_known_bad(nvidia_gpu, gpus, host, config, severity):
    version = host.get('driver_running_version') or nvidia_gpu.get('driver_version')
    if not version:
        return _finding('known_bad_driver', True, severity, 'not checked: no NVIDIA driver running')
    match = _DEB_VERSION_RE.fullmatch(str(version).strip())
    if not match:
        return _finding('known_bad_driver', True, severity,
                        f'not checked: driver version {version!r} not understood')
    branch = int(match.group(2))
    allow = _as_bool(config.get('allow_known_bad', False), 'config.allow_known_bad')
    day = _parse_today(config.get('today'))
    findings = _issue_findings(branch, gpus, day, branch_specific_only=True)
    if not findings:
        return _finding('known_bad_driver', True, severity,
                        f'running driver {version} (branch {branch}) has no known issue for these GPUs')
    refused = [f for f in findings if f['action'] == 'refuse']
    level = severity if refused and not allow else ('warn' if severity == 'fail' else severity)
    todo = ('install another branch: ansible-playbook playbooks/upgrade_driver.yml '
            '-e nvidia_driver_branch=<branch>')
    return _finding('known_bad_driver', False, level,
                    f'running driver {version}: {" | ".join(f["message"] for f in findings)}. To do: {todo}')


def _check_gpu_count(present, why_absent, gpus, nvidia_gpu, config, severity):
    expected = config.get('expected_gpu_count')
    if expected is None:
        return _finding('gpu_count', True, severity, 'not checked: set expected_gpu_count')
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise _err(f'config.expected_gpu_count must be a whole number, got {expected!r}')
    if not present:
        return _finding('gpu_count', True, severity,
                        f'not checked: {why_absent}; rerun preflight after the driver is installed')
    count = nvidia_gpu.get('count')
    count = count if isinstance(count, int) and not isinstance(count, bool) else len(gpus)
    if count < expected:
        return _finding('gpu_count', False, severity,
                        f'nvidia-smi lists {count} GPU(s), expected {expected}: check seating and power '
                        'cables, `lspci | grep -i nvidia` (a card lspci sees but nvidia-smi does not '
                        'points to the driver) and `dmesg | grep -iE "NVRM|Xid"`; fix it or lower '
                        'expected_gpu_count')
    extra = f' (more than the {expected} expected)' if count > expected else ''
    return _finding('gpu_count', True, severity, f'nvidia-smi lists {count} GPU(s){extra}')


# --------------------------------------------------------------------------------------------
class FilterModule(object):
    """rigkeeper policy filters."""

    def filters(self):
        return {
            'rk_driver_decision': rk_driver_decision,
            'rk_driver_packages': rk_driver_packages,
            'rk_module_plan': rk_module_plan,
            'rk_version_on_branch': rk_version_on_branch,
            'rk_cuda_check': rk_cuda_check,
            'rk_cuda_packages': rk_cuda_packages,
            'rk_cudnn_packages': rk_cudnn_packages,
            'rk_power_plan': rk_power_plan,
            'rk_iommu_args': rk_iommu_args,
            'rk_mitigations_args': rk_mitigations_args,
            'rk_kernel_args': rk_kernel_args,
            'rk_cmdline_diff': rk_cmdline_diff,
            'rk_preflight_checks': rk_preflight_checks,
            'rk_gpu_architecture': rk_gpu_architecture,
        }
