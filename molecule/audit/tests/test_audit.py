"""The drift audit on a converged rig: five drifts injected by hand are reported, exactly those,
and site.yml --check --diff would change exactly those roles; after site.yml runs again the audit
is clean. The no-op site.yml run on the converged clone (the scenario's converge) changed nothing."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

DRIFTED = {"gpu_power", "kernel_params", "nvidia_driver", "container_toolkit", "ssh"}


def audit(tmp: Path):
    res = rk_testlib.playbook("playbooks/audit.yml", report_dir=tmp, check=True)
    return res, rk_testlib.report(tmp, "audit")


def statuses(summary):
    (host,) = summary["hosts"].values()
    return {check: c["status"] for check, c in host.items()}


def test_the_no_op_run_on_the_converged_clone_changed_nothing():
    """The scenario's converge step ran site.yml on a converged clone: the probe found nothing to do."""
    converge = rk_testlib.report(rk_testlib.ephemeral() / "reports", "site")
    (checks,) = converge["hosts"].values()
    assert not [c for c, v in checks.items() if v["changed"] or v["failed"]], checks


def test_audit_refuses_to_run_without_check(tmp_path):
    res = rk_testlib.playbook("playbooks/audit.yml", report_dir=tmp_path)
    assert res.returncode != 0 and "Run the audit with --check" in res.stdout


def test_converged_rig_audits_clean(tmp_path):
    res, summary = audit(tmp_path)
    assert res.returncode == 0, res.stdout[-4000:]
    assert summary["drift_count"] == 0, statuses(summary)


def test_five_injected_drifts_are_reported_and_nothing_else(host, tmp_path):
    # 1. a power limit changed with nvidia-smi
    host.run_expect([0], "nvidia-smi -i 0 -pl 400")
    # 2. the grub drop-in edited by hand
    host.run_expect([0], "sed -i 's/iommu=pt/iommu=on/' /etc/default/grub.d/99-rigkeeper.cfg")
    # 3. the driver unheld
    host.run_expect([0], "apt-mark unhold nvidia-utils-580")
    assert "nvidia-utils-580" not in host.check_output("apt-mark showhold").split()
    # 4. the nvidia runtime removed from daemon.json (and Docker restarted with it)
    host.run_expect([0], "python3 -c \"import json; p='/etc/docker/daemon.json'; d=json.load(open(p)); "
                         "d.get('runtimes', {}).pop('nvidia', None); d.pop('default-runtime', None); "
                         "json.dump(d, open(p, 'w'), indent=4)\" && systemctl restart docker")
    # 5. password authentication turned on in rigkeeper's sshd drop-in, and sshd reloaded
    host.run_expect([0], "sed -i 's/^PasswordAuthentication no/PasswordAuthentication yes/' "
                         "/etc/ssh/sshd_config.d/00-rigkeeper.conf && systemctl reload ssh")
    assert "passwordauthentication yes" in host.check_output("sshd -T -C user=root,host=localhost,addr=127.0.0.1")

    res, summary = audit(tmp_path)
    assert res.returncode != 0, "the audit must fail the run on drift"
    got = statuses(summary)
    assert {c for c, s in got.items() if s != "ok" and s != "not managed"} == DRIFTED, got
    assert summary["drift_count"] == 5
    suite = ET.parse(tmp_path / "audit.junit.xml").getroot().find("testsuite")
    failed = {tc.get("name") for tc in suite.findall("testcase") if tc.find("failure") is not None}
    assert failed == DRIFTED
    md = (tmp_path / "audit.md").read_text()
    assert md.count("**DRIFT**") == 5
    # The audit changed nothing: the drift is still there.
    assert host.check_output("nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits") == "400.00"
    # site.yml --check --diff shows the same drift: the roles it would change are the five.
    check_dir = tmp_path / "check"
    res = rk_testlib.playbook("playbooks/site.yml", "--diff", report_dir=check_dir, check=True)
    assert res.returncode == 0, res.stdout[-4000:]
    site = rk_testlib.report(check_dir, "site")
    (checks,) = site["hosts"].values()
    would_change = {c for c, v in checks.items() if v["changed"]}
    assert would_change == DRIFTED, {c: [i["task"] for i in v["changed"]] for c, v in checks.items()}
    assert host.check_output("nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits") == "400.00"


def test_site_repairs_and_the_audit_is_clean_again(host, tmp_path):
    res = rk_testlib.playbook("playbooks/site.yml")
    assert res.returncode == 0, res.stdout[-4000:]
    res, summary = audit(tmp_path)
    assert res.returncode == 0, json.dumps(summary, indent=1)[-4000:]
    assert summary["drift_count"] == 0

