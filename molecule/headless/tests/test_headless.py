"""The headless role, seen through systemd's own view of the converged rig."""

import pytest

USER = "rkconsole"
DROPIN_DIR = "/etc/systemd/system/getty@tty1.service.d"
DROPIN = DROPIN_DIR + "/override.conf"
SLEEP_CONF = "/etc/systemd/sleep.conf.d/99-rigkeeper-no-sleep.conf"
SLEEP_TARGETS = [
    "sleep.target",
    "suspend.target",
    "hibernate.target",
    "hybrid-sleep.target",
    "suspend-then-hibernate.target",
]


def show(host, unit, prop):
    return host.check_output("systemctl show -p %s --value %s", prop, unit)


def test_default_target_is_multi_user(host):
    assert host.check_output("systemctl get-default") == "multi-user.target"


@pytest.mark.parametrize("unit", SLEEP_TARGETS)
def test_sleep_target_is_masked(host, unit):
    assert show(host, unit, "LoadState") == "masked"
    assert host.run("systemctl is-enabled %s", unit).stdout.strip() == "masked"


def test_sleep_modes_forbidden_in_systemds_merged_config(host):
    merged = host.check_output("systemd-analyze cat-config systemd/sleep.conf")
    header = "# " + SLEEP_CONF
    assert header in merged
    ours = merged.split(header, 1)[1]
    # Ours is the last file of the merged view, so its values are the ones systemd-sleep uses.
    assert "\n# /" not in ours
    for line in ("AllowSuspend=no", "AllowHibernation=no", "AllowSuspendThenHibernate=no", "AllowHybridSleep=no"):
        assert line in ours.splitlines()


def test_autologin_dropin_is_a_file_inside_a_directory(host):
    # prepare.yml left a regular file at the .d path (the broken recipe): it must be a directory now.
    assert host.file(DROPIN_DIR).is_directory
    dropin = host.file(DROPIN)
    assert dropin.is_file
    assert (dropin.user, dropin.group, dropin.mode) == ("root", "root", 0o644)
    body = [line for line in dropin.content_string.splitlines() if line and not line.startswith("#")]
    assert body == [
        "[Service]",
        "ExecStart=",
        "ExecStart=-/sbin/agetty --autologin %s --noclear %%I $TERM" % USER,
    ]


def test_autologin_in_systemds_view(host):
    # systemctl cat: the unit as systemd assembles it from files (no /dev/tty1 needed).
    assert "# " + DROPIN in host.check_output("systemctl cat getty@tty1.service")
    assert show(host, "getty@tty1.service", "DropInPaths").split() == [DROPIN]
    # systemctl show: the unit as loaded by PID 1, so this also proves the daemon-reload happened.
    exec_start = show(host, "getty@tty1.service", "ExecStart")
    assert exec_start.count("path=") == 1, "the empty ExecStart= must clear the packaged command"
    assert "argv[]=/sbin/agetty --autologin %s --noclear tty1 $TERM ;" % USER in exec_start
    assert "ignore_errors=yes" in exec_start


def test_desktop_package_removed(host):
    assert not host.package("lightdm").is_installed


def test_check_mode_on_the_converged_rig_reports_nothing(playbook):
    run = playbook(check=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (run.changed, run.failed) == (0, 0), run.stdout


def test_turning_autologin_off_takes_it_away(host, playbook):
    try:
        run = playbook(extra_vars={"headless_autologin_enabled": False})
        assert run.returncode == 0, run.stdout + run.stderr
        assert not host.file(DROPIN).exists
        exec_start = show(host, "getty@tty1.service", "ExecStart")
        assert "--autologin" not in exec_start
        assert exec_start.count("path=") == 1
    finally:
        run = playbook()
        assert run.returncode == 0, run.stdout + run.stderr
    assert "--autologin %s" % USER in show(host, "getty@tty1.service", "ExecStart")
