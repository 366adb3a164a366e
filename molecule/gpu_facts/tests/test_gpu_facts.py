"""gpu_facts + preflight on the simulated rig: facts equal the sim's hardware, preflight names the
degraded link and the over-budget PSU, and nothing on the host changed."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PRESET = json.loads((ROOT / "tests/sim/configs/degraded-x4.json").read_text())


def ansible_playbook(play: str, *extra: str) -> subprocess.CompletedProcess:
    eph = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    pb = eph / "rk-verify-play.yml"
    pb.write_text(play)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="json", RIGKEEPER_REPORT_DIR=str(eph / "reports"))
    return subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(pb), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def facts():
    res = ansible_playbook("""
- hosts: all
  gather_facts: false
  roles: [rigkeeper.gpu.gpu_facts]
  tasks:
    - {name: facts, ansible.builtin.debug: {var: ansible_facts.nvidia_gpu}}
    - {name: host, ansible.builtin.debug: {var: ansible_facts.rigkeeper_host}}
""")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    # The json stdout callback prints one document; the report callback's summary follows it.
    tasks = json.JSONDecoder().raw_decode(res.stdout)[0]["plays"][0]["tasks"]
    host = list(tasks[-1]["hosts"])[0]
    return tasks[-2]["hosts"][host]["ansible_facts.nvidia_gpu"], tasks[-1]["hosts"][host]["ansible_facts.rigkeeper_host"]


@pytest.fixture(scope="module")
def gathered():
    return facts()


def test_facts_match_the_sim_hardware(gathered, host):
    gpu, _ = gathered
    assert gpu["present"] is True
    assert gpu["count"] == len(PRESET["gpus"]) == 2
    installed = host.run("dpkg-query -W -f '${Version}' nvidia-utils-580").stdout
    assert installed.startswith(gpu["driver_version"] + "-")
    for fact, want in zip(gpu["gpus"], PRESET["gpus"]):
        assert fact["bus_id"] == want["pci_bus_id"]
        assert fact["product_name"] == want["name"]
        assert fact["uuid"] == want["uuid"]
        assert fact["architecture"] == want["architecture"]
        assert fact["memory_total_mib"] == want["memory_total_mib"]
        assert (fact["power_default_w"], fact["power_min_w"], fact["power_max_w"]) == (
            want["power"]["default_w"], want["power"]["min_w"], want["power"]["max_w"])
        assert (fact["pcie_width_current"], fact["pcie_width_max"]) == (
            want["pcie"]["width_current"], want["pcie"]["width_max"])
    assert gpu["gpus"][1]["pcie_width_current"] == 4
    assert gpu["topology"]["labels"] == ["GPU0", "GPU1"]
    assert gpu["p2p_read"]["GPU0"]["GPU1"] == PRESET["p2p"]["read"]


def test_host_facts_read_the_sim_boot_layer(gathered, host):
    _, rh = gathered
    assert rh["cmdline"] == host.file("/run/rigkeeper-sim/cmdline").content_string.strip()
    assert rh["driver_running_version"] == rh["driver_installed_version"]
    assert rh["driver_mismatch"] is False
    assert rh["systemd"] is True


def preflight(extra_vars: dict) -> subprocess.CompletedProcess:
    return ansible_playbook("""
- hosts: all
  gather_facts: false
  roles: [rigkeeper.gpu.preflight]
""", "-e", json.dumps(extra_vars))


def messages(res):
    return res.stdout


def test_degraded_link_is_reported_and_can_fail_the_run():
    res = preflight({"preflight_severities": {"pcie_link": "fail"}})
    assert res.returncode != 0
    out = messages(res)
    assert "00000000:02:00.0" in out and "x4" in out and "x16" in out


def test_over_budget_psu_is_reported_with_the_numbers():
    res = preflight({"rigkeeper_psu_watts": 1000, "gpu_power_limits": [{"model": "RTX 4090", "watts": 450}],
                     "preflight_severities": {"psu_budget": "fail", "pcie_link": "warn"}})
    assert res.returncode != 0
    out = messages(res)
    assert "psu" in out.lower() and "1000" in out and "1150" in out


def test_fewer_gpus_than_expected_fails():
    res = preflight({"rigkeeper_expected_gpu_count": 3})
    assert res.returncode != 0
    assert "3" in messages(res) and "2" in messages(res)


def test_known_bad_branch_wanted_is_refused_before_any_change():
    res = preflight({"nvidia_driver_branch": "545"})
    assert res.returncode != 0
    assert "vllm-project/vllm#1801" in messages(res)


def test_nothing_on_the_host_changed_since_prepare(host):
    changed = host.run("find /etc /usr /var/lib /boot -xdev -newer /var/tmp/rk-prepared -print").stdout.split()
    assert changed == []
