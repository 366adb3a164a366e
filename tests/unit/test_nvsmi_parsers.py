"""Parsers in plugins/module_utils/rigkeeper_nvsmi.py, run on every real capture in ../shared/fixtures/nvidia-smi.

Expected values in the tables below were read from the fixture files by eye (see SOURCES.md there),
not produced by running the parser.
"""

import csv
import re

import pytest

from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_nvsmi import (
    GPU_KEYS,
    NvsmiParseError,
    architecture_from_name,
    clean_value,
    gpus_from_query,
    index_by_bus_id,
    normalize_bus_id,
    nvswitch_from_devices,
    parse_p2p_matrix,
    parse_q_text,
    parse_query_csv,
    parse_topo_matrix,
    parse_xml,
    to_bool,
    to_float,
    to_int,
    to_number,
    version_text,
)

# --------------------------------------------------------------------------------------------
# nvidia-smi -q -x: one row per XML fixture
# driver, cuda, attached_gpus, count, and for GPU 0: bus id, product name, architecture,
# power max / default / min / current limit, PCIe width max / current, memory total.
# --------------------------------------------------------------------------------------------

XML_CASES = [
    # file, driver, cuda, attached, count,
    #   (bus_id, product_name, architecture, max_w, default_w, min_w, limit_w, width_max, width_cur, mem_mib)
    ('flutter-server-box_rtx3080ti_v12_drv535_extracted.xml', '535.129.03', '12.2', 1, 1,
     ('00000000:01:00.0', 'NVIDIA GeForce RTX 3080 Ti', 'Ampere', 380.0, 350.0, 100.0, 350.0, 16, 16, 12288)),
    ('gpustat-unraid_quadro-p4000_v10_drv440.xml', '440.44', '10.2', 1, 1,
     ('00000000:08:00.0', 'Quadro P4000', 'Pascal', 105.0, 105.0, 60.0, 105.0, 16, 16, 8119)),
    ('netdata_a100-sxm4-40gb-mig_v11_drv510.xml', '510.47.03', '11.6', 1, 1,
     ('00000000:00:04.0', 'NVIDIA A100-SXM4-40GB', 'Ampere', 400.0, 400.0, 100.0, 400.0, 16, 16, 40960)),
    ('netdata_rtx2080_windows_v11_drv516.xml', '516.59', '11.7', 1, 1,
     ('00000000:0A:00.0', 'NVIDIA GeForce RTX 2080', 'Turing', 350.0, 275.0, 105.0, 275.0, 16, 8, 8192)),
    ('netdata_rtx3060-laptop_v11_drv515.xml', '515.65.01', '11.7', 1, 1,
     ('00000000:01:00.0', 'NVIDIA GeForce RTX 3060 Laptop GPU', 'Ampere', None, None, None, None, 16, 8, 6144)),
    ('netdata_rtx4090_v12_drv535.xml', '535.86.05', '12.2', 1, 1,
     ('00000000:84:00.0', 'NVIDIA GeForce RTX 4090', 'Ada Lovelace', 600.0, 450.0, 10.0, 450.0, 16, 16, 24564)),
    ('netdata_tesla-p100-pcie_v11_drv510.xml', '510.47.03', '11.6', 1, 1,
     ('00000000:00:04.0', 'Tesla P100-PCIE-16GB', 'Pascal', 250.0, 250.0, 125.0, 250.0, 16, 16, 16384)),
    ('pai_2x-rtx2080ti_v10_drv410.xml', '410.73', '10.0', 2, 2,
     ('00000000:02:00.0', 'GeForce RTX 2080 Ti', 'Turing', 280.0, 250.0, 100.0, 250.0, 16, 16, 10989)),
    # cuda_version reads "Not Found"
    ('pai_4x-tesla-k80-azure_v10_drv430.xml', '430.26', None, 4, 4,
     ('00001580:00:00.0', 'Tesla K80', 'Kepler', 175.0, 149.0, 100.0, 149.0, 16, 16, 11441)),
    # schema v9: no <cuda_version> element at all
    ('pai_6x-gtx1070_v9_drv384.xml', '384.66', None, 6, 6,
     ('00000000:01:00.0', 'GeForce GTX 1070', 'Pascal', 200.0, 180.0, 90.0, 180.0, 16, 1, 8112)),
    # attached_gpus=4 but only one <gpu> kept
    ('telegraf_a100-sxm4-80gb_v12_drv535.xml', '535.54.03', '12.2', 4, 1,
     ('00000000:01:00.0', 'NVIDIA A100-SXM4-80GB', 'Ampere', 500.0, 500.0, 100.0, 500.0, 16, 16, 81920)),
    ('telegraf_a10g_v11_drv515.xml', '515.105.01', '11.7', 1, 1,
     ('00000000:00:1E.0', 'NVIDIA A10G', 'Ampere', 300.0, 300.0, 100.0, 300.0, 16, 8, 23028)),
    ('telegraf_dual_rtx2070_v13_drv590.xml', '590.44.01', '13.1', 2, 2,
     ('00000000:01:00.0', 'NVIDIA GeForce RTX 2070', 'Turing', 200.0, 175.0, 125.0, 175.0, 16, 8, 8192)),
    ('telegraf_dual_rtx2080_v13_drv590.xml', '590.44.01', '13.1', 2, 2,
     ('00000000:01:00.0', 'NVIDIA GeForce RTX 2080', 'Turing', 240.0, 215.0, 105.0, 215.0, 16, 8, 8192)),
    ('telegraf_dual_rtxa5000_v13_drv590.xml', '590.44.01', '13.1', 2, 2,
     ('00000000:81:00.0', 'NVIDIA RTX A5000', 'Ampere', 230.0, 230.0, 100.0, 230.0, 16, 16, 24564)),
    # vGPU: power and link width all N/A
    ('telegraf_grid-p4-1q_v11_drv513.xml', '513.46', '11.6', 1, 1,
     ('00000000:00:0B.0', 'GRID P4-1Q', 'Pascal', None, None, None, None, None, None, 1024)),
    ('telegraf_gt1030_v11_drv470.xml', '470.74', '11.4', 1, 1,
     ('00000000:2D:00.0', 'NVIDIA GeForce GT 1030', 'Pascal', 30.0, 30.0, 25.5, 30.0, 4, 4, 1998)),
    # trimmed to 2 KB: no driver, no attached_gpus, no max link width, no power limits
    ('telegraf_gtx1070ti_v10_trimmed.xml', None, None, None, 1,
     ('00000000:01:00.0', 'GeForce GTX 1070 Ti', 'Pascal', None, None, None, None, None, 16, 4096)),
    # no DOCTYPE; the 418 driver called the GTX 1660 Ti "Graphics Device" -> unknown architecture
    ('telegraf_gtx1660ti_drv418.xml', '418.43', '10.1', 1, 1,
     ('00000000:43:00.0', 'Graphics Device', None, 130.0, 130.0, 70.0, 130.0, 16, 16, 5912)),
    ('telegraf_quadro-p2000_v12_drv525.xml', '525.125.06', '12.0', 1, 1,
     ('00000000:17:00.0', 'Quadro P2000', 'Pascal', 75.0, 75.0, 75.0, 75.0, 16, 8, 5120)),
    ('telegraf_quadro-p400_drv418.xml', '418.43', '10.1', 1, 1,
     ('00000000:43:00.0', 'Quadro P400', 'Pascal', None, None, None, None, 16, 16, 1998)),
    ('telegraf_rtx3060_v12_drv570.xml', '570.124.04', '12.8', 1, 1,
     ('00000000:2D:00.0', 'NVIDIA GeForce RTX 3060', 'Ampere', 190.0, 170.0, 100.0, 170.0, 16, 16, 12288)),
    ('telegraf_rtx3080_v12_drv536_windows.xml', '536.40', '12.2', 1, 1,
     ('00000000:04:00.0', 'NVIDIA GeForce RTX 3080', 'Ampere', 336.0, 320.0, 100.0, 336.0, 16, 16, 10240)),
    ('telegraf_rtx3080_v13_drv595.xml', '595.58.03', '13.2', 1, 1,
     ('00000000:0C:00.0', 'NVIDIA GeForce RTX 3080', 'Ampere', 336.0, 320.0, 100.0, 320.0, 16, 16, 10240)),
    # limit lowered to 200 W below the 350 W default
    ('telegraf_rtx3090_v12_drv525.xml', '525.147.05', '12.0', 1, 1,
     ('00000000:00:10.0', 'NVIDIA GeForce RTX 3090', 'Ampere', 375.0, 350.0, 100.0, 200.0, 16, 16, 24576)),
    ('telegraf_rtx3090_v13_drv590.xml', '590.44.01', '13.1', 1, 1,
     ('00000000:09:00.0', 'NVIDIA GeForce RTX 3090', 'Ampere', 480.0, 350.0, 100.0, 350.0, 16, 16, 24576)),
    ('telegraf_rtx4000-sff-ada_v13_drv595.xml', '595.84', '13.2', 1, 1,
     ('00000000:06:00.0', 'NVIDIA RTX 4000 SFF Ada Generation', 'Ada Lovelace', 70.0, 70.0, 30.0, 70.0, 16, 16, 20475)),
    ('telegraf_rtxpro6000-maxq-blackwell_v13_drv590.xml', '590.44.01', '13.1', 1, 1,
     ('00000000:61:00.0', 'NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition', 'Blackwell',
      325.0, 300.0, 250.0, 300.0, 16, 16, 97887)),
    ('telegraf_tesla-t4_v11_drv512.xml', '512.78', '11.6', 1, 1,
     ('00000000:01:00.0', 'Tesla T4', 'Turing', 70.0, 70.0, 60.0, 70.0, 16, 16, 15360)),
    ('telegraf_tesla-t4_v11_drv515.xml', '515.105.01', '11.7', 1, 1,
     ('00000000:00:1E.0', 'Tesla T4', 'Turing', 70.0, 70.0, 60.0, 70.0, 16, 8, 15360)),
]


