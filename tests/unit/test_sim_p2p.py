"""The simulator's P2P: the fake nvcc (tests/sim/pkgsrc/nvcc.py), the program it builds (nvsim.py's
bench_main behind the driver's libcuda.py), and the simulated kernel's side (simkernel.py: the IOMMU
at boot, the dkms command, a P2P module that loads at boot). Failure modes first: a program without
a driver, a driver of another version, code for another GPU, peer access refused, a hang, zeroed
copies under the IOMMU, DKMS refusing to replace a module of the same version.

Everything runs as subprocesses on a tree under tmp_path (RIGKEEPER_SIM_ROOT)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKGSRC = REPO / "tests/sim/pkgsrc"
CONFIGS = REPO / "tests/sim/configs"
SIMKERNEL = REPO / "tests/sim/image/rootfs/usr/lib/rigkeeper-sim/simkernel.py"
SOURCE = REPO / "roles/p2p_check/files/p2p_bench.cu"
sys.path.insert(0, str(REPO / "tests/sim/repo"))
import build_repo  # noqa: E402

V580 = "580.95.05"
K51 = "6.8.0-51-generic"


class Rig:
    """A simulated host under tmp_path: a preset, the driver's userspace (libcuda.py and the
    versioned libraries of libnvidia-compute) and a loaded module, a toolkit's nvcc."""

    def __init__(self, root: Path):
        self.root = root
        self.preset("2x4090.json")
        self.userspace(V580)
        self.load(V580)

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def preset(self, name: str) -> None:
        self.write("etc/rigkeeper-sim/gpus.json", (CONFIGS / name).read_text())

    def userspace(self, version: str | None) -> None:
        lib = self.root / "usr/lib/x86_64-linux-gnu"
        shutil.rmtree(lib, ignore_errors=True)
        (self.root / "usr/lib/rigkeeper-sim/libcuda.py").unlink(missing_ok=True)
        if version:
            (self.root / "usr/lib/rigkeeper-sim").mkdir(parents=True, exist_ok=True)
            self.write(f"usr/lib/x86_64-linux-gnu/libcuda.so.{version}", "")
            self.write(f"usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{version}", "")
            shutil.copy(PKGSRC / "nvsim.py", self.root / "usr/lib/rigkeeper-sim/libcuda.py")

    def load(self, version: str | None, p2p: bool = False) -> None:
        mod = self.root / "run/rigkeeper-sim/sys/module/nvidia"
        shutil.rmtree(mod, ignore_errors=True)
        if version:
            self.write("run/rigkeeper-sim/sys/module/nvidia/version", version + "\n")
            self.write("run/rigkeeper-sim/sys/module/nvidia/p2p", ("1" if p2p else "0") + "\n")

    def iommu(self, unit: str | None = "ivhd0") -> None:
        d = self.root / "run/rigkeeper-sim/sys/class/iommu"
        shutil.rmtree(d, ignore_errors=True)
        if unit:
            (d / unit).mkdir(parents=True)

    def nvcc(self, release: str = "12.8") -> Path:
        """Install the fake nvcc of a toolkit, as cuda-nvcc-X-Y does."""
        suffix = release.replace(".", "-")
        text = f"Cuda compilation tools, release {release}\n"
        path = self.write(f"usr/local/cuda-{release}/bin/nvcc", build_repo.nvcc_script((text, release)))
        path.chmod(0o755)
        assert suffix
        return path

    def env(self) -> dict:
        return dict(os.environ, RIGKEEPER_SIM_ROOT=str(self.root))

    def build(self, *args: str, release: str = "12.8", source: Path = SOURCE) -> subprocess.CompletedProcess:
        nvcc = self.nvcc(release)
        return subprocess.run([sys.executable, str(nvcc), *args, "-o", str(self.root / "p2p_bench"), str(source)],
                              capture_output=True, text=True, env=self.env(), timeout=30)

    def bench(self, *args: str, timeout: float = 20) -> tuple[int, dict | None, str]:
        r = subprocess.run([sys.executable, str(self.root / "p2p_bench"), *args], capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        doc = json.loads(r.stdout) if r.stdout.strip() else None
        return r.returncode, doc, r.stderr

    def kernel(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SIMKERNEL), *args], capture_output=True, text=True,
                              env=self.env(), timeout=30)


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path / "root")


