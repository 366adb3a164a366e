"""Each role's wanted state, compiled by the rigkeeper_probe action on a real ansible-playbook run
(localhost, the simulator's variables, the facts of a 2x RTX 4090 rig), and the checks the
controller judges from facts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rigkeeper_policy
from rigkeeper_wanted import judge_fact

ROOT = Path(__file__).resolve().parents[2]
GPUS = [{"index": i, "bus_id": "00000000:0%d:00.0" % (i + 1), "product_name": "NVIDIA GeForce RTX 4090",
         "architecture": "Ada Lovelace", "uuid": "GPU-%d" % i, "power_limit_w": 450.0, "power_default_w": 450.0,
         "power_min_w": 150.0, "power_max_w": 600.0, "persistence_mode": True, "memory_total_mib": 24564}
        for i in range(2)]
FACTS = {
    "nvidia_gpu": {"present": True, "error": None, "count": 2, "gpus": GPUS, "nvswitch": False,
                   "driver_version": "580.95.05", "compute_apps": []},
    "rigkeeper_host": {"cpu_vendor": "amd", "cmdline": "BOOT_IMAGE=/vmlinuz ro quiet", "secure_boot": False,
                       "mok_enrolled": None, "kernel_release": "6.8.0-51-generic", "boot_kernel": "6.8.0-51-generic",
                       "driver_installed_version": "580.95.05", "driver_running_version": "580.95.05",
                       "driver_mismatch": False, "nouveau": {"loaded": False, "in_use": False},
                       "acs": {"checked": True, "enabled_bridges": []}, "reboot_required_file": False,
                       "os": {"distribution": "Ubuntu", "distribution_release": "noble",
                              "distribution_major_version": "24", "architecture": "x86_64"}},
}
TEST_FACTS_MODULE = """#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
module = AnsibleModule(argument_spec=dict(facts=dict(type='dict', required=True)))
module.exit_json(changed=False, ansible_facts=module.params['facts'])
"""
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    # Facts arrive as the gpu_facts role and the setup module leave them: in ansible_facts (a module's
    # result), here from a test module beside this play.
    - name: The facts of a 2x4090 rig
      rk_test_facts:
        facts: "{{ {'distribution': 'Ubuntu', 'distribution_release': 'noble', 'distribution_major_version': '24',
                    'architecture': 'x86_64'} | combine(facts) }}"
    - name: Compile every role
      rigkeeper.gpu.rigkeeper_probe:
        roles: "{{ compile_roles | default(['nvidia_driver', 'cuda_toolkit', 'container_toolkit', 'kernel_params',
                                             'gpu_power', 'headless', 'ssh']) }}"
        probe: false
        record: true
        fail_on_error: "{{ fail_on_error | default(true) }}"
      register: compiled
    - name: Save it
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'wanted': compiled.ansible_facts.rigkeeper_wanted, 'roles': compiled.roles} | to_json }}"
        mode: "0644"
"""


def compile_all(tmp_path, **extra):
    pb = tmp_path / "play.yml"
    pb.write_text(PLAY)
    (tmp_path / "library").mkdir(exist_ok=True)
    (tmp_path / "library" / "rk_test_facts.py").write_text(TEST_FACTS_MODULE)
    out = tmp_path / "out.json"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, RIGKEEPER_REPORT_DIR=str(tmp_path / "r"))
    # The simulator's variables (its repositories, rigkeeper_distro ubuntu) as extra vars.
    import yaml
    sim = yaml.safe_load((ROOT / "inventory/sim/group_vars/all/sim.yml").read_text())
    sim = {k: v for k, v in sim.items() if "lookup(" not in str(v)}
    sim.update(facts=FACTS, out=str(out), rigkeeper_sim_admin_key="ssh-ed25519 AAAATEST test", **extra)
    (tmp_path / "vars.json").write_text(json.dumps(sim))
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", "@" + str(tmp_path / "vars.json"), str(pb)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_all(tmp_path_factory.mktemp("wanted"))


