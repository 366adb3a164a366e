"""590+ from NVIDIA's CUDA repository: unversioned names, the branch locked by the pinning package
installed first, the version resolved from the driver's own packages, held through upgrades."""

from driver_helpers import PREFS, family, smi_versions

V590 = "590.48.01"


def dpkg_log_order(host, *names):
    """Position of each package's first `install` line in dpkg's log."""
    log = host.file("/var/log/dpkg.log").content_string.splitlines()
    pos = {}
    for i, line in enumerate(log):
        parts = line.split()
        if len(parts) > 3 and parts[2] == "install":
            name = parts[3].split(":")[0]
            pos.setdefault(name, i)
    return [pos.get(n) for n in names]


def test_the_newest_590_with_its_pinning_package_installed_first(host):
    pkgs = family(host)
    assert pkgs["libnvidia-compute"] == (V590 + "-0ubuntu1", "hold")
    assert pkgs["nvidia-open"] == (V590 + "-1", "hold")
    assert pkgs["nvidia-driver-pinning-590"] == ("590-1", "hold")
    pin, driver = dpkg_log_order(host, "nvidia-driver-pinning-590", "libnvidia-compute")
    assert pin is not None and driver is not None and pin < driver
    assert f"Pin: version {V590}-0ubuntu1\nPin-Priority: 1001" in host.file(PREFS).content_string and f"Pin: version {V590}-1\n" in host.file(PREFS).content_string
    assert smi_versions(host) == [V590, V590]


def test_the_family_stays_on_590_while_newer_branches_are_offered(host):
    offered = host.check_output("apt-cache madison libnvidia-compute")
    assert "620.36.04" in offered and "595.71.05" in offered
    before = family(host)
    run = host.run("DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade")
    assert run.rc == 0, run.stdout + run.stderr
    assert family(host) == before


def test_upgrade_driver_moves_the_whole_family_to_620(host, playbook):
    # The rig's wants as converge.yml gives them (a user's inventory would hold them), branch 620.
    run = playbook({"rigkeeper_distro": "ubuntu", "nvidia_driver_source": "cuda", "nvidia_driver_branch": "620",
                    "rigkeeper_expected_gpu_models": ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"]},
                   name="/".join([__import__("os").environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", "upgrade_driver.yml"]))
    assert run.returncode == 0, run.output[-4000:]
    pkgs = family(host)
    assert pkgs["libnvidia-compute"][0] == "620.36.04-0ubuntu1"
    assert "nvidia-driver-pinning-620" in pkgs and "nvidia-driver-pinning-590" not in pkgs
    assert {s for _v, s in pkgs.values()} == {"hold"}
    assert smi_versions(host) == ["620.36.04", "620.36.04"]