SM89 = ("-gencode", "arch=compute_89,code=[sm_89,compute_89]")


# --------------------------------------------------------------------------------------------
# The fake nvcc
# --------------------------------------------------------------------------------------------
def test_nvcc_version_text_is_the_packages(rig):
    nvcc = rig.nvcc("13.0")
    out = subprocess.run([sys.executable, str(nvcc), "--version"], capture_output=True, text=True).stdout
    assert out == "Cuda compilation tools, release 13.0\n"


@pytest.mark.parametrize("release,args,message", [
    ("13.0", ("-arch=sm_60",), "nvcc fatal   : Unsupported gpu architecture 'compute_60'"),   # CUDA 13: no Pascal
    ("12.8", ("-gencode", "arch=compute_35,code=sm_35"), "nvcc fatal   : Unsupported gpu architecture 'compute_35'"),
    ("12.8", ("--frobnicate",), "nvcc fatal   : Unknown option '--frobnicate'"),
])
def test_nvcc_refuses_what_the_release_cannot_build(rig, release, args, message):
    r = rig.build(*args, release=release)
    assert (r.returncode, r.stdout.strip()) == (1, message)
    assert not (rig.root / "p2p_bench").exists()


def test_nvcc_without_input_and_with_a_missing_one(rig):
    nvcc = rig.nvcc()
    r = subprocess.run([sys.executable, str(nvcc), "-O2"], capture_output=True, text=True)
    assert r.stdout.strip() == "nvcc fatal   : No input files specified; use option --help for more information"
    r = rig.build(source=rig.root / "missing.cu")
    assert r.returncode == 1 and "Could not open input file" in r.stdout


def test_nvcc_links_nothing_without_main(rig):
    src = rig.write("nomain.cu", "__global__ void k() {}\n")
    r = rig.build(source=src)
    assert r.returncode != 0 and "undefined reference to `main'" in r.stdout


def test_nvcc_builds_a_standin_that_records_the_build(rig):
    assert rig.build("-O2", "-std=c++17", *SM89).returncode == 0
    text = (rig.root / "p2p_bench").read_text()
    assert "'sass': [89], 'ptx': [89]" in text and "'runtime': 12080" in text
    assert os.access(rig.root / "p2p_bench", os.X_OK)
    rc, doc, _ = rig.bench("--version")
    assert (rc, doc) == (0, {"program": "rigkeeper-p2p-bench", "schema": 1, "cuda_runtime_built": 12080})


def test_a_foreign_source_builds_but_does_not_run(rig):
    src = rig.write("other.cu", "int main() { return 0; }\n")
    assert rig.build(source=src).returncode == 0
    r = subprocess.run([str(rig.root / "p2p_bench")], capture_output=True, text=True)
    assert r.returncode == 1 and "only for rigkeeper's p2p_bench.cu" in r.stderr


def test_nvcc_13_defaults_to_sm75(rig):
    assert rig.build(release="13.0").returncode == 0
    assert "'sass': [75], 'ptx': [75]" in (rig.root / "p2p_bench").read_text()


# --------------------------------------------------------------------------------------------
# The program on the simulated GPUs: failure modes first
# --------------------------------------------------------------------------------------------
def error_of(rig, *args):
    rc, doc, _ = rig.bench(*args)
    assert rc == 2, doc
    return doc["error"]["call"], doc["error"]["code"], doc["error"]["message"]


def test_driver_installed_but_not_loaded(rig):
    """Compiles without a loaded driver, then fails with the runtime's text (no reboot yet)."""
    rig.load(None)
    assert rig.build(*SM89).returncode == 0
    assert error_of(rig, "--pair", "0", "1") == ("cudaGetDeviceCount(&count)", 100, "no CUDA-capable device is detected")


def test_no_driver_userspace(rig):
    rig.userspace(None)
    rig.load(None)
    assert rig.build(*SM89).returncode == 0
    assert error_of(rig, "--list") == ("cudaGetDeviceCount(&count)", 35,
                                       "CUDA driver version is insufficient for CUDA runtime version")


def test_module_and_libraries_of_different_versions(rig):
    rig.load("580.82.07")
    rig.build(*SM89)
    assert error_of(rig, "--list")[1:] == (803, "system has unsupported display driver / cuda driver combination")


def test_cuda13_program_on_a_cuda12_driver(rig):
    rig.userspace("550.163.01")
    rig.load("550.163.01")
    rig.build(*SM89, release="13.0")
    assert error_of(rig, "--device", "0")[1] == 35


