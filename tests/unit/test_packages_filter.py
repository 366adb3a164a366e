import pytest

from rigkeeper_packages import rk_packages_installed, rk_packages_missing

DPKG = "\n".join([
    "ii \tgpg\t2.2.40-1.1",
    "hi \tnvidia-container-toolkit\t1.17.8-1",
    "ii \tlibc6:amd64\t2.36-9",
    "rc \tnvidia-driver-545\t545.29.06-0ubuntu1",  # removed, config files left
    "iU \tcuda-toolkit-12-8\t12.8.1-1",             # unpacked, not configured
    "iiR\tbroken\t1.0",                              # reinstall required
    "un \tnever-installed\t",
    "garbage line",
])


def test_installed_reads_only_configured_packages():
    assert rk_packages_installed(DPKG) == {
        "gpg": "2.2.40-1.1", "nvidia-container-toolkit": "1.17.8-1", "libc6": "2.36-9"}


@pytest.mark.parametrize("wanted, missing", [
    (["gpg"], []),
    ("gpg", []),
    (["libc6"], []),
    (["nvidia-container-toolkit=1.17.8-1"], []),
    (["nvidia-container-toolkit=1.17.8*"], []),
    (["nvidia-container-toolkit=1.17.7-1"], ["nvidia-container-toolkit=1.17.7-1"]),
    (["nvidia-driver-545", "gpg"], ["nvidia-driver-545"]),
    (["cuda-toolkit-12-8"], ["cuda-toolkit-12-8"]),
    (["broken", "never-installed"], ["broken", "never-installed"]),
    ([], []),
])
def test_missing(wanted, missing):
    assert rk_packages_missing(wanted, DPKG) == missing


def test_empty_database_misses_everything():
    assert rk_packages_missing(["gpg", "docker.io"], "") == ["gpg", "docker.io"]


@pytest.mark.parametrize("bad", ["", "gpg docker.io", "=1.0", "gpg=", None, 3])
def test_bad_entries_raise(bad):
    with pytest.raises(ValueError):
        rk_packages_missing([bad], DPKG)
