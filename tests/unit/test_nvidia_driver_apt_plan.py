"""Unit tests of the pure parts of plugins/modules/nvidia_driver_apt_plan.py: Debian
version order, branch names, the preferences it renders, apt's simulation output."""

import os
import re
import sys

import pytest


import nvidia_driver_apt_plan as plan  # noqa: E402

FAMILY = ["nvidia-*", "libnvidia-*", "cuda-drivers*", "xserver-xorg-video-nvidia*"]
EXCLUDE = ["nvidia-container-*", "libnvidia-container*"]


@pytest.mark.parametrize("a,b,expected", [
    ("580.95.05-0ubuntu0.24.04.1", "580.82.07-0ubuntu0.24.04.1", 1),
    ("535.309.01-0ubuntu0.24.04.2", "535.309.01-0ubuntu0.24.04.10", -1),
    ("1:1.0-1", "999.0-1", 1),
    ("580.95.05~rc1-1", "580.95.05-1", -1),
    ("580.95.05-1", "580.95.05-1", 0),
    ("535.261.03-1", "535.261.03-0ubuntu1", 1),
])
def test_compare_versions_like_dpkg(a, b, expected):
    assert plan.compare_versions(a, b) == expected
    assert plan.compare_versions(b, a) == -expected


def test_sort_versions_newest_first_and_unique():
    assert plan.sort_versions(["580.82.07-1", "580.95.05-1", "580.82.07-1", "550.163.01-1"]) == \
        ["580.95.05-1", "580.82.07-1", "550.163.01-1"]


@pytest.mark.parametrize("name,branch", [
    ("nvidia-driver-580", "580"),
    ("nvidia-driver-580-server-open", "580"),
    ("libnvidia-compute-545:i386", "545"),
    ("libnvidia-cfg1-535", "535"),
    ("linux-modules-nvidia-550-6.8.0-101-generic", "550"),
    ("cuda-drivers-550", "550"),
    ("nvidia-tesla-535-driver", "535"),
    ("nvidia-driver", None),
    ("nvidia-settings", None),
    ("nvidia-container-toolkit", None),
    ("libnvidia-container1", None),
])
def test_name_branch(name, branch):
    assert plan.name_branch(name) == branch


OTHERS = ["535", "545", "550", "555", "560", "565", "570", "575", "590", "595", "610", "620"]
UBUNTU_FAMILY = FAMILY + ["linux-modules-nvidia-*", "linux-objects-nvidia-*", "linux-signatures-nvidia-*"]


@pytest.mark.parametrize("name,blocked", [
    ("nvidia-driver-535", True), ("nvidia-driver-535-server-open", True), ("libnvidia-compute-550", True),
    ("nvidia-tesla-535-driver", True), ("cuda-drivers-545", True), ("xserver-xorg-video-nvidia-550", True),
    ("linux-modules-nvidia-550-generic", True), ("linux-modules-nvidia-535-open-6.8.0-51-generic", True),
    ("nvidia-firmware-535-535.261.03", True), ("nvidia-driver-pinning-590", True),
    # this branch, unversioned names, the container toolkit: never
    ("nvidia-driver-580", False), ("nvidia-driver-580-server-open", False), ("libnvidia-compute-580", False),
    ("nvidia-firmware-580-580.95.05", False), ("linux-modules-nvidia-580-open-6.8.0-51-generic", False),
    ("linux-modules-nvidia-580-open-generic", False), ("cuda-drivers-580", False),
    ("nvidia-open", False), ("libnvidia-compute", False), ("nvidia-container-toolkit", False),
    ("libnvidia-container1", False), ("linux-signatures-nvidia-6.8.0-51-generic", False),
])
def test_block_globs_name_every_other_branch_and_never_this_one(name, blocked):
    import fnmatch
    globs = plan.block_globs(UBUNTU_FAMILY, OTHERS)
    assert any(fnmatch.fnmatchcase(name, g) for g in globs) is blocked, name


KNOWN = ["nvidia-driver-580", "libnvidia-compute-580", "nvidia-settings", "nvidia-driver-535",
         "libnvidia-compute-550", "cuda-drivers-550", "cuda-drivers", "nvidia-container-toolkit",
         "libnvidia-container1", "xserver-xorg-video-nvidia-535", "nvidia-driver-470", "bash"]