def test_ptx_newer_than_the_driver_needs_jit_and_fails(rig):
    """12.8's PTX for compute_80 on an sm_89 GPU with a 12.2 driver (535): the JIT refuses it."""
    rig.userspace("535.261.03")
    rig.load("535.261.03")
    rig.build("-gencode", "arch=compute_80,code=[sm_80,compute_80]", release="12.8")
    assert error_of(rig, "--device", "0") == ("cudaGetLastError()", 222,
                                              "the provided PTX was compiled with an unsupported toolchain.")


def test_no_code_for_the_gpu(rig):
    rig.build("-gencode", "arch=compute_90,code=sm_90")
    assert error_of(rig, "--pair", "0", "1")[1:] == (209, "no kernel image is available for execution on the device")


def test_stock_4090_pair_peer_access_refused(rig):
    rig.build(*SM89)
    rc, doc, stderr = rig.bench("--pair", "0", "1")
    pair = doc["pair"]
    assert rc == 0 and doc["error"] is None
    assert pair["can_access_peer"] == {"a_to_b": False, "b_to_a": False}
    assert pair["peer_enable_error"]["a_to_b"] == "peer access is not supported between these two devices"
    assert pair["p2p_on"] is None and pair["p2p_off"]["uni_gbps"]["a_to_b"] > 0
    assert stderr.splitlines()[-1] == "stage: enable_peer"


def test_p2p_modules_with_large_bar(rig):
    rig.preset("2x4090-rebar.json")
    rig.load(V580, p2p=True)
    rig.build(*SM89)
    _rc, doc, _ = rig.bench("--pair", "0", "1")
    pair = doc["pair"]
    assert pair["can_access_peer"]["a_to_b"] is True and pair["peer_enable_error"]["a_to_b"] is None
    on, off = pair["p2p_on"], pair["p2p_off"]
    assert on["uni_gbps"]["a_to_b"] > off["uni_gbps"]["a_to_b"] and on["bi_gbps"] > 1.9 * on["uni_gbps"]["a_to_b"]
    assert on["latency_us"]["a_to_b"] < off["latency_us"]["a_to_b"]
    assert on["mismatched_words"] == {"a_to_b": 0, "b_to_a": 0}
    # About the tinygrad README's 4090 figures: ~24 GB/s one way, ~50 GB/s both ways.
    assert 20 < on["uni_gbps"]["a_to_b"] < 30 and 40 < on["bi_gbps"] < 55


def test_iommu_zeroes_peer_copies_and_logs_faults(rig):
    rig.preset("2x3090-iommu.json")
    rig.iommu("ivhd0")
    rig.build("-gencode", "arch=compute_86,code=[sm_86,compute_86]")
    _rc, doc, _ = rig.bench("--pair", "0", "1")
    on = doc["pair"]["p2p_on"]
    assert on["mismatched_words"]["a_to_b"] == 64 * 1024 * 1024 // 4
    assert doc["pair"]["p2p_off"]["mismatched_words"]["a_to_b"] == 0
    dmesg = (rig.root / "run/rigkeeper-sim/dmesg").read_text()
    assert "AMD-Vi: Event logged [IO_PAGE_FAULT device=01:00.0" in dmesg
    rig.iommu(None)  # amd_iommu=off: the copies arrive intact
    _rc, doc, _ = rig.bench("--pair", "0", "1")
    assert doc["pair"]["p2p_on"]["mismatched_words"]["a_to_b"] == 0


def test_545_hang_never_finishes(rig):
    rig.preset("2x4090-hang.json")
    rig.userspace("545.29.06")
    rig.load("545.29.06")
    rig.build(*SM89)
    r = subprocess.run(["timeout", "--kill-after=1", "2", str(rig.root / "p2p_bench"), "--pair", "0", "1"],
                       capture_output=True, text=True, env=rig.env(), timeout=20)
    assert r.returncode == 124 and r.stdout == ""
    assert r.stderr.splitlines()[-1] == "stage: p2p_on_uni"
    rig.userspace(V580)  # the same cards on 580: stock CNS, no hang
    rig.load(V580)
    rc, doc, _ = rig.bench("--pair", "0", "1")
    assert rc == 0 and doc["pair"]["can_access_peer"]["a_to_b"] is False


