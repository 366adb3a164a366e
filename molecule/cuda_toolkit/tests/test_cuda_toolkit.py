"""cuda_toolkit on the simulated rig: state after converge, then runs with other wants.

Converge asked for CUDA 12.4 and 12.8 (default 12.4, not the last listed) and cuDNN 9, on a rig
with the 580 driver installed and NVIDIA's cuda-keyring installed by hand beforehand (its keyring
and list are used as they are: no cuda.list). The tests
that run the playbook again come last in this file; only the last one changes the rig.
"""

import hashlib
import re

import pytest

VERSIONS = ["12.4", "12.8"]
DEFAULT = "12.4"
KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/cuda.list"
# cuda-keyring's own list (tests/sim/repo/catalog.py, as NVIDIA's package names it).
KEYRING_LIST = "/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list"
REPO = "file:///srv/rigkeeper-sim/repo/cuda"
CUDNN9 = ["cudnn9-cuda-12", "libcudnn9-cuda-12", "libcudnn9-dev-cuda-12"]
# The newest cuDNN 9 build for CUDA 12 in the simulated repository (tests/sim/repo/catalog.py).
CUDNN9_VERSION = "9.13.0.50-1"
MANAGED = [SOURCES, KEYRING, "/etc/apt/preferences.d/rigkeeper-cudnn.pref",
           "/etc/profile.d/rigkeeper-cuda.sh", "/etc/ld.so.conf.d/rigkeeper-cuda.conf"]


def alternative(host, name):
    out = host.run(f"update-alternatives --query {name}")
    assert out.rc == 0, out.stderr
    return dict(re.findall(r"(?m)^(Status|Value|Best): (.*)$", out.stdout))


def cudnn_header(host):
    text = host.file("/usr/include/cudnn_version.h").content_string
    parts = [re.search(rf"(?m)^#define CUDNN_{p}\s+(\d+)$", text).group(1) for p in ("MAJOR", "MINOR", "PATCHLEVEL")]
    return ".".join(parts)


def snapshot(host):
    """Everything the role manages, as it is now on the rig."""
    files = {p: hashlib.sha256(host.file(p).content).hexdigest() if host.file(p).exists else None for p in MANAGED}
    return {
        "files": files,
        "packages": host.check_output("dpkg-query -W -f='${Package} ${Version} ${Status}\\n'"),
        "selections": host.check_output("dpkg --get-selections"),
        "cuda": alternative(host, "cuda"),
        "libcudnn": alternative(host, "libcudnn"),
    }


# --- State after converge ---------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_toolkit_installed_and_nvcc_reports_its_version(host, version):
    pkg = host.package("cuda-toolkit-" + version.replace(".", "-"))
    assert pkg.is_installed
    out = host.check_output(f"/usr/local/cuda-{version}/bin/nvcc --version")
    assert f"Cuda compilation tools, release {version}," in out


def test_usr_local_cuda_is_the_default_not_the_highest(host):
    assert host.file("/usr/local/cuda").linked_to == f"/usr/local/cuda-{DEFAULT}"
    alt = alternative(host, "cuda")
    assert alt["Value"] == f"/usr/local/cuda-{DEFAULT}"
    assert alt["Status"] == "manual"
    # The packages' own choice would be the highest version: the manual mode is what holds ours.
    assert alt["Best"] == f"/usr/local/cuda-{VERSIONS[-1]}"


def test_login_shell_finds_the_default_nvcc(host):
    out = host.check_output("bash -lc 'command -v nvcc; nvcc --version'")
    assert out.splitlines()[0] == "/usr/local/cuda/bin/nvcc"
    assert f"release {DEFAULT}," in out
    profile = host.file("/etc/profile.d/rigkeeper-cuda.sh")
    assert profile.user == "root" and profile.mode == 0o644


def test_linker_config_lists_lib64_and_cache_was_rebuilt(host):
    conf = host.file("/etc/ld.so.conf.d/rigkeeper-cuda.conf")
    lines = [ln for ln in conf.content_string.splitlines() if ln and not ln.startswith("#")]
    assert lines == ["/usr/local/cuda/lib64"]
    # The handler ran ldconfig after the file was written.
    assert host.file("/etc/ld.so.cache").mtime >= conf.mtime
    # lib64 resolves to the default toolkit's libraries.
    assert host.file(f"/usr/local/cuda/lib64/libcudart.so.{DEFAULT.split('.')[0]}").exists


def test_cuda_keyring_keeps_its_files_and_no_competing_source_is_written(host):
    # prepare installed NVIDIA's cuda-keyring by hand: its keyring and its list are the repository's
    # setup (the same URL with the same keyring), so they stay as dpkg installed them and rigkeeper
    # writes no cuda.list next to them.
    assert host.package("cuda-keyring").is_installed
    verify = host.run("dpkg -V cuda-keyring")
    assert verify.rc == 0 and verify.stdout == "", verify.stdout
    assert not host.file(SOURCES).exists
    lines = [ln for ln in host.file(KEYRING_LIST).content_string.splitlines() if ln and not ln.startswith("#")]
    assert lines == [f"deb [signed-by={KEYRING}] {REPO}/ /"]
    assert not host.file(KEYRING).content.startswith(b"-----BEGIN"), "the keyring must be dearmored (binary)"
    # The keyring holds the key the repository is signed with.
    fpr = host.check_output(f"gpg --show-keys --with-colons {KEYRING} | awk -F: '/^fpr/{{print $10; exit}}'")
    sim = host.check_output("gpg --show-keys --with-colons /srv/rigkeeper-sim/repo/cuda/3bf863cc.pub"
                            " | awk -F: '/^fpr/{print $10; exit}'")
    assert fpr and fpr == sim


