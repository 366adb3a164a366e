"""Pascal keeps 580, proprietary modules; 590+ is refused before anything changes."""

from driver_helpers import family, smi_versions, snapshot


def test_580_with_the_proprietary_modules(host):
    pkgs = family(host)
    assert pkgs["nvidia-driver-580"] == ("580.95.05-0ubuntu0.24.04.1", "hold")
    assert "nvidia-dkms-580" in pkgs and "nvidia-dkms-580-open" not in pkgs
    assert smi_versions(host) == ["580.95.05", "580.95.05"]


def test_590_and_620_are_refused_before_any_change(host, playbook):
    before = snapshot(host)
    for branch in ("590", "620"):
        run = playbook({"nvidia_driver_branch": branch, "nvidia_driver_source": "cuda"})
        assert run.returncode != 0 and run.changed == 0, run.output[-3000:]
        assert "Tesla P100-PCIE-16GB" in run.output and "Pascal" in run.output
        assert "580" in run.output and "last branch" in run.output
        assert snapshot(host) == before


def test_open_modules_are_refused_for_pascal(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_flavor": "open"})
    assert run.returncode != 0 and "open kernel modules support Turing and newer" in run.output, run.output[-3000:]
    assert snapshot(host) == before
