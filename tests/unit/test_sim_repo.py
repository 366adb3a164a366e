"""The simulator's apt repositories (tests/sim/repo/build_repo.py): content, signatures, apt's view."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim" / "repo"))

import build_repo  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb") or not shutil.which("gpg"),
                                reason="needs dpkg-deb and gpg")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("simrepo")
    start = time.monotonic()
    assert build_repo.build(str(out), quiet=True) is True
    elapsed = time.monotonic() - start
    return out, elapsed


def parse_packages(path: Path) -> list[dict[str, str]]:
    text = path.read_text()
    stanzas = []
    for block in text.strip().split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith(" "):
                fields[key] += "\n" + line
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        stanzas.append(fields)
    return stanzas


@pytest.fixture(scope="module")
def packages(built):
    out, _ = built
    return {
        "ubuntu": parse_packages(out / "ubuntu/dists/noble/restricted/binary-amd64/Packages"),
        "cuda": parse_packages(out / "cuda/Packages"),
        "libnvidia-container": parse_packages(out / "libnvidia-container/Packages"),
    }


def versions(stanzas, name):
    return sorted(s["Version"] for s in stanzas if s["Package"] == name)


def stanza(stanzas, name, version):
    return next(s for s in stanzas if s["Package"] == name and s["Version"] == version)


def test_build_is_fast_and_skipped_when_unchanged(built):
    out, elapsed = built
    assert elapsed < 30
    assert build_repo.build(str(out), quiet=True) is False
    assert (out / ".stamp").read_text().strip() == build_repo.inputs_hash(
        build_repo.DEFAULT_URL_BASE, build_repo.DEFAULT_EPOCH, str(out / "key"))


def test_layout(built):
    out, _ = built
    for rel in ("key/rigkeeper-sim.asc", "key/rigkeeper-sim.gpg", "key/secret/signing-key.asc",
                "ubuntu/dists/noble/Release", "ubuntu/dists/noble/InRelease", "ubuntu/dists/noble/Release.gpg",
                "ubuntu/dists/noble/restricted/binary-amd64/Packages.gz",
                "cuda/Packages", "cuda/Packages.gz", "cuda/Release", "cuda/InRelease", "cuda/Release.gpg",
                "cuda/3bf863cc.pub", "libnvidia-container/InRelease", "libnvidia-container/gpgkey",
                "sources.list.example"):
        assert (out / rel).is_file(), rel
    assert (out / "key/rigkeeper-sim.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (out / "cuda/3bf863cc.pub").read_bytes() == (out / "key/rigkeeper-sim.asc").read_bytes()
    assert oct((out / "key/secret").stat().st_mode & 0o777) == "0o700"


def test_ubuntu_archive_versions(packages):
    u = packages["ubuntu"]
    expected = {
        "535": ["535.247.01-0ubuntu0.24.04.1", "535.261.03-0ubuntu0.24.04.1"],
        "545": ["545.29.02-0ubuntu1", "545.29.06-0ubuntu0.24.04.1"],
        "550": ["550.144.03-0ubuntu0.24.04.1", "550.163.01-0ubuntu0.24.04.1"],
        "580": ["580.82.07-0ubuntu0.24.04.1", "580.95.05-0ubuntu0.24.04.1"],
    }
    for branch, vers in expected.items():
        for stem in ("nvidia-driver", "nvidia-driver-{}-open", "nvidia-headless", "nvidia-utils", "nvidia-dkms",
                     "nvidia-kernel-common", "libnvidia-compute", "nvidia-compute-utils"):
            name = stem.format(branch) if "{}" in stem else f"{stem}-{branch}"
            assert versions(u, name) == vers, name
    for branch in ("535", "550", "580"):
        assert versions(u, f"nvidia-fabricmanager-{branch}") == expected[branch]
    for branch in ("550", "580"):
        for stem in ("nvidia-driver", "nvidia-headless", "nvidia-utils", "nvidia-dkms"):
            assert versions(u, f"{stem}-{branch}-server") == expected[branch]
    assert versions(u, "nvidia-driver-580-server-open") == expected["580"]
    # 535-server: two genuine versions and the transitional one (the candidate).
    assert versions(u, "nvidia-driver-535-server") == expected["535"] + ["535.309.01-0ubuntu0.24.04.2"]


def test_transitional_535_server_pulls_580_server(packages):
    u = packages["ubuntu"]
    for name in ("nvidia-driver-535-server", "nvidia-utils-535-server", "libnvidia-compute-535-server",
                 "nvidia-headless-535-server"):
        s = stanza(u, name, "535.309.01-0ubuntu0.24.04.2")
        assert s["Depends"] == name.replace("535-server", "580-server")
        assert s["Description"].startswith("Transitional package for ")
    genuine = stanza(u, "nvidia-driver-535-server", "535.261.03-0ubuntu0.24.04.1")
    assert "nvidia-utils-535-server (= 535.261.03-0ubuntu0.24.04.1)" in genuine["Depends"]


def test_dependency_shapes(packages):
    u = packages["ubuntu"]
    v = "580.95.05-0ubuntu0.24.04.1"
    utils = stanza(u, "nvidia-utils-580", v)
    assert utils["Provides"] == "nvidia-utils, nvidia-smi" and utils["Conflicts"] == "nvidia-utils, nvidia-smi"
    for name in ("nvidia-dkms-580", "nvidia-dkms-580-open"):
        s = stanza(u, name, v)
        assert s["Provides"] == s["Conflicts"] == s["Replaces"] == "nvidia-dkms-kernel"
    drv = stanza(u, "nvidia-driver-580", v)
    assert "nvidia-dkms-580 (<= 580.95.05-1), nvidia-dkms-580 (>= 580.95.05)" in drv["Depends"]
    assert f"nvidia-utils-580 (= {v})" in drv["Depends"]
    assert "nvidia-dkms-580-open (<= 580.95.05-1)" in stanza(u, "nvidia-driver-580-open", v)["Depends"]
    assert stanza(u, "nvidia-compute-utils-580", v)["Provides"] == "nvidia-compute-utils, nvidia-persistenced"
    assert "libnvidia-compute" in stanza(u, "libnvidia-compute-580", v)["Provides"]
    assert stanza(u, "libnvidia-common-580", v)["Architecture"] == "all"


def test_cuda_repo(packages):
    c = packages["cuda"]
    assert versions(c, "cuda-keyring") == ["1.1-1"]
    assert versions(c, "cuda-drivers-580") == ["580.82.07-1", "580.95.05-1"]
    assert "nvidia-driver-580 (>= 580.95.05)" in stanza(c, "cuda-drivers-580", "580.95.05-1")["Depends"]
    assert versions(c, "nvidia-driver-580") == ["580.82.07-0ubuntu1", "580.95.05-0ubuntu1"]
    assert versions(c, "nvidia-open-580") == ["580.82.07-1", "580.95.05-1"]
    assert versions(c, "nvidia-open-550") == ["550.144.03-1", "550.163.01-1"]
    tk = {"11-8": "11.8.0-1", "12-2": "12.2.2-1", "12-4": "12.4.1-1", "12-8": "12.8.1-1", "13-0": "13.0.2-1"}
    for suffix, ver in tk.items():
        assert versions(c, f"cuda-toolkit-{suffix}") == [ver]
    assert versions(c, "libcudnn8") == ["8.9.7.29-1+cuda11.8", "8.9.7.29-1+cuda12.2"]
    assert versions(c, "libcudnn8-dev") == ["8.9.7.29-1+cuda11.8", "8.9.7.29-1+cuda12.2"]
    for name in ("cudnn9-cuda-12", "libcudnn9-cuda-12", "libcudnn9-dev-cuda-12"):
        assert "9.5.1.17-1" in versions(c, name)
    for name in ("cudnn9-cuda-13", "libcudnn9-cuda-13", "libcudnn9-dev-cuda-13"):
        assert versions(c, name)
    # From 580 the CUDA repo's fabric manager is "nvidia-fabricmanager", which only Provides -580.
    assert versions(c, "nvidia-fabricmanager") == ["580.82.07-1", "580.95.05-1"]
    assert stanza(c, "nvidia-fabricmanager", "580.95.05-1")["Provides"] == "nvidia-fabricmanager-580"
    assert versions(c, "nvidia-fabricmanager-535") == ["535.247.01-1", "535.261.03-1"]


def test_container_toolkit_repo(packages):
    t = packages["libnvidia-container"]
    for name in ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                 "libnvidia-container1"):
        assert versions(t, name) == ["1.17.8-1", "1.18.0-1"]
    assert "nvidia-container-toolkit-base (= 1.18.0-1)" in stanza(t, "nvidia-container-toolkit", "1.18.0-1")["Depends"]


def test_signatures_verify_with_the_published_key(built):
    out, _ = built
    keyring = out / "key/rigkeeper-sim.gpg"
    for base in (out / "ubuntu/dists/noble", out / "cuda", out / "libnvidia-container"):
        r = subprocess.run(["gpgv", "--keyring", str(keyring), str(base / "InRelease")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["gpgv", "--keyring", str(keyring), str(base / "Release.gpg"), str(base / "Release")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert (base / "Release").read_text() in (base / "InRelease").read_text()


def test_release_and_packages_checksums(built, packages):
    out, _ = built
    dist = out / "ubuntu/dists/noble"
    release = (dist / "Release").read_text()
    assert "Suite: noble\n" in release and "Codename: noble\n" in release and "Components: restricted\n" in release
    for rel in ("restricted/binary-amd64/Packages", "restricted/binary-amd64/Packages.gz"):
        data = (dist / rel).read_bytes()
        assert f" {hashlib.sha256(data).hexdigest()} {len(data):>16} {rel}\n" in release
    assert gzip.decompress((out / "cuda/Packages.gz").read_bytes()) == (out / "cuda/Packages").read_bytes()
    assert "Label: NVIDIA CUDA\n" in (out / "cuda/Release").read_text()
    for repo, base in (("ubuntu", out / "ubuntu"), ("cuda", out / "cuda"),
                       ("libnvidia-container", out / "libnvidia-container")):
        for s in packages[repo]:
            data = (base / s["Filename"]).read_bytes()
            assert int(s["Size"]) == len(data) and s["SHA256"] == hashlib.sha256(data).hexdigest(), s["Filename"]


def _extract(built, rel: str, dest: Path) -> Path:
    out, _ = built
    subprocess.run(["dpkg-deb", "-x", str(out / rel), str(dest)], check=True)
    return dest


def test_driver_payloads(built, tmp_path):
    pool = "ubuntu/pool/restricted/n/nvidia-graphics-drivers-580"
    root = tmp_path / "root"
    _extract(built, f"{pool}/nvidia-utils-580_580.95.05-0ubuntu0.24.04.1_amd64.deb", root)
    _extract(built, f"{pool}/nvidia-dkms-580-open_580.95.05-0ubuntu0.24.04.1_amd64.deb", root)
    _extract(built, f"{pool}/nvidia-compute-utils-580_580.95.05-0ubuntu0.24.04.1_amd64.deb", root)
    _extract(built, f"{pool}/libnvidia-compute-580_580.95.05-0ubuntu0.24.04.1_amd64.deb", root)
    assert "version='580.95.05'" in (root / "usr/bin/nvidia-smi").read_text()
    _extract(built, f"{pool}/nvidia-firmware-580-580.95.05_580.95.05-0ubuntu0.24.04.1_amd64.deb", root)
    assert (root / "lib/firmware/nvidia/580.95.05/gsp_ga10x.bin").exists()
    # The DKMS package builds through the simulator's DKMS (simkernel.py), for kernels with headers.
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(built[0] / f"{pool}/nvidia-dkms-580-open_580.95.05-0ubuntu0.24.04.1_amd64.deb"),
                    str(control)], check=True)
    assert "dkms-install --version 580.95.05 --type open" in (control / "postinst").read_text()
    assert "nvidia-firmware-580-580.95.05" in (control / "control").read_text()
    assert (root / "etc/kernel/postinst.d/rigkeeper-sim-nvidia-dkms-580-open").exists()
    assert os.readlink(root / "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1") == "libnvidia-ml.so.580.95.05"
    unit = (root / "lib/systemd/system/nvidia-persistenced.service").read_text()
    assert "ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced --no-persistence-mode --verbose\n" in unit
    assert "Type=forking" in unit and "[Install]" not in unit
    # The installed module carries the default GPU description baked in.
    module = (root / "usr/lib/rigkeeper-sim/nvidia_smi.py").read_text()
    line = next(ln for ln in module.splitlines() if ln.startswith("DEFAULT_CONFIG_JSON = "))
    baked = json.loads(eval(line.split(" = ", 1)[1]))  # a repr()'d string literal
    assert baked == json.loads((REPO / "tests/sim/configs/2x4090.json").read_text())
    # The installed module, with no /etc/rigkeeper-sim/gpus.json, falls back to the baked default.
    (root / "run/rigkeeper-sim/sys/module/nvidia").mkdir(parents=True)
    (root / "run/rigkeeper-sim/sys/module/nvidia/version").write_text("580.95.05\n")
    env = dict(os.environ, RIGKEEPER_SIM_ROOT=str(root), RIGKEEPER_SIM_UID="0")
    r = subprocess.run([sys.executable, str(root / "usr/lib/rigkeeper-sim/nvidia_smi.py"), "nvidia-smi",
                        "580.95.05", "-L"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("NVIDIA GeForce RTX 4090") == 2, r.stdout + r.stderr


def test_cuda_payloads(built, tmp_path):
    root = _extract(built, "cuda/cuda-nvcc-12-4_12.4.131-1_amd64.deb", tmp_path / "root")
    r = subprocess.run([str(root / "usr/local/cuda-12.4/bin/nvcc"), "--version"], capture_output=True, text=True)
    assert r.stdout == ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2024 NVIDIA Corporation\n"
                        "Built on Thu_Mar_28_02:18:24_PDT_2024\nCuda compilation tools, release 12.4, V12.4.131\n"
                        "Build cuda_12.4.r12.4/compiler.34097967_0\n")
    _extract(built, "cuda/cuda-cudart-12-4_12.4.127-1_amd64.deb", root)
    assert (root / "usr/local/cuda-12.4/lib64/libcudart.so.12.4.127").is_file()
    _extract(built, "cuda/cuda-toolkit-12-4_12.4.1-1_amd64.deb", root)
    assert json.loads((root / "usr/local/cuda-12.4/version.json").read_text())["cuda"]["version"] == "12.4.1"
    _extract(built, "cuda/libcudnn8-dev_8.9.7.29-1+cuda12.2_amd64.deb", root)
    header = (root / "usr/include/x86_64-linux-gnu/cudnn_version_v8.h").read_text()
    assert "#define CUDNN_MAJOR 8\n#define CUDNN_MINOR 9\n#define CUDNN_PATCHLEVEL 7\n" in header
    _extract(built, "cuda/cuda-keyring_1.1-1_all.deb", root)
    out, _ = built
    assert (root / "usr/share/keyrings/cuda-archive-keyring.gpg").read_bytes() == \
        (out / "key/rigkeeper-sim.gpg").read_bytes()
    scripts = tmp_path / "ctl"
    subprocess.run(["dpkg-deb", "-e", str(out / "cuda/cuda-toolkit-12-4-config-common_12.4.127-1_all.deb"),
                    str(scripts)], check=True)
    assert "update-alternatives --install /usr/local/cuda cuda /usr/local/cuda-12.4 124" in \
        (scripts / "postinst").read_text()


@pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt-get")
def test_apt_accepts_the_signed_repositories(built, tmp_path):
    """apt-get update against the three repos (signed-by the .gpg), then what `install` would do."""
    out, _ = built
    d = tmp_path / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/parts"):
        (d / sub).mkdir(parents=True)
    (d / "state/status").write_text("Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1\n"
                                    "Architecture: amd64\nMaintainer: x <x@example.org>\nDescription: x\n")
    kr = out / "key/rigkeeper-sim.gpg"
    (d / "etc/sources.list").write_text(f"deb [signed-by={kr}] file://{out}/ubuntu noble restricted\n"
                                        f"deb [signed-by={kr}] file://{out}/cuda /\n"
                                        f"deb [signed-by={kr}] file://{out}/libnvidia-container /\n")
    opts = []
    for k, v in {"Dir::Etc::SourceList": d / "etc/sources.list", "Dir::Etc::SourceParts": d / "etc/parts",
                 "Dir::Etc::Preferences": d / "etc/parts/none", "Dir::Etc::PreferencesParts": d / "etc/parts",
                 "Dir::State": d / "state", "Dir::State::status": d / "state/status", "Dir::Cache": d / "cache",
                 "Debug::NoLocking": "1", "APT::Architecture": "amd64", "APT::Architectures::": "amd64",
                 "Acquire::Languages": "none", "APT::Sandbox::User": "root"}.items():
        opts += ["-o", f"{k}={v}"]
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert r.returncode == 0 and "NO_PUBKEY" not in r.stderr and "not signed" not in r.stderr, r.stdout + r.stderr
    r = subprocess.run(["apt-get", *opts, "-s", "install", "nvidia-driver-535-server"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    inst = [ln for ln in r.stdout.splitlines() if ln.startswith("Inst ")]
    assert any(ln.startswith("Inst nvidia-driver-580-server (580.95.05-0ubuntu0.24.04.1") for ln in inst)
    assert not any("nvidia-utils-535-server (535.2" in ln for ln in inst)
    r = subprocess.run(["apt-get", *opts, "-s", "install", "cuda-drivers-580", "cuda-toolkit-12-4",
                        "nvidia-container-toolkit=1.17.8-1", "nvidia-container-toolkit-base=1.17.8-1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Inst nvidia-driver-580 (580.95.05-0ubuntu1" in r.stdout  # the CUDA repo's version wins


def test_rebuild_is_reproducible(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    shutil.copytree(out / "key", again / "key")
    build_repo.build(str(again), quiet=True)
    for rel in ("ubuntu/dists/noble/InRelease", "ubuntu/dists/noble/restricted/binary-amd64/Packages",
                "cuda/InRelease", "cuda/Packages.gz", "libnvidia-container/Release.gpg"):
        assert (again / rel).read_bytes() == (out / rel).read_bytes(), rel


@pytest.mark.sim
@pytest.mark.skipif(os.environ.get("RIGKEEPER_SIM_DOCKER_TESTS") != "1",
                    reason="set RIGKEEPER_SIM_DOCKER_TESTS=1 (needs Docker and rigkeeper-sim:latest)")
def test_real_apt_and_dpkg_in_the_rig_image(built):
    """tests/sim/repo/check_in_container.sh: installs, swaps, pins and runs the fakes in the image."""
    out, _ = built
    r = subprocess.run([str(REPO / "tests/sim/repo/check_in_container.sh"), str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "ALL CHECKS PASSED" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