def test_local_copies_follow_the_gpu(rig):
    rig.preset("degraded-x4.json")
    rig.build(*SM89)
    _rc, full, _ = rig.bench("--device", "0")
    _rc, narrow, _ = rig.bench("--device", "1")
    assert narrow["local"]["h2d_gbps"] == pytest.approx(full["local"]["h2d_gbps"] / 4, rel=0.01)
    assert full["local"]["d2d_memory_gbps"] == pytest.approx(2 * full["local"]["d2d_copy_gbps"])


def test_bad_arguments(rig):
    rig.build(*SM89)
    assert rig.bench("--pair", "0")[0] == 64
    rc, doc, _ = rig.bench("--pair", "0", "7")
    assert rc == 64 and doc["error"]["name"] == "badDevice"


# --------------------------------------------------------------------------------------------
# The kernel's side: the IOMMU at boot, the dkms command, a P2P module that loads at boot
# --------------------------------------------------------------------------------------------
class Host(Rig):
    def __init__(self, root: Path, preset: str = "2x4090-rebar.json", **platform):
        self.root = root
        cfg = json.loads((CONFIGS / preset).read_text())
        cfg["platform"] = dict(cfg.get("platform") or {}, nouveau=False, **platform)
        self.write("etc/rigkeeper-sim/gpus.json", json.dumps(cfg))
        self.write(f"boot/vmlinuz-{K51}", "image\n")
        (self.root / f"lib/modules/{K51}/build").mkdir(parents=True)
        self.grub("quiet")
        for v in (V580,):
            self.write(f"lib/firmware/nvidia/{v}/gsp_ga10x.bin", "fw\n")

    def grub(self, args: str) -> None:
        self.write("boot/grub/grub.cfg", f"menuentry 'Ubuntu' {{\n\tlinux\t/boot/vmlinuz-{K51} root=UUID=x ro {args}\n}}\n")

    def fork(self, version: str = V580, p2p: bool = True) -> None:
        src = f"usr/src/nvidia-p2p-{version}"
        self.write(f"{src}/version.mk", f"NVIDIA_VERSION = {version}\n")
        self.write(f"{src}/README.md", "# NVIDIA Linux Open GPU with P2P support\n" if p2p else
                   "# NVIDIA Linux Open GPU Kernel Module Source\n")
        self.write(f"{src}/kernel-open/Makefile", "# kernel interface layer\n")
        self.write(f"{src}/dkms.conf", 'PACKAGE_NAME="nvidia-p2p"\nPACKAGE_VERSION="%s"\nAUTOINSTALL="yes"\n'
                   'BUILT_MODULE_NAME[0]="nvidia"\nBUILT_MODULE_NAME[1]="nvidia-uvm"\n' % version)

    def dkms(self, *args: str) -> subprocess.CompletedProcess:
        return self.kernel("dkms", *args)

    def boot(self) -> None:
        shutil.rmtree(self.root / "run", ignore_errors=True)
        r = self.kernel("boot")
        assert r.returncode == 0, r.stderr

    def loaded(self, name: str) -> str | None:
        p = self.root / f"run/rigkeeper-sim/sys/module/nvidia/{name}"
        return p.read_text().strip() if p.exists() else None


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "root")


@pytest.mark.parametrize("vendor,cmdline,unit", [
    ("amd", "quiet", "ivhd0"),
    ("amd", "quiet iommu=pt", "ivhd0"),   # passthrough keeps the IOMMU on
    ("amd", "quiet amd_iommu=off", None),
    ("intel", "quiet", "dmar0"),
    ("intel", "quiet amd_iommu=off", "dmar0"),  # the other vendor's switch does nothing
    (None, "quiet", None),
])
def test_iommu_at_boot(tmp_path, vendor, cmdline, unit):
    h = Host(tmp_path / "root", "2x3090-iommu.json", iommu=vendor)
    h.grub(cmdline)
    h.boot()
    d = h.root / "run/rigkeeper-sim/sys/class/iommu"
    assert (sorted(os.listdir(d)) if d.exists() else []) == ([unit] if unit else [])


