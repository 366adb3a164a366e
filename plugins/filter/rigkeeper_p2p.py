# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""P2P decisions: what a GPU pair's matrices and measurements mean, why a pair is not OK, and
whether the P2P kernel modules may be built. Pure functions, no Ansible state; the one data table,
``P2P``, carries each cause with the rigkeeper variable or BIOS setting that fixes it and its source
(../shared/FACTS.md, "P2P breakage on consumer cards").

================================  ==========================================================
``rk_p2p_result``                 one run of the p2p_bench program (command result) -> status
``rk_p2p_collect``                a loop of runs -> ``{pair or GPU: rk_p2p_result}``
``rk_p2p_nccl``                   nccl-tests all_reduce_perf output -> bus bandwidth, errors
``rk_p2p_diagnose``               facts + results -> per pair and per GPU: status, findings
``rk_p2p_table``                  the diagnosis as a bandwidth table (lines)
``rk_p2p_cases``                  the diagnosis as report cases (one per host x pair)
``rk_p2p_gencode``                nvcc -gencode arguments for the GPUs' compute capabilities
``rk_p2p_modules_plan``           P2P kernel modules: the refusals, before any change
``rk_dkms_status``                ``dkms status`` lines -> module, version, kernel, state
================================  ==========================================================
"""

from __future__ import annotations

import json
import re

from ansible.errors import AnsibleFilterError

_SRC_545 = ("vllm-project/vllm#1801, huggingface/text-generation-inference#1559, NVIDIA/nccl#1127, "
            "vllm-project/vllm#5458 [FACTS.md: P2P breakage]")
_SRC_4090 = ("NVIDIA/nccl-tests#117; tinygrad/open-gpu-kernel-modules README (P2P for 4090s, large BAR and "
             "IOMMU off needed) [FACTS.md: P2P breakage]")
_SRC_IOMMU = ("pytorch/pytorch#52142, pytorch/pytorch#84803; tinygrad/open-gpu-kernel-modules#18 (IO_PAGE_FAULT, "
              "peer copies zeroed) [FACTS.md: P2P breakage]")
_SRC_ACS = "NCCL troubleshooting, 'PCI Access Control Services' [FACTS.md: P2P breakage]"
_SRC_BAR = ("tinygrad/open-gpu-kernel-modules README: BAR1 of 32G on the 4090 maps all of VRAM; P2P needs large "
            "BAR support [FACTS.md: P2P breakage]")
_SRC_PCIE = "PCIe 3.0-6.0 per-lane rates after line coding; rule of thumb for the 'x16 + x2 trap'"
_SRC_CUDA = ("CUDA runtime error texts (tensorflow/tensorflow#990, compiler-explorer/infra#1519, "
             "NVIDIA/nvidia-docker#1256, ggml-org/llama.cpp#3230)")
_SRC_NCCL = "NCCL environment variables NCCL_P2P_DISABLE, NCCL_P2P_LEVEL [FACTS.md: P2P breakage]"

# Per-lane, per-direction PCIe bandwidth after line coding, GB/s.
PCIE_LANE_GBPS = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}

P2P = {
    # Why a pair is not OK, in the order findings are listed. fix: what to set (a rigkeeper
    # variable, a BIOS setting, an NCCL variable); source: where the fact comes from.
    'causes': {
        'hang': {
            'summary': 'the copy did not finish within the time limit (the 545-era symptom: P2P reported, '
                       'all-reduce hangs)',
            'fix': 'fix the causes listed with it; until then NCCL_P2P_DISABLE=1 lets NCCL run without P2P '
                   '(slower). p2p_check_pair_timeout raises the limit if the link is merely slow',
            'source': _SRC_545,
        },
        'known_bad_branch': {
            'summary': 'the running driver is on a branch known to break P2P on these GPUs',
            'fix': 'install a known-good branch: ansible-playbook playbooks/upgrade_driver.yml '
                   '-e nvidia_driver_branch=580 (nvidia_driver_branch)',
            'source': _SRC_545,
        },
        'iommu_on': {
            'summary': 'the IOMMU is on: peer traffic is translated or redirected (deadlocks, IO_PAGE_FAULT, '
                       'zeroed or corrupt copies)',
            'fix': "kernel_params_iommu: off (amd_iommu=off / intel_iommu=off), then reboot; or turn the IOMMU "
                   "(AMD-Vi / Intel VT-d) off in the BIOS. iommu=pt keeps the IOMMU on",
            'source': _SRC_IOMMU,
        },
        'acs_on_path': {
            'summary': 'ACS is on for a PCI bridge on the path: P2P is routed through the root complex '
                       '(slow or hanging)',
            'fix': 'kernel_params_acs_disable: true (a boot unit clears ACS on every bridge, every boot); or '
                   'disable ACS in the BIOS where the board offers it',
            'source': _SRC_ACS,
        },
        'geforce_no_p2p': {
            'summary': 'GeForce cards have no P2P with the stock driver (chipset not supported, CNS)',
            'fix': 'nvidia_driver_p2p_modules: true (the P2P-enabled open kernel modules; they need '
                   'Resizable BAR on, the IOMMU off and Secure Boot off or an enrolled MOK); or run NCCL with '
                   'NCCL_P2P_DISABLE=1',
            'source': _SRC_4090,
        },
        'gpu_not_supported': {
            'summary': 'the driver says these GPUs do not support P2P (GNS)',
            'fix': 'no rigkeeper setting enables P2P here: run NCCL with NCCL_P2P_DISABLE=1',
            'source': _SRC_NCCL,
        },
        'topology_not_supported': {
            'summary': 'the path between the GPUs does not support P2P (TNS, or SYS: across CPU sockets)',
            'fix': "put both GPUs under one CPU's PCIe root complex (slots of the same socket); "
                   'NCCL_P2P_LEVEL=SYS lets NCCL try P2P across sockets where the platform allows it',
            'source': _SRC_NCCL,
        },
        'pcie_link_below_max': {
            'summary': 'a GPU links below its maximum PCIe width (the x16 + x2 trap: a slot wired narrow, a '
                       'riser, lanes shared through the chipset)',
            'fix': 'BIOS: give the slot its full link (PCIe generation and width, bifurcation); reseat the card '
                   'or its riser, or move it to a CPU-attached x16 slot',
            'source': _SRC_PCIE,
        },
        'bar1_below_vram': {
            'summary': "BAR1 is smaller than the GPU's memory (Resizable BAR off): a peer cannot map the memory",
            'fix': 'BIOS: Above 4G Decoding on and Re-Size BAR Support on (CSM off), then reboot',
            'source': _SRC_BAR,
        },
        'peer_copy_corrupt': {
            'summary': 'copies with peer access on did not arrive intact (silent corruption: zeroed or wrong '
                       'words)',
            'fix': 'do not use P2P on this pair until fixed (NCCL_P2P_DISABLE=1); the IOMMU is the usual cause '
                   '(kernel_params_iommu: off)',
            'source': _SRC_IOMMU,
        },
        'slow': {
            'summary': 'peer bandwidth is well below what the link allows',
            'fix': 'see the link, ACS and IOMMU findings; check the link under load with nvidia-smi '
                   '--query-gpu=pcie.link.gen.current,pcie.link.width.current',
            'source': _SRC_PCIE,
        },
        'peer_refused': {
            'summary': 'topo -p2p says OK but CUDA refuses peer access',
            'fix': "compare nvidia-smi topo -p2p r with the program's peer_enable_error; a driver/library "
                   'mismatch after an update needs the reboot (nvidia_driver_reboot)',
            'source': _SRC_CUDA,
        },
        'program_error': {
            'summary': 'the bandwidth program failed with a CUDA error',
            'fix': 'see the error: its fix is named with it',
            'source': _SRC_CUDA,
        },
        'unexplained': {
            'summary': 'no known cause matches',
            'fix': 'compare nvidia-smi topo -p2p r and the measured numbers with dmesg | grep -i -e NVRM -e '
                   'AMD-Vi -e DMAR',
            'source': 'rigkeeper',
        },
    },
    # CUDA errors the program can report, with what fixes them.
    'cuda_errors': {
        35: 'the driver is older than the CUDA runtime the program was built with: install a toolkit the '
            'driver supports (cuda_toolkit_versions) or a newer driver (nvidia_driver_branch)',
        100: 'no GPU answers: the driver is installed but not loaded, which needs the reboot rigkeeper '
             'reports (nvidia_driver_reboot); check nvidia-smi',
        209: 'the program has no code for this GPU: set p2p_check_nvcc_arch to the GPU (auto builds for the '
             "GPUs' compute capability) or use a toolkit that supports it",
        222: 'the program carries PTX newer than the driver: build with p2p_check_nvcc_arch: auto (no JIT) '
             'or use a toolkit no newer than the driver',
        803: 'the loaded kernel module and the driver libraries differ (an update without its reboot): reboot '
             '(nvidia_driver_reboot)',
    },
    'min_link_fraction': 0.6,
    'stock_dkms_module': 'nvidia',
    # The P2P forks and their refs: the tinygrad fork has branches such as 550.54.15-p2p,
    # 550.90.07-p2p, 565.57.01-p2p; forks of it (aikitoria) carry later ones, e.g. 595.58.03-p2p.
    'modules': {
        'known_refs': '550.54.15-p2p, 550.90.07-p2p, 565.57.01-p2p (tinygrad); later ones in forks such as '
                      'aikitoria/open-gpu-kernel-modules (e.g. 595.58.03-p2p)',
        'source': ('tinygrad/open-gpu-kernel-modules README and branches; aikitoria/open-gpu-kernel-modules#24 '
                   '[FACTS.md: P2P breakage]'),
    },
}

BENCH_PROGRAM = 'rigkeeper-p2p-bench'
_ORDER = list(P2P['causes'])


def _err(msg):
    return AnsibleFilterError('rigkeeper: ' + msg)


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dict(value, what):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err('%s must be a dict, got %s' % (what, type(value).__name__))
    return value


# --------------------------------------------------------------------------------------------
# One run of the program
# --------------------------------------------------------------------------------------------
def _last_stage(stderr):
    stages = re.findall(r'(?m)^stage: (\S+)\s*$', stderr or '')
    return stages[-1] if stages else None


def _json_doc(stdout):
    for line in reversed((stdout or '').splitlines()):
        line = line.strip()
        if not line.startswith('{'):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get('program') == BENCH_PROGRAM:
            return doc
    return None


def rk_p2p_result(result):
    """One command result of ``p2p_bench`` (``rc``, ``stdout``, ``stderr``; an async task's
    ``msg`` when it ran out of time) -> ``{status, stage, rc, doc, error, message}``.

    status: ``hang`` (timeout's exit 124/137, or the async limit), ``error`` (a CUDA error in the
    JSON, or no JSON at all), ``ok``. ``stage`` is the last ``stage:`` line on stderr: where a hang
    stopped.
    """
    result = _dict(result, 'result')
    rc = result.get('rc')
    stderr = result.get('stderr') or ''
    stage = _last_stage(stderr)
    msg = result.get('msg') if isinstance(result.get('msg'), str) else ''
    if rc in (124, 137) or 'did not complete within' in msg or 'timed out' in msg.lower():
        return {'status': 'hang', 'stage': stage, 'rc': rc, 'doc': None, 'error': None,
                'message': 'no result within the time limit; last stage: %s' % (stage or 'none')}
    doc = _json_doc(result.get('stdout'))
    if doc is None:
        text = (stderr.strip() or (result.get('stdout') or '').strip() or msg or 'no output')[-400:]
        return {'status': 'error', 'stage': stage, 'rc': rc, 'doc': None, 'error': None,
                'message': 'the program printed no result (rc=%s): %s' % (rc, text)}
    if doc.get('error'):
        e = doc['error']
        return {'status': 'error', 'stage': stage, 'rc': rc, 'doc': doc, 'error': e,
                'message': '%s failed: %s (%s, %s)' % (e.get('call'), e.get('message'), e.get('name'), e.get('code'))}
    return {'status': 'ok', 'stage': stage, 'rc': rc, 'doc': doc, 'error': None, 'message': None}


def rk_p2p_collect(runs, mode='pair'):
    """The registered results of a loop of program runs -> ``{key: rk_p2p_result}``: keys
    ``'0-1'`` for pairs (loop items with ``a`` and ``b``), ``'0'`` for GPUs on their own (items with
    ``index``). Items skipped by the loop are left out."""
    if mode not in ('pair', 'local'):
        raise _err("rk_p2p_collect: mode must be 'pair' or 'local', got %r" % (mode,))
    out = {}
    for run in (runs or {}).get('results', []) if isinstance(runs, dict) else (runs or []):
        if not isinstance(run, dict) or run.get('skipped'):
            continue
        item = run.get('item') or {}
        key = '%s-%s' % (item.get('a'), item.get('b')) if mode == 'pair' else str(item.get('index'))
        out[key] = rk_p2p_result(run)
    return out


def rk_p2p_nccl(stdout, rc=0):
    """nccl-tests ``all_reduce_perf`` output -> ``{ok, busbw_gbps, wrong, message}``.

    Reads the ``# Avg bus bandwidth    : <GB/s>`` summary line and the ``#wrong`` columns of the
    result rows (out-of-place and in-place); a run with wrong results or without a summary is not ok.
    """
    text = stdout or ''
    m = re.search(r'(?m)^#\s*Avg bus bandwidth\s*:\s*([0-9.]+)', text)
    wrong = 0
    rows = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 13 and fields[0].isdigit():
            rows += 1
            for idx in (8, 12):
                if fields[idx].isdigit():
                    wrong += int(fields[idx])
    if rc in (124, 137):
        return {'ok': False, 'busbw_gbps': None, 'wrong': wrong, 'message': 'all_reduce_perf hung (timeout)'}
    if rc != 0 or m is None:
        return {'ok': False, 'busbw_gbps': None, 'wrong': wrong,
                'message': 'all_reduce_perf failed (rc=%s): %s' % (rc, text.strip()[-300:] or 'no output')}
    busbw = float(m.group(1))
    if wrong:
        return {'ok': False, 'busbw_gbps': busbw, 'wrong': wrong,
                'message': 'all_reduce_perf: %d wrong results over %d rows' % (wrong, rows)}
    return {'ok': True, 'busbw_gbps': busbw, 'wrong': 0,
            'message': 'all_reduce_perf: average bus bandwidth %.1f GB/s, no wrong results' % busbw}


def rk_p2p_gencode(caps):
    """nvcc arguments that build SASS (and PTX) for each distinct compute capability, so the program
    needs no JIT at start (``['8.9', '8.9']`` -> ``['-gencode', 'arch=compute_89,code=[sm_89,compute_89]']``)."""
    out = []
    seen = []
    for cap in caps or []:
        m = re.match(r'^(\d+)\.(\d+)$', str(cap or '').strip())
        if not m:
            raise _err('compute capability %r is not MAJOR.MINOR (nvidia-smi --query-gpu=compute_cap)' % (cap,))
        n = m.group(1) + m.group(2)
        if n not in seen:
            seen.append(n)
            out += ['-gencode', 'arch=compute_%s,code=[sm_%s,compute_%s]' % (n, n, n)]
    return out


# --------------------------------------------------------------------------------------------
# Diagnosis
# --------------------------------------------------------------------------------------------
def _link_gbps(gpus):
    """What the PCIe link between these GPUs allows one way: the narrowest of their maxima."""
    rates = []
    for g in gpus:
        gen, width = _num(g.get('pcie_gen_max')), _num(g.get('pcie_width_max'))
        if gen is None or width is None or int(gen) not in PCIE_LANE_GBPS:
            return None
        rates.append(PCIE_LANE_GBPS[int(gen)] * width)
    return round(min(rates), 3) if rates else None


def _geforce(g):
    return 'geforce' in ('%s %s' % (g.get('brand') or '', g.get('name') or '')).lower()


def _finding(cause, detail):
    row = P2P['causes'][cause]
    return {'id': cause, 'message': '%s: %s' % (row['summary'], detail) if detail else row['summary'],
            'fix': row['fix'], 'source': row['source']}


def _pair_measured(res):
    """Numbers of a parsed pair run: can_access, off/on {uni, bi, latency, mismatched}."""
    doc = (res or {}).get('doc') or {}
    pair = doc.get('pair') or {}

    def side(block):
        if not isinstance(block, dict):
            return None
        uni = block.get('uni_gbps') or {}
        lat = block.get('latency_us') or {}
        bad = block.get('mismatched_words') or {}
        vals = [v for v in (_num(uni.get('a_to_b')), _num(uni.get('b_to_a'))) if v is not None]
        lats = [v for v in (_num(lat.get('a_to_b')), _num(lat.get('b_to_a'))) if v is not None]
        return {'uni_gbps': min(vals) if vals else None, 'bi_gbps': _num(block.get('bi_gbps')),
                'latency_us': max(lats) if lats else None,
                'mismatched_words': sum(v for v in (bad.get('a_to_b'), bad.get('b_to_a')) if _num(v))}
    access = pair.get('can_access_peer') or {}
    errors = pair.get('peer_enable_error') or {}
    return {'can_access': bool(access.get('a_to_b')) and bool(access.get('b_to_a')),
            'peer_enable_error': errors.get('a_to_b') or errors.get('b_to_a'),
            'p2p_off': side(pair.get('p2p_off')), 'p2p_on': side(pair.get('p2p_on'))}


def _cuda_fix(res):
    code = ((res or {}).get('error') or {}).get('code')
    return P2P['cuda_errors'].get(code)


def _diagnose_pair(pair, gpus, res, host, config, not_run):
    a, b = gpus[pair['a']], gpus[pair['b']]
    read = pair.get('read')
    link = pair.get('link')
    expected = None if (link or '').startswith('NV') else _link_gbps([a, b])
    min_fraction = config.get('min_link_fraction', P2P['min_link_fraction'])
    problems, causes = [], {}
    measured = None
    status = 'not_run'
    if res is not None:
        status = res['status']
    if read != 'OK':
        problems.append('topo -p2p r reads %s' % (read or 'nothing'))
    elif config.get('known_bad') and status in ('not_run', 'error'):
        # 545 reports P2P where there is none (FACTS.md): an unmeasured OK cannot be trusted.
        problems.append('topo -p2p r reads OK on a driver branch known to misreport P2P')
    if status == 'hang':
        problems.append('hang')
        causes['hang'] = 'after %s s, at stage %s' % (config.get('timeout_s', '?'), res.get('stage') or 'none')
    elif status == 'error':
        problems.append('error')
        fix = _cuda_fix(res)
        causes['program_error'] = res['message'] + ('. To do: ' + fix if fix else '')
    elif status == 'ok':
        measured = _pair_measured(res)
        on = measured['p2p_on']
        if read == 'OK' and not measured['can_access']:
            problems.append('peer access refused')
            causes['peer_refused'] = 'cudaDeviceEnablePeerAccess: %s' % (measured['peer_enable_error'] or 'refused')
        if on and on['mismatched_words']:
            problems.append('corrupt')
            causes['peer_copy_corrupt'] = '%d words arrived wrong with peer access on' % on['mismatched_words']
        if on and expected and on['uni_gbps'] is not None and on['uni_gbps'] < min_fraction * expected:
            problems.append('slow')
            causes['slow'] = '%.1f GB/s one way with peer access on; the link allows %.1f GB/s (below %d%%)' % (
                float(on['uni_gbps']), float(expected), round(min_fraction * 100))
    if not problems:
        note = None
        if status == 'not_run':
            note = 'not measured: %s' % not_run
        return {'status': 'ok', 'problems': [], 'findings': [], 'expected_gbps': expected,
                'measured': measured, 'run': res, 'note': note}
    # Causes from the facts, only for pairs that are not OK.
    bad = config.get('known_bad')
    if bad:
        causes['known_bad_branch'] = bad
    iommu = (host.get('iommu') or {})
    if iommu.get('enabled'):
        pt = ' (iommu=pt on the command line)' if (iommu.get('cmdline') or {}).get('iommu') == 'pt' else ''
        causes['iommu_on'] = 'IOMMU enabled%s' % pt
    acs = host.get('acs') or {}
    enabled = acs.get('enabled_bridges') or []
    if enabled:
        on_path = pair.get('bridges')
        hit = [br for br in enabled if on_path is None or br in on_path]
        if hit:
            causes['acs_on_path'] = 'SrcValid+ on %s%s' % (
                ', '.join(hit), '' if on_path is not None else ' (the path between the GPUs is unknown)')
    if read == 'CNS' and (_geforce(a) or _geforce(b)):
        detail = '%s and %s' % (a.get('name'), b.get('name'))
        if config.get('p2p_modules'):
            detail += ('; nvidia_driver_p2p_modules is on, yet the pair reads CNS: check that the loaded '
                       'module is the P2P build (dkms status, modinfo nvidia) and that BAR1 covers VRAM')
        causes['geforce_no_p2p'] = detail
    if read == 'GNS':
        causes['gpu_not_supported'] = '%s and %s' % (a.get('name'), b.get('name'))
    if read == 'TNS' or link == 'SYS':
        causes['topology_not_supported'] = 'topo -m %s, topo -p2p r %s' % (link, read)
    narrow = []
    for g in (a, b):
        wc, wm = _num(g.get('pcie_width_current')), _num(g.get('pcie_width_max'))
        if wc is not None and wm is not None and wc < wm:
            narrow.append('%s at x%d of x%d' % (g.get('label'), wc, wm))
        elif 'slow' in causes:
            gc, gm = _num(g.get('pcie_gen_current')), _num(g.get('pcie_gen_max'))
            if gc is not None and gm is not None and gc < gm:
                narrow.append('%s at PCIe gen %d of %d' % (g.get('label'), gc, gm))
    if narrow:
        causes['pcie_link_below_max'] = '; '.join(narrow)
    small = ['%s: %s MiB of %s MiB' % (g.get('label'), g.get('bar1_total_mib'), g.get('memory_total_mib'))
             for g in (a, b) if _num(g.get('bar1_total_mib')) is not None and _num(g.get('memory_total_mib'))
             and g['bar1_total_mib'] < g['memory_total_mib']]
    if small:
        causes['bar1_below_vram'] = '; '.join(small)
    explained = [c for c in causes if c not in ('hang', 'slow', 'program_error', 'peer_copy_corrupt', 'peer_refused')]
    if not explained and 'program_error' not in causes:
        causes['unexplained'] = ', '.join(problems)
    findings = [_finding(c, causes[c]) for c in _ORDER if c in causes]
    return {'status': 'fail', 'problems': problems, 'findings': findings, 'expected_gbps': expected,
            'measured': measured, 'run': res, 'note': None}


def _diagnose_local(gpu, res, config):
    if res is None:
        return None
    out = {'gpu': gpu.get('label'), 'bus_id': gpu.get('bus_id'), 'name': gpu.get('name'),
           'status': 'ok', 'findings': [], 'local': None, 'run': res}
    if res['status'] == 'hang':
        out.update(status='fail', findings=[_finding('hang', 'local copies, at stage %s' % res.get('stage'))])
        return out
    if res['status'] == 'error':
        fix = _cuda_fix(res)
        out.update(status='fail', findings=[_finding('program_error', res['message'] + ('. To do: ' + fix if fix else ''))])
        return out
    local = (res.get('doc') or {}).get('local') or {}
    out['local'] = local
    findings = []
    if _num(local.get('mismatched_words')):
        findings.append(_finding('peer_copy_corrupt', '%d words of a local copy arrived wrong' % local['mismatched_words']))
    expected = _link_gbps([gpu])
    host_bw = [v for v in (_num(local.get('h2d_gbps')), _num(local.get('d2h_gbps'))) if v is not None]
    min_fraction = config.get('min_link_fraction', P2P['min_link_fraction'])
    if expected and host_bw and min(host_bw) < min_fraction * expected:
        detail = 'host<->GPU %.1f GB/s; PCIe gen %s x%s allows %.1f GB/s' % (
            float(min(host_bw)), gpu.get('pcie_gen_max'), gpu.get('pcie_width_max'), float(expected))
        findings.append(_finding('pcie_link_below_max', detail))
    if findings:
        out.update(status='fail', findings=findings)
    return out


def rk_p2p_diagnose(p2p, results=None, host=None, config=None):
    """Every GPU pair (and every GPU on its own) with its status and, when not OK, its findings.

    :param p2p: the ``nvidia_p2p`` facts (module ``nvidia_p2p_facts``).
    :param results: ``{'pairs': {'0-1': rk_p2p_result(...)}, 'local': {'0': rk_p2p_result(...)},
        'not_run': 'why nothing was measured' or None, 'timeout_s': 60}``; None or empty: nothing
        measured (check mode, no nvcc): the matrices alone decide.
    :param host: ``rigkeeper_host`` facts (IOMMU, ACS).
    :param config: ``known_bad`` (the preflight ``known_bad_driver`` message, or None),
        ``p2p_modules`` (bool: nvidia_driver_p2p_modules), ``min_link_fraction`` (0.6).
    :returns: ``{ok, present, error, pairs: [...], local: [...], summary}``; each pair: ``pair``
        (``GPU0-GPU1``), ``a``, ``b``, ``bus_ids``, ``link``, ``read``, ``write``, ``nvlink``,
        ``atomics``, ``status`` (``ok`` | ``fail``), ``problems``, ``findings`` (``id``, ``message``,
        ``fix``, ``source``), ``expected_gbps``, ``measured``, ``note``.
    """
    p2p = _dict(p2p, 'p2p')
    results = _dict(results, 'results')
    host = _dict(host, 'host')
    config = _dict(config, 'config')
    unknown = sorted(set(config) - {'known_bad', 'p2p_modules', 'min_link_fraction', 'timeout_s'})
    if unknown:
        raise _err('rk_p2p_diagnose: unknown config keys %s' % unknown)
    if 'timeout_s' not in config and results.get('timeout_s') is not None:
        config = dict(config, timeout_s=results.get('timeout_s'))
    if not p2p.get('present'):
        return {'ok': False, 'present': False, 'error': p2p.get('error') or 'no GPU facts', 'pairs': [],
                'local': [], 'summary': 'P2P not checked: %s' % (p2p.get('error') or 'no GPU facts')}
    gpus = p2p.get('gpus') or []
    not_run = results.get('not_run')
    if not results:
        not_run = 'nothing measured (check mode reads the matrices only)'
    pair_results = _dict(results.get('pairs'), 'results.pairs')
    local_results = _dict(results.get('local'), 'results.local')
    pairs = []
    for pair in p2p.get('pairs') or []:
        key = '%d-%d' % (pair['a'], pair['b'])
        verdict = _diagnose_pair(pair, gpus, pair_results.get(key), host, config, not_run or 'not run')
        entry = dict((k, pair.get(k)) for k in ('a', 'b', 'bus_ids', 'link', 'read', 'write', 'nvlink', 'atomics',
                                                'bridges'))
        entry['pair'] = '-'.join(pair['labels'])
        entry.update(verdict)
        pairs.append(entry)
    local = [d for d in (_diagnose_local(g, local_results.get(str(g.get('index'))), config) for g in gpus) if d]
    failed = [p['pair'] for p in pairs if p['status'] == 'fail'] + [d['gpu'] for d in local if d['status'] == 'fail']
    if not pairs and not local:
        summary = 'one GPU, nothing measured: %s' % (not_run or 'not run')
    elif failed:
        summary = 'P2P not OK: %s' % ', '.join(failed)
    else:
        summary = 'P2P OK: %s' % (', '.join(p['pair'] for p in pairs) or 'single GPU, local copies OK')
    return {'ok': not failed, 'present': True, 'error': None, 'pairs': pairs, 'local': local, 'summary': summary}


# --------------------------------------------------------------------------------------------
# Presentation: the table and the report cases
# --------------------------------------------------------------------------------------------
def _bw(value):
    return '-' if value is None else '%.1f' % value


def rk_p2p_table(diagnosis, title=None, extra=None, text=False):
    """The diagnosis as lines a person reads: one row per pair (link, topo read, peer access, one
    way and both ways off/on, latency off/on, data check, result) and the fixes below; ``extra``
    lines at the end. ``text=True`` joins them into one string (the play output then prints it as
    a block, one row a line)."""
    d = _dict(diagnosis, 'diagnosis')
    lines = _table_lines(d, title)
    lines += [str(x) for x in (extra or []) if x]
    return '\n'.join(lines) if text else lines


def _table_lines(d, title):
    lines = [title] if title else []
    if not d.get('present'):
        return lines + [d.get('summary') or 'P2P not checked']
    if d.get('pairs'):
        lines.append('%-11s %-5s %-4s %-5s %-15s %-15s %-15s %-5s %s' % (
            'pair', 'link', 'read', 'peer', 'uni off/on GB/s', 'bi off/on GB/s', 'lat off/on us', 'data', 'result'))
    for p in d.get('pairs') or []:
        m = p.get('measured') or {}
        off, on = m.get('p2p_off') or {}, m.get('p2p_on') or {}
        peer = '-' if not m else ('yes' if m.get('can_access') else 'no')
        data = '-'
        if on:
            data = 'BAD' if on.get('mismatched_words') else 'ok'
        run = p.get('run') or {}
        result = 'OK' if p['status'] == 'ok' else 'FAIL ' + ', '.join(f['id'] for f in p['findings'])
        if run.get('status') == 'hang':
            peer = 'HANG'
        lines.append('%-11s %-5s %-4s %-5s %-15s %-15s %-15s %-5s %s' % (
            p['pair'], p.get('link') or '-', p.get('read') or '-', peer,
            '%s / %s' % (_bw(off.get('uni_gbps')), _bw(on.get('uni_gbps'))),
            '%s / %s' % (_bw(off.get('bi_gbps')), _bw(on.get('bi_gbps'))),
            '%s / %s' % (_bw(off.get('latency_us')), _bw(on.get('latency_us'))), data, result))
        if p.get('note'):
            lines.append('  note: %s' % p['note'])
    for loc in d.get('local') or []:
        l = loc.get('local') or {}
        lines.append('%s local: device-to-device %s GB/s copied (%s GB/s of memory traffic), host->GPU %s, '
                     'GPU->host %s GB/s%s' % (
                         loc['gpu'], _bw(l.get('d2d_copy_gbps')), _bw(l.get('d2d_memory_gbps')),
                         _bw(l.get('h2d_gbps')), _bw(l.get('d2h_gbps')),
                         '' if loc['status'] == 'ok' else ' FAIL ' + ', '.join(f['id'] for f in loc['findings'])))
    fixes = []
    for item in (d.get('pairs') or []) + (d.get('local') or []):
        for f in item.get('findings') or []:
            line = '  %s %s: %s. Fix: %s' % (item.get('pair') or item.get('gpu'), f['id'], f['message'], f['fix'])
            if line not in fixes:
                fixes.append(line)
    if fixes:
        lines.append('findings:')
        lines += fixes
    lines.append(d.get('summary') or '')
    return lines


def rk_p2p_cases(diagnosis):
    """Report cases for the rigkeeper_report callback: ``[{check, ok, message}]``, one per pair
    (``p2p GPU0-GPU1``) and one per GPU measured on its own (``p2p GPU0 local``); a host without
    GPU facts gets one failing ``p2p`` case."""
    d = _dict(diagnosis, 'diagnosis')
    if not d.get('present'):
        return [{'check': 'p2p', 'ok': False, 'message': d.get('summary') or 'P2P not checked'}]
    cases = []
    for p in d.get('pairs') or []:
        if p['status'] == 'ok':
            m = (p.get('measured') or {}).get('p2p_on') or {}
            extra = ', %s GB/s one way with peer access' % _bw(m.get('uni_gbps')) if m else ''
            msg = 'OK (%s, read %s%s)' % (p.get('link'), p.get('read'), extra)
            if p.get('note'):
                msg += '; ' + p['note']
        else:
            msg = ' | '.join('%s: %s. Fix: %s' % (f['id'], f['message'], f['fix']) for f in p['findings'])
        cases.append({'check': 'p2p %s' % p['pair'], 'ok': p['status'] == 'ok', 'message': msg})
    for loc in d.get('local') or []:
        l = loc.get('local') or {}
        msg = ('device-to-device %s GB/s, host<->GPU %s/%s GB/s' % (
            _bw(l.get('d2d_copy_gbps')), _bw(l.get('h2d_gbps')), _bw(l.get('d2h_gbps')))
            if loc['status'] == 'ok' else
            ' | '.join('%s: %s. Fix: %s' % (f['id'], f['message'], f['fix']) for f in loc['findings']))
        cases.append({'check': 'p2p %s local' % loc['gpu'], 'ok': loc['status'] == 'ok', 'message': msg})
    return cases


# --------------------------------------------------------------------------------------------
# The P2P kernel modules (roles/nvidia_driver, nvidia_driver_p2p_modules)
# --------------------------------------------------------------------------------------------
def _version_mk(text):
    m = re.search(r'(?m)^\s*NVIDIA_VERSION\s*=\s*(\S+)\s*$', text or '')
    return m.group(1) if m else None


def _ls_remote_has(text, ref):
    for line in (text or '').splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in ('refs/heads/%s' % ref, 'refs/tags/%s' % ref, 'refs/tags/%s^{}' % ref):
            return True
    return False


def rk_p2p_modules_plan(version, flavor=None, modules=None, host=None, gpus=None, source=None):
    """Whether the P2P kernel modules may be built, decided before anything on the host changes.

    :param version: the exact driver version to build for (``580.95.05``): nvidia_driver_version's
        upstream part, else the installed driver on the branch; None when neither is known.
    :param flavor: the driver decision's module flavour (``open`` | ``proprietary``).
    :param modules: the module plan (``dkms`` | ``precompiled``).
    :param host: ``rigkeeper_host`` facts (``iommu.enabled``, ``secure_boot``, ``mok_enrolled``).
    :param gpus: ``nvidia_p2p.gpus`` (``bar1_total_mib``, ``memory_total_mib``), or None/[] when
        nvidia-smi does not answer.
    :param source: ``{path, version_mk, url, ref, ls_remote, ls_remote_error}``: a local tree
        (``path`` and its version.mk text, None when unreadable) or a git URL and ref (the output of
        ``git ls-remote <url> <ref>``, or the error when it could not run).
    :returns: ``{ok, version, ref, kind: path|git, dkms_name, refusals: [{id, message}]}``; every
        precondition that does not hold is listed, each with what to do.
    """
    host = _dict(host, 'host')
    source = _dict(source, 'source')
    refusals = []

    def refuse(rid, message):
        refusals.append({'id': rid, 'message': message})

    if flavor != 'open':
        refuse('flavor', 'the P2P modules are a fork of NVIDIA\'s open kernel modules, and this driver uses the '
               '%s flavour: set nvidia_driver_flavor: open (Turing and newer GPUs)' % (flavor or 'unknown'))
    if modules != 'dkms':
        refuse('modules', 'the P2P modules are built through DKMS, and this host gets %s modules: set '
               'nvidia_driver_modules: dkms' % (modules or 'unknown'))
    ref = source.get('ref') or ('%s-p2p' % version if version else None)
    kind = 'path' if source.get('path') else 'git'
    if not version:
        refuse('version', 'no exact driver version to build the P2P modules for: set nvidia_driver_version '
               '(the fork exists only for some versions: %s)' % P2P['modules']['known_refs'])
    elif kind == 'path':
        found = _version_mk(source.get('version_mk'))
        if found is None:
            refuse('fork_version', 'no P2P module source at %s (no version.mk with NVIDIA_VERSION): give '
                   'nvidia_driver_p2p_modules_source_path a checkout of the fork at %s' % (source['path'], ref))
        elif found != version:
            refuse('fork_version', 'the P2P module source at %s is %s, the driver is %s: the modules must be '
                   'exactly the driver\'s version ("Driver/library version mismatch" otherwise). Check out '
                   'the fork at %s there, or set nvidia_driver_version: %s'
                   % (source['path'], found, version, ref, found))
    else:
        if source.get('ls_remote') is None:
            refuse('fork_version', 'could not list the refs of %s (%s): give a reachable '
                   'nvidia_driver_p2p_modules_source_url, or nvidia_driver_p2p_modules_source_path for an '
                   'air-gapped host' % (source.get('url'), source.get('ls_remote_error') or 'git ls-remote failed'))
        elif not _ls_remote_has(source.get('ls_remote'), ref):
            refuse('fork_version', 'no ref %s at %s for driver %s: set nvidia_driver_version to a version the fork '
                   'has (%s), or point nvidia_driver_p2p_modules_source_url at a fork that has it '
                   '(nvidia_driver_p2p_modules_ref)' % (ref, source.get('url'), version, P2P['modules']['known_refs']))
    iommu = host.get('iommu') or {}
    if iommu.get('enabled'):
        pt = ' (iommu=pt keeps it on)' if (iommu.get('cmdline') or {}).get('iommu') == 'pt' else ''
        refuse('iommu', 'the IOMMU is on%s: the P2P modules need it off (%s): set kernel_params_iommu: off and '
               'reboot first, or turn AMD-Vi / VT-d off in the BIOS' % (pt, _SRC_IOMMU))
    known = [g for g in (gpus or []) if _num(g.get('bar1_total_mib')) is not None and _num(g.get('memory_total_mib'))]
    if not gpus or len(known) < len(gpus):
        refuse('bar1', 'BAR1 size unknown (nvidia-smi does not report it: is the driver loaded?): run the role '
               'once with nvidia_driver_p2p_modules: false and reboot, so the GPUs can be read, then enable it')
    else:
        small = ['%s %s MiB < %s MiB' % (g.get('label') or g.get('bus_id'), g['bar1_total_mib'], g['memory_total_mib'])
                 for g in known if g['bar1_total_mib'] < g['memory_total_mib']]
        if small:
            refuse('bar1', 'BAR1 is smaller than VRAM (%s): the P2P modules map all of VRAM into BAR1 (%s). BIOS: '
                   'Above 4G Decoding and Re-Size BAR Support on (CSM off), then reboot' % ('; '.join(small), _SRC_BAR))
    if host.get('secure_boot') is True and host.get('mok_enrolled') is not True:
        refuse('secure_boot', 'Secure Boot is on and no enrolled MOK is known: the kernel would refuse the unsigned '
               'P2P modules at boot and the host would come up without a driver. Enrol a MOK (mokutil --import '
               '/var/lib/shim-signed/mok/MOK.der, confirm at the console on the next boot) or turn Secure Boot off')
    return {'ok': not refusals, 'version': version, 'ref': ref, 'kind': kind, 'dkms_name': 'nvidia-p2p',
            'refusals': refusals}


def rk_dkms_status(text):
    """``dkms status`` lines -> ``[{module, version, kernel, arch, state}]`` (dkms 3: ``nvidia/580.95.05,
    6.8.0-51-generic, x86_64: installed``; dkms 2's ``nvidia, 580.95.05, ...`` too; ``added`` lines
    have no kernel). Warnings and other lines are left out."""
    out = []
    for line in (text or '').splitlines():
        m = re.match(r'^\s*([^\s,/:]+)[/,]\s*([^\s,:]+)(?:,\s*([^\s,:]+),\s*([^\s,:]+))?:\s*(\w+)', line)
        if m:
            out.append({'module': m.group(1), 'version': m.group(2), 'kernel': m.group(3), 'arch': m.group(4),
                        'state': m.group(5)})
    return out


def rk_p2p_record(diagnosis, driver=None, when=None):
    """The host's record of a P2P check (the self-audit exports it as rigkeeper_p2p_pair_ok): per
    pair its GPU indexes, bus ids and status, and the time (unix seconds) and driver it ran with."""
    diagnosis = diagnosis or {}
    pairs = [dict((k, p.get(k)) for k in ('a', 'b', 'pair', 'bus_ids', 'status')) for p in diagnosis.get('pairs') or []]
    return {'time': int(float(when)) if when is not None else None, 'driver': driver,
            'summary': diagnosis.get('summary'), 'pairs': pairs}


class FilterModule(object):
    """rigkeeper P2P filters."""

    def filters(self):
        return {
            'rk_p2p_record': rk_p2p_record,
            'rk_p2p_result': rk_p2p_result,
            'rk_p2p_collect': rk_p2p_collect,
            'rk_p2p_nccl': rk_p2p_nccl,
            'rk_p2p_diagnose': rk_p2p_diagnose,
            'rk_p2p_table': rk_p2p_table,
            'rk_p2p_cases': rk_p2p_cases,
            'rk_p2p_gencode': rk_p2p_gencode,
            'rk_p2p_modules_plan': rk_p2p_modules_plan,
            'rk_dkms_status': rk_dkms_status,
        }