def _load_xml(fixtures_dir, name):
    return parse_xml((fixtures_dir / name).read_text(encoding='utf-8'))


@pytest.mark.parametrize('name,driver,cuda,attached,count,gpu0', XML_CASES, ids=[c[0] for c in XML_CASES])
def test_parse_xml_fixture(fixtures_dir, name, driver, cuda, attached, count, gpu0):
    parsed = _load_xml(fixtures_dir, name)
    bus_id, product, arch, max_w, default_w, min_w, limit_w, width_max, width_cur, mem = gpu0

    assert parsed['driver_version'] == driver
    assert parsed['cuda_version'] == cuda
    assert parsed['attached_gpus'] == attached
    assert parsed['count'] == count
    assert len(parsed['gpus']) == count
    assert parsed['nvswitch'] is False
    gpu = parsed['gpus'][0]
    assert tuple(gpu) == GPU_KEYS
    assert gpu['index'] == 0
    assert gpu['bus_id'] == bus_id
    assert gpu['product_name'] == product
    assert gpu['architecture'] == arch
    assert gpu['power_max_w'] == max_w
    assert gpu['power_default_w'] == default_w
    assert gpu['power_min_w'] == min_w
    assert gpu['power_limit_w'] == limit_w
    assert gpu['pcie_width_max'] == width_max
    assert gpu['pcie_width_current'] == width_cur
    assert gpu['memory_total_mib'] == mem


def test_parse_xml_whole_gpu_v12_gpu_power_readings(fixtures_dir):
    """RTX 4090, schema v12: <gpu_power_readings> with current/requested limits, 4-space indent."""
    gpu = _load_xml(fixtures_dir, 'netdata_rtx4090_v12_drv535.xml')['gpus'][0]
    assert gpu == {
        'index': 0,
        'minor_number': 0,
        'bus_id': '00000000:84:00.0',
        'product_name': 'NVIDIA GeForce RTX 4090',
        'product_brand': 'GeForce',
        'architecture': 'Ada Lovelace',
        'uuid': 'GPU-71d1acc2-662d-2166-bf9f-65272d2fc437',
        'serial': None,
        'vbios_version': '95.02.18.80.5F',
        'memory_total_mib': 24564,
        'persistence_mode': True,
        'compute_mode': 'Default',
        'mig_mode': None,
        'power_draw_w': 26.84,
        'power_limit_w': 450.0,
        'power_default_w': 450.0,
        'power_min_w': 10.0,
        'power_max_w': 600.0,
        'power_enforced_w': 450.0,
        'pcie_gen_current': 1,
        'pcie_gen_max': 3,
        'pcie_width_current': 16,
        'pcie_width_max': 16,
        'temperature_c': 40.0,
        'utilization_gpu_pct': 0.0,
        'memory_used_mib': 2,
        'ecc_enabled': False,
        'ecc_corrected_volatile': None,
        'ecc_uncorrected_volatile': None,
        'clocks_event_reasons': {'gpu_idle': True, 'applications_clocks_setting': False, 'sw_power_cap': False, 'hw_slowdown': False, 'hw_thermal_slowdown': False, 'hw_power_brake_slowdown': False, 'sync_boost': False, 'sw_thermal_slowdown': False, 'display_clocks_setting': False},
    }


