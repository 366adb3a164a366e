"""The newest controller's recipe (tests/controller): pinned, keyed, and run with the host's view."""
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "controller"))
import controllerctl  # noqa: E402


def requirements():
    text = (ROOT / "tests/controller/requirements.txt").read_text()
    return [Requirement(line.split("#", 1)[0].strip()) for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


def test_every_requirement_is_pinned():
    reqs = requirements()
    assert reqs
    loose = [str(r) for r in reqs if len(r.specifier) != 1 or next(iter(r.specifier)).operator != "=="]
    assert loose == []
    names = [r.name.lower() for r in reqs]
    assert len(names) == len(set(names))


def test_it_is_the_newest_supported_ansible_core():
    """2.21.x, inside the range the collection supports (pyproject.toml), with the bundle of 2.21."""
    core = next(r for r in requirements() if r.name == "ansible-core")
    pinned = Version(next(iter(core.specifier)).version)
    assert (pinned.major, pinned.minor) == (2, 21)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    supported = next(Requirement(d) for d in project if Requirement(d).name == "ansible-core").specifier
    assert pinned in supported
    # ansible 14 is the bundle of ansible-core 2.21 (it requires ansible-core ~=2.21.0).
    bundle = Requirement(controllerctl.ANSIBLE_BUNDLE)
    assert bundle.name == "ansible" and Version(next(iter(bundle.specifier)).version).major == 14
    assert SpecifierSet("~=2.21.0").contains(pinned)


def test_what_the_scenarios_and_the_unit_tests_need_is_in_it():
    names = {r.name.lower() for r in requirements()}
    assert {"ansible-core", "molecule", "molecule-plugins", "pytest", "pytest-testinfra", "docker",
            "pyyaml"} <= names
    assert "docker" in next(r for r in requirements() if r.name == "molecule-plugins").extras
    assert {"community.docker", "ansible.posix"} <= set(controllerctl.COLLECTIONS)
    pkgs = controllerctl.packages((ROOT / "tests/controller/packages.txt").read_text())
    assert {"python3", "python3-venv", "prometheus", "git", "gpg", "gpgv", "openssh-client"} <= set(pkgs)


@pytest.mark.parametrize("text, names", [
    ("", []),
    ("# only a comment\n\n", []),
    ("python3\n  git  # for recipes\n#gpg\n", ["python3", "git"]),
])
def test_packages(text, names):
    assert controllerctl.packages(text) == names


def recipe_files():
    return {n: (ROOT / "tests/controller" / n).read_bytes() for n in controllerctl.RECIPE_FILES}


def test_the_key_is_the_recipe():
    files = recipe_files()
    key = controllerctl.recipe_key(files)
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert controllerctl.recipe_key(dict(files)) == key == controllerctl.recipe_key()
    for name in files:
        changed = dict(files, **{name: files[name] + b"\n# changed\n"})
        assert controllerctl.recipe_key(changed) != key, name
    assert controllerctl.image() == f"rigkeeper-controller:{key}"


def test_the_build_steps_are_in_the_key(monkeypatch):
    files = recipe_files()
    key = controllerctl.recipe_key(files)
    monkeypatch.setattr(controllerctl, "ANSIBLE_BUNDLE", "ansible==14.0.0")
    assert controllerctl.recipe_key(files) != key
    monkeypatch.undo()
    monkeypatch.setattr(controllerctl, "SUITE", "forky")
    assert controllerctl.recipe_key(files) != key


def test_the_build_installs_the_recipe_and_keeps_no_build_files():
    args = controllerctl.mmdebstrap_args(Path("/ctx"), Path("/out/rootfs.tar"), ["python3", "git"])
    assert args[:4] == ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,git"]
    assert args[-3:] == ["trixie", "/out/rootfs.tar", "http://deb.debian.org/debian"]
    hooks = " ".join(args)
    assert "-m pip install -q -r /tmp/rk-build/requirements.txt" in hooks
    assert "env -i " in hooks  # the host's pip settings do not reach the image's pip
    assert hooks.index("pip install") < hooks.index("install_collections.py") < hooks.index("pip check")
    assert args[-4].startswith('--customize-hook=rm -rf "$1/tmp/rk-build"')


def run_args(**kw):
    base = dict(root=Path("/work/wt"), cwd=Path("/work/wt/tests"), uid=0, gid=0,
                environ={"HOME": "/root", "PIP_CERT": "/x", "DOCKER_HOST": "unix:///run/d.sock",
                         "ANSIBLE_CONFIG": "/elsewhere/ansible.cfg", "ANSIBLE_FORKS": "4", "CI": "true"},
                docker_cli=Path("/usr/local/bin/docker"), socket=Path("/run/docker.sock"), socket_gid=998,
                fixtures=None, git_dir=None, tty=False)
    base.update(kw)
    return controllerctl.run_args("rigkeeper-controller:abc", ["molecule", "test", "-s", "site"], **base)


def pairs(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_run_sees_the_repository_where_the_host_does():
    args = run_args()
    assert args[:3] == ["docker", "run", "--rm"]
    assert ["--network", "host"] == args[args.index("--network"):args.index("--network") + 2]
    vols = pairs(args, "-v")
    assert "/work/wt:/work/wt" in vols
    assert "/run/docker.sock:/var/run/docker.sock" in vols
    assert "/usr/local/bin/docker:/usr/local/bin/docker:ro" in vols
    assert pairs(args, "-w") == ["/work/wt/tests"]
    assert pairs(args, "--user") == ["0:0"] and "--group-add" not in args
    assert args[-4:] == ["molecule", "test", "-s", "site"]
    assert "rigkeeper-controller:abc" in args


def test_run_environment():
    env = dict(e.split("=", 1) for e in pairs(run_args(), "-e"))
    assert env["ANSIBLE_CONFIG"] == "/work/wt/ansible.cfg"
    assert env["PATH"].split(":")[0] == "/opt/rk/bin"
    assert env["MOLECULE_GLOB"] == "molecule/*/molecule.yml"
    assert env["ANSIBLE_FORKS"] == "4" and env["CI"] == "true"
    assert env["HOME"] != "/root" and "PIP_CERT" not in env and "DOCKER_HOST" not in env


def test_run_as_a_user_with_fixtures_and_a_worktree(tmp_path):
    target = tmp_path / "real-fixtures"
    target.mkdir()
    link = tmp_path / "shared-fixtures"
    link.symlink_to(target)
    args = run_args(uid=1000, gid=1000, fixtures=link, git_dir=Path("/work/main/.git"), tty=True)
    vols = pairs(args, "-v")
    assert f"{target}:/work/shared/fixtures:ro" in vols  # the link resolved, at the path tests use
    assert "/work/main/.git:/work/main/.git" in vols
    assert pairs(args, "--user") == ["1000:1000"] and pairs(args, "--group-add") == ["998"]
    assert "-t" in args