def test_apt_reads_the_sources_next_to_cuda_keyring(host):
    out = host.run("apt-cache policy cuda-toolkit-12-8")
    assert out.rc == 0
    assert "Conflicting" not in out.stderr
    # One source for the repository, not two ("configured multiple times").
    assert "configured multiple times" not in out.stderr
    assert "/srv/rigkeeper-sim/repo/cuda" in out.stdout


def test_cudnn9_matched_pinned_and_held(host):
    for name in CUDNN9:
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == CUDNN9_VERSION, name
    held = host.check_output("dpkg --get-selections " + " ".join(CUDNN9)).split()
    assert held == [w for name in CUDNN9 for w in (name, "hold")]
    pref = host.file("/etc/apt/preferences.d/rigkeeper-cudnn.pref").content_string
    assert "Package: " + " ".join(CUDNN9) in pref
    assert "Pin: version 9.*" in pref
    # Header and library come from cuDNN 9 (the libcudnn alternative) and match the package.
    assert CUDNN9_VERSION.startswith(cudnn_header(host) + ".")
    assert host.file("/usr/lib/x86_64-linux-gnu/libcudnn.so").linked_to.endswith(
        "libcudnn.so." + ".".join(CUDNN9_VERSION.split(".")[:3]))


# --- Runs with other wants --------------------------------------------------------------------

def test_cuda_13_with_driver_535_wanted_is_refused_before_any_change(host, playbook):
    before = snapshot(host)
    # Every input differs from the converged state, so any task that ran would change something.
    run = playbook({"cuda_toolkit_versions": ["13.0"], "cuda_toolkit_default": None, "nvidia_driver_branch": "535",
                    "cuda_toolkit_cudnn_version": "9.5.1.17-1", "cuda_toolkit_repo_url": "file:///srv/elsewhere",
                    "cuda_toolkit_path_dirs": ["/opt/elsewhere/bin"]})
    assert run.returncode != 0
    assert run.failed == 1 and run.changed == 0
    assert "CUDA 13.0 needs NVIDIA driver >= 580.65.06" in run.output
    assert "branch 535 is below both" in run.output
    assert not host.package("cuda-toolkit-13-0").is_installed
    assert not host.package("libcudnn9-cuda-13").is_installed
    assert snapshot(host) == before


def test_cuda_keyring_for_another_url_is_refused_before_any_change(host, playbook):
    before = snapshot(host)
    run = playbook({"cuda_toolkit_repo_url": "file:///srv/rigkeeper-sim/repo/cuda-mirror"})
    assert run.returncode != 0
    assert run.failed == 1 and run.changed == 0
    assert "cuda-keyring is installed and its source lists" in run.output
    assert snapshot(host) == before
    assert host.run("dpkg -V cuda-keyring").stdout == ""


def test_minor_version_compatibility_is_a_warning(host, playbook):
    before = snapshot(host)
    run = playbook({"cuda_toolkit_versions": ["12.8"], "cuda_toolkit_default": None, "cuda_toolkit_driver": "550",
                    "cuda_toolkit_cudnn_major": None},
                   tags="cuda_toolkit_check")
    assert run.returncode == 0, run.output
    assert "WARNING" in run.output and "only through minor-version compatibility" in run.output
    assert "570.26" in run.output  # the minimum for full support is named
    assert snapshot(host) == before


def test_check_mode_reports_a_different_default_and_changes_nothing(host, playbook):
    before = snapshot(host)
    run = playbook({"cuda_toolkit_default": "12.8"}, check=True)
    assert run.returncode == 0, run.output
    assert run.changed and run.changed >= 1
    assert "Point /usr/local/cuda at the default toolkit" in run.output
    assert snapshot(host) == before


def test_switch_default_to_11_8_with_cudnn8(host, playbook):
    """Last: changes the rig. A third toolkit, an older default, cuDNN 8 for it (the +cuda11.8
    build, not the newest), then the same run again changes nothing."""
    wants = {"cuda_toolkit_versions": ["11.8", "12.4", "12.8"], "cuda_toolkit_default": "11.8",
             "cuda_toolkit_cudnn_major": 8}
    run = playbook(wants)
    assert run.returncode == 0, run.output
    assert host.check_output("/usr/local/cuda/bin/nvcc --version").count("release 11.8,") == 1
    assert alternative(host, "cuda") == {"Status": "manual", "Value": "/usr/local/cuda-11.8",
                                         "Best": "/usr/local/cuda-12.8"}
    for name in ("libcudnn8", "libcudnn8-dev"):
        pkg = host.package(name)
        assert pkg.is_installed and pkg.version == "8.9.7.29-1+cuda11.8", name
    assert "Pin: version 8.*+cuda11.*[0-9]" in host.file("/etc/apt/preferences.d/rigkeeper-cudnn.pref").content_string
    # The libcudnn alternative now serves cuDNN 8's header although cuDNN 9 ranks higher.
    assert cudnn_header(host) == "8.9.7"
    assert alternative(host, "libcudnn")["Status"] == "manual"
    again = playbook(wants)
    assert again.returncode == 0 and again.changed == 0, again.output
