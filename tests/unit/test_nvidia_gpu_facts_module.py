"""plugins/modules/nvidia_gpu_facts.py with run_command and get_bin_path patched and the host's files in tmp_path."""

from unittest import mock

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

import nvidia_gpu_facts
import rigkeeper_p2p

SMI = '/usr/bin/nvidia-smi'
LSPCI = '/usr/bin/lspci'
MOKUTIL = '/usr/bin/mokutil'

CPUINFO_AMD = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen Threadripper 3970X 32-Core Processor\n'
MEMINFO_128G = 'MemTotal:       131891484 kB\nMemFree:        120000000 kB\n'
CMDLINE = 'BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=/dev/nvme0n1p2 ro quiet amd_iommu=off iommu=pt\n'

TOPO_2GPU = (
    '\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n'
    'GPU0\t X \tPHB\t0-63\t0\t\tN/A\n'
    'GPU1\tPHB\t X \t0-63\t0\t\tN/A\n'
    '\nLegend:\n\n  X    = Self\n')
P2P_2GPU = ' \tGPU0\tGPU1\t\n GPU0\tX\tOK\t\n GPU1\tOK\tX\t\n\nLegend:\n\n  X    = Self\n  OK   = Status Ok\n'

LSPCI_ACS = """0000:00:01.1 PCI bridge: Advanced Micro Devices, Inc. [AMD] Starship/Matisse GPP Bridge (prog-if 00 [Normal decode])
\tCapabilities: [2a0 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-

0000:01:00.0 VGA compatible controller: NVIDIA Corporation TU104 [GeForce RTX 2080] (rev a1) (prog-if 00 [VGA controller])
\tKernel driver in use: nvidia
"""

APPS = (SMI, '--query-compute-apps=gpu_bus_id,pid,process_name,used_memory', '--format=csv,noheader,nounits')
VERSION_MISMATCH = 'Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95\n'
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.\n\n")


class AnsibleExitJson(Exception):
    pass


class AnsibleFailJson(Exception):
    pass


def _exit_json(self, **kwargs):
    raise AnsibleExitJson(kwargs)


def _fail_json(self, **kwargs):
    raise AnsibleFailJson(kwargs)


class FakeHost:
    """The host's files under tmp_path, plus the commands and binaries the module may use."""

    def __init__(self, root, monkeypatch):
        self.root = root
        self.commands = {}
        self.binaries = {'nvidia-smi': SMI, 'lspci': LSPCI, 'mokutil': MOKUTIL}
        self.calls = []
        for key, rel in (('cpuinfo', 'proc/cpuinfo'), ('meminfo', 'proc/meminfo'),
                         ('proc_driver_version', 'proc/driver/nvidia/version'),
                         ('iommu_dir', 'sys/class/iommu'), ('iommu_groups_dir', 'sys/kernel/iommu_groups'),
                         ('reboot_required', 'var/run/reboot-required'),
                         ('systemd_dir', 'run/systemd/system'),
                         ('nvswitch_glob', 'dev/nvidia-nvswitch*'),
                         ('reboot_required_pkgs', 'var/run/reboot-required.pkgs'),
                         ('lib_modules', 'lib/modules'), ('boot', 'boot'),
                         ('uninstaller', 'usr/bin/nvidia-uninstall'), ('os_release', 'etc/os-release'),
                         ('os_release_vendor', 'usr/lib/os-release')):
            monkeypatch.setitem(nvidia_gpu_facts.HOST_PATHS, key, str(root / rel))
        monkeypatch.setattr(nvidia_gpu_facts.platform, 'machine', lambda: 'x86_64')
        (root / 'dev').mkdir()
        (root / 'lib').mkdir()

    def path(self, rel):
        return str(self.root / rel)

    def write(self, rel, text=''):
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return str(target)

    def mkdir(self, rel):
        (self.root / rel).mkdir(parents=True, exist_ok=True)

    def args(self, **extra):
        args = {
            'cmdline_path': self.path('proc/cmdline'),
            'module_version_path': [self.path('sys/module/nvidia/version')],
            'lib_dirs': [self.path('lib')],
            'sys_module_dir': self.path('sys/module'),
            'kernel_release_path': self.path('proc/sys/kernel/osrelease'),
            'grub_cfg_path': self.path('boot/grub/grub.cfg'),
            'mok_key_path': self.path('var/lib/shim-signed/mok/MOK.der'),
        }
        args.update(extra)
        return args

    def run_command(self, module, args, **kwargs):
        assert module.run_command_environ_update['LC_ALL'] == 'C'
        assert isinstance(args, list), 'argument lists, not shell strings'
        self.calls.append(args)
        key = tuple(args)
        assert key in self.commands, 'unexpected command %r' % (args,)
        result = self.commands[key]
        if isinstance(result, Exception):
            raise result
        return result

    def get_bin_path(self, module, name, required=False, opt_dirs=None):
        return self.binaries.get(name)

    def run(self, args):
        with patch_module_args(args), \
                mock.patch.object(basic.AnsibleModule, 'exit_json', _exit_json), \
                mock.patch.object(basic.AnsibleModule, 'fail_json', _fail_json), \
                mock.patch.object(basic.AnsibleModule, 'run_command', autospec=True,
                                  side_effect=self.run_command), \
                mock.patch.object(basic.AnsibleModule, 'get_bin_path', autospec=True,
                                  side_effect=self.get_bin_path):
            with pytest.raises(AnsibleExitJson) as exc:
                nvidia_gpu_facts.main()
        return exc.value.args[0]


