"""545 on 2x RTX 4090: refused without the override (converge's first play asserted that on the
fresh rig), installed with it (second play). Now: the install is exact, pinned and held, and the
refusal holds on the rig where nvidia-smi lists the GPUs."""

from driver_helpers import PREFS, family, smi_versions, snapshot

VERSION = "545.29.06-0ubuntu0.24.04.1"  # newest 545 in the simulated archive


def test_545_installed_with_the_override(host):
    pkgs = family(host)
    assert pkgs["nvidia-driver-545"][0] == VERSION
    assert {v for n, (v, _) in pkgs.items() if "-545" in n} == {VERSION}
    assert {s for _, s in pkgs.values()} == {"hold"}
    assert smi_versions(host) == ["545.29.06", "545.29.06"]


def test_pinned_to_545(host):
    text = host.file(PREFS).content_string
    assert "Pin: version 545.29.06-0ubuntu0.24.04.1\nPin-Priority: 1001" in text
    run = host.run("DEBIAN_FRONTEND=noninteractive apt-get -s install nvidia-driver-580")
    assert run.rc != 0 and "has no installation candidate" in run.stdout + run.stderr


def test_refused_again_with_the_gpus_nvidia_smi_lists(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_allow_known_bad": False}, name="converge.yml")
    # The first play asserts the refusal and passes; the second one, without the override, fails.
    assert run.returncode != 0
    assert run.changed == 0
    assert "driver branch 545 is refused for GPU 0 (00000000:01:00.0, NVIDIA GeForce RTX 4090)" in run.output
    assert "GPUs judged: NVIDIA GeForce RTX 4090, NVIDIA GeForce RTX 4090 (nvidia-smi)" in run.output
    assert snapshot(host) == before


def test_the_policy_moves_this_rig_to_580_in_check_mode(host, playbook):
    """Without a branch the policy picks 580; check mode says what would change and changes nothing."""
    before = snapshot(host)
    run = playbook(name="default_policy.yml", check=True)
    assert run.returncode == 0, run.output
    assert run.changed >= 3
    assert "install nvidia-driver-580-open 580.95.05-0ubuntu0.24.04.1" in run.output
    assert "Pin: version 580.95.05-0ubuntu0.24.04.1" in run.output  # the preferences diff
    assert snapshot(host) == before
