"""The audit under faults: a drift in every role at once, one of them a check that cannot run; a
wiped /etc/rigkeeper; an inventory that manages fewer roles; an unreachable host. Every managed role
is reported with its own findings; a role that cannot be checked is an error and the rest are
still checked. Its own clone of the converged rig (scenario audit_faults)."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

ROLES = ["nvidia_driver", "cuda_toolkit", "container_toolkit", "kernel_params", "gpu_power", "headless", "ssh"]
GRUB = "/etc/default/grub"


def audit(tmp: Path, *extra: str, inventories=()):
    env = dict(os.environ, ANSIBLE_CONFIG=str(rk_testlib.ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               RIGKEEPER_REPORT_DIR=str(tmp))
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"]]
    for inv in inventories:
        cmd += ["-i", str(inv)]
    cmd += [str(rk_testlib.ROOT / "playbooks/audit.yml"), "--check", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=rk_testlib.ROOT)
    return res, json.loads((tmp / "audit.json").read_text())


def checks(summary, host=None):
    host = host or rk_testlib.instance()
    return summary["hosts"][host]


def items(check):
    return " | ".join("%s: %s" % (i["task"], i.get("msg") or "") for i in check["changed"] + check["failed"])


def test_a_fault_in_every_role_at_once_reports_every_role_with_its_own_findings(host, tmp_path):
    host.run_expect([0], "cp -a %s /root/grub.saved" % GRUB)
    power_before = host.check_output("nvidia-smi -i 1 --query-gpu=power.limit --format=csv,noheader,nounits")
    # nvidia_driver: unattended-upgrades may replace the driver again
    host.run_expect([0], "rm /etc/apt/apt.conf.d/51rigkeeper-nvidia-unattended")
    # cuda_toolkit: the login PATH file is gone
    host.run_expect([0], "rm /etc/profile.d/rigkeeper-cuda.sh")
    # container_toolkit: someone made nvidia the default runtime (not wanted here)
    host.run_expect([0], "python3 -c \"import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); "
                         "d['default-runtime']='nvidia'; json.dump(d, open(p, 'w'), indent=4)\"")
    # kernel_params: a GRUB defaults file that no longer evaluates (update-grub would fail too):
    # this role's check fails; the others must still be checked
    host.run_expect([0], "printf '\\nfalse\\n' >> %s" % GRUB)
    # gpu_power: a card's limit changed by hand
    host.run_expect([0], "nvidia-smi -i 1 -pl 300")
    # headless: a sleep target unmasked
    host.run_expect([0], "systemctl unmask sleep.target")
    # ssh: an earlier drop-in turns password logins on (sshd keeps the first value it reads)
    host.run_expect([0], "printf 'PasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/000-local.conf")
    # the host's record is gone
    host.run_expect([0], "rm /etc/rigkeeper/managed.json")

    res, summary = audit(tmp_path)
    assert res.returncode != 0
    got = checks(summary)
    assert {c: got[c]["status"] for c in ROLES + ["record"]} == {
        "nvidia_driver": "drift", "cuda_toolkit": "drift", "container_toolkit": "drift",
        "kernel_params": "error", "gpu_power": "drift", "headless": "drift", "ssh": "drift", "record": "drift"}
    # Each role says what drifted, in its own words.
    assert "51rigkeeper-nvidia-unattended does not exist" in items(got["nvidia_driver"])
    assert "/etc/profile.d/rigkeeper-cuda.sh does not exist" in items(got["cuda_toolkit"])
    assert 'default-runtime is "nvidia" (not wanted)' in items(got["container_toolkit"])
    assert "GRUB defaults do not evaluate" in items(got["kernel_params"])
    assert "at 300.0 W, wanted" in items(got["gpu_power"])
    assert "sleep.target is not masked" in items(got["headless"])
    assert "passwordauthentication yes, wanted no" in items(got["ssh"])
    assert "managed.json does not exist" in items(got["record"])
    # JUnit: the role that could not be checked is an error, the drifted ones failures.
    suite = ET.parse(tmp_path / "audit.junit.xml").getroot().find("testsuite")
    cases = {tc.get("name"): tc for tc in suite.findall("testcase")}
    assert cases["kernel_params"].find("error") is not None
    assert all(cases[r].find("failure") is not None for r in ROLES + ["record"] if r != "kernel_params")
    md = (tmp_path / "audit.md").read_text()
    assert md.count("**DRIFT**") == 7 and md.count("**ERROR**") == 1
    # The audit changed nothing.
    assert host.check_output("nvidia-smi -i 1 --query-gpu=power.limit --format=csv,noheader,nounits") == "300.00"
    assert host.file(GRUB).content_string.endswith("\nfalse\n")

    # Repair: the GRUB file by hand (site.yml would stop on it, as update-grub would), the rest by site.yml.
    host.run_expect([0], "mv /root/grub.saved %s" % GRUB)
    host.run_expect([0], "rm /etc/ssh/sshd_config.d/000-local.conf")
    run = rk_testlib.playbook("playbooks/site.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    res, summary = audit(tmp_path)
    assert res.returncode == 0, json.dumps(checks(summary), indent=1)[-4000:]
    assert host.check_output("nvidia-smi -i 1 --query-gpu=power.limit --format=csv,noheader,nounits") == power_before


def test_a_wiped_etc_rigkeeper_is_drift_and_every_role_is_still_audited(host, tmp_path):
    host.run_expect([0], "cp -a /etc/rigkeeper /root/rigkeeper.saved && rm -rf /etc/rigkeeper")
    try:
        res, summary = audit(tmp_path)
        assert res.returncode != 0
        got = checks(summary)
        assert all(got[r]["status"] != "not managed" for r in ROLES)
        assert got["record"]["status"] == "drift"
        # gpu_power's plan lived there too.
        assert got["gpu_power"]["status"] == "drift" and "gpu-power.conf does not exist" in items(got["gpu_power"])
    finally:
        host.run_expect([0], "rm -rf /etc/rigkeeper && mv /root/rigkeeper.saved /etc/rigkeeper")


def test_roles_come_from_the_inventory_and_the_record_must_agree(tmp_path):
    res, summary = audit(tmp_path, "-e", json.dumps({"rigkeeper_roles": ["nvidia_driver", "ssh"]}))
    got = checks(summary)
    assert got["nvidia_driver"]["status"] == "ok" and got["ssh"]["status"] == "ok"
    assert {r for r in ROLES if got[r]["status"] == "not managed"} == set(ROLES) - {"nvidia_driver", "ssh"}
    # The host records all seven roles: its record differs from the inventory's two.
    assert got["record"]["status"] == "drift" and res.returncode != 0


def test_an_unreachable_host_is_reported_with_every_role_an_error(tmp_path):
    ghost = tmp_path / "ghost.yml"
    ghost.write_text(json.dumps({"all": {"children": {"rigs": {"hosts": {"rk-ghost": {
        "ansible_connection": "community.docker.docker", "ansible_host": "rk-ghost-does-not-exist"}}}}}}))
    res, summary = audit(tmp_path, inventories=[ghost])
    assert res.returncode != 0
    got = checks(summary, "rk-ghost")
    assert all(got[r]["status"] == "error" for r in ROLES), got
    assert "unreachable" in items(got["ssh"])
    # The reachable rig is audited as usual.
    assert all(s["status"] in ("ok", "not managed") for s in checks(summary).values()), checks(summary)
