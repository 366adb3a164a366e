"""rigkeeper.gpu as a user gets it: `ansible-galaxy collection build`, `install` into a temporary
path, then used from a directory outside the repository with no ansible.cfg of ours: module docs,
`ansible-test sanity` on the installed copy, a playbook that uses the roles, modules, filters and the
report callback by FQCN against a simulated rig, and a playbook of the collection run by its FQCN.
Also the execution environment: `ansible-builder create` makes its build context from
execution-environment.yml.

Run by `./rk test` (`pytest -q tests/collection`); the rig test needs Docker and the simulator's
base image (`./rk setup` builds it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "sim"))
import simctl  # noqa: E402

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
# What a green run may not print (the suite's own rule for playbook runs).
FORBIDDEN = re.compile(r"\[DEPRECATION WARNING\]|DeprecationWarning|\[ERROR\]|^CRITICAL ", re.M)


def _user_env(base: Path, **extra) -> dict:
    """A user's environment: none of the repository's ANSIBLE_*/MOLECULE_* settings, only the
    installed collection's path (and whatever Python's site-packages hold, e.g. community.docker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(base / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PATH="%s:%s" % (BIN, env.get("PATH", "")))
    env.update(extra)
    return env


def _run(args, cwd, env, check=True, timeout=900):
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError("%s failed (rc %s):\n%s\n%s" % (" ".join(map(str, args)), res.returncode,
                                                              res.stdout[-6000:], res.stderr[-3000:]))
    return res


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's directory outside the repository, with the collection built and installed."""
    base = tmp_path_factory.mktemp("user")
    assert not (base / "ansible.cfg").exists()
    env = _user_env(base)
    dist = base / "dist"
    _run([BIN / "ansible-galaxy", "collection", "build", REPO, "--output-path", dist], base, env)
    tarball = dist / ("%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"]))
    assert tarball.is_file()
    res = _run([BIN / "ansible-galaxy", "collection", "install", "-p", base / "collections", tarball], base, env)
    assert "was installed successfully" in res.stdout
    installed = base / "collections" / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    return {"base": base, "env": env, "tarball": tarball, "installed": installed}


