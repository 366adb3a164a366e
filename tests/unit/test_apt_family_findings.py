"""The probe's view of the NVIDIA family: the pin it expects is the one the role writes, from the
names apt knows, and a pin that misses names apt offers since is reported as such."""
from ansible.module_utils.rigkeeper_apt import family_findings, render_preferences

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


def test_a_pin_missing_names_apt_offers_now_is_drift_with_those_names():
    pin = render_preferences(FAMILY, [V], "580", ["535"], NAMES, EXCLUDE)
    status, reasons = family_findings(RES, PKGS, pin, NAMES + ["nvidia-driver-535-open", "nvidia-settings"])
    assert status == "drift"
    assert reasons == ["/etc/apt/preferences.d/rigkeeper-nvidia does not list nvidia-driver-535-open, nvidia-settings "
                       "(apt offers them since the pin was written; the next run adds them)"]


def test_a_pin_of_another_version_says_which():
    pin = render_preferences(FAMILY, ["580.82.07-0ubuntu0.24.04.1"], "580", ["535"], NAMES, EXCLUDE)
    status, reasons = family_findings(RES, PKGS, pin, NAMES)
    assert status == "drift" and "does not pin exactly %s (pins 580.82.07-0ubuntu0.24.04.1)" % V in reasons[0]