def test_preferences_name_exact_packages_so_apt_matches_no_glob_per_command():
    text = plan.render_preferences(FAMILY, plan.pin_glob("580.95.05-0ubuntu0.24.04.1"), "580", ["535", "550"],
                                   KNOWN, ["nvidia-container-*", "libnvidia-container*"])
    stanzas = [ln for ln in text.splitlines() if ln.startswith("Package:")]
    assert stanzas[0] == "Package: cuda-drivers libnvidia-compute-580 nvidia-driver-580 nvidia-settings"
    assert "Package: cuda-drivers libnvidia-compute-580 nvidia-driver-580 nvidia-settings\n" \
           "Pin: version 580.95.05-*\nPin-Priority: 1001\n" in text
    assert stanzas[1] == "Package: cuda-drivers-550 libnvidia-compute-550 nvidia-driver-535 xserver-xorg-video-nvidia-535"
    assert text.index("Pin-Priority: 1001") < text.index("Pin-Priority: -1")
    # No glob or regex anywhere (apt would match each against every package name on every command).
    assert not any(c in " ".join(stanzas) for c in "*?[/"), stanzas
    # A branch outside the table (470) is neither pinned nor blocked; the toolkit and bash never.
    assert "nvidia-driver-470" not in text and "nvidia-container-toolkit" not in text and "bash" not in text
    # No other branch known: no blocking stanza at all.
    assert "Pin-Priority: -1" not in plan.render_preferences(FAMILY, "580.95.05-*", "580", [], KNOWN)


@pytest.mark.parametrize("name,blocked", [
    ("nvidia-driver-535", True), ("nvidia-firmware-535-535.261.03", True), ("nvidia-driver-pinning-590", True),
    ("linux-modules-nvidia-535-open-6.8.0-51-generic", True),
    ("nvidia-driver-580", False), ("nvidia-open", False), ("linux-signatures-nvidia-6.8.0-51-generic", False),
    ("nvidia-container-toolkit", None), ("bash", None),
])
def test_pin_names_split_the_known_names(name, blocked):
    keep, block = plan.pin_names([name], UBUNTU_FAMILY, ["nvidia-container-*"], "580", OTHERS)
    assert (name in block, name in keep) == ((True, False) if blocked else (False, True) if blocked is False
                                             else (False, False))


def test_version_named_leftovers_are_the_old_firmware_only():
    family = [
        {"name": "nvidia-firmware-580-580.82.07", "version": "580.82.07-0ubuntu0.24.04.1", "branch": "580"},
        {"name": "nvidia-firmware-580-580.95.05", "version": "580.95.05-0ubuntu0.24.04.1", "branch": "580"},
        {"name": "nvidia-utils-580", "version": "580.82.07-0ubuntu0.24.04.1", "branch": "580"},
        {"name": "nvidia-firmware-535-535.261.03", "version": "535.261.03-0ubuntu1", "branch": "535"},
    ]
    assert plan.version_named_leftovers(family, "580", "580.95.05") == ["nvidia-firmware-580-580.82.07"]


def test_kernel_following_build_is_the_one_for_this_driver():
    show = ("Package: linux-modules-nvidia-580-open-generic\nVersion: 6.8.0-51.52+2\n"
            "Depends: linux-modules-nvidia-580-open-6.8.0-51-generic (= 6.8.0-51.52+2), nvidia-kernel-common-580 (>= 580.95.05)\n\n"
            "Package: linux-modules-nvidia-580-open-generic\nVersion: 6.8.0-51.52+1\n"
            "Depends: linux-modules-nvidia-580-open-6.8.0-51-generic (= 6.8.0-51.52+1), nvidia-kernel-common-580 (>= 580.82.07)\n")
    stanzas = plan.parse_show(show)
    name = "linux-modules-nvidia-580-open-generic"
    assert plan.kernel_following_version(name, stanzas, "580.82.07") == "6.8.0-51.52+1"
    assert plan.kernel_following_version(name, stanzas, "580.95.05") == "6.8.0-51.52+2"
    assert plan.kernel_following_version(name, stanzas, "580.105.08") is None