def test_the_artifact_is_the_collection_without_the_development_home(user):
    with tarfile.open(user["tarball"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    tops = {n.split("/")[0] for n in names}
    assert {"plugins", "roles", "playbooks", "meta", "docs", "README.md", "MANIFEST.json"} <= tops
    for dev_only in ("molecule", "rk", "pyproject.toml", "ansible.cfg", "inventory", "bench", ".cache", ".ci"):
        assert dev_only not in tops, dev_only
    assert not any(n.startswith("tests/") and not n.startswith("tests/sanity") for n in names), \
        sorted(n for n in names if n.startswith("tests/"))
    for path in ["plugins/modules/%s.py" % m for m in MODULES] + [
            "plugins/callback/rigkeeper_report.py", "plugins/action/rigkeeper_probe.py",
            "playbooks/site.yml", "playbooks/audit.yml", "playbooks/upgrade_driver.yml", "playbooks/p2p_check.yml",
            "meta/runtime.yml", "roles/nvidia_driver/tasks/main.yml"]:
        assert path in names, path
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (GALAXY["namespace"], GALAXY["name"],
                                                                  GALAXY["version"])


def test_the_running_ansible_core_is_one_the_collection_supports(user):
    import ansible.release
    spec = yaml.safe_load((user["installed"] / "meta" / "runtime.yml").read_text())["requires_ansible"]

    def key(v):
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
    running = key(ansible.release.__version__)
    for clause in spec.split(","):
        op, version = re.match(r"\s*([<>=!]+)\s*(\S+)", clause).groups()
        want = key(version)
        assert {">=": running >= want, "<": running < want, ">": running > want, "<=": running <= want,
                "==": running == want, "!=": running != want}[op], (ansible.release.__version__, spec)


@pytest.mark.parametrize("module", MODULES)
def test_module_docs_render_from_the_installed_copy(user, module):
    res = _run([BIN / "ansible-doc", "-t", "module", "rigkeeper.gpu.%s" % module], user["base"], user["env"])
    assert str(user["installed"]) in res.stdout, res.stdout[:400]
    assert "OPTIONS" in res.stdout and "EXAMPLES" in res.stdout
    assert not FORBIDDEN.search(res.stdout + res.stderr), res.stderr


def test_the_callback_and_the_roles_are_listed(user):
    res = _run([BIN / "ansible-doc", "-t", "callback", "rigkeeper.gpu.rigkeeper_report"], user["base"], user["env"])
    assert str(user["installed"]) in res.stdout
    res = _run([BIN / "ansible-doc", "-t", "role", "-l", "rigkeeper.gpu"], user["base"], user["env"])
    for role in sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir()):
        assert "rigkeeper.gpu.%s" % role in res.stdout, role


def test_ansible_test_sanity_passes_on_the_installed_collection(user):
    """ansible-test in its docker-free mode: each test in a virtual environment of its own
    (--requirements), made from PyPI. The pip bootstrap it would download from a host we cannot reach
    is put where it looks for its cached copy (tests/collection/get_pip.py says how)."""
    home = REPO / ".cache" / "ansible-test-home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    import ansible_test
    reqs = Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
    pip_version = re.search(r"pip='([0-9.]+)'", reqs.read_text()).group(1)
    shutil.copy(REPO / "tests" / "collection" / "get_pip.py", cache / ("get_pip_%s.py" % pip_version.replace(".", "_")))
    python = "%d.%d" % sys.version_info[:2]
    env = dict(user["env"], HOME=str(home))
    res = _run([BIN / "ansible-test", "sanity", "--requirements", "--python", python, "--color", "no"],
               user["installed"], env, check=False, timeout=1500)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    assert "Running sanity test \"validate-modules\"" in out and "Running sanity test \"pylint\"" in out


@pytest.fixture(scope="module")
def rig():
    name = "rk-pytest-collection"
    simctl.up(name, config="2x4090")
    yield name
    simctl.down([name], quiet=True)


PLAY = """
- name: A simulated rig, with nothing but the installed collection
  hosts: rigs
  gather_facts: false
  roles:
    - rigkeeper.gpu.gpu_facts
  tasks:
    - name: rigkeeper's kernel arguments for IOMMU passthrough on this CPU (a filter of the collection)
      ansible.builtin.set_fact:
        iommu_args: "{{ ansible_facts.rigkeeper_host.cpu_vendor | rigkeeper.gpu.rk_iommu_args('pt') }}"
    - name: Into the GRUB drop-in (a module of the collection)
      rigkeeper.gpu.grub_cmdline:
        args_present: "{{ iommu_args.present }}"
        args_absent: "{{ iommu_args.absent }}"
        path: /etc/default/grub.d/99-rigkeeper-collection-test.cfg
"""
INVENTORY = """
rigs:
  hosts:
    rig:
      ansible_connection: community.docker.docker
      ansible_host: {name}
      ansible_python_interpreter: /usr/bin/python3
"""


@pytest.mark.sim
def test_a_playbook_outside_the_repository_uses_the_collection_on_a_rig(user, rig, tmp_path):
    work = user["base"] / "play"
    work.mkdir(exist_ok=True)
    (work / "play.yml").write_text(PLAY)
    (work / "inventory.yml").write_text(INVENTORY.format(name=rig))
    reports = tmp_path / "reports"
    env = dict(user["env"], ANSIBLE_CALLBACKS_ENABLED="rigkeeper.gpu.rigkeeper_report",
               RIGKEEPER_REPORT_DIR=str(reports))
    res = _run([BIN / "ansible-playbook", "-i", "inventory.yml", "play.yml"], work, env)
    out = res.stdout + res.stderr
    assert not FORBIDDEN.search(out), out[-4000:]
    assert "not support Ansible version" not in out
    # The module's work, read on the rig.
    dropin = simctl.docker_exec(rig, "cat", "/etc/default/grub.d/99-rigkeeper-collection-test.cfg").stdout
    assert "iommu=pt" in dropin, dropin
    # The callback's work: the run's report, with the rig and its tasks.
    summary = json.loads((reports / "play.json").read_text())
    assert "rig" in json.dumps(summary)
    assert (reports / "play.junit.xml").is_file() and (reports / "play.md").is_file()
    # Again: nothing to change (the module compares what is there).
    res = _run([BIN / "ansible-playbook", "-i", "inventory.yml", "play.yml"], work, env)
    assert re.search(r"rig\s+: ok=\d+\s+changed=0\s", res.stdout), res.stdout[-2000:]


@pytest.mark.sim
def test_a_playbook_of_the_collection_runs_by_its_fqcn(user, rig):
    work = user["base"] / "play"
    work.mkdir(exist_ok=True)
    (work / "inventory.yml").write_text(INVENTORY.format(name=rig))
    res = _run([BIN / "ansible-playbook", "-i", "inventory.yml", "rigkeeper.gpu.facts"], work, user["env"])
    out = res.stdout + res.stderr
    assert not FORBIDDEN.search(out), out[-4000:]
    assert str(user["installed"] / "playbooks" / "facts.yml") in out or "PLAY [GPU facts]" in out
    assert re.search(r"rig\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out[-2000:]


def test_the_execution_environment_context_names_the_collection(tmp_path):
    """ansible-builder 3 makes the build context (building the image needs a base image from a
    registry these machines cannot reach)."""
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    context = tmp_path / "context"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    _run([BIN / "ansible-builder", "create", "-f", REPO / "execution-environment.yml", "--context", context,
          "--output-filename", "Containerfile"], REPO, env)
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="%s"' % ee["images"]["base_image"]["name"] in containerfile
    assert "FROM $EE_BASE_IMAGE" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    names = [c["name"] if isinstance(c, dict) else c for c in galaxy["collections"]]
    assert "rigkeeper.gpu" in names
    core = ee["dependencies"]["ansible_core"]["package_pip"]
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["requires_ansible"]
    assert core == "ansible-core" + runtime, (core, runtime)