def test_stock_dkms_then_p2p_modules_replace_it_and_load_at_boot(host):
    assert host.kernel("dkms-install", "--version", V580, "--type", "open").returncode == 0
    host.boot()
    assert host.loaded("version") == V580 and host.loaded("p2p") == "0"
    assert host.dkms("status").stdout == f"nvidia/{V580}, {K51}, x86_64: installed\n"

    host.fork()
    r = host.dkms("add", "-m", "nvidia-p2p", "-v", V580)
    assert r.returncode == 0 and f"/var/lib/dkms/nvidia-p2p/{V580}/source" in r.stdout
    assert host.dkms("add", "-m", "nvidia-p2p", "-v", V580).returncode == 3   # "already contains"
    assert host.dkms("build", "-m", "nvidia-p2p", "-v", V580, "-k", K51).returncode == 0
    again = host.dkms("build", "-m", "nvidia-p2p", "-v", V580, "-k", K51)
    assert again.returncode == 0 and "already built" in again.stdout
    # DKMS will not replace the stock module of the same version: the stock one must go first.
    refused = host.dkms("install", "-m", "nvidia-p2p", "-v", V580, "-k", K51)
    assert refused.returncode != 0 and "exactly matches what is already found in kernel" in refused.stdout
    assert host.dkms("remove", "-m", "nvidia", "-v", V580, "--all").returncode == 0
    assert host.dkms("install", "-m", "nvidia-p2p", "-v", V580, "-k", K51).returncode == 0
    assert host.dkms("status").stdout == f"nvidia-p2p/{V580}, {K51}, x86_64: installed\n"
    # Still the stock module until the reboot; the next boot loads ours.
    assert host.loaded("p2p") == "0"
    host.boot()
    assert host.loaded("version") == V580 and host.loaded("p2p") == "1"
    modinfo = host.kernel("modinfo", "-F", "srcversion", "nvidia").stdout.strip()
    assert modinfo == host.loaded("srcversion") and len(modinfo) == 23


def test_a_stock_tree_builds_modules_without_p2p(host):
    host.fork(p2p=False)
    host.dkms("add", "-m", "nvidia-p2p", "-v", V580)
    assert host.dkms("install", "-m", "nvidia-p2p", "-v", V580, "-k", K51).returncode == 0
    host.boot()
    assert host.loaded("p2p") == "0"


def test_the_module_version_is_the_trees(host):
    """A fork of another version builds a module of that version: userspace and kernel then differ
    (nvidia-smi's 'Driver/library version mismatch')."""
    host.fork()
    host.write(f"usr/src/nvidia-p2p-{V580}/version.mk", "NVIDIA_VERSION = 580.82.07\n")
    host.dkms("add", "-m", "nvidia-p2p", "-v", V580)
    host.dkms("install", "-m", "nvidia-p2p", "-v", V580, "-k", K51)
    host.write("lib/firmware/nvidia/580.82.07/gsp_ga10x.bin", "fw\n")
    host.boot()
    assert host.loaded("version") == "580.82.07"


def test_dkms_build_needs_headers_and_reports_faults(host):
    host.fork()
    host.dkms("add", "-m", "nvidia-p2p", "-v", V580)
    r = host.dkms("build", "-m", "nvidia-p2p", "-v", V580, "-k", "6.8.0-60-generic")
    assert r.returncode == 1 and "Your kernel headers for kernel 6.8.0-60-generic cannot be found" in r.stdout
    host.write("etc/rigkeeper-sim/faults", "dkms-build\n")
    r = host.dkms("build", "-m", "nvidia-p2p", "-v", V580, "-k", K51)
    assert r.returncode == 10 and "Bad return status for module build" in r.stdout
    assert host.dkms("build", "-m", "nvidia-p2p", "-v", "1.0", "-k", K51).returncode == 4


def test_a_new_kernel_gets_the_p2p_modules(host):
    host.fork()
    host.dkms("add", "-m", "nvidia-p2p", "-v", V580)
    K60 = "6.8.0-60-generic"
    host.write(f"boot/vmlinuz-{K60}", "image\n")
    (host.root / f"lib/modules/{K60}/build").mkdir(parents=True)
    assert host.kernel("dkms-autoinstall", K60).returncode == 0
    ko = (host.root / f"lib/modules/{K60}/updates/dkms/nvidia.ko").read_text()
    assert f"dkms=nvidia-p2p/{V580}" in ko and "p2p=1" in ko


def test_remove_unknown_module(host):
    r = host.dkms("remove", "-m", "nvidia-p2p", "-v", V580, "--all")
    assert r.returncode == 3 and "There are no instances of module" in r.stdout