def test_released_status_flips_only_the_named_holds():
    status = ("Package: nvidia-utils-580\nStatus: hold ok installed\nVersion: 1\n\n"
              "Package: htop\nStatus: hold ok installed\nVersion: 2\n\n"
              "Package: nvidia-dkms-580\nStatus: install ok installed\nVersion: 1\n")
    out = plan.released_status(status, {"nvidia-utils-580", "nvidia-dkms-580"})
    assert "Package: nvidia-utils-580\nStatus: install ok installed" in out
    assert "Package: htop\nStatus: hold ok installed" in out


def test_pin_glob_keeps_the_epoch():
    assert plan.pin_glob("1:580.95.05-1") == "1:580.95.05-*"


def test_resolve_prefers_the_variable_then_installed_then_newest():
    offered = {"nvidia-driver-580": ["580.95.05-1", "580.82.07-1"]}
    assert plan.resolve(["nvidia-driver-580"], "580", "580.82.07", True, offered, {})[:2] == \
        ("580.82.07-1", "variable")
    assert plan.resolve(["nvidia-driver-580"], "580", None, True, offered,
                        {"nvidia-driver-580": "580.82.07-1"})[:2] == ("580.82.07-1", "installed")
    assert plan.resolve(["nvidia-driver-580"], "580", None, False, offered,
                        {"nvidia-driver-580": "580.82.07-1"})[:2] == ("580.95.05-1", "newest")
    with pytest.raises(plan.PlanError, match="no version of nvidia-driver-580 on branch 550"):
        plan.resolve(["nvidia-driver-580"], "550", None, True, offered, {})
    with pytest.raises(plan.PlanError, match="has no version 580.1.2"):
        plan.resolve(["nvidia-driver-580"], "580", "580.1.2", True, offered, {})


def test_companion_takes_the_same_upstream_with_another_revision():
    offered = {"nvidia-fabricmanager": ["580.95.05-1", "580.82.07-1"]}
    assert plan.companion_version("nvidia-fabricmanager", "580.95.05-0ubuntu1", offered, {}) == "580.95.05-1"
    with pytest.raises(plan.PlanError, match="must match the driver exactly"):
        plan.companion_version("nvidia-fabricmanager", "580.65.06-0ubuntu1", offered, {})


def test_parse_simulation():
    out = ("Inst nvidia-utils-580 (580.95.05-0ubuntu0.24.04.1 sim:noble [amd64])\n"
           "Inst nvidia-driver-545 [545.29.06-1] (545.29.02-1 sim:noble [amd64])\n"
           "Remv nvidia-utils-545 [545.29.06-1]\n"
           "Conf nvidia-utils-580 (580.95.05-0ubuntu0.24.04.1 sim:noble [amd64])\n")
    assert plan.parse_simulation(out) == [
        {"action": "install", "name": "nvidia-utils-580", "from": None, "to": "580.95.05-0ubuntu0.24.04.1"},
        {"action": "downgrade", "name": "nvidia-driver-545", "from": "545.29.06-1", "to": "545.29.02-1"},
        {"action": "remove", "name": "nvidia-utils-545", "from": "545.29.06-1", "to": None},
    ]


def test_unmet_names_the_other_branch():
    lines = plan.unmet_lines(
        "Some packages could not be installed.\n"
        "The following packages have unmet dependencies:\n"
        " nvidia-driver-535-server : Depends: nvidia-driver-580-server but it is not installable\n"
        "E: Unable to correct problems, you have held broken packages.\n")
    assert plan.unmet_other_branch(lines, "535") == ["nvidia-driver-580-server"]


def test_parse_dpkg_drops_the_native_architecture_only():
    text = ("libnvidia-compute-580:amd64\t580.95.05-1\thold\tinstalled\n"
            "libnvidia-compute-580:i386\t580.95.05-1\tinstall\tinstalled\n"
            "nvidia-driver-545\t545.29.06-1\tdeinstall\tconfig-files\n")
    assert [p["name"] for p in plan.parse_dpkg(text, "amd64")] == \
        ["libnvidia-compute-580", "libnvidia-compute-580:i386"]


