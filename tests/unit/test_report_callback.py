"""The rigkeeper_report callback, driven by a real ansible-playbook run on localhost in check mode."""
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
  check_mode: true
  tasks:
    - name: Probe a limit
      vars: {rigkeeper_check: gpu_power}
      ansible.builtin.copy: {dest: "{{ target }}", content: "new\\n", mode: "0644"}
    - name: "ssh | effective config"
      ansible.builtin.debug: {msg: fine}
    - name: Unmanaged roles
      vars: {rigkeeper_report: unmanaged}
      ansible.builtin.debug: {msg: [headless]}
    - name: Fail on drift
      vars: {rigkeeper_report: final}
      ansible.builtin.fail: {msg: "drift {{ rigkeeper_report_drift | join(',') }}"}
      when: rigkeeper_report_drift | default([]) | length > 0
"""


def run(tmp_path, content):
    target = tmp_path / "target"
    target.write_text(content)
    pb = tmp_path / "audit.yml"
    pb.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "plugins" / "callback"),
               ANSIBLE_CALLBACKS_ENABLED="rigkeeper_report", RIGKEEPER_REPORT_DIR=str(tmp_path / "r"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1")
    bindir = Path(sys.executable).parent
    res = subprocess.run([str(bindir / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"target={target}", "--diff", str(pb)],
                         capture_output=True, text=True, env=env)
    return res, target


def test_drift_fails_the_run_and_is_reported_with_its_diff(tmp_path):
    res, target = run(tmp_path, "old\n")
    assert res.returncode == 2, res.stdout + res.stderr
    assert target.read_text() == "old\n"  # check mode wrote nothing
    summary = json.loads((tmp_path / "r" / "audit.json").read_text())
    checks = summary["hosts"]["localhost"]
    assert {k: v["status"] for k, v in checks.items()} == {
        "gpu_power": "drift", "ssh": "ok", "headless": "not managed"}
    assert summary["drift_count"] == 1
    suite = ET.parse(tmp_path / "r" / "audit.junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failure = suite.find("testcase[@name='gpu_power']/failure")
    assert "-old" in failure.text and "+new" in failure.text
    md = (tmp_path / "r" / "audit.md").read_text()
    assert "| localhost | gpu_power | **DRIFT** | Probe a limit |" in md


def test_no_drift_exits_zero(tmp_path):
    res, _ = run(tmp_path, "new\n")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert summary["drift_count"] == 0
    assert summary["hosts"]["localhost"]["gpu_power"]["status"] == "ok"
