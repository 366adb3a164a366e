"""The transitional trap: nvidia-driver-535-server 535.309.01-0ubuntu0.24.04.2 depends on the 580-server
packages. Converge asserted the refusal on the fresh rig and installed 535.261.03 -server; here
that install, the trap again as an upgrade within the branch, and another driver's library on disk
caught by the verification of the installed driver."""

from driver_helpers import PREFS, family, library_versions, smi_versions, snapshot

VERSION = "535.261.03-0ubuntu0.24.04.1"
STRAY = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.95.05"


def test_exact_535_server_installed_pinned_and_held(host):
    pkgs = family(host)
    assert pkgs["nvidia-driver-535-server"] == (VERSION, "hold")
    assert {v for n, (v, _) in pkgs.items() if "535-server" in n} == {VERSION}
    assert not [n for n in pkgs if "580" in n], pkgs
    assert {s for _, s in pkgs.values()} == {"hold"}
    assert "Pin: version 535.261.03-0ubuntu0.24.04.1\nPin-Priority: 1001" in host.file(PREFS).content_string
    assert smi_versions(host) == ["535.261.03", "535.261.03"]


def test_the_transitional_version_is_no_candidate(host):
    policy = host.check_output("apt-cache policy nvidia-driver-535-server")
    assert f"*** {VERSION} 1001" in policy
    assert "535.309.01-0ubuntu0.24.04.2 500" in policy  # in the archive, but below the pin


def test_upgrade_within_the_branch_is_caught_before_any_change(host, playbook):
    before = snapshot(host)
    run = playbook({"nvidia_driver_version": "", "nvidia_driver_update_within_branch": True})
    assert run.returncode != 0 and run.changed == 0
    assert "nvidia-driver-535-server 535.309.01-0ubuntu0.24.04.2 pulls branch 580" in run.output
    assert "(nvidia-driver-580-server)" in run.output
    assert snapshot(host) == before


def test_another_drivers_library_on_disk_is_caught(host, playbook):
    """A leftover of another install (a .run installer, a half-done upgrade): dpkg is fine, a
    library no package owns says 580.95.05; it is never taken for the installed driver, and the
    verification of the installed driver must fail naming it."""
    host.run(f"touch {STRAY}")
    try:
        assert library_versions(host) == ["535.261.03", "580.95.05"]
        before = snapshot(host)
        run = playbook()
        assert run.returncode != 0 and run.changed == 0
        assert "the NVIDIA library on disk is 535.261.03" in run.output
        assert f"libraries no package owns (a .run installer's leftovers): {STRAY}" in run.output
        assert snapshot(host) == before
    finally:
        host.run(f"rm -f {STRAY}")
    assert library_versions(host) == ["535.261.03"]
