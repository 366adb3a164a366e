"""Host facts in plugins/module_utils/rigkeeper_host.py, from captured text."""

import pytest

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_host import (
    boot_kernel,
    modinfo_facts,
    mok_enrolled_state,
    owned_paths,
    acs_enabled_bridges,
    acs_facts,
    build_host_facts,
    cpu_vendor,
    installed_driver_version,
    iommu_cmdline_args,
    iommu_facts,
    mem_total_mib,
    module_version,
    parse_cmdline,
    secure_boot_state,
)

CPUINFO_AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 33
model name\t: AMD Ryzen 9 5950X 16-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep svm
"""

CPUINFO_INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep vmx
"""

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
"""

CPUINFO_HYGON = "processor\t: 0\nvendor_id\t: HygonGenuine\n"

MEMINFO = """MemTotal:       131891484 kB
MemFree:        120000000 kB
MemAvailable:   125000000 kB
"""

LSPCI_VVV = """0000:00:01.0 Host bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse PCIe Dummy Host Bridge
\tSubsystem: Advanced Micro Devices, Inc. [AMD] Starship/Matisse PCIe Dummy Host Bridge
\tControl: I/O- Mem- BusMaster- SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx-

0000:00:01.1 PCI bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse GPP Bridge (prog-if 00 [Normal decode])
\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx+
\tBus: primary=00, secondary=01, subordinate=01, sec-latency=0
\tCapabilities: [2a0 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\tKernel driver in use: pcieport

0000:00:03.1 PCI bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse GPP Bridge (prog-if 00 [Normal decode])
\tBus: primary=00, secondary=02, subordinate=02, sec-latency=0
\tCapabilities: [2a0 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-
\tKernel driver in use: pcieport

0000:01:00.0 VGA compatible controller: NVIDIA Corporation AD102 [GeForce RTX 4090] (rev a1) (prog-if 00 [VGA controller])
\tSubsystem: ASUSTeK Computer Inc. Device 889c
\tCapabilities: [bb0 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-
\tKernel driver in use: nvidia

0000:40:03.1 PCI bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse GPP Bridge (prog-if 00 [Normal decode])
\tCapabilities: [2a0 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
"""

LSPCI_NOT_ROOT = """0000:00:01.1 PCI bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse GPP Bridge (prog-if 00 [Normal decode])
\tControl: I/O+ Mem+ BusMaster+ SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR- FastB2B- DisINTx+
\tCapabilities: <access denied>
\tKernel driver in use: pcieport
"""

PROC_DRIVER_PROPRIETARY = (
    'NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\n'
    'GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n')
PROC_DRIVER_OPEN = (
    'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build  '
    '(dvs-builder@U16-I3-B03-4-3)  Wed Mar  5 22:04:27 UTC 2025\n'
    'GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n')
PROC_DRIVER_AARCH64 = (
    'NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.95.05  Release Build  '
    '(dvs-builder@U22-I3-AF03-09-1)  Tue Sep 23 09:51:40 UTC 2025\n'
    'GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n')


@pytest.mark.parametrize('text,machine,expected', [
    (CPUINFO_AMD, None, 'amd'),
    (CPUINFO_INTEL, None, 'intel'),
    (CPUINFO_ARM, None, 'arm'),
    (CPUINFO_HYGON, None, 'amd'),
    ('', 'aarch64', 'arm'),
    (CPUINFO_INTEL, 'x86_64', 'intel'),
    ('', None, 'unknown'),
    (None, None, 'unknown'),
    ('processor\t: 0\nvendor_id\t: CentaurHauls\n', None, 'unknown'),
])
def test_cpu_vendor(text, machine, expected):
    assert cpu_vendor(text, machine) == expected


@pytest.mark.parametrize('text,expected', [
    (MEMINFO, 128800),  # 131891484 kB // 1024
    ('MemTotal:        2048000 kB\n', 2000),
    ('MemFree: 1 kB\n', None),
    (None, None),
])
def test_mem_total_mib(text, expected):
    assert mem_total_mib(text) == expected


def test_parse_cmdline_ubuntu():
    text = ('BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=UUID=6b2d4c1e-0f3a-4d2e-9b1a-2c3d4e5f6a7b ro '
            'quiet splash amd_iommu=off iommu=pt mitigations=off vt.handoff=7\n')
    assert parse_cmdline(text) == {
        'BOOT_IMAGE': '/vmlinuz-6.8.0-45-generic',
        'root': 'UUID=6b2d4c1e-0f3a-4d2e-9b1a-2c3d4e5f6a7b',
        'ro': None,
        'quiet': None,
        'splash': None,
        'amd_iommu': 'off',
        'iommu': 'pt',
        'mitigations': 'off',
        'vt.handoff': '7',
    }


def test_parse_cmdline_quotes_repeats_and_init_args():
    text = 'console=tty0 console=ttyS0,115200 dyndbg="file foo.c +p" quiet -- single'
    assert parse_cmdline(text) == {'console': 'ttyS0,115200', 'dyndbg': 'file foo.c +p', 'quiet': None}


def test_parse_cmdline_unbalanced_quote_falls_back():
    assert parse_cmdline('a="b c') == {'a': '"b', 'c': None}


def test_parse_cmdline_empty():
    assert parse_cmdline('') == {}
    assert parse_cmdline(None) == {}


def test_iommu_cmdline_args():
    args = parse_cmdline('quiet intel_iommu=on iommu=pt iommu.passthrough=1 amd_iommu_intr=legacy '
                         'iommufd=1 pcie_acs_override=downstream')
    assert iommu_cmdline_args(args) == {'intel_iommu': 'on', 'iommu': 'pt', 'iommu.passthrough': '1',
                                        'amd_iommu_intr': 'legacy'}


def test_iommu_facts_enabled():
    assert iommu_facts(['ivhd0'], ['0', '1', '2', '10'], {'amd_iommu': 'on', 'quiet': None}) == {
        'enabled': True, 'groups': 4, 'cmdline': {'amd_iommu': 'on'}}


def test_iommu_facts_disabled():
    assert iommu_facts([], [], {'amd_iommu': 'off'}) == {
        'enabled': False, 'groups': 0, 'cmdline': {'amd_iommu': 'off'}}


def test_acs_enabled_bridges_only_bridges_with_srcvalid():
    # 00:01.1 and 40:03.1 are bridges with SrcValid+; 00:03.1 has SrcValid-; the GPU is not a bridge.
    assert acs_enabled_bridges(LSPCI_VVV) == ['0000:00:01.1', '0000:40:03.1']


def test_acs_enabled_bridges_without_domain():
    text = LSPCI_VVV.replace('0000:00:01.1 PCI bridge', '00:01.1 PCI bridge')
    assert acs_enabled_bridges(text) == ['0000:00:01.1', '0000:40:03.1']


@pytest.mark.parametrize('text,expected', [
    (LSPCI_VVV, {'checked': True, 'enabled_bridges': ['0000:00:01.1', '0000:40:03.1']}),
    ('', {'checked': True, 'enabled_bridges': []}),
    (LSPCI_NOT_ROOT, {'checked': False, 'enabled_bridges': []}),
    (None, {'checked': False, 'enabled_bridges': []}),
])
def test_acs_facts(text, expected):
    assert acs_facts(text) == expected


@pytest.mark.parametrize('text,expected', [
    ('SecureBoot enabled\n', True),
    ('SecureBoot disabled\n', False),
    ('SecureBoot disabled\nPlatform is in Setup Mode\n', False),
    ("This system doesn't support Secure Boot\n", False),
    ('EFI variables are not supported on this system\n', False),
    ('SecureBoot enabled\nSecureBoot validation is disabled in shim\n', False),
    ('something else\n', None),
    (None, None),
])
def test_secure_boot_state(text, expected):
    assert secure_boot_state(text) is expected


@pytest.mark.parametrize('names,expected', [
    (['libnvidia-ml.so', 'libnvidia-ml.so.1', 'libnvidia-ml.so.580.95.05'], '580.95.05'),
    (['/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.129.03'], '535.129.03'),
    (['libnvidia-ml.so.535.261.03', 'libnvidia-ml.so.580.95.05', 'libnvidia-ml.so.545.29.06'], '580.95.05'),
    (['libnvidia-ml.so.595.84'], '595.84'),
    (['libnvidia-ml.so.1', 'libcuda.so.580.95.05'], None),
    ([], None),
    (None, None),
])
def test_installed_driver_version(names, expected):
    assert installed_driver_version(names) == expected


@pytest.mark.parametrize('text,expected', [
    ('580.95.05\n', '580.95.05'),
    (PROC_DRIVER_PROPRIETARY, '535.129.03'),
    (PROC_DRIVER_OPEN, '570.124.06'),
    (PROC_DRIVER_AARCH64, '580.95.05'),
    ('', None),
    (None, None),
    ('garbage\n', None),
])
def test_module_version(text, expected):
    assert module_version(text) == expected


UNKNOWN_KERNEL = {
    'kernel_release': None, 'kernels': [], 'boot_kernel': None, 'boot_kernel_module': None,
    'nouveau': {'loaded': False, 'in_use': False}, 'mok_enrolled': None,
    'runfile': {'uninstaller': False, 'stray_libraries': []},
    'reboot_required_file': False, 'reboot_required_pkgs': [],
    'os': {'id': None, 'name': None, 'version_id': None, 'codename': None, 'machine': None,
           'distribution': None, 'distribution_release': None, 'distribution_version': None,
           'distribution_major_version': None, 'architecture': None},
}


def test_build_host_facts_full():
    facts = build_host_facts(
        cpuinfo=CPUINFO_AMD,
        meminfo=MEMINFO,
        cmdline='BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet amd_iommu=off\n',
        iommu_entries=[],
        iommu_groups=[],
        lspci_text=LSPCI_VVV,
        mokutil_text='SecureBoot disabled',
        lib_names=['libnvidia-ml.so.1', 'libnvidia-ml.so.580.95.05'],
        module_version_text='580.95.05\n',
        reboot_required_file=False,
        systemd=True,
    )
    assert facts == {
        **UNKNOWN_KERNEL,
        'cpu_vendor': 'amd',
        'mem_total_mib': 128800,
        'cmdline': 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet amd_iommu=off',
        'cmdline_args': {'BOOT_IMAGE': '/vmlinuz', 'root': '/dev/sda1', 'ro': None, 'quiet': None,
                         'amd_iommu': 'off'},
        'iommu': {'enabled': False, 'groups': 0, 'cmdline': {'amd_iommu': 'off'}},
        'acs': {'checked': True, 'enabled_bridges': ['0000:00:01.1', '0000:40:03.1']},
        'secure_boot': False,
        'reboot_required': False,
        'driver_installed_version': '580.95.05',
        'driver_running_version': '580.95.05',
        'driver_mismatch': False,
        'systemd': True,
    }


def test_build_host_facts_driver_mismatch_requires_reboot():
    facts = build_host_facts(lib_names=['libnvidia-ml.so.580.95.05'],
                             module_version_text=PROC_DRIVER_PROPRIETARY)
    assert (facts['driver_installed_version'], facts['driver_running_version']) == ('580.95.05', '535.129.03')
    assert facts['driver_mismatch'] is True
    assert facts['reboot_required'] is True


def test_build_host_facts_nothing_known():
    """A bare container: no files, no tools. Every fact has its "unknown" value, nothing raises."""
    assert build_host_facts() == {
        **UNKNOWN_KERNEL,
        'cpu_vendor': 'unknown',
        'mem_total_mib': None,
        'cmdline': '',
        'cmdline_args': {},
        'iommu': {'enabled': False, 'groups': 0, 'cmdline': {}},
        'acs': {'checked': False, 'enabled_bridges': []},
        'secure_boot': None,
        'reboot_required': False,
        'driver_installed_version': None,
        'driver_running_version': None,
        'driver_mismatch': False,
        'systemd': False,
    }


def test_build_host_facts_reboot_required_file_only():
    facts = build_host_facts(reboot_required_file=True, lib_names=['libnvidia-ml.so.580.95.05'])
    assert (facts['reboot_required'], facts['driver_mismatch']) == (True, False)


@pytest.mark.parametrize('text,expected', [
    ("menuentry 'Ubuntu' {\n\tlinux\t/boot/vmlinuz-6.8.0-60-generic root=UUID=x ro quiet\n}\n", '6.8.0-60-generic'),
    ("menuentry 'Ubuntu' {\n\tlinux\t/vmlinuz-6.8.0-45-generic root=/dev/sda1\n}\n", '6.8.0-45-generic'),
    (None, '6.8.0-60-generic'),           # no grub.cfg: the newest installed kernel
    ('', '6.8.0-60-generic'),
])
def test_boot_kernel(text, expected):
    assert boot_kernel(text, ['6.8.0-9-generic', '6.8.0-60-generic', '6.8.0-51-generic']) == expected


def test_boot_kernel_without_anything():
    assert boot_kernel(None, []) is None


@pytest.mark.parametrize('text,expected', [
    ('/var/lib/shim-signed/mok/MOK.der is already enrolled\n', True),
    ('/var/lib/shim-signed/mok/MOK.der is not enrolled\n', False),
    ('Failed to open /var/lib/shim-signed/mok/MOK.der\n', None),
    (None, None),
])
def test_mok_enrolled_state(text, expected):
    assert mok_enrolled_state(text) is expected


def test_modinfo_facts():
    assert modinfo_facts('filename:       /x/nvidia.ko\nversion:        580.95.05\nsigner:         Canonical Ltd. Kernel Module Signing\n') == {
        'version': '580.95.05', 'signer': 'Canonical Ltd. Kernel Module Signing', 'filename': '/x/nvidia.ko', 'license': None}
    assert modinfo_facts('') is None
    assert modinfo_facts('filename: /x\n') is None


def test_owned_paths():
    text = ('libnvidia-compute-580:amd64: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05\n'
            'dpkg-query: no path found matching pattern /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.1.1\n')
    assert owned_paths(text) == {'/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05'}


def test_strays_are_reported_not_installed():
    facts = build_host_facts(lib_paths=['/l/libnvidia-ml.so.535.261.03', '/l/libnvidia-ml.so.580.95.05'],
                             owned={'/l/libnvidia-ml.so.535.261.03'})
    assert facts['driver_installed_version'] == '535.261.03'
    assert facts['runfile']['stray_libraries'] == ['/l/libnvidia-ml.so.580.95.05']


UBUNTU_OS_RELEASE = """PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""
DEBIAN_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


@pytest.mark.parametrize('text,name,release,major', [
    (UBUNTU_OS_RELEASE, 'Ubuntu', 'noble', '24'),
    (DEBIAN_OS_RELEASE, 'Debian', 'bookworm', '12'),
])
def test_os_facts_name_the_distribution_as_the_setup_module_does(text, name, release, major):
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_host import os_facts
    got = os_facts(text, 'x86_64')
    assert (got['distribution'], got['distribution_release'], got['distribution_major_version'],
            got['architecture']) == (name, release, major, 'x86_64')