def test_parse_xml_whole_gpu_old_power_readings(fixtures_dir):
    """RTX 3090 on 525: old <power_readings> with power_limit/enforced_power_limit below default."""
    gpu = _load_xml(fixtures_dir, 'telegraf_rtx3090_v12_drv525.xml')['gpus'][0]
    assert gpu == {
        'index': 0,
        'minor_number': 0,
        'bus_id': '00000000:00:10.0',
        'product_name': 'NVIDIA GeForce RTX 3090',
        'product_brand': 'GeForce',
        'architecture': 'Ampere',
        'uuid': 'GPU-12345678-aaaa-bbbb-cccc-0123456789ab',
        'serial': None,
        'vbios_version': '94.02.71.40.72',
        'memory_total_mib': 24576,
        'persistence_mode': True,
        'compute_mode': 'Default',
        'mig_mode': None,
        'power_draw_w': 27.23,
        'power_limit_w': 200.0,
        'power_default_w': 350.0,
        'power_min_w': 100.0,
        'power_max_w': 375.0,
        'power_enforced_w': 200.0,
        'pcie_gen_current': 1,
        'pcie_gen_max': 4,
        'pcie_width_current': 16,
        'pcie_width_max': 16,
        'temperature_c': 37.0,
        'utilization_gpu_pct': 0.0,
        'memory_used_mib': 1,
        'ecc_enabled': None,
        'ecc_corrected_volatile': None,
        'ecc_uncorrected_volatile': None,
        'clocks_event_reasons': {'gpu_idle': True, 'applications_clocks_setting': False, 'sw_power_cap': False, 'hw_slowdown': False, 'hw_thermal_slowdown': False, 'hw_power_brake_slowdown': False, 'sync_boost': False, 'sw_thermal_slowdown': False, 'display_clocks_setting': False},
    }


def test_parse_xml_v13_deprecated_power_state_and_na_average(fixtures_dir):
    """v13: power_state reads "Requested functionality has been deprecated" and average draw N/A;
    the draw then comes from <instant_power_draw>."""
    gpus = _load_xml(fixtures_dir, 'telegraf_dual_rtx2070_v13_drv590.xml')['gpus']
    assert [g['power_draw_w'] for g in gpus] == [9.23, 11.82]
    assert [g['power_enforced_w'] for g in gpus] == [175.0, 175.0]
    assert [g['persistence_mode'] for g in gpus] == [True, True]
    assert [g['pcie_gen_max'] for g in gpus] == [3, 3]
    assert [g['uuid'] for g in gpus] == ['GPU-12345678-aaaa-bbbb-cccc-0123456789ab',
                                         'GPU-12345678-aaaa-bbbb-cccc-0123456789cd']


def test_parse_xml_v13_average_draw_preferred(fixtures_dir):
    """v13 with both readings: the average (what --query-gpu power.draw reports) wins."""
    gpus = _load_xml(fixtures_dir, 'telegraf_dual_rtxa5000_v13_drv590.xml')['gpus']
    assert [g['power_draw_w'] for g in gpus] == [6.41, 13.60]


def test_parse_xml_duplicate_uuids_keyed_by_bus_id(fixtures_dir):
    """Both RTX 2080s share one masked UUID: both are kept, and the bus id tells them apart."""
    gpus = _load_xml(fixtures_dir, 'telegraf_dual_rtx2080_v13_drv590.xml')['gpus']
    assert len(gpus) == 2
    assert gpus[0]['uuid'] == gpus[1]['uuid'] == 'GPU-12345678-aaaa-bbbb-cccc-0123456789ab'
    by_bus = index_by_bus_id(gpus)
    assert sorted(by_bus) == ['00000000:01:00.0', '00000000:02:00.0']
    assert by_bus['00000000:01:00.0']['power_draw_w'] == 1.0
    assert by_bus['00000000:02:00.0']['power_draw_w'] == 1.62
    assert [g['index'] for g in gpus] == [0, 1]
    assert [g['minor_number'] for g in gpus] == [0, 1]


def test_parse_xml_a100_attached_four_listed_one(fixtures_dir):
    parsed = _load_xml(fixtures_dir, 'telegraf_a100-sxm4-80gb_v12_drv535.xml')
    assert parsed['attached_gpus'] == 4
    assert parsed['count'] == 1
    gpu = parsed['gpus'][0]
    assert gpu['mig_mode'] is True
    assert gpu['minor_number'] == 1
    # the GPU's own memory, not one of its MIG devices' (19968 MiB)
    assert gpu['memory_total_mib'] == 81920
    assert gpu['power_draw_w'] == 67.03


def test_parse_xml_mig_a100_40gb(fixtures_dir):
    gpu = _load_xml(fixtures_dir, 'netdata_a100-sxm4-40gb-mig_v11_drv510.xml')['gpus'][0]
    assert (gpu['mig_mode'], gpu['memory_total_mib'], gpu['serial']) == (True, 40960, '1324321002473')


def test_parse_xml_k80_out_of_order_minor_numbers(fixtures_dir):
    gpus = _load_xml(fixtures_dir, 'pai_4x-tesla-k80-azure_v10_drv430.xml')['gpus']
    assert [g['bus_id'] for g in gpus] == ['00001580:00:00.0', '00002DF7:00:00.0',
                                           '00004968:00:00.0', '0000F8D6:00:00.0']
    assert [g['index'] for g in gpus] == [0, 1, 2, 3]
    assert [g['minor_number'] for g in gpus] == [1, 2, 3, 0]
    assert [g['power_draw_w'] for g in gpus] == [135.72, 139.71, 32.27, 34.44]
    assert [g['pcie_gen_current'] for g in gpus] == [3, 3, 1, 1]


def test_parse_xml_six_gtx1070_mining_rig(fixtures_dir):
    gpus = _load_xml(fixtures_dir, 'pai_6x-gtx1070_v9_drv384.xml')['gpus']
    assert [g['bus_id'][9:11] for g in gpus] == ['01', '03', '04', '08', '09', '0A']
    assert [g['pcie_width_current'] for g in gpus] == [1] * 6
    assert [g['pcie_gen_max'] for g in gpus] == [3, 2, 2, 2, 2, 2]
    assert [g['memory_total_mib'] for g in gpus] == [8112, 8114, 8114, 8114, 8114, 8114]
    assert len({g['uuid'] for g in gpus}) == 6


