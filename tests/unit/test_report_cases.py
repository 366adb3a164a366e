"""The rigkeeper_report callback's "cases" tasks (roles/p2p_check: one case per host x GPU pair),
driven by a real ansible-playbook run on localhost."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Report one case per pair
      vars: {rigkeeper_report: cases}
      ansible.builtin.debug:
        msg:
          - {check: "p2p GPU0-GPU1", ok: false, message: "geforce_no_p2p: no P2P. Fix: nvidia_driver_p2p_modules: true"}
          - {check: "p2p GPU0-GPU2", ok: true, message: "OK (PHB, read OK)"}
    - name: "p2p_check | a task of the role"
      ansible.builtin.debug: {msg: fine}
"""


def test_cases_become_testcases(tmp_path):
    pb = tmp_path / "p2p_check.yml"
    pb.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "plugins" / "callback"),
               ANSIBLE_CALLBACKS_ENABLED="rigkeeper_report", RIGKEEPER_REPORT_DIR=str(tmp_path / "r"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1")
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          str(pb)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "r" / "p2p_check.json").read_text())
    checks = summary["hosts"]["localhost"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "p2p GPU0-GPU1": "fail", "p2p GPU0-GPU2": "ok", "p2p_check": "ok"}
    assert checks["p2p GPU0-GPU1"]["findings"][0]["msg"].startswith("geforce_no_p2p")
    assert (summary["drift_count"], summary["fail_count"]) == (0, 1)
    suite = ET.parse(tmp_path / "r" / "p2p_check.junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failure = suite.find("testcase[@name='p2p GPU0-GPU1']/failure")
    assert "nvidia_driver_p2p_modules: true" in failure.text
    assert suite.find("testcase[@name='p2p GPU0-GPU2']/failure") is None
    md = (tmp_path / "r" / "p2p_check.md").read_text()
    assert "## rigkeeper p2p_check: no drift, 1 failed check(s)" in md
    assert "| localhost | p2p GPU0-GPU1 | **FAIL** | geforce_no_p2p: no P2P. Fix: nvidia_driver_p2p_modules: true |" in md
