"""The entry point of plugins/modules/nvidia_driver_apt_plan.py with run_command mocked:
what it asks apt, with which flags, on which configuration, and what it plans to remove.

The simulation must be the transaction that runs: the host's other preferences files and holds
are kept (only rigkeeper's file is replaced and the family's holds released), Ubuntu's firmware of
the old version goes on an in-branch upgrade, and nothing else is touched."""
import os
import sys
from unittest import mock

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

import nvidia_driver_apt_plan as plan  # noqa: E402

FAMILY = ["nvidia-*", "libnvidia-*", "cuda-drivers*", "xserver-xorg-video-nvidia*", "linux-modules-nvidia-*"]
EXCLUDE = ["nvidia-container-*", "libnvidia-container*"]
OLD, NEW = "580.82.07-0ubuntu0.24.04.1", "580.95.05-0ubuntu0.24.04.1"


class Exit(Exception):
    pass


class Fail(Exception):
    pass


def dpkg(rows):
    return "".join("%s\t%s\t%s\tinstalled\n" % r for r in rows)


@pytest.fixture
def prefs(tmp_path):
    d = tmp_path / "preferences.d"
    d.mkdir()
    (d / "rigkeeper-nvidia").write_text("Package: nvidia-*\nPin: version %s\nPin-Priority: 1001\n" % OLD[:9])
    (d / "owner-htop").write_text("Package: htop\nPin: version 3.2*\nPin-Priority: 1001\n")
    return d


PKGNAMES = "nvidia-driver-580-open\nnvidia-driver-535\nnvidia-driver-550-open\nnvidia-container-toolkit\nhtop\n"


def test_in_branch_upgrade_removes_the_old_firmware_and_keeps_the_hosts_prefs_and_holds(tmp_path, prefs):
    installed = dpkg([("nvidia-driver-580-open", OLD, "hold"), ("nvidia-dkms-580-open", OLD, "hold"),
                      ("nvidia-firmware-580-580.82.07", OLD, "hold"), ("libnvidia-compute-580", OLD, "hold"),
                      ("nvidia-container-toolkit", "1.17.8-1", "hold"), ("htop", "3.2.2-2", "hold")])
    status = ("Package: nvidia-firmware-580-580.82.07\nStatus: hold ok installed\n\n"
              "Package: htop\nStatus: hold ok installed\n\n"
              "Package: nvidia-container-toolkit\nStatus: hold ok installed\n")
    madison = ("nvidia-driver-580-open | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n"
               "nvidia-driver-580-open | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n" % (NEW, OLD))
    seen = {}

    def simulate(argv):
        parts = [a.split("=", 1)[1] for a in argv if a.startswith("Dir::Etc::PreferencesParts=")][0]
        status_copy = [a.split("=", 1)[1] for a in argv if a.startswith("Dir::State::status=")][0]
        seen["prefs"] = {n: open(os.path.join(parts, n)).read() for n in os.listdir(parts)}
        seen["status"] = open(status_copy).read()
        return (0, "Inst nvidia-driver-580-open [%s] (%s Ubuntu:24.04/noble [amd64])\n"
                   "Remv nvidia-firmware-580-580.82.07 [%s]\n" % (OLD, NEW, OLD), "")

    commands = [
        (["dpkg", "--print-architecture"], (0, "amd64\n", "")),
        (["dpkg-query", "-W"], (0, installed, "")),
        (["/usr/bin/apt-cache", "madison"], (0, madison, "")),
        (["/usr/bin/apt-cache", "pkgnames"], (0, PKGNAMES, "")),
    ]
    args = {"packages": ["nvidia-driver-580-open"], "branch": "580", "family": FAMILY, "exclude": EXCLUDE,
            "keep_installed": False, "other_branches": ["535", "550"],
            "preferences_path": str(prefs / "rigkeeper-nvidia")}

    calls_box = {}

    def run_command(self, argv, **kw):
        calls_box.setdefault("all", []).append(argv)
        if argv[0].endswith("apt-get"):
            return simulate(argv)
        for prefix, result in commands:
            if argv[:len(prefix)] == prefix:
                return result
        raise AssertionError("unexpected command %r" % (argv,))

    (tmp_path / "status").write_text(status)
    (tmp_path / "tmp").mkdir()
    with patch_module_args(args), \
            mock.patch.object(plan, "DPKG_STATUS", str(tmp_path / "status")), \
            mock.patch.object(basic.AnsibleModule, "exit_json", lambda self, **kw: (_ for _ in ()).throw(Exit(kw))), \
            mock.patch.object(basic.AnsibleModule, "fail_json", lambda self, **kw: (_ for _ in ()).throw(Fail(kw))), \
            mock.patch.object(basic.AnsibleModule, "run_command", autospec=True, side_effect=run_command), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: "/usr/bin/" + name), \
            mock.patch.object(basic.AnsibleModule, "tmpdir", str(tmp_path / "tmp")):
        with pytest.raises(Exit) as exc:
            plan.main()
    result = exc.value.args[0]
    assert result["version"] == NEW and result["resolved_from"] == "newest"
    assert result["install"] == ["nvidia-driver-580-open=" + NEW]
    assert result["remove"] == ["nvidia-firmware-580-580.82.07"]
    apt = [c for c in calls_box["all"] if c[0].endswith("apt-get")][0]
    # The flags: a simulation without locking, downgrades allowed, no blanket --ignore-hold.
    assert apt[:2] == ["/usr/bin/apt-get", "--simulate"]
    assert "--ignore-hold" not in apt and "--allow-downgrades" in apt and "--no-install-recommends" in apt
    assert "Debug::NoLocking=true" in apt
    assert apt[-2:] == ["nvidia-driver-580-open=" + NEW, "nvidia-firmware-580-580.82.07-"]
    # The host's other preferences are kept; rigkeeper's file is the new one.
    assert seen["prefs"]["owner-htop"].startswith("Package: htop")
    assert "Pin: version 580.95.05-0ubuntu0.24.04.1\nPin-Priority: 1001" in seen["prefs"]["rigkeeper-nvidia"]
    # Exact names (apt-cache pkgnames and dpkg's), no glob: the other branches' names blocked.
    pin = seen["prefs"]["rigkeeper-nvidia"]
    assert "Package: nvidia-driver-535 nvidia-driver-550-open\nPin: version *\nPin-Priority: -1" in pin
    assert "libnvidia-compute-580 nvidia-dkms-580-open nvidia-driver-580-open nvidia-firmware-580-580.82.07" in pin
    assert "*" not in "".join(ln for ln in pin.splitlines() if ln.startswith("Package:"))
    assert result["block_names"] == ["nvidia-driver-535", "nvidia-driver-550-open"]
    # The family's holds are released for the simulation; the owner's other holds (htop, and the
    # container toolkit, which is no driver family member) are kept.
    assert "Package: nvidia-firmware-580-580.82.07\nStatus: install ok installed" in seen["status"]
    assert "Package: htop\nStatus: hold ok installed" in seen["status"]
    assert "Package: nvidia-container-toolkit\nStatus: hold ok installed" in seen["status"]
    assert result["summary"] == ["upgrade nvidia-driver-580-open %s -> %s" % (OLD, NEW),
                                 "remove nvidia-firmware-580-580.82.07 %s" % OLD]