def calls(host):
    """The commands run, in any order: the module reads independent things side by side."""
    return sorted(tuple(c) for c in host.calls)


def calls_of(expected):
    return sorted(tuple(c) for c in expected)


@pytest.fixture
def host(tmp_path, monkeypatch):
    return FakeHost(tmp_path, monkeypatch)


def _health(temp, used, active):
    """The health keys of a GeForce card that reports no ECC: one active clock event reason."""
    reasons = ('gpu_idle', 'applications_clocks_setting', 'sw_power_cap', 'hw_slowdown', 'hw_thermal_slowdown',
               'hw_power_brake_slowdown', 'sync_boost', 'sw_thermal_slowdown', 'display_clocks_setting')
    return {'temperature_c': temp, 'utilization_gpu_pct': 0.0, 'memory_used_mib': used, 'ecc_enabled': None,
            'ecc_corrected_volatile': None, 'ecc_uncorrected_volatile': None,
            'clocks_event_reasons': dict((r, r == active) for r in reasons)}


def _gpu_2080(index, bus_id, draw):
    """One RTX 2080 of telegraf_dual_rtx2080_v13_drv590.xml, as read from the file."""
    return {
        'index': index,
        'minor_number': index,
        'bus_id': bus_id,
        'product_name': 'NVIDIA GeForce RTX 2080',
        'product_brand': 'GeForce',
        'architecture': 'Turing',
        'uuid': 'GPU-12345678-aaaa-bbbb-cccc-0123456789ab',
        'serial': None,
        'vbios_version': '90.04.0B.00.8F',
        'memory_total_mib': 8192,
        'persistence_mode': True,
        'compute_mode': 'Default',
        'mig_mode': None,
        'power_draw_w': draw,
        'power_limit_w': 215.0,
        'power_default_w': 215.0,
        'power_min_w': 105.0,
        'power_max_w': 240.0,
        'power_enforced_w': 215.0,
        'pcie_gen_current': 1,
        'pcie_gen_max': 3,
        'pcie_width_current': 8,
        'pcie_width_max': 16,
        **_health(15.0, 1, 'gpu_idle'),
    }


def _gpu_2080ti(index, bus_id, uuid, draw):
    """One RTX 2080 Ti of pai_2x-rtx2080ti_v10_drv410.xml, as read from the file."""
    return {
        'index': index,
        'minor_number': index,
        'bus_id': bus_id,
        'product_name': 'GeForce RTX 2080 Ti',
        'product_brand': 'GeForce',
        'architecture': 'Turing',
        'uuid': uuid,
        'serial': None,
        'vbios_version': '90.02.17.00.AD',
        'memory_total_mib': 10989,
        'persistence_mode': False,
        'compute_mode': 'Default',
        'mig_mode': None,
        'power_draw_w': draw,
        'power_limit_w': 250.0,
        'power_default_w': 250.0,
        'power_min_w': 100.0,
        'power_max_w': 280.0,
        'power_enforced_w': 250.0,
        'pcie_gen_current': 1,
        'pcie_gen_max': 3,
        'pcie_width_current': 16,
        'pcie_width_max': 16,
        **_health(24.0, 0, 'sw_power_cap' if index else 'gpu_idle'),
    }