def test_parse_xml_dual_a5000_second_gpu(fixtures_dir):
    gpu = _load_xml(fixtures_dir, 'telegraf_dual_rtxa5000_v13_drv590.xml')['gpus'][1]
    assert gpu['bus_id'] == '00000000:C1:00.0'
    assert gpu['minor_number'] == 0
    assert gpu['serial'] == '1234567890123'
    assert gpu['product_brand'] == 'NVIDIA RTX'


@pytest.mark.parametrize('name', [
    'netdata_rtx2080_windows_v11_drv516.xml',
    'telegraf_rtx3080_v12_drv536_windows.xml',
    'telegraf_tesla-t4_v11_drv512.xml',
])
def test_parse_xml_windows_wddm_unknowns(fixtures_dir, name):
    """WDDM: no minor number, no persistence mode (both N/A)."""
    gpu = _load_xml(fixtures_dir, name)['gpus'][0]
    assert gpu['minor_number'] is None
    assert gpu['persistence_mode'] is None


def test_parse_xml_rtx3080_windows_requested_limit_above_default(fixtures_dir):
    gpu = _load_xml(fixtures_dir, 'telegraf_rtx3080_v12_drv536_windows.xml')['gpus'][0]
    assert (gpu['power_limit_w'], gpu['power_default_w'], gpu['power_max_w']) == (336.0, 320.0, 336.0)


def test_parse_xml_vgpu_all_na(fixtures_dir):
    gpu = _load_xml(fixtures_dir, 'telegraf_grid-p4-1q_v11_drv513.xml')['gpus'][0]
    for key in ('power_draw_w', 'power_limit_w', 'power_enforced_w', 'pcie_gen_current',
                'pcie_gen_max', 'minor_number', 'persistence_mode', 'serial'):
        assert gpu[key] is None, key
    assert gpu['vbios_version'] == '00.00.00.00.00'


def test_parse_xml_accepts_bytes_and_crlf():
    text = (b'<?xml version="1.0" encoding="UTF-8"?>\r\n<nvidia_smi_log>\r\n'
            b'<driver_version>610.57.04 [Deprecated; will be removed in CUDA 14.0. Use KMD Version instead]'
            b'</driver_version>\r\n<kmd_version>610.57.04</kmd_version>\r\n'
            b'<cuda_version>13.3 [Deprecated]</cuda_version>\r\n'
            b'<attached_gpus>0</attached_gpus>\r\n</nvidia_smi_log>\r\n')
    assert parse_xml(text) == {'driver_version': '610.57.04', 'cuda_version': '13.3',
                               'attached_gpus': 0, 'count': 0, 'nvswitch': False, 'gpus': []}


def test_parse_xml_fabric_state_means_nvswitch():
    text = ('<nvidia_smi_log><driver_version>590.48.01</driver_version><gpu id="0000:07:00.0">'
            '<product_name>NVIDIA H100 80GB HBM3</product_name>'
            '<fabric><state>Completed</state><status>Success</status></fabric></gpu></nvidia_smi_log>')
    parsed = parse_xml(text)
    assert parsed['nvswitch'] is True
    assert parsed['gpus'][0]['bus_id'] == '00000000:07:00.0'
    assert parsed['gpus'][0]['architecture'] == 'Hopper'


@pytest.mark.parametrize('text', [
    '',
    'Failed to initialize NVML: Driver/library version mismatch',
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    '<?xml version="1.0" ?><something_else/>',
    '<nvidia_smi_log><gpu>',
])
def test_parse_xml_rejects_non_xml(text):
    with pytest.raises(NvsmiParseError):
        parse_xml(text)


# --------------------------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('raw,expected', [
    ('N/A', None),
    ('[N/A]', None),
    ('[Not Supported]', None),
    ('Not Supported', None),
    ('Requested functionality has been deprecated', None),
    ('[Requested functionality has been deprecated]', None),
    ('Unknown Error', None),
    ('[Unknown Error]', None),
    ('[Insufficient Permissions]', None),
    ('Not Found', None),
    ('   ', None),
    (None, None),
    ('  Default \n', 'Default'),
    ('REDACTED', 'REDACTED'),
    ('None', 'None'),
])
def test_clean_value(raw, expected):
    assert clean_value(raw) == expected


@pytest.mark.parametrize('raw,expected', [
    ('450.00 W', 450.0),
    ('24564 MiB', 24564),
    ('16x', 16),
    ('25.50 W', 25.5),
    ('31 %', 31),
    ('-8 C', -8),
    ('3', 3),
    ('N/A', None),
    ('[N/A]', None),
    ('0x0C', None),
    ('590.48.01', None),
    (True, None),
    (7, 7),
])
def test_to_number(raw, expected):
    result = to_number(raw)
    assert result == expected
    assert type(result) is type(expected)


def test_to_int_and_to_float():
    assert to_int('450.00 W') == 450
    assert to_float('24564 MiB') == 24564.0
    assert isinstance(to_float('24564 MiB'), float)
    assert to_int('[Not Supported]') is None
    assert to_float('Requested functionality has been deprecated') is None


@pytest.mark.parametrize('raw,expected', [
    ('Enabled', True), ('Disabled', False), ('Yes', True), ('No', False), ('Active', True),
    ('Not Active', False), ('N/A', None), ('[N/A]', None), ('WDDM', None), (True, True),
])
def test_to_bool(raw, expected):
    assert to_bool(raw) is expected


@pytest.mark.parametrize('raw,expected', [
    ('00000000:01:00.0', '00000000:01:00.0'),
    ('0000:c1:00.0', '00000000:C1:00.0'),
    ('c1:00.0', '00000000:C1:00.0'),
    ('00001580:00:00.0', '00001580:00:00.0'),
    ('0000f8d6:00:00.0', '0000F8D6:00:00.0'),
    ('GPU-12345678', 'GPU-12345678'),
    ('N/A', None),
])
def test_normalize_bus_id(raw, expected):
    assert normalize_bus_id(raw) == expected


def test_version_text():
    assert version_text('610.57.04 [Deprecated; will be removed in CUDA 14.0. Use KMD Version instead]') \
        == '610.57.04'
    assert version_text('580.95.05') == '580.95.05'
    assert version_text('Not Found') is None


