# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy data: the one place for what the policy knows, and where each fact comes from.

Every decision in the ``rigkeeper_policy_*`` module_utils reads this table, ``POLICY``; none of them
holds a number, a package name or a date of its own. Each entry carries a ``source``. The sources are
the ``_SRC_*`` strings below, one per fact, each naming where it comes from: the section of
../shared/FACTS.md that records it with its own citation (NVIDIA's release notes and driver pages,
the Ubuntu and Debian archives, the issue threads of P2P breakage), or "rule of thumb" where FACTS.md
has none. A new fact goes in here with its source, never into a function.

Tables (see the comments in ``POLICY``): ``driver_branches``, ``architecture_last_branch``,
``default_branch``, ``known_issues``, ``module_flavors``, ``architecture_names``, ``cuda``,
``cudnn``, ``packages``, ``kernel``, ``power``, ``modules``, ``preflight``.
"""

from __future__ import annotations

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
# THE data table. Everything the policy functions know, each entry with its source.
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