def test_every_role_compiles_with_its_resources(compiled):
    wanted = compiled["wanted"]
    assert set(wanted) == {"nvidia_driver", "cuda_toolkit", "container_toolkit", "kernel_params", "gpu_power",
                           "headless", "ssh", "record"}
    assert compiled["roles"] == {}   # compile only: no role is an error
    fam = wanted["nvidia_driver"]["res"]["family"]
    assert fam["kind"] == "nvidia_family" and fam["branch"] == "580"
    assert fam["install"] == ["nvidia-driver-580-open"] and "nvidia-*" in fam["family"]
    assert wanted["nvidia_driver"]["data"]["flavor"] == "open"


def test_files_carry_the_rendered_template(compiled):
    w = compiled["wanted"]
    assert w["headless"]["res"]["sleep_conf"]["content"].startswith("#\n# Ansible managed\n#\n")
    assert "AllowSuspend=no" in w["headless"]["res"]["sleep_conf"]["content"]
    conf = w["gpu_power"]["res"]["conf"]["content"]
    assert "00000000:01:00.0 450" in conf and "00000000:02:00.0 450" in conf
    assert "Unattended-Upgrade::Package-Blacklist" in w["nvidia_driver"]["res"]["unattended"]["content"]
    assert w["record"]["res"]["managed"]["content"] == json.dumps(
        {"roles": ["nvidia_driver", "cuda_toolkit", "container_toolkit", "kernel_params", "gpu_power", "headless",
                   "ssh"]}, indent=4) + "\n"


def test_the_policy_runs_inside_the_compile(compiled):
    kp = compiled["wanted"]["kernel_params"]
    assert kp["data"]["args"]["present"] == ["iommu=pt"]
    grub = kp["res"]["grub_dropin"]
    assert grub["assignments"][0]["args_present"] == ["iommu=pt"]
    ssh = compiled["wanted"]["ssh"]["res"]["effective_root"]
    assert ssh["expect"]["passwordauthentication"] == "no" and ssh["expect"]["permitrootlogin"] == "without-password"


def test_a_refusal_is_that_role_error_and_the_others_still_compile(tmp_path):
    got = compile_all(tmp_path, nvidia_driver_branch=545, gpu_power_limits=[{"model": "RTX 4090", "watts": 900}],
                      fail_on_error=False)
    roles = got["roles"]
    assert roles["nvidia_driver"]["status"] == "error"
    assert "545" in roles["nvidia_driver"]["findings"][0]["reasons"][0]
    assert roles["gpu_power"]["status"] == "error"
    assert "900" in roles["gpu_power"]["findings"][0]["reasons"][0]
    assert {"ssh", "headless", "kernel_params", "cuda_toolkit", "container_toolkit"} <= set(got["wanted"])
    # Compiled for itself (fail_on_error, a role's first task), a refusal stops before any change.
    with pytest.raises(AssertionError, match="Nothing was changed"):
        compile_all(tmp_path, nvidia_driver_branch=545)


# -- facts judged on the controller ----------------------------------------------------------
def fact(check, **params):
    return {"id": "r/x", "kind": "fact", "label": "x", "check": check, "params": params}