@pytest.mark.parametrize('name,expected', [
    ('NVIDIA GeForce RTX 4090', 'Ada Lovelace'),
    ('NVIDIA GeForce RTX 4080 SUPER', 'Ada Lovelace'),
    ('NVIDIA RTX 4000 SFF Ada Generation', 'Ada Lovelace'),
    ('NVIDIA L40S', 'Ada Lovelace'),
    ('NVIDIA L4', 'Ada Lovelace'),
    ('NVIDIA RTX 6000 Ada Generation', 'Ada Lovelace'),
    ('NVIDIA GeForce RTX 3090', 'Ampere'),
    ('NVIDIA GeForce RTX 3060 Laptop GPU', 'Ampere'),
    ('NVIDIA A100-SXM4-80GB', 'Ampere'),
    ('NVIDIA A10G', 'Ampere'),
    ('NVIDIA RTX A5000', 'Ampere'),
    ('NVIDIA RTX A6000', 'Ampere'),
    ('NVIDIA H100 80GB HBM3', 'Hopper'),
    ('NVIDIA H100 PCIe', 'Hopper'),
    ('NVIDIA H200', 'Hopper'),
    ('NVIDIA GH200 480GB', 'Hopper'),
    ('GeForce RTX 2080 Ti', 'Turing'),
    ('NVIDIA GeForce RTX 2080 SUPER', 'Turing'),
    ('Tesla T4', 'Turing'),
    ('Quadro RTX 6000', 'Turing'),
    ('Quadro RTX 4000', 'Turing'),
    ('NVIDIA GeForce GTX 1660 Ti', 'Turing'),
    ('GeForce GTX 1070', 'Pascal'),
    ('GeForce GTX 1070 Ti', 'Pascal'),
    ('NVIDIA GeForce GT 1030', 'Pascal'),
    ('Tesla P100-PCIE-16GB', 'Pascal'),
    ('Quadro P4000', 'Pascal'),
    ('Quadro P400', 'Pascal'),
    ('GRID P4-1Q', 'Pascal'),
    ('Tesla K80', 'Kepler'),
    ('Tesla V100-SXM2-16GB', 'Volta'),
    ('Tesla M60', 'Maxwell'),
    ('NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition', 'Blackwell'),
    ('NVIDIA RTX PRO 6000 Blackwell Server Edition', 'Blackwell'),
    ('NVIDIA GeForce RTX 5090', 'Blackwell'),
    ('NVIDIA B200', 'Blackwell'),
    ('NVIDIA GB200', 'Blackwell'),
    ('Graphics Device', None),
    ('N/A', None),
    (None, None),
])
def test_architecture_from_name(name, expected):
    assert architecture_from_name(name) == expected


def test_nvswitch_from_devices():
    assert nvswitch_from_devices(['/dev/nvidia-nvswitch0', '/dev/nvidia-nvswitch1']) is True
    assert nvswitch_from_devices(['/dev/nvidia-nvswitchctl']) is False
    assert nvswitch_from_devices(['/dev/nvidia0', '/dev/nvidiactl']) is False
    assert nvswitch_from_devices([]) is False
    assert nvswitch_from_devices(None) is False


# --------------------------------------------------------------------------------------------
# gpuexporter captures: sections extracted here, then parsed
# --------------------------------------------------------------------------------------------

SECTION_RE = re.compile(r'^# (\S+) :: (.+)$')


def capture_sections(text):
    """Split a gpuexporter capture into {'<state> :: <name>': body}. A section header is
    ``#####`` / ``# <state> :: <name>`` / optional ``# $ command`` / ``#####``."""
    lines = text.split('\n')
    sections = {}
    i = 0
    while i < len(lines):
        match = SECTION_RE.match(lines[i])
        if match and i > 0 and lines[i - 1].startswith('#####'):
            key = '%s :: %s' % (match.group(1), match.group(2).strip())
            j = i + 1
            while j < len(lines) and not lines[j].startswith('#####'):
                j += 1  # skip "# $ command"
            start = j + 1
            end = start
            while end < len(lines) and not lines[end].startswith('#####'):
                end += 1
            sections[key] = '\n'.join(lines[start:end])
            i = end
        else:
            i += 1
    return sections


def section(sections, prefix):
    found = [body for key, body in sections.items() if key.startswith(prefix)]
    assert len(found) == 1, (prefix, sorted(sections))
    return found[0]


# file -> name, driver, bus id, count, power max/default/min/limit, width max, gen max, memory, MIG, fabric state
CAPTURE_CASES = [
    ('gpuexporter_capture__linux-x86_64__nvidia-geforce-rtx-2080-super__595.71.05.txt',
     'NVIDIA GeForce RTX 2080 SUPER', '595.71.05', '00000000:0C:00.0', 350.0, 250.0, 105.0, 250.0, 16, 3, 8192,
     None, None),
    ('gpuexporter_capture__linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04.txt',
     'NVIDIA GeForce RTX 2080 SUPER', '610.57.04', '00000000:0C:00.0', 350.0, 250.0, 105.0, 250.0, 16, 3, 8192,
     None, None),
    ('gpuexporter_capture__linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05.txt',
     'NVIDIA GeForce RTX 4080 SUPER', '595.71.05', '00000000:01:00.0', 400.0, 320.0, 150.0, 320.0, 16, 4, 16376,
     None, None),
    ('gpuexporter_capture__linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt',
     'NVIDIA H100 80GB HBM3', '590.48.01', '00000000:00:09.0', 700.0, 700.0, 200.0, 700.0, 16, 5, 81559,
     False, 'Completed'),
    ('gpuexporter_capture__linux-x86_64__nvidia-h100-mig__590.48.01.txt',
     'NVIDIA H100 80GB HBM3', '590.48.01', '00000000:00:09.0', 700.0, 700.0, 200.0, 700.0, 16, 5, 81559,
     True, 'Completed'),
    ('gpuexporter_capture__linux-x86_64__nvidia-h200-mig__590.48.01.txt',
     'NVIDIA H200', '590.48.01', '00000000:83:00.0', 700.0, 700.0, 200.0, 700.0, 16, 5, 143771,
     True, 'Completed'),
    ('gpuexporter_capture__linux-x86_64__nvidia-h200__590.48.01.txt',
     'NVIDIA H200', '590.48.01', '00000000:83:00.0', 700.0, 700.0, 200.0, 700.0, 16, 5, 143771,
     False, 'Completed'),
    ('gpuexporter_capture__linux-x86_64__nvidia-l40s__595.80.txt',
     'NVIDIA L40S', '595.80', '00000000:01:00.0', 350.0, 350.0, 100.0, 350.0, 16, 4, 46068,
     None, None),
    ('gpuexporter_capture__windows-x86_64__nvidia-geforce-rtx-2080-super__591.86.txt',
     'NVIDIA GeForce RTX 2080 SUPER', '591.86', '00000000:0C:00.0', 350.0, 250.0, 105.0, 250.0, 16, 3, 8192,
     None, None),
    ('gpuexporter_capture__windows-x86_64__nvidia-geforce-rtx-2080-super__610.62.txt',
     'NVIDIA GeForce RTX 2080 SUPER', '610.62', '00000000:0C:00.0', 350.0, 250.0, 105.0, 250.0, 16, 3, 8192,
     None, None),
]
CAPTURE_IDS = [c[0].split('__', 2)[2] for c in CAPTURE_CASES]