def _exit_of(args, commands, tmp_path):
    def run_command(self, argv, **kw):
        for prefix, res in commands + [(["/usr/bin/apt-cache", "pkgnames"], (0, PKGNAMES, ""))]:
            if argv[:len(prefix)] == prefix:
                return res(argv) if callable(res) else res
        raise AssertionError("unexpected command %r" % (argv,))
    (tmp_path / "status").write_text("")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    with patch_module_args(args), \
            mock.patch.object(plan, "DPKG_STATUS", str(tmp_path / "status")), \
            mock.patch.object(basic.AnsibleModule, "exit_json", lambda self, **kw: (_ for _ in ()).throw(Exit(kw))), \
            mock.patch.object(basic.AnsibleModule, "fail_json", lambda self, **kw: (_ for _ in ()).throw(Fail(kw))), \
            mock.patch.object(basic.AnsibleModule, "run_command", autospec=True, side_effect=run_command), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: "/usr/bin/" + name), \
            mock.patch.object(basic.AnsibleModule, "tmpdir", str(tmp_path / "tmp")):
        try:
            plan.main()
        except (Exit, Fail) as e:
            return type(e).__name__, e.args[0]
    raise AssertionError("no exit")


def test_590_resolves_the_driver_from_libnvidia_compute_and_installs_the_pinning_package_first(tmp_path):
    madison = ("nvidia-open | 590.48.01-1 | file:/srv/cuda  Packages\nnvidia-open | 595.71.05-1 | file:/srv/cuda  Packages\n"
               "libnvidia-compute | 595.71.05-0ubuntu1 | file:/srv/cuda  Packages\n"
               "libnvidia-compute | 590.48.01-0ubuntu1 | file:/srv/cuda  Packages\n"
               "libnvidia-compute | 590.44.01-0ubuntu1 | file:/srv/cuda  Packages\n"
               "nvidia-driver-pinning-590 | 590-1 | file:/srv/cuda  Packages\n")
    kind, result = _exit_of(
        {"packages": ["nvidia-open"], "pre_packages": ["nvidia-driver-pinning-590"], "version_from": "libnvidia-compute",
         "branch": "590", "family": FAMILY, "exclude": EXCLUDE, "simulate": False},
        [(["dpkg", "--print-architecture"], (0, "amd64\n", "")), (["dpkg-query", "-W"], (0, "", "")),
         (["/usr/bin/apt-cache", "madison"], (0, madison, ""))], tmp_path)
    assert kind == "Exit", result
    assert result["version"] == "590.48.01-0ubuntu1" and result["available"] == ["590.48.01-0ubuntu1", "590.44.01-0ubuntu1"]
    assert result["install"] == ["nvidia-driver-pinning-590=590-1", "nvidia-open=590.48.01-1"]
    assert result["pin_version"] == "590.48.01-*"


