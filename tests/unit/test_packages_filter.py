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


def test_apt_policy_names_installed_and_candidate_versions():
    from rigkeeper_packages import rk_apt_policy
    text = ("linux-headers-generic:\n  Installed: (none)\n  Candidate: 6.8.0.51.52\n  Version table:\n"
            "     6.8.0.51.52 500\n        500 file:/srv/rigkeeper-sim/repo/ubuntu noble/restricted amd64 Packages\n"
            "linux-headers-6.8.0-45-generic:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
            "linux-image-6.8.0-51-generic:\n  Installed: 6.8.0-51.52\n  Candidate: 6.8.0-51.52\n")
    assert rk_apt_policy(text) == {
        "linux-headers-generic": {"installed": None, "candidate": "6.8.0.51.52"},
        "linux-headers-6.8.0-45-generic": {"installed": None, "candidate": None},
        "linux-image-6.8.0-51-generic": {"installed": "6.8.0-51.52", "candidate": "6.8.0-51.52"},
    }
    assert rk_apt_policy("") == {}


def test_packages_matching_the_family_but_not_the_toolkit():
    from rigkeeper_packages import rk_packages_matching
    dpkg = ("ii \tnvidia-driver-580\t580.95.05-1\nhi \tlibnvidia-compute-580\t580.95.05-1\n"
            "ii \tnvidia-container-toolkit\t1.17.8-1\nrc \tnvidia-utils-535\t535.1-1\nii \thtop\t3.2\n")
    assert rk_packages_matching(dpkg, ["nvidia-*", "libnvidia-*"], ["nvidia-container-*"]) == \
        ["libnvidia-compute-580", "nvidia-driver-580"]
