"""No deprecation warning in a real playbook run, on whichever ansible-core runs the unit tests.

The unit suite runs on the oldest supported ansible-core (the project's .venv) and on the newest
(tests/controller/controllerctl.py run -- pytest tests/unit), so this runs on both. The play uses the
collection as a user's play does: a module, filters and the report callback by FQCN, gathered facts read
through ansible_facts, on localhost in check mode, with deprecation warnings on. Warnings that only a
role on a rig prints are the Molecule scenarios' business (./rk test fails a scenario on such a line).

Two canaries show the check can fail: a plugin that calls Display.deprecated() and, on ansible-core
2.20 and later (INJECT_FACTS_AS_VARS deprecated there), a fact read as a top-level variable.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.release import __version__ as ANSIBLE_CORE

ROOT = Path(__file__).resolve().parents[2]
DEPRECATION = re.compile(r"^\[DEPRECATION WARNING\]", re.M)

PLAYBOOK = """
- name: rigkeeper.gpu on this controller
  hosts: localhost
  gather_facts: true
  gather_subset: [min]
  check_mode: true
  tasks:
    - name: "kernel_params | IOMMU passthrough on the command line"
      vars:
        rigkeeper_check: kernel_params
        iommu: "{{ 'amd' | rigkeeper.gpu.rk_iommu_args('pt') }}"
      rigkeeper.gpu.grub_cmdline:
        args_present: "{{ iommu.present }}"
        args_absent: "{{ iommu.absent }}"
        grub_dir: "{{ grub_dir }}"
        cmdline_path: "{{ grub_dir }}/cmdline"
      register: cmdline
    - name: "packages | what is missing"
      ansible.builtin.set_fact:
        missing: "{{ ['gpg', 'docker.io'] | rigkeeper.gpu.rk_packages_missing('') }}"
        distribution: "{{ ansible_facts['distribution'] }}"
    # A filter handed a play variable (a mapping that holds a template): what a filter gets is
    # ansible-core's lazy container; copying it with copy.deepcopy printed a deprecation on 2.21.
    - name: "container_toolkit | the wanted daemon.json"
      vars:
        daemon_current: {log-driver: "{{ 'journald' }}", runtimes: {crun: {path: /usr/bin/crun}}}
      ansible.builtin.set_fact:
        daemon: "{{ daemon_current | rigkeeper.gpu.rk_docker_daemon_wanted }}"
    - name: Write what the play saw
      ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ {'changed': cmdline.changed, 'missing': missing, 'distribution': distribution,
                      'daemon': daemon} | to_json }}"
        mode: "0644"
      check_mode: false
"""


def playbook(tmp_path, play, extra_env=None):
    grub = tmp_path / "default"
    (grub / "grub.d").mkdir(parents=True)
    (grub / "grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n')
    (grub / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet splash\n")
    pb = tmp_path / "play.yml"
    pb.write_text(play)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_CALLBACKS_ENABLED="rigkeeper.gpu.rigkeeper_report",
               RIGKEEPER_REPORT_DIR=str(tmp_path / "r"))
    # Only the collection's own plugins: no path the repository's ansible.cfg does not name.
    for var in ("ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_FILTER_PLUGINS", "ANSIBLE_LIBRARY"):
        env.pop(var, None)
    env.update(extra_env or {})
    res = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          "-e", f"grub_dir={grub}", "-e", f"out={tmp_path / 'out.json'}", str(pb)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    return res, grub


def test_the_collection_runs_without_a_deprecation_warning(tmp_path):
    res, grub = playbook(tmp_path, PLAYBOOK)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    warnings = [line for line in (res.stdout + res.stderr).splitlines() if DEPRECATION.match(line)]
    assert warnings == [], f"ansible-core {ANSIBLE_CORE}:\n" + "\n".join(warnings)
    # The play did run what it says: the module saw the drift and changed nothing (check mode) ...
    seen = json.loads((tmp_path / "out.json").read_text())
    assert seen["changed"] is True and seen["missing"] == ["gpg", "docker.io"] and seen["distribution"]
    assert seen["daemon"] == {"log-driver": "journald", "runtimes": {"crun": {"path": "/usr/bin/crun"},
                                                                     "nvidia": {"path": "nvidia-container-runtime", "args": []}}}
    assert not list((grub / "grub.d").iterdir())
    # ... and the report callback, enabled by FQCN, reported it.
    report = json.loads((tmp_path / "r" / "play.json").read_text())
    assert report["hosts"]["localhost"]["kernel_params"]["status"] == "drift"


DEPRECATING_FILTER = '''
from ansible.utils.display import Display


def deprecating(value):
    Display().deprecated("rk canary: this filter is deprecated", version="9.99")
    return value


class FilterModule:
    def filters(self):
        return {"rk_canary_deprecating": deprecating}
'''


def test_a_deprecation_is_seen(tmp_path):
    """The canary: a filter that deprecates itself makes a [DEPRECATION WARNING] line in this harness."""
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "canary.py").write_text(DEPRECATING_FILTER)
    play = PLAYBOOK.replace("['gpg', 'docker.io'] |", "['gpg', 'docker.io'] | rk_canary_deprecating |")
    res, _ = playbook(tmp_path, play, {"ANSIBLE_FILTER_PLUGINS": str(tmp_path / "filter")})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert DEPRECATION.search(res.stdout + res.stderr), res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.skipif(tuple(int(p) for p in ANSIBLE_CORE.split(".")[:2]) < (2, 20),
                    reason="INJECT_FACTS_AS_VARS is deprecated from ansible-core 2.20 on")
def test_an_injected_fact_is_a_deprecation(tmp_path):
    """What the roles must not do (issue 17): read a gathered fact as a top-level variable."""
    play = PLAYBOOK.replace("ansible_facts['distribution']", "ansible_distribution")
    res, _ = playbook(tmp_path, play)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"^\[DEPRECATION WARNING\]:.*INJECT_FACTS_AS_VARS", res.stdout + res.stderr, re.M | re.S), \
        res.stdout[-3000:] + res.stderr[-3000:]