@pytest.mark.parametrize("res,facts,status,reason", [
    (fact("cmdline", present=["iommu=pt"], absent=[]), {"rigkeeper_host": {"cmdline": "ro quiet iommu=pt"}}, "ok", None),
    (fact("cmdline", present=["iommu=pt"], absent=["nomodeset"]),
     {"rigkeeper_host": {"cmdline": "ro nomodeset"}}, "drift", "lacks iommu=pt and still runs nomodeset"),
    (fact("power_limits", limits={"00000000:01:00.0": 350.0}), {"nvidia_gpu": {"present": True, "gpus": GPUS}},
     "drift", "at 450.0 W, wanted 350.0 W"),
    (fact("power_limits", limits={"00000000:09:00.0": 350.0}), {"nvidia_gpu": {"present": True, "gpus": GPUS}},
     "drift", "GPU 00000000:09:00.0 is missing"),
    (fact("power_limits", limits={"00000000:01:00.0": 450}), {"nvidia_gpu": {"present": True, "gpus": GPUS}}, "ok", None),
    (fact("persistence"), {"nvidia_gpu": {"present": True, "gpus": [dict(GPUS[0], persistence_mode=False)]}},
     "drift", "persistence mode off on 00000000:01:00.0"),
    (fact("driver_running"), {"nvidia_gpu": {"present": False, "error": "NVIDIA-SMI has failed"},
                              "rigkeeper_host": {}}, "drift", "does not answer"),
    (fact("driver_running"), {"nvidia_gpu": {"present": True}, "rigkeeper_host": {
        "driver_mismatch": True, "driver_installed_version": "580.95.05", "driver_running_version": "535.261.03"}},
     "drift", "a reboot is pending"),
    (fact("nouveau_off"), {"rigkeeper_host": {"nouveau": {"loaded": True, "in_use": True}}}, "drift", "the console"),
    (fact("reboot_required"), {"rigkeeper_host": {"reboot_required_file": True, "reboot_required_pkgs": ["linux-image"]}},
     "warn", "linux-image"),
    (fact("acs_off"), {"rigkeeper_host": {"acs": {"checked": True, "enabled_bridges": ["0000:00:01.1"]}}},
     "drift", "ACS is on at 0000:00:01.1"),
    (fact("gpu_count", count=4), {"nvidia_gpu": {"count": 2}}, "drift", "2 GPU(s) answer, 4 expected"),
    (fact("teleport"), {}, "error", "unknown fact check"),
])
def test_fact_checks(res, facts, status, reason):
    got = judge_fact(res, facts, rigkeeper_policy)
    assert got["status"] == status, got
    if reason:
        assert reason in " ".join(got["reasons"])


@pytest.mark.parametrize("cmdline,present,absent", [
    ("ro quiet iommu=pt", ["iommu=pt"], []),
    ("ro quiet iommu=on iommu=pt", ["iommu=pt"], ["intel_iommu"]),
    ("console=tty1 console=ttyS0 iommu=pt", ["console=ttyS0"], ["nomodeset"]),
    ("ro nomodeset amd_iommu=off", ["iommu=pt", "amd_iommu=off"], ["nomodeset", "mitigations=off"]),
    ("", ["iommu=pt"], ["quiet"]),
])
def test_the_host_side_cmdline_check_agrees_with_the_policy(cmdline, present, absent):
    """The probe's (module_utils, also the host's self-audit) and the policy's comparison of the
    running command line are one rule in two places: they must agree."""
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import cmdline_diff
    assert cmdline_diff(cmdline, present, absent) == rigkeeper_policy.rk_cmdline_diff(
        cmdline, {"present": present, "absent": absent})


@pytest.mark.parametrize("dkms, status", [
    # (rc, stdout) of `dkms status -m nvidia-p2p` -> the probe's verdict
    ((0, "nvidia-p2p/580.95.05, 6.8.0-51-generic, x86_64: installed\n"), "ok"),
    ((0, "nvidia-p2p/580.95.05: added\n"), "drift"),                    # added, never built
    ((0, "nvidia-p2p/580.95.05, 6.8.0-51-generic, x86_64: built\n"), "drift"),  # built, not installed
    ((0, ""), "drift"),                                                  # DKMS knows no nvidia-p2p
    ((None, ""), "absent"),                                              # no dkms at all
])
def test_p2p_modules_are_part_of_the_driver_wanted_state(tmp_path, dkms, status):
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_probe import Host, probe
    res = compile_all(tmp_path, nvidia_driver_p2p_modules=True)["wanted"]["nvidia_driver"]["res"]["p2p_modules"]
    assert res["argv"] == ["dkms", "status", "-m", "nvidia-p2p"]
    host = Host(root="/", runner=lambda argv: (dkms[0], dkms[1], "" if dkms[0] is not None else "dkms: not found"))
    assert probe([res], host)[res["id"]]["status"] == status


def test_p2p_modules_off_leave_no_resource(compiled):
    assert "p2p_modules" not in compiled["wanted"]["nvidia_driver"]["res"]