@pytest.mark.parametrize('state', ['idle', 'load'])
@pytest.mark.parametrize('case', CAPTURE_CASES, ids=CAPTURE_IDS)
def test_capture_query_gpu_csv(fixtures_dir, case, state):
    name, product, driver, bus_id, max_w, default_w, min_w, limit_w, width_max, gen_max, mem, mig, _fab = case
    sections = capture_sections((fixtures_dir / name).read_text(encoding='utf-8'))
    rows = parse_query_csv(section(sections, '%s :: query-gpu' % state))
    assert len(rows) == 1
    row = rows[0]
    assert row['count'] == '1'
    assert row['driver_version'] == driver
    assert row['power.max_limit'] == max_w  # "350.00 W" under "power.max_limit [W]" -> 350.0
    assert row['memory.total'] == mem

    gpu = gpus_from_query(rows)[0]
    assert tuple(gpu) == GPU_KEYS
    assert gpu['index'] == 0
    assert gpu['bus_id'] == bus_id
    assert gpu['product_name'] == product
    assert gpu['power_max_w'] == max_w
    assert gpu['power_default_w'] == default_w
    assert gpu['power_min_w'] == min_w
    assert gpu['power_limit_w'] == limit_w
    assert gpu['power_enforced_w'] == limit_w
    assert gpu['pcie_width_max'] == width_max
    assert gpu['pcie_width_current'] == 16
    assert gpu['pcie_gen_max'] == gen_max
    assert gpu['memory_total_mib'] == mem
    assert gpu['mig_mode'] is mig


def test_capture_query_gpu_csv_na_and_deprecated(fixtures_dir):
    sections = capture_sections((fixtures_dir / CAPTURE_CASES[3][0]).read_text(encoding='utf-8'))
    row = parse_query_csv(section(sections, 'idle :: query-gpu'))[0]
    assert row['display_mode'] is None  # [Requested functionality has been deprecated]
    assert row['vgpu_driver_capability.heterogenous_multivGPU'] is None  # [N/A]
    assert row['fabric.state'] == 'Completed'
    assert row['persistence_mode'] == 'Enabled'
    assert row['serial'] == '0000000000000'  # digits without a unit stay a string
    assert row['pci.bus'] == '0x00'


@pytest.mark.parametrize('case', CAPTURE_CASES, ids=CAPTURE_IDS)
def test_capture_topo_m(fixtures_dir, case):
    name = case[0]
    sections = capture_sections((fixtures_dir / name).read_text(encoding='utf-8'))
    topo = parse_topo_matrix(section(sections, 'capabilities :: topo -m'))
    if name.endswith('__591.86.txt'):
        # "ERROR: Option -m is missing its value." on that Windows driver
        assert topo is None
    else:
        assert topo == {'labels': ['GPU0'], 'matrix': {'GPU0': {'GPU0': 'X'}}}


@pytest.mark.parametrize('case', CAPTURE_CASES, ids=CAPTURE_IDS)
def test_capture_q_text(fixtures_dir, case):
    name, product, driver, bus_id, max_w, _d, _mn, _l, _w, gen_max, mem, mig, fabric = case
    sections = capture_sections((fixtures_dir / name).read_text(encoding='utf-8'))
    parsed = parse_q_text(section(sections, 'idle :: query (-q)'))
    assert parsed['driver_version'] == driver
    assert parsed['attached_gpus'] == 1
    assert parsed['nvswitch'] is (fabric is not None)
    gpu = parsed['gpus'][0]
    assert gpu['bus_id'] == bus_id
    assert gpu['Product Name'] == product
    assert to_float(gpu['GPU Power Readings']['Max Power Limit']) == max_w
    assert to_int(gpu['FB Memory Usage']['Total']) == mem
    assert to_int(gpu['PCI']['GPU Link Info']['PCIe Generation']['Max']) == gen_max
    assert to_bool(gpu['MIG Mode']['Current']) is mig
    assert clean_value(gpu['Fabric']['State']) == fabric


def test_capture_610_q_text_kmd_version(fixtures_dir):
    sections = capture_sections(
        (fixtures_dir / CAPTURE_CASES[1][0]).read_text(encoding='utf-8'))
    parsed = parse_q_text(section(sections, 'idle :: query (-q)'))
    assert (parsed['driver_version'], parsed['cuda_version']) == ('610.57.04', '13.3')


# --------------------------------------------------------------------------------------------
# Older gpuexporter samples and plain CSV files
# --------------------------------------------------------------------------------------------

def _query_block(text):
    """The CSV right after the ``# nvidia-smi --query-gpu=...`` line of the old sample files."""
    lines = text.split('\n')
    start = [i for i, line in enumerate(lines) if line.startswith('# nvidia-smi --query-gpu')][0] + 1
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    return '\n'.join(lines[start:end])


# file, driver, persistence, power max/limit/draw, width max/current, gen current/max, memory
SAMPLE_CASES = [
    ('gpuexporter_sample_rtx2080super_ubuntu_drv465.27.txt', '465.27', False, 350.0, 250.0, 30.37,
     16, 16, 1, 3, 7979),
    ('gpuexporter_sample_rtx2080super_win10_drv466.63.txt', '466.63', None, 350.0, 250.0, 31.12,
     16, 16, 1, 3, 8192),
    ('gpuexporter_sample-output_rtx2080super_win_drv471.11.csv', '471.11', None, 350.0, 250.0, 32.70,
     16, 16, 3, 3, 8192),
]