# Keys of a host whose kernel, boot loader and packages tell nothing (no /lib/modules, grub.cfg...).
NEW_HOST_KEYS = {
    'kernel_release': None,
    'kernels': [],
    'boot_kernel': None,
    'boot_kernel_module': None,
    'nouveau': {'loaded': False, 'in_use': False},
    'mok_enrolled': None,
    'runfile': {'uninstaller': False, 'stray_libraries': []},
    'reboot_required_file': False,
    'reboot_required_pkgs': [],
    'os': {'id': None, 'name': None, 'version_id': None, 'codename': None, 'machine': 'x86_64',
           'distribution': None, 'distribution_release': None, 'distribution_version': None,
           'distribution_major_version': None, 'architecture': 'x86_64'},
}


def _bare_host_facts(**changes):
    facts = {
        **NEW_HOST_KEYS,
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
    facts.update(changes)
    return facts


def _absent_gpu_facts(**changes):
    facts = {
        'present': False,
        'error': None,
        'nvidia_smi': None,
        'driver_version': None,
        'cuda_version': None,
        'count': 0,
        'nvswitch': False,
        'gpus': [],
        'topology': None,
        'p2p_read': None,
        'compute_apps': None,
    }
    facts.update(changes)
    return facts


# --------------------------------------------------------------------------------------------
# The four hosts of the acceptance criteria: whole result asserted
# --------------------------------------------------------------------------------------------

def test_two_gpu_host(host, fixtures_dir):
    host.write('proc/cpuinfo', CPUINFO_AMD)
    host.write('proc/meminfo', MEMINFO_128G)
    host.write('proc/cmdline', CMDLINE)
    host.write('sys/module/nvidia/version', '590.44.01\n')
    host.write('lib/libnvidia-ml.so.1')
    host.write('lib/libnvidia-ml.so.590.44.01')
    host.mkdir('sys/class/iommu')
    host.mkdir('sys/kernel/iommu_groups')
    host.mkdir('run/systemd/system')
    host.commands = {
        (SMI, '-q', '-x'): (0, (fixtures_dir / 'telegraf_dual_rtx2080_v13_drv590.xml').read_text(), ''),
        APPS: (0, '00000000:01:00.0, 4242, python3, 20480 MiB\n', ''),
        (SMI, 'topo', '-m'): (0, TOPO_2GPU, ''),
        (SMI, 'topo', '-p2p', 'r'): (0, P2P_2GPU, ''),
        (LSPCI, '-D', '-vvv'): (0, LSPCI_ACS, ''),
        (MOKUTIL, '--sb-state'): (0, 'SecureBoot disabled\n', ''),
    }

    result = host.run(host.args())

    assert result == {
        'changed': False,
        'ansible_facts': {
            'nvidia_gpu': {
                'present': True,
                'error': None,
                'nvidia_smi': SMI,
                'driver_version': '590.44.01',
                'cuda_version': '13.1',
                'count': 2,
                'nvswitch': False,
                'gpus': [
                    _gpu_2080(0, '00000000:01:00.0', 1.0),
                    _gpu_2080(1, '00000000:02:00.0', 1.62),
                ],
                'topology': {
                    'labels': ['GPU0', 'GPU1'],
                    'matrix': {'GPU0': {'GPU0': 'X', 'GPU1': 'PHB'}, 'GPU1': {'GPU0': 'PHB', 'GPU1': 'X'}},
                },
                'p2p_read': {'GPU0': {'GPU0': 'X', 'GPU1': 'OK'}, 'GPU1': {'GPU0': 'OK', 'GPU1': 'X'}},
                'compute_apps': [{'gpu_bus_id': '00000000:01:00.0', 'pid': 4242, 'process_name': 'python3',
                                  'used_memory_mib': 20480}],
            },
            'rigkeeper_host': {
                **NEW_HOST_KEYS,
                'cpu_vendor': 'amd',
                'mem_total_mib': 128800,
                'cmdline': CMDLINE.strip(),
                'cmdline_args': {'BOOT_IMAGE': '/vmlinuz-6.8.0-45-generic', 'root': '/dev/nvme0n1p2',
                                 'ro': None, 'quiet': None, 'amd_iommu': 'off', 'iommu': 'pt'},
                'iommu': {'enabled': False, 'groups': 0, 'cmdline': {'amd_iommu': 'off', 'iommu': 'pt'}},
                'acs': {'checked': True, 'enabled_bridges': ['0000:00:01.1']},
                'secure_boot': False,
                'reboot_required': False,
                'driver_installed_version': '590.44.01',
                'driver_running_version': '590.44.01',
                'driver_mismatch': False,
                'systemd': True,
            },
        },
    }
    assert calls(host) == calls_of([
        [SMI, '-q', '-x'],
        list(APPS),
        [SMI, 'topo', '-m'],
        [SMI, 'topo', '-p2p', 'r'],
        [MOKUTIL, '--sb-state'],
        [LSPCI, '-D', '-vvv'],
    ])


def test_host_without_nvidia_smi(host):
    host.binaries = {}
    host.write('proc/cpuinfo', 'processor\t: 0\nvendor_id\t: GenuineIntel\n')
    host.write('proc/meminfo', 'MemTotal:        8167848 kB\n')
    host.write('proc/cmdline', 'BOOT_IMAGE=/vmlinuz ro\n')
    host.mkdir('sys/class/iommu/dmar0')
    for group in ('0', '1', '2'):
        host.mkdir('sys/kernel/iommu_groups/%s' % group)

    result = host.run(host.args())

    assert result == {
        'changed': False,
        'ansible_facts': {
            'nvidia_gpu': _absent_gpu_facts(error='nvidia-smi not found'),
            'rigkeeper_host': _bare_host_facts(
                cpu_vendor='intel',
                mem_total_mib=7976,
                cmdline='BOOT_IMAGE=/vmlinuz ro',
                cmdline_args={'BOOT_IMAGE': '/vmlinuz', 'ro': None},
                iommu={'enabled': True, 'groups': 3, 'cmdline': {}},
            ),
        },
    }
    assert host.calls == []


@pytest.mark.parametrize('option_units, default_units, enabled', [
    (['ivhd0'], [], True),     # the simulator's kernel lists its IOMMU under /run, the host's /sys has none
    ([], ['dmar0'], False),    # the option's directory is the one read, not /sys/class/iommu
])
def test_iommu_dir_option_is_where_the_iommu_is_read(host, option_units, default_units, enabled):
    """iommu_dir (gpu_facts_iommu_dir): a rig whose /sys is not its kernel's (the simulator's
    container sees the host's /sys) reads its IOMMU where it is told; the groups stay /sys's."""
    host.binaries = {}
    host.write('proc/cmdline', 'BOOT_IMAGE=/vmlinuz ro\n')
    host.mkdir('run/sim/sys/class/iommu')
    host.mkdir('sys/class/iommu')
    for unit in option_units:
        host.mkdir('run/sim/sys/class/iommu/%s' % unit)
    for unit in default_units:
        host.mkdir('sys/class/iommu/%s' % unit)
    host.mkdir('sys/kernel/iommu_groups/0')

    result = host.run(host.args(iommu_dir=host.path('run/sim/sys/class/iommu')))

    rigkeeper_host = result['ansible_facts']['rigkeeper_host']
    assert rigkeeper_host['iommu'] == {'enabled': enabled, 'groups': 1, 'cmdline': {}}
    # What nvidia_driver_p2p_modules decides from these facts (its other preconditions hold).
    plan = rigkeeper_p2p.rk_p2p_modules_plan(
        '580.95.05', flavor='open', modules='dkms', host=rigkeeper_host,
        gpus=[{'label': 'GPU0', 'bar1_total_mib': 32768, 'memory_total_mib': 24576}],
        source={'path': '/srv/p2p-fork', 'version_mk': 'NVIDIA_VERSION = 580.95.05\n'})
    assert [r['id'] for r in plan['refusals']] == (['iommu'] if enabled else [])


def test_host_with_driver_library_version_mismatch(host):
    """unattended-upgrades replaced the libraries under a running 570 driver."""
    host.binaries = {'nvidia-smi': SMI}
    host.write('proc/cmdline', 'ro quiet\n')
    host.write('sys/module/nvidia/version', '570.172.08\n')
    host.write('lib/libnvidia-ml.so.580.95.05')
    host.commands = {(SMI, '-q', '-x'): (18, VERSION_MISMATCH, '')}

    result = host.run(host.args())

    assert result == {
        'changed': False,
        'ansible_facts': {
            'nvidia_gpu': _absent_gpu_facts(
                nvidia_smi=SMI,
                error='Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95',
            ),
            'rigkeeper_host': _bare_host_facts(
                cmdline='ro quiet',
                cmdline_args={'ro': None, 'quiet': None},
                reboot_required=True,
                driver_installed_version='580.95.05',
                driver_running_version='570.172.08',
                driver_mismatch=True,
            ),
        },
    }
    assert host.calls == [[SMI, '-q', '-x']]


def test_host_where_topology_fails(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.write('proc/cmdline', 'ro\n')
    host.commands = {
        (SMI, '-q', '-x'): (0, (fixtures_dir / 'pai_2x-rtx2080ti_v10_drv410.xml').read_text(), ''),
        (SMI, 'topo', '-m'): (255, "ERROR: Option -m is missing its value. Please run 'nvidia-smi -h' for help.\n", ''),
        # rc 0 but nothing that looks like a matrix
        (SMI, 'topo', '-p2p', 'r'): (0, 'Invalid combination of input arguments.\n', ''),
    }

    result = host.run(host.args())

    assert result == {
        'changed': False,
        'ansible_facts': {
            'nvidia_gpu': {
                'present': True,
                'error': None,
                'nvidia_smi': SMI,
                'driver_version': '410.73',
                'cuda_version': '10.0',
                'count': 2,
                'nvswitch': False,
                'gpus': [
                    _gpu_2080ti(0, '00000000:02:00.0', 'GPU-57567e11-0be2-381b-5132-2ad95c262e58', 2.12),
                    _gpu_2080ti(1, '00000000:03:00.0', 'GPU-ef1d0068-5bfd-f1e4-7e79-ff35d71d44b8', 19.11),
                ],
                'topology': None,
                'p2p_read': None,
                'compute_apps': None,
            },
            'rigkeeper_host': _bare_host_facts(cmdline='ro', cmdline_args={'ro': None}),
        },
    }
    assert calls(host) == calls_of([[SMI, '-q', '-x'], list(APPS), [SMI, 'topo', '-m'], [SMI, 'topo', '-p2p', 'r']])


# --------------------------------------------------------------------------------------------
# More edges
# --------------------------------------------------------------------------------------------

def _gpu_facts(host, args=None):
    return host.run(host.args(**(args or {})))['ansible_facts']['nvidia_gpu']


def test_topology_probe_that_raises_is_null(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {
        (SMI, '-q', '-x'): (0, (fixtures_dir / 'telegraf_dual_rtx2070_v13_drv590.xml').read_text(), ''),
        (SMI, 'topo', '-m'): RuntimeError('boom'),
        (SMI, 'topo', '-p2p', 'r'): (0, P2P_2GPU, ''),
    }
    facts = _gpu_facts(host)
    assert (facts['present'], facts['count'], facts['topology']) == (True, 2, None)
    assert facts['p2p_read'] == {'GPU0': {'GPU0': 'X', 'GPU1': 'OK'}, 'GPU1': {'GPU0': 'OK', 'GPU1': 'X'}}


def test_gather_topology_false_skips_probes(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {
        (SMI, '-q', '-x'): (0, (fixtures_dir / 'telegraf_dual_rtxa5000_v13_drv590.xml').read_text(), ''),
    }
    facts = _gpu_facts(host, {'gather_topology': False})
    assert (facts['count'], facts['topology'], facts['p2p_read']) == (2, None, None)
    assert calls(host) == calls_of([[SMI, '-q', '-x'], list(APPS)])


def test_single_gpu_skips_probes(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {(SMI, '-q', '-x'): (0, (fixtures_dir / 'netdata_rtx4090_v12_drv535.xml').read_text(), '')}
    facts = _gpu_facts(host)
    assert (facts['present'], facts['count'], facts['topology'], facts['p2p_read']) == (True, 1, None, None)
    assert facts['gpus'][0]['power_max_w'] == 600.0
    assert calls(host) == calls_of([[SMI, '-q', '-x'], list(APPS)])


def test_no_driver_loaded(host):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {(SMI, '-q', '-x'): (9, NO_DRIVER, '')}
    assert _gpu_facts(host) == _absent_gpu_facts(nvidia_smi=SMI, error=NO_DRIVER.strip())


def test_no_output_at_all(host):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {(SMI, '-q', '-x'): (6, '', '')}
    assert _gpu_facts(host) == _absent_gpu_facts(nvidia_smi=SMI, error='nvidia-smi -q -x exited with rc=6')


def test_unparseable_xml_with_rc_zero(host):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {(SMI, '-q', '-x'): (0, '<nvidia_smi_log><gpu>', '')}
    facts = _gpu_facts(host)
    assert facts['present'] is False
    assert facts['error'].startswith('nvidia-smi XML output does not parse')


def test_explicit_nvidia_smi_path(host, fixtures_dir):
    smi = host.write('opt/nvidia/bin/nvidia-smi', '#!/bin/sh\n')
    (host.root / 'opt/nvidia/bin/nvidia-smi').chmod(0o755)
    host.binaries = {}
    host.commands = {(smi, '-q', '-x'): (0, (fixtures_dir / 'telegraf_tesla-t4_v11_drv515.xml').read_text(), '')}
    facts = _gpu_facts(host, {'nvidia_smi': smi})
    assert (facts['present'], facts['nvidia_smi'], facts['gpus'][0]['product_name']) == (True, smi, 'Tesla T4')


def test_explicit_nvidia_smi_path_missing(host):
    host.binaries = {}
    missing = host.path('nope/nvidia-smi')
    assert _gpu_facts(host, {'nvidia_smi': missing}) == _absent_gpu_facts(
        error='nvidia-smi not found at %s' % missing)
    assert host.calls == []


def test_nvswitch_device_nodes(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.write('dev/nvidia-nvswitch0')
    host.write('dev/nvidia-nvswitchctl')
    host.commands = {(SMI, '-q', '-x'): (0, (fixtures_dir / 'telegraf_a100-sxm4-80gb_v12_drv535.xml').read_text(), '')}
    facts = _gpu_facts(host)
    assert (facts['nvswitch'], facts['count']) == (True, 1)


def test_check_mode_gathers_the_same(host, fixtures_dir):
    host.binaries = {'nvidia-smi': SMI}
    host.commands = {(SMI, '-q', '-x'): (0, (fixtures_dir / 'netdata_rtx4090_v12_drv535.xml').read_text(), '')}
    result = host.run(host.args(_ansible_check_mode=True))
    assert result['changed'] is False
    assert result['ansible_facts']['nvidia_gpu']['gpus'][0]['product_name'] == 'NVIDIA GeForce RTX 4090'


def test_running_version_falls_back_to_proc_driver(host):
    host.binaries = {}
    host.write('proc/driver/nvidia/version',
               'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  '
               '(dvs-builder@U22-I3-AE18-23-3)  Tue Sep 23 09:55:41 UTC 2025\n'
               'GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n')
    host_facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert host_facts['driver_running_version'] == '580.95.05'


def test_module_version_path_order(host):
    host.binaries = {}
    first = host.path('missing/version')
    second = host.write('alt/version', '535.261.03\n')
    host.write('proc/driver/nvidia/version', 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  x\n')
    host_facts = host.run(host.args(module_version_path=[first, second]))['ansible_facts']['rigkeeper_host']
    assert host_facts['driver_running_version'] == '535.261.03'


def test_lspci_without_root_and_mokutil_without_efi(host):
    host.binaries = {'lspci': LSPCI, 'mokutil': MOKUTIL}
    host.commands = {
        (LSPCI, '-D', '-vvv'): (0, '0000:00:01.1 PCI bridge: AMD Device\n\tCapabilities: <access denied>\n', ''),
        (MOKUTIL, '--sb-state'): (255, '', 'EFI variables are not supported on this system\n'),
    }
    host_facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert host_facts['acs'] == {'checked': False, 'enabled_bridges': []}
    assert host_facts['secure_boot'] is False


def test_lspci_failure_is_unchecked(host):
    host.binaries = {'lspci': LSPCI}
    host.commands = {(LSPCI, '-D', '-vvv'): (1, '', 'pcilib: Cannot open /proc/bus/pci\n')}
    host_facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert host_facts['acs'] == {'checked': False, 'enabled_bridges': []}


def test_installed_version_through_library_link(host):
    """Only the libnvidia-ml.so.1 link is in lib_dirs; its target names the version."""
    host.binaries = {}
    target = host.write('opt/driver/lib/libnvidia-ml.so.580.159.04')
    (host.root / 'lib' / 'libnvidia-ml.so.1').symlink_to(target)
    host_facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert host_facts['driver_installed_version'] == '580.159.04'


def test_reboot_required_file(host):
    host.binaries = {}
    host.write('var/run/reboot-required', '*** System restart required ***\n')
    assert host.run(host.args())['ansible_facts']['rigkeeper_host']['reboot_required'] is True


def test_argument_spec_defaults():
    with patch_module_args({}):
        module = nvidia_gpu_facts.build_module()
    assert module.params == {
        'nvidia_smi': None,
        'cmdline_path': '/proc/cmdline',
        'module_version_path': ['/sys/module/nvidia/version'],
        'lib_dirs': ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'],
        'gather_topology': True,
        'sys_module_dir': '/sys/module',
        'kernel_release_path': '/proc/sys/kernel/osrelease',
        'grub_cfg_path': '/boot/grub/grub.cfg',
        'mok_key_path': '/var/lib/shim-signed/mok/MOK.der',
        'iommu_dir': None,
    }
    assert module.check_mode is False
    assert module.run_command_environ_update['LC_ALL'] == 'C'


# --------------------------------------------------------------------------------------------
# Kernel, boot loader, nouveau, Secure Boot MOK, .run leftovers
# --------------------------------------------------------------------------------------------

MODINFO = '/usr/sbin/modinfo'
DPKG_QUERY = '/usr/bin/dpkg-query'


def test_boot_kernel_its_module_nouveau_and_the_mok(host):
    host.binaries = {'modinfo': MODINFO, 'mokutil': MOKUTIL}
    host.write('proc/sys/kernel/osrelease', '6.8.0-51-generic\n')
    for k in ('6.8.0-51-generic', '6.8.0-60-generic'):
        host.write(f'boot/vmlinuz-{k}')
        host.mkdir(f'lib/modules/{k}')
    host.write('boot/grub/grub.cfg', "menuentry 'Ubuntu' {\n\tlinux\t/boot/vmlinuz-6.8.0-60-generic root=UUID=x ro\n}\n")
    host.write('sys/module/nouveau/refcnt', '1\n')
    host.write('var/lib/shim-signed/mok/MOK.der', 'k')
    host.write('var/run/reboot-required', '*** System restart required ***\n')
    host.write('var/run/reboot-required.pkgs', 'linux-image-6.8.0-60-generic\n')
    mok = host.path('var/lib/shim-signed/mok/MOK.der')
    host.commands = {
        (MODINFO, '-k', '6.8.0-60-generic', 'nvidia'): (
            0, 'filename:       /lib/modules/6.8.0-60-generic/updates/dkms/nvidia.ko\nversion:        580.95.05\n'
               'license:        Dual MIT/GPL\nsigner:         ubuntu Secure Boot Module Signature key\n', ''),
        (MOKUTIL, '--sb-state'): (0, 'SecureBoot enabled\n', ''),
        (MOKUTIL, '--test-key', mok): (0, f'{mok} is not enrolled\n', ''),
    }
    facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert facts['kernel_release'] == '6.8.0-51-generic'
    assert facts['kernels'] == ['6.8.0-51-generic', '6.8.0-60-generic']
    assert facts['boot_kernel'] == '6.8.0-60-generic'
    assert facts['boot_kernel_module'] == {
        'version': '580.95.05', 'signer': 'ubuntu Secure Boot Module Signature key',
        'filename': '/lib/modules/6.8.0-60-generic/updates/dkms/nvidia.ko', 'license': 'Dual MIT/GPL'}
    assert facts['nouveau'] == {'loaded': True, 'in_use': True}
    assert facts['secure_boot'] is True and facts['mok_enrolled'] is False
    assert facts['reboot_required_file'] is True
    assert facts['reboot_required_pkgs'] == ['linux-image-6.8.0-60-generic']


def test_a_library_no_package_owns_is_not_the_installed_driver(host):
    """A .run installer's leftover next to the packaged driver: reported, never taken for it."""
    host.binaries = {'dpkg-query': DPKG_QUERY}
    packaged = host.write('lib/libnvidia-ml.so.535.261.03')
    stray = host.write('lib/libnvidia-ml.so.580.95.05')
    host.write('usr/bin/nvidia-uninstall')
    host.commands = {
        (DPKG_QUERY, '-S', packaged, stray): (
            1, f'libnvidia-compute-535:amd64: {packaged}\n', f'dpkg-query: no path found matching pattern {stray}\n'),
    }
    facts = host.run(host.args())['ansible_facts']['rigkeeper_host']
    assert facts['driver_installed_version'] == '535.261.03'
    assert facts['runfile'] == {'uninstaller': True, 'stray_libraries': [stray]}