def test_precompiled_modules_take_the_build_for_this_driver_or_refuse(tmp_path):
    madison = ("nvidia-headless-no-dkms-580-open | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n"
               "nvidia-headless-no-dkms-580-open | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n" % (NEW, OLD))
    show = ("Package: linux-modules-nvidia-580-open-generic\nVersion: 6.8.0-51.52+2\n"
            "Depends: linux-modules-nvidia-580-open-6.8.0-51-generic (= 6.8.0-51.52+2), nvidia-kernel-common-580 (>= 580.95.05)\n\n"
            "Package: linux-modules-nvidia-580-open-generic\nVersion: 6.8.0-51.52+1\n"
            "Depends: linux-modules-nvidia-580-open-6.8.0-51-generic (= 6.8.0-51.52+1), nvidia-kernel-common-580 (>= 580.82.07)\n")
    base = [(["dpkg", "--print-architecture"], (0, "amd64\n", "")), (["dpkg-query", "-W"], (0, "", "")),
            (["/usr/bin/apt-cache", "madison"], (0, madison, "")), (["/usr/bin/apt-cache", "show"], (0, show, ""))]
    args = {"packages": ["nvidia-headless-no-dkms-580-open", "linux-modules-nvidia-580-open-generic"],
            "kernel_following": ["linux-modules-nvidia-*"], "branch": "580", "family": FAMILY, "exclude": EXCLUDE,
            "simulate": False, "version": "580.82.07"}
    kind, result = _exit_of(args, base, tmp_path)
    assert kind == "Exit", result
    assert result["install"] == ["nvidia-headless-no-dkms-580-open=" + OLD,
                                 "linux-modules-nvidia-580-open-generic=6.8.0-51.52+1"]
    assert all(p["name"] != "linux-modules-nvidia-580-open-generic" for p in result["holdable_after"])
    kind, result = _exit_of(dict(args, version=None), base[:3] + [(["/usr/bin/apt-cache", "show"], (0, show.split("\n\n")[1], ""))],
                            tmp_path)
    assert kind == "Fail" and "has no build for driver 580.95.05" in result["msg"]


def test_the_firmware_named_for_the_driver_version_is_installed_with_it(tmp_path):
    """Canonical's precompiled open modules need the GSP firmware of exactly the driver's version;
    the plan names it (version_named), at the driver's version, when the archive offers it."""
    madison = ("nvidia-headless-no-dkms-580-open | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n"
               "nvidia-utils-580 | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n" % (NEW, NEW))
    fw = "nvidia-firmware-580-580.95.05 | %s | file:/srv/ubuntu noble/restricted amd64 Packages\n" % NEW

    def madison_answer(argv):
        return (0, fw if argv[2:] == ["nvidia-firmware-580-580.95.05"] else madison, "")
    commands = [(["dpkg", "--print-architecture"], (0, "amd64\n", "")), (["dpkg-query", "-W"], (0, "", "")),
                (["/usr/bin/apt-cache", "madison"], madison_answer)]
    args = {"packages": ["nvidia-headless-no-dkms-580-open", "nvidia-utils-580"], "branch": "580",
            "family": FAMILY, "exclude": EXCLUDE, "keep_installed": True, "other_branches": ["535"],
            "preferences_path": str(tmp_path / "rigkeeper-nvidia"), "simulate": False,
            "version_named": ["nvidia-firmware-580-{upstream}"]}
    kind, result = _exit_of(args, commands, tmp_path)
    assert kind == "Exit", result
    assert result["install"] == ["nvidia-headless-no-dkms-580-open=" + NEW, "nvidia-utils-580=" + NEW,
                                 "nvidia-firmware-580-580.95.05=" + NEW]
    # Not offered: nothing added (an archive that ships the firmware inside another package).
    commands[2] = (["/usr/bin/apt-cache", "madison"], (0, madison, ""))
    kind, result = _exit_of(dict(args, preferences_path=str(tmp_path / "p2")), commands, tmp_path)
    assert result["install"] == ["nvidia-headless-no-dkms-580-open=" + NEW, "nvidia-utils-580=" + NEW]
