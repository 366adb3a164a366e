"""The probe's view of the NVIDIA family: the pin it expects is the one the role writes, from the
names apt knows, and a pin that misses names apt offers since is reported as such."""
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_apt import family_findings, render_preferences

V = "580.95.05-0ubuntu0.24.04.1"
FAMILY = ["nvidia-*", "libnvidia-*"]
EXCLUDE = ["nvidia-container-*", "libnvidia-container*"]
RES = {"install": ["nvidia-driver-580"], "branch": "580", "family": FAMILY, "exclude": EXCLUDE,
       "other_branches": ["535"], "preferences_path": "/etc/apt/preferences.d/rigkeeper-nvidia"}
PKGS = {"nvidia-driver-580": {"version": V, "selection": "hold", "status": "installed"},
        "libnvidia-compute-580": {"version": V, "selection": "hold", "status": "installed"}}
NAMES = ["nvidia-driver-580", "libnvidia-compute-580", "nvidia-driver-535", "nvidia-container-toolkit"]


def test_the_pin_the_role_writes_is_ok():
    pin = render_preferences(FAMILY, [V], "580", ["535"], NAMES, EXCLUDE)
    assert family_findings(RES, PKGS, pin, NAMES) == ("ok", [])


def test_a_pin_missing_names_apt_offers_now_is_a_warning_with_those_names():
    """A repository added after the driver (the CUDA repository) brings names: the pin still holds
    the driver, so this is no drift (a second run must not change anything), only a warning."""
    pin = render_preferences(FAMILY, [V], "580", ["535"], NAMES, EXCLUDE)
    status, reasons = family_findings(RES, PKGS, pin, NAMES + ["nvidia-driver-535-open", "nvidia-settings"])
    assert status == "warn"
    assert reasons == ["/etc/apt/preferences.d/rigkeeper-nvidia does not list nvidia-driver-535-open, nvidia-settings "
                       "(apt offers them since the pin was written; the role adds them when it next applies)"]


def test_a_pin_of_another_version_says_which():
    pin = render_preferences(FAMILY, ["580.82.07-0ubuntu0.24.04.1"], "580", ["535"], NAMES, EXCLUDE)
    status, reasons = family_findings(RES, PKGS, pin, NAMES)
    assert status == "drift" and "does not pin exactly %s (pins 580.82.07-0ubuntu0.24.04.1)" % V in reasons[0]


def test_debians_separately_versioned_members_are_not_leftovers():
    """Debian moved nvidia-driver to 535.309.01 and kept nvidia-persistenced (its own source) at
    535.171.04: not another driver's leftover there; an unlisted unversioned name still is."""
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_apt import off_branch
    fam = [{"name": "nvidia-driver", "version": "535.309.01-0+deb12u1", "branch": None},
           {"name": "nvidia-persistenced", "version": "535.171.04-1~deb12u1", "branch": None},
           {"name": "libcuda1", "version": "535.261.03-1", "branch": None}]
    assert off_branch(fam, "535", "535.309.01") == ["nvidia-persistenced 535.171.04-1~deb12u1",
                                                     "libcuda1 535.261.03-1"]
    assert off_branch(fam, "535", "535.309.01", ["nvidia-persistenced"]) == ["libcuda1 535.261.03-1"]


def test_the_policy_names_debians_separately_versioned_members_for_debian_only():
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_data import POLICY
    names = POLICY["packages"]["versioned_apart_debian"]["names"]
    assert "nvidia-persistenced" in names and "nvidia-settings" in names


def test_driver_packages_carry_versioned_apart_for_debian_only():
    import rigkeeper_policy as policy
    deb = policy.rk_driver_packages(535, "debian", distro="debian")
    ubu = policy.rk_driver_packages(580, "ubuntu")
    assert "nvidia-persistenced" in deb["versioned_apart"] and ubu["versioned_apart"] == []