def test_off_branch_and_family_after():
    installed = [dict(name="nvidia-utils-580", version="580.95.05-1", branch="580", selection="hold"),
                 dict(name="libnvidia-compute-545", version="545.29.06-1", branch="545", selection="hold"),
                 dict(name="linux-modules-nvidia-580-generic", version="6.8.0-45.45", branch="580",
                      selection="install"),
                 dict(name="nvidia-settings", version="510.47.03-0ubuntu4", branch=None, selection="install")]
    assert plan.off_branch(installed, "580", "580.95.05") == ["libnvidia-compute-545 545.29.06-1"]
    after = plan.family_after(installed, [{"action": "remove", "name": "libnvidia-compute-545"},
                                          {"action": "install", "name": "nvidia-dkms-580"},
                                          {"action": "install", "name": "dkms"}], FAMILY, EXCLUDE)
    assert [a["name"] for a in after] == ["linux-modules-nvidia-580-generic", "nvidia-dkms-580",
                                         "nvidia-settings", "nvidia-utils-580"]


def test_describe():
    assert plan.describe({"action": "install", "name": "a", "from": None, "to": "1-1"}) == "install a 1-1"
    assert plan.describe({"action": "remove", "name": "b", "from": "2-1", "to": None}) == "remove b 2-1"
    assert plan.describe({"action": "downgrade", "name": "c", "from": "2-1", "to": "1-1"}) == "downgrade c 2-1 -> 1-1"


def test_documentation_matches_the_argument_spec(monkeypatch):
    import yaml
    from ansible.module_utils import basic

    captured = {}

    class Fake:
        def __init__(self, argument_spec, supports_check_mode):
            captured.update(argument_spec)
            assert supports_check_mode

    monkeypatch.setattr(plan, "AnsibleModule", Fake)
    plan.build_module()
    doc = yaml.safe_load(plan.DOCUMENTATION)
    yaml.safe_load(plan.RETURN)
    yaml.safe_load(plan.EXAMPLES)
    assert set(doc["options"]) == set(captured)
    for name, spec in captured.items():
        assert doc["options"][name]["type"] == spec["type"], name
        assert doc["options"][name].get("default") == spec.get("default"), name
    assert basic  # imported for the module's own import path


def test_already_installed_needs_every_package_configured_at_its_version():
    installed = [
        {"name": "nvidia-driver-580", "version": "580.95.05-0ubuntu1", "want": "hold", "status": "installed"},
        {"name": "nvidia-utils-580", "version": "580.95.05-0ubuntu1", "want": "hold", "status": "installed"},
        {"name": "libnvidia-compute-580", "version": "580.95.05-0ubuntu1", "want": "install", "status": "half-configured"},
    ]
    ai = plan.already_installed
    assert ai(["nvidia-driver-580=580.95.05-0ubuntu1", "nvidia-utils-580=580.95.05-0ubuntu1"], installed)
    assert ai(["nvidia-driver-580"], installed)
    assert not ai(["nvidia-driver-580=580.82.07-0ubuntu1"], installed)
    assert not ai(["libnvidia-compute-580=580.95.05-0ubuntu1"], installed)
    assert not ai(["nvidia-driver-580=580.95.05-0ubuntu1", "nvidia-dkms-580"], installed)


def test_madison_keeps_the_package_sources_origin_only():
    text = ("nvidia-driver-580 | 580.95.05-0ubuntu1 | file:/srv/rigkeeper-sim/repo/cuda  Packages\n"
            "nvidia-driver-580 | 580.95.05-0ubuntu0.24.04.1 | file:/srv/rigkeeper-sim/repo/ubuntu noble/restricted amd64 Packages\n")
    cuda = ["srv/rigkeeper-sim/repo/cuda"]
    assert plan.parse_madison(text, not_origins=cuda) == {"nvidia-driver-580": ["580.95.05-0ubuntu0.24.04.1"]}
    assert plan.parse_madison(text, origins=cuda) == {"nvidia-driver-580": ["580.95.05-0ubuntu1"]}
    assert plan.parse_madison(text) == {"nvidia-driver-580": ["580.95.05-0ubuntu1", "580.95.05-0ubuntu0.24.04.1"]}


def test_preferences_pin_each_exact_version_so_another_origins_build_does_not_win():
    text = plan.render_preferences(FAMILY, ["580.95.05-0ubuntu1", "580.95.05-1"], "580", [], KNOWN)
    assert text.count("Pin-Priority: 1001") == 2
    assert "Pin: version 580.95.05-0ubuntu1\n" in text and "Pin: version 580.95.05-1\n" in text
    assert not [ln for ln in text.splitlines() if ln.startswith("Pin: version") and "*" in ln]
