"""Secure Boot on, no MOK: Canonical's signed precompiled modules, following the kernel, never held."""

from driver_helpers import BOOTS, family, loaded_version, smi_versions

K51 = "6.8.0-51-generic"


def test_precompiled_modules_installed_no_dkms(host):
    pkgs = family(host)
    assert pkgs["linux-modules-nvidia-580-open-generic"][0] == "6.8.0-51.52+2"   # the build of 580.95.05
    assert pkgs["linux-modules-nvidia-580-open-" + K51][0] == "6.8.0-51.52+2"
    assert pkgs["nvidia-headless-no-dkms-580-open"] == ("580.95.05-0ubuntu0.24.04.1", "hold")
    assert not [n for n in pkgs if n.startswith("nvidia-dkms")], pkgs
    assert not host.package("linux-headers-generic").is_installed   # no DKMS, no headers


def test_the_kernel_following_modules_are_not_held(host):
    """They move with every kernel update (a held one would leave a new kernel without its module)."""
    pkgs = family(host)
    assert pkgs["linux-modules-nvidia-580-open-generic"][1] == "install"
    assert pkgs["linux-modules-nvidia-580-open-" + K51][1] == "install"
    held = {n for n, (_v, s) in pkgs.items() if s == "hold"}
    assert "nvidia-utils-580" in held and not {n for n in held if n.startswith("linux-modules-")}


def test_the_signed_module_loads_under_secure_boot(host):
    assert host.check_output("mokutil --sb-state") == "SecureBoot enabled"
    info = host.check_output(f"modinfo -k {K51} nvidia")
    assert "signer:         Canonical Ltd. Kernel Module Signing" in info
    assert loaded_version(host) == "580.95.05"
    assert smi_versions(host) == ["580.95.05", "580.95.05"]
    assert len(host.file(BOOTS).content_string.split()) == 2   # one reboot (nouveau held the GPUs)


def test_unattended_upgrades_leaves_the_kernel_modules_alone(host):
    dump = host.check_output("apt-config dump | grep -A30 'Unattended-Upgrade::Package-Blacklist'")
    assert "linux-modules" not in dump


def test_preflight_refuses_dkms_without_an_enrolled_mok(host):
    """playbooks/preflight.yml on its own says the same before anything runs, with what to do."""
    import os
    import subprocess
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    root = os.environ["MOLECULE_PROJECT_DIRECTORY"]
    env["ANSIBLE_CONFIG"] = os.path.join(root, "ansible.cfg")
    run = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                          os.path.join(root, "playbooks/preflight.yml"), "-e", "nvidia_driver_modules=dkms"],
                         capture_output=True, text=True, env=env, cwd=root)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Key was rejected by service" in out and "mokutil --import" in out, out[-3000:]