@pytest.mark.parametrize('case', SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_sample_query_gpu_csv(fixtures_dir, case):
    name, driver, persistence, max_w, limit_w, draw_w, width_max, width_cur, gen_cur, gen_max, mem = case
    text = (fixtures_dir / name).read_text(encoding='utf-8')
    if not name.endswith('.csv'):
        text = _query_block(text)
    rows = parse_query_csv(text)
    assert len(rows) == 1
    assert rows[0]['driver_version'] == driver
    gpu = gpus_from_query(rows)[0]
    assert gpu['product_name'] == 'NVIDIA GeForce RTX 2080 SUPER'
    assert gpu['architecture'] == 'Turing'
    assert gpu['bus_id'] == '00000000:0C:00.0'
    assert gpu['persistence_mode'] is persistence
    assert gpu['power_max_w'] == max_w
    assert gpu['power_limit_w'] == limit_w
    assert gpu['power_draw_w'] == draw_w
    assert gpu['pcie_width_max'] == width_max
    assert gpu['pcie_width_current'] == width_cur
    assert gpu['pcie_gen_current'] == gen_cur
    assert gpu['pcie_gen_max'] == gen_max
    assert gpu['memory_total_mib'] == mem
    assert gpu['serial'] is None  # [N/A]


def test_netdata_p100_csv_nounits(fixtures_dir):
    """Header names units ("power.draw [W]") but the values have none (nounits); no limit columns."""
    rows = parse_query_csv((fixtures_dir / 'netdata_tesla-p100-pcie_query-gpu.csv').read_text(encoding='utf-8'))
    assert rows == [{
        'name': 'Tesla P100-PCIE-16GB',
        'uuid': 'GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6',
        'fan.speed': None,
        'pstate': 'P0',
        'memory.reserved': 103,
        'memory.used': 0,
        'memory.free': 16280,
        'utilization.gpu': 0,
        'utilization.memory': 0,
        'temperature.gpu': '37',
        'power.draw': 28.16,
        'clocks.current.graphics': 405,
        'clocks.current.sm': 405,
        'clocks.current.memory': 715,
        'clocks.current.video': 835,
    }]
    gpu = gpus_from_query(rows)[0]
    assert (gpu['power_draw_w'], gpu['power_max_w'], gpu['architecture']) == (28.16, None, 'Pascal')


# --------------------------------------------------------------------------------------------
# parse_query_csv on the shapes rigkeeper itself asks for
# --------------------------------------------------------------------------------------------

FIELDS = ['index', 'pci.bus_id', 'name', 'power.limit', 'power.min_limit', 'power.max_limit',
          'pcie.link.width.max']


def test_query_csv_noheader_nounits():
    text = ('0, 00000000:01:00.0, NVIDIA GeForce RTX 4090, 450.00, 150.00, 600.00, 16\n'
            '1, 00000000:02:00.0, NVIDIA GeForce RTX 4090, [N/A], 150.00, 600.00, 16\n')
    rows = parse_query_csv(text, FIELDS)
    assert rows[1]['power.limit'] is None
    assert rows[0]['power.limit'] == '450.00'  # no unit anywhere: left to the caller
    gpus = gpus_from_query(rows)
    assert [(g['index'], g['bus_id'], g['power_limit_w'], g['power_max_w'], g['pcie_width_max'])
            for g in gpus] == [(0, '00000000:01:00.0', 450.0, 600.0, 16),
                               (1, '00000000:02:00.0', None, 600.0, 16)]


def test_query_csv_header_with_units_and_given_fields():
    text = ('index, pci.bus_id, name, power.limit [W], power.min_limit [W], power.max_limit [W], '
            'pcie.link.width.max\n'
            '0, 00000000:01:00.0, NVIDIA GeForce RTX 3090, 350.00 W, 100.00 W, 350.00 W, 16\n')
    rows = parse_query_csv(text, FIELDS)
    assert rows == [{'index': '0', 'pci.bus_id': '00000000:01:00.0', 'name': 'NVIDIA GeForce RTX 3090',
                     'power.limit': 350.0, 'power.min_limit': 100.0, 'power.max_limit': 350.0,
                     'pcie.link.width.max': '16'}]


def test_query_csv_row_length_mismatch():
    with pytest.raises(NvsmiParseError):
        parse_query_csv('0, 00000000:01:00.0\n', FIELDS)


def test_query_csv_empty():
    assert parse_query_csv('') == []
    assert parse_query_csv('\n\n', FIELDS) == []


# --------------------------------------------------------------------------------------------
# topo -m / topo -p2p r (multi-GPU shapes as nvidia-smi prints them)
# --------------------------------------------------------------------------------------------

TOPO_2GPU = (
    '\t\x1b[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n'
    'GPU0\t X \tPHB\t0-63\t0\t\tN/A\n'
    'GPU1\tPHB\t X \t0-63\t0\t\tN/A\n'
    '\n'
    'Legend:\n'
    '\n'
    '  X    = Self\n'
    '  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n'
    '  NV#  = Connection traversing a bonded set of # NVLinks\n'
)

TOPO_4GPU_NICS_SPACES = (
    '        GPU0    GPU1    GPU2    GPU3    NIC0    NIC1    CPU Affinity    NUMA Affinity   GPU NUMA ID\n'
    'GPU0     X      NV12    SYS     SYS     PIX     SYS     0-23,48-71      0               N/A\n'
    'GPU1    NV12     X      SYS     SYS     PIX     SYS     0-23,48-71      0               N/A\n'
    'GPU2    SYS     SYS      X      NV12    SYS     PIX     24-47,72-95     1               N/A\n'
    'GPU3    SYS     SYS     NV12     X      SYS     PIX     24-47,72-95     1               N/A\n'
    'NIC0    PIX     PIX     SYS     SYS      X      SYS\n'
    'NIC1    SYS     SYS     PIX     PIX     SYS      X\n'
    '\n'
    'Legend:\n'
    '\n'
    '  X    = Self\n'
    '\n'
    'NIC Legend:\n'
    '\n'
    '  NIC0: mlx5_0\n'
    '  NIC1: mlx5_1\n'
)


def test_topo_matrix_two_gpus_tabs_and_escapes():
    assert parse_topo_matrix(TOPO_2GPU) == {
        'labels': ['GPU0', 'GPU1'],
        'matrix': {'GPU0': {'GPU0': 'X', 'GPU1': 'PHB'}, 'GPU1': {'GPU0': 'PHB', 'GPU1': 'X'}},
    }


def test_topo_matrix_four_gpus_with_nics():
    topo = parse_topo_matrix(TOPO_4GPU_NICS_SPACES)
    assert topo['labels'] == ['GPU0', 'GPU1', 'GPU2', 'GPU3']
    assert topo['matrix']['GPU0'] == {'GPU0': 'X', 'GPU1': 'NV12', 'GPU2': 'SYS', 'GPU3': 'SYS'}
    assert topo['matrix']['GPU3'] == {'GPU0': 'SYS', 'GPU1': 'SYS', 'GPU2': 'NV12', 'GPU3': 'X'}
    assert sorted(topo['matrix']) == ['GPU0', 'GPU1', 'GPU2', 'GPU3']


@pytest.mark.parametrize('text', [
    '',
    "ERROR: Option -m is missing its value. Please run 'nvidia-smi -h' for help.",
    'Failed to initialize NVML: Driver/library version mismatch',
    '\tGPU0\tGPU1\tCPU Affinity\n',  # header only
])
def test_topo_matrix_none(text):
    assert parse_topo_matrix(text) is None
    assert parse_p2p_matrix(text) is None


def test_p2p_matrix():
    text = (' \tGPU0\tGPU1\tGPU2\t\n'
            ' GPU0\tX\tOK\tCNS\t\n'
            ' GPU1\tOK\tX\tTNS\t\n'
            ' GPU2\tCNS\tTNS\tX\t\n'
            '\n'
            'Legend:\n\n  X    = Self\n  OK   = Status Ok\n  CNS  = Chipset not supported\n')
    assert parse_p2p_matrix(text) == {
        'GPU0': {'GPU0': 'X', 'GPU1': 'OK', 'GPU2': 'CNS'},
        'GPU1': {'GPU0': 'OK', 'GPU1': 'X', 'GPU2': 'TNS'},
        'GPU2': {'GPU0': 'CNS', 'GPU1': 'TNS', 'GPU2': 'X'},
    }


def test_p2p_matrix_single_gpu_with_escapes():
    """Shape printed by nvidia-smi 580.159.04 on one H100: the header is underlined too."""
    text = ' \t\x1b[4mGPU0\t\x1b[0m\n GPU0\tX\t\n\nLegend:\n\n  X    = Self\n  OK   = Status Ok\n'
    assert parse_p2p_matrix(text) == {'GPU0': {'GPU0': 'X'}}


def test_p2p_matrix_space_separated():
    text = ('        GPU0    GPU1\n'
            ' GPU0   X       GNS\n'
            ' GPU1   GNS     X\n')
    assert parse_p2p_matrix(text) == {'GPU0': {'GPU0': 'X', 'GPU1': 'GNS'},
                                      'GPU1': {'GPU0': 'GNS', 'GPU1': 'X'}}


# --------------------------------------------------------------------------------------------
# Every fixture file is covered by one of the tables above
# --------------------------------------------------------------------------------------------

def test_every_fixture_is_covered(fixtures_dir):
    covered = set(c[0] for c in XML_CASES) | set(c[0] for c in CAPTURE_CASES) \
        | set(c[0] for c in SAMPLE_CASES) | {'netdata_tesla-p100-pcie_query-gpu.csv', 'SOURCES.md'}
    present = set(p.name for p in fixtures_dir.iterdir() if p.is_file())
    assert present - covered == set(), 'fixtures without a test row'
    assert covered - present == set(), 'test rows without a fixture'


def test_capture_sections_helper_finds_csv(fixtures_dir):
    """Guard for the section splitter itself: the CSV header row starts with 'timestamp'."""
    sections = capture_sections((fixtures_dir / CAPTURE_CASES[0][0]).read_text(encoding='utf-8'))
    body = section(sections, 'idle :: query-gpu')
    header = next(csv.reader([body.strip().split('\n')[0]], skipinitialspace=True))
    assert header[:3] == ['timestamp', 'driver_version', 'kmd_version']


@pytest.mark.parametrize('name, enabled, corrected, uncorrected, active', [
    # v12 datacenter card: SRAM + DRAM volatile counts.
    ('telegraf_a100-sxm4-80gb_v12_drv535.xml', True, 0, 0, []),
    # v10 Kepler: single_bit/double_bit totals; applications clocks hold the clock down.
    ('pai_4x-tesla-k80-azure_v10_drv430.xml', True, 0, 0, ['applications_clocks_setting']),
    # v13 GeForce: no ECC at all (N/A), the power cap is the active clock event.
    ('telegraf_rtx3090_v13_drv590.xml', None, None, None, ['sw_power_cap']),
    # v11 on a Tesla with <clocks_throttle_reasons> (the pre-535 name).
    ('telegraf_tesla-t4_v11_drv512.xml', True, 0, 0, ['gpu_idle']),
])
def test_parse_xml_health(fixtures_dir, name, enabled, corrected, uncorrected, active):
    gpu = _load_xml(fixtures_dir, name)['gpus'][0]
    assert gpu['ecc_enabled'] is enabled
    assert gpu['ecc_corrected_volatile'] == corrected
    assert gpu['ecc_uncorrected_volatile'] == uncorrected
    assert sorted(r for r, on in gpu['clocks_event_reasons'].items() if on) == active
    assert isinstance(gpu['temperature_c'], float)
    assert gpu['memory_used_mib'] is not None


def test_parse_xml_ecc_counts_are_summed():
    """SRAM's split uncorrectable counts (v13) and DRAM's add up; an N/A part is left out."""
    xml = ('<nvidia_smi_log><driver_version>590.48.01</driver_version><gpu id="00000000:01:00.0">'
           '<ecc_mode><current_ecc>Enabled</current_ecc></ecc_mode><ecc_errors><volatile>'
           '<sram_correctable>3</sram_correctable><sram_uncorrectable_parity>1</sram_uncorrectable_parity>'
           '<sram_uncorrectable_secded>2</sram_uncorrectable_secded><dram_correctable>4</dram_correctable>'
           '<dram_uncorrectable>N/A</dram_uncorrectable></volatile></ecc_errors></gpu></nvidia_smi_log>')
    gpu = parse_xml(xml)['gpus'][0]
    assert (gpu['ecc_enabled'], gpu['ecc_corrected_volatile'], gpu['ecc_uncorrected_volatile']) == (True, 7, 3)
    assert gpu['clocks_event_reasons'] is None
