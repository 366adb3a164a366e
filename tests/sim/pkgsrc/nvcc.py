#!/usr/bin/env python3
"""rigkeeper simulator: nvcc of one CUDA toolkit (payload of cuda-nvcc-<X>-<Y>).

The rig has no GPU and no compiler toolchain, so nothing is compiled. This stand-in checks a
command line the way nvcc does (its options, the GPU architectures this release can build for, an
input file that exists) and writes an executable: for rigkeeper's own program
(roles/p2p_check/files/p2p_bench.cu, recognised by its program name) a stand-in that behaves like
the real binary on the simulated GPUs (nvsim.py's bench_main, reached through the driver's
libcuda.py as a real program reaches libcuda.so.1); for any other source a program that says it
cannot run here. The build (runtime version, the architectures it carries code for, the source's
hash) is baked into what it writes, as a real binary carries its cubins and PTX.

VERSION_TEXT and RELEASE are baked in by tests/sim/repo/build_repo.py. Texts marked UNVERIFIED had
no source.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys

VERSION_TEXT = None
RELEASE = None

# What each release can build for, offline (sm_XY / compute_XY), and its default when no target is
# named. 11.8 keeps Kepler's sm_35/37; 12.x starts at Maxwell (sm_50) and 12.8 adds Blackwell;
# 13.0 drops Maxwell, Pascal and Volta (CUDA 13.0 release notes; FACTS.md: 580 is those GPUs' last
# driver branch). Defaults: sm_52 through 12.x; sm_75 in 13.0 (a kernel nvcc 13.0 built with no
# target named carried sm_75 code on an H200: .library/device/KINDS.md, 2026-10-28).
ARCHS = {
    "11.8": {35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90},
    "12.2": {50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90},
    "12.4": {50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90},
    "12.8": {50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 120},
    "13.0": {75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121},
}
DEFAULT_ARCH = {"11.8": 52, "12.2": 52, "12.4": 52, "12.8": 52, "13.0": 75}
BENCH_MARKER = "rigkeeper-p2p-bench"

# Options that take a value (as the next word or after '='), and flags, that this stand-in accepts.
VALUE_OPTIONS = {"-o", "--output-file", "-gencode", "--generate-code", "-arch", "--gpu-architecture",
                 "-code", "--gpu-code", "-std", "--std", "-Xcompiler", "--compiler-options", "-ccbin",
                 "--compiler-bindir", "-I", "-L", "-l", "-D"}
FLAGS = {"-O0", "-O1", "-O2", "-O3", "-O", "-lineinfo", "-g", "-G", "-w", "--use_fast_math", "-c"}


class Fatal(Exception):
    pass


def fatal(msg: str) -> Fatal:
    # nvcc's own errors: "nvcc fatal   : <message>" (three spaces, as in its real output).
    return Fatal(f"nvcc fatal   : {msg}")


def _arch(token: str) -> int:
    m = re.fullmatch(r"(?:sm|compute|lto)_(\d+)[af]?", token.strip())
    if not m:
        # Real text for a malformed value: "nvcc fatal   : Unsupported gpu architecture '<value>'".
        raise fatal(f"Unsupported gpu architecture '{token.strip()}'")
    return int(m.group(1))


def parse(argv: list[str]) -> dict:
    opts = {"output": "a.out", "inputs": [], "gencode": [], "arch": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in FLAGS or re.fullmatch(r"-O[0-3]", a) or a.startswith("-std=") or re.match(r"-[ILlD].", a):
            i += 1
            continue
        name, eq, value = a.partition("=")
        if name in VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise fatal(f"Option '{name}' requires a value")  # UNVERIFIED wording
                value = argv[i + 1]
                i += 1
            if name in ("-o", "--output-file"):
                opts["output"] = value
            elif name in ("-gencode", "--generate-code"):
                opts["gencode"].append(value)
            elif name in ("-arch", "--gpu-architecture"):
                opts["arch"] = value
            i += 1
            continue
        if a.startswith("-"):
            raise fatal(f"Unknown option '{a}'")
        opts["inputs"].append(a)
        i += 1
    return opts


def targets(opts: dict) -> tuple[list[int], list[int]]:
    """(SASS architectures, PTX architectures) the binary carries."""
    sass, ptx = set(), set()
    for spec in opts["gencode"]:
        fields = dict(part.split("=", 1) for part in re.split(r",(?![^\[]*\])", spec) if "=" in part)
        if "arch" not in fields:
            raise fatal(f"Unsupported gpu architecture '{spec}'")
        virtual = _arch(fields["arch"])
        for code in fields.get("code", f"[sm_{virtual}]").strip("[]").split(","):
            (ptx if code.strip().startswith("compute_") else sass).add(_arch(code))
    if opts["arch"]:
        n = _arch(opts["arch"])
        sass.add(n)
        ptx.add(n)
    if not sass and not ptx:
        d = DEFAULT_ARCH.get(RELEASE, 52)
        sass, ptx = {d}, {d}
    supported = ARCHS.get(RELEASE, set())
    for n in sorted(sass | ptx):
        if n not in supported:
            raise fatal(f"Unsupported gpu architecture 'compute_{n}'")
    return sorted(sass), sorted(ptx)


def runtime_version() -> int:
    major, minor = (RELEASE or "12.8").split(".")
    return int(major) * 1000 + int(minor) * 10


STANDIN = '''#!/usr/bin/python3
# rigkeeper simulator: {source} built by nvcc {release}; a stand-in for the binary (see nvcc.py).
import json
import os
import sys

sys.dont_write_bytecode = True
BUILD = {build!r}
sys.path.insert(0, os.environ.get("RIGKEEPER_SIM_ROOT", "").rstrip("/") + "/usr/lib/rigkeeper-sim")
try:
    import libcuda
except ImportError:
    # No libcuda.so.1 (no driver's userspace): the runtime reports driver version 0 and the first
    # call that needs the driver fails with error 35.
    head = {{"program": "rigkeeper-p2p-bench", "schema": 1}}
    if "--version" in sys.argv[1:]:
        print(json.dumps(dict(head, cuda_runtime_built=BUILD["runtime"])))
        sys.exit(0)
    sys.stderr.write("stage: devices\\n")
    print(json.dumps(dict(head, cuda={{"runtime": BUILD["runtime"], "driver": 0}}, devices=[],
                          error={{"call": "cudaGetDeviceCount(&count)", "code": 35,
                                 "name": "cudaErrorInsufficientDriver",
                                 "message": "CUDA driver version is insufficient for CUDA runtime version"}})))
    sys.exit(2)
sys.exit(libcuda.bench_main(sys.argv[1:], BUILD))
'''

OTHER = '''#!/bin/sh
# rigkeeper simulator: {source} built by nvcc {release}
echo "rigkeeper simulator: the fake nvcc builds runnable stand-ins only for rigkeeper's p2p_bench.cu" >&2
exit 1
'''


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        sys.stdout.write(VERSION_TEXT or "")
        return 0
    try:
        opts = parse(argv)
        if not opts["inputs"]:
            raise fatal("No input files specified; use option --help for more information")
        src = opts["inputs"][0]
        if not os.path.isfile(src):
            raise fatal(f"Could not open input file '{src}'")  # UNVERIFIED wording
        with open(src, "rb") as f:
            body = f.read()
        sass, ptx = targets(opts)
    except Fatal as e:
        print(str(e))
        return 1
    text = body.decode("utf-8", "replace")
    if not re.search(r"\bint\s+main\s*\(", text):
        # The host link fails (ld's text); nvcc's exit status for it is UNVERIFIED.
        print("/usr/bin/ld: /usr/lib/gcc/x86_64-linux-gnu/12/../../../x86_64-linux-gnu/Scrt1.o: in function `_start':\n"
              "(.text+0x17): undefined reference to `main'\ncollect2: error: ld returned 1 exit status")
        return 255
    build = {"runtime": runtime_version(), "release": RELEASE, "sass": sass, "ptx": ptx,
             "source": os.path.basename(src), "source_sha256": hashlib.sha256(body).hexdigest()}
    template = STANDIN if BENCH_MARKER in text else OTHER
    out = opts["output"]
    tmp = out + ".nvcc-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(template.format(source=build["source"], release=RELEASE, build=build))
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
