#!/usr/bin/env python3
"""controllerctl: the newest supported ansible-core as a controller, in a Debian 13 container.

    controllerctl.py build            the image rigkeeper-controller:<recipe hash> (only when no image of
                                      the current recipe exists): Debian 13 (trixie) by mmdebstrap from
                                      Debian's archive, Python 3.13, a venv /opt/rk with requirements.txt
    controllerctl.py run [--] CMD...  CMD in a fresh container of that image, in this repository (mounted
                                      at its own path), with the host's Docker daemon; CMD's exit status
    controllerctl.py versions         Python, ansible-core, Molecule and community.docker inside

ansible-core 2.20 and later need a Python >= 3.12 controller; this machine's Python (Debian 12) is 3.11,
so the project's .venv holds the oldest supported ansible-core and this image the newest. `run` makes the
container see what the host's venv sees: the repository at the same absolute path (Molecule's volumes
name ${MOLECULE_PROJECT_DIRECTORY}/... paths that the Docker daemon resolves on the host), the captured
fixtures at ../shared/fixtures, the git directory of a worktree, the Docker socket and the host's docker
CLI (community.docker's connection runs it), the host network, the caller's uid and gid (so what it
writes in the repository is the caller's), ANSIBLE_CONFIG=<repo>/ansible.cfg and /opt/rk/bin first on
PATH, so `python3`, `ansible-playbook`, `molecule` and `pytest` are the newest controller's.

The image is labelled org.rigkeeper.sim=1: `tests/sim/simctl.py clean` (what CI runs first) removes it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "controller"
REPO = "rigkeeper-controller"
SUITE = os.environ.get("RIGKEEPER_CONTROLLER_SUITE", "trixie")
MIRROR = os.environ.get("RIGKEEPER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The `ansible` bundle release that goes with ansible-core 2.21 (ansible 14 requires ansible-core
# ~=2.21.0): only the collections named here are unpacked from it (install_collections.py).
ANSIBLE_BUNDLE = "ansible==14.5.0"
# Molecule's docker driver requires community.docker and ansible.posix (its required_collections);
# community.docker needs community.library_inventory_filtering_v1.
COLLECTIONS = ["community.docker", "community.library_inventory_filtering_v1", "ansible.posix"]
# What a build reads: these files, as they are in the working tree (the key hashes the same bytes
# that the build copies into the image), the constants above and the build steps (mmdebstrap_args,
# IMPORT_CHANGES); not the rest of this file, so a change to `run` keeps the image.
RECIPE_FILES = ["packages.txt", "requirements.txt", "install_collections.py"]
VENV = "/opt/rk"
PATH_IN = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_DIR = "/tmp/rk-build"  # the recipe files inside the chroot during the build, removed at its end
# pip inside the image being built: nothing of the host's pip configuration (its environment variables,
# its local wheel stores) reaches it; PyPI only. It trusts the CAs the host's pip trusts (a network
# that inspects TLS has its own CA there), for the build only: host-ca.crt is not kept in the image.
PIP_ENV = ("env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1"
           f" PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 PIP_CERT={BUILD_DIR}/host-ca.crt")
# Environment variables of the caller that `run` passes on (ANSIBLE_CONFIG and PATH are set by run).
PASS_PREFIXES = ("ANSIBLE_", "MOLECULE_", "RIGKEEPER_", "PY_COLORS", "CI", "TERM", "NO_COLOR", "PYTEST_ADDOPTS")


# The image's settings (docker import --change); the recipe label is added with the key.
IMPORT_CHANGES = [f"ENV PATH={PATH_IN}", "ENV LANG=C.UTF-8", "LABEL org.rigkeeper.sim=1", 'CMD ["/bin/bash"]']


def sh(cmd, check=True, capture=False, quiet=False, **kw):
    if not quiet:
        print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], check=check, text=True, capture_output=capture, **kw)


def packages(text: str) -> list[str]:
    """The package names of packages.txt: one a line, # comments and blank lines left out."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def recipe_key(files: dict[str, bytes] | None = None) -> str:
    """Digest of everything a build reads: the recipe files' bytes, the suite, mirror, bundle and
    collections. Same recipe, same key: `build` reuses the image; any change, a new one."""
    if files is None:
        files = {name: (HERE / name).read_bytes() for name in RECIPE_FILES}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    pkgs = packages(files.get("packages.txt", b"").decode())
    steps = mmdebstrap_args(Path("CTX"), Path("ROOTFS.tar"), pkgs)
    h.update(json.dumps([SUITE, MIRROR, ANSIBLE_BUNDLE, COLLECTIONS, steps, IMPORT_CHANGES]).encode())
    return h.hexdigest()[:12]


def image() -> str:
    return f"{REPO}:{recipe_key()}"


def image_exists(tag: str) -> bool:
    return sh(["docker", "image", "inspect", tag], check=False, capture=True, quiet=True).returncode == 0


def mmdebstrap_args(ctx: Path, tar: Path, pkgs: list[str]) -> list[str]:
    """The mmdebstrap command that makes the image's root file system in `tar`, with the recipe files
    copied to `ctx` (put in the chroot's /tmp/rk-build, removed again)."""
    inside = BUILD_DIR
    py = f"{VENV}/bin/python"
    return [
        "mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(pkgs),
        # No daemon runs in the controller (prometheus is here for promtool only): nothing to enable.
        f'--customize-hook=mkdir -p "$1{inside}" && cp {shlex.quote(str(ctx))}/* "$1{inside}/"',
        f'--customize-hook=chroot "$1" python3 -m venv {VENV}',
        f'--customize-hook=chroot "$1" {PIP_ENV} {py} -m pip install -q -r {inside}/requirements.txt',
        f'--customize-hook=chroot "$1" {PIP_ENV} {py} -m pip download -q --no-deps -d {inside}/bundle'
        f' {ANSIBLE_BUNDLE}',
        f'--customize-hook=chroot "$1" sh -c \'{py} {inside}/install_collections.py {inside}/bundle/*.whl'
        f' {" ".join(COLLECTIONS)}\'',
        f'--customize-hook=chroot "$1" {py} -m pip check',
        f'--customize-hook=rm -rf "$1{inside}" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
        ' "$1"/root/.cache',
        SUITE, str(tar), MIRROR,
    ]


def build() -> str:
    key = recipe_key()
    tag = f"{REPO}:{key}"
    if image_exists(tag):
        print(f"controller image {tag} is current")
        return tag
    t0 = time.monotonic()
    files = {name: (HERE / name).read_bytes() for name in RECIPE_FILES}
    if recipe_key(files) != key:
        raise SystemExit("controllerctl: the recipe changed during the build; run it again")
    with tempfile.TemporaryDirectory(prefix="rk-controller-") as tmp:
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        for name, data in files.items():
            (ctx / name).write_bytes(data)
        shutil.copyfile(host_ca_bundle(), ctx / "host-ca.crt")
        tar = Path(tmp) / "rootfs.tar"
        print(f"building {tag} with mmdebstrap (Debian {SUITE}, {MIRROR}) and pip (PyPI)", file=sys.stderr)
        sh(mmdebstrap_args(ctx, tar, packages(files["packages.txt"].decode())))
        changes = [a for c in IMPORT_CHANGES + [f"LABEL org.rigkeeper.controller.recipe={key}"] for a in ("-c", c)]
        sh(["docker", "import", *changes, tar, tag], capture=True)
    print(f"controller image {tag} built in {time.monotonic() - t0:.0f} s")
    # Images of earlier recipes are of no use any more (each is about 0.6 GB): removed.
    old = sh(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", REPO], capture=True, quiet=True).stdout.split()
    old = [t for t in old if t != tag]
    if old:
        sh(["docker", "rmi", *old], check=False, capture=True, quiet=True)
        print(f"removed the controller image(s) of earlier recipes: {', '.join(old)}")
    return tag


def host_ca_bundle() -> Path:
    """The CA bundle the host's pip uses (PIP_CERT, SSL_CERT_FILE, else Debian's bundle)."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var])
    return Path("/etc/ssl/certs/ca-certificates.crt")


def docker_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise SystemExit(f"controllerctl: DOCKER_HOST={host}: only a local unix socket can be handed to the container")
    return Path(host[len("unix://"):] if host else "/var/run/docker.sock").resolve()


def git_common_dir(root: Path) -> Path | None:
    """The git directory of a worktree, when it lies outside the repository (git worktree add)."""
    res = subprocess.run(["git", "-C", str(root), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return None
    common = Path(res.stdout.strip()).resolve()
    return None if common.is_relative_to(root.resolve()) else common


def run_args(tag: str, cmd: list[str], *, root: Path, cwd: Path, uid: int, gid: int, environ: dict[str, str],
             docker_cli: Path, socket: Path, socket_gid: int | None, fixtures: Path | None,
             git_dir: Path | None, tty: bool, shm_size: int = 2 << 30) -> list[str]:
    """The `docker run` command line of `run`: a pure function of what it is given (unit-tested)."""
    args = ["docker", "run", "--rm", "--init", "--network", "host",
            "--label", "org.rigkeeper.controller=1",
            "--user", f"{uid}:{gid}",
            "-v", f"{socket}:/var/run/docker.sock",
            "-v", f"{docker_cli}:/usr/local/bin/docker:ro",
            "-v", f"{root}:{root}",
            "--tmpfs", "/tmp:exec,mode=1777",
            # build_repo.py builds in /dev/shm: as large as the host's, not Docker's 64 MiB.
            "--shm-size", str(shm_size),
            "-w", str(cwd)]
    if uid != 0 and socket_gid is not None:
        args += ["--group-add", str(socket_gid)]
    if fixtures is not None:
        # Tests look for <repo>/../shared/fixtures; on some machines that is a link: the same path
        # inside, holding what it points to.
        args += ["-v", f"{fixtures.resolve()}:{root.parent / 'shared' / 'fixtures'}:ro"]
    if git_dir is not None:
        args += ["-v", f"{git_dir}:{git_dir}"]
    if tty:
        args += ["-t"]
    env = {k: v for k, v in environ.items() if k.startswith(PASS_PREFIXES)}
    env.update(HOME="/tmp/rk-home", PATH=PATH_IN, ANSIBLE_CONFIG=str(root / "ansible.cfg"),
               MOLECULE_GLOB=environ.get("MOLECULE_GLOB", "molecule/*/molecule.yml"))
    env.pop("DOCKER_HOST", None)
    for k in sorted(env):
        args += ["-e", f"{k}={env[k]}"]
    # HOME is made first (Ansible and Molecule write ~/.ansible and ~/.cache there): a fresh one each run.
    args += [tag, "sh", "-c", 'mkdir -p "$HOME" && exec "$@"', "rk", *cmd]
    return args


def shm_size() -> int:
    """The host's /dev/shm size in bytes (2 GiB where it has none)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 2 << 30
    return st.f_blocks * st.f_frsize or 2 << 30


def run(cmd: list[str]) -> int:
    if not cmd:
        raise SystemExit("controllerctl: run what? (controllerctl.py run -- CMD ...)")
    tag = image()
    if not image_exists(tag):
        raise SystemExit(f"controllerctl: no image {tag}: run `tests/controller/controllerctl.py build` first")
    cli = shutil.which("docker")
    if cli is None:
        raise SystemExit("controllerctl: no docker CLI on PATH")
    socket = docker_socket()
    fixtures = ROOT.parent / "shared" / "fixtures"
    cwd = Path.cwd().resolve()
    if not cwd.is_relative_to(ROOT):
        cwd = ROOT
    args = run_args(tag, cmd, root=ROOT, cwd=cwd, uid=os.getuid(), gid=os.getgid(), environ=dict(os.environ),
                    docker_cli=Path(cli).resolve(), socket=socket,
                    socket_gid=socket.stat().st_gid if socket.exists() else None,
                    fixtures=fixtures if fixtures.exists() else None, git_dir=git_common_dir(ROOT),
                    tty=sys.stdin.isatty() and sys.stdout.isatty(), shm_size=shm_size())
    return subprocess.call(args)


VERSIONS = r"""export NO_COLOR=1 PY_COLORS=0
python3 --version
ansible --version | head -n 1
molecule --version | head -n 1
pytest --version
python3 - <<'EOF'
import importlib.metadata as md, json, pathlib, sysconfig
for d in ("molecule-plugins", "pytest-testinfra", "docker"):
    print(d, md.version(d))
base = pathlib.Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"
for m in sorted(base.glob("*/*/MANIFEST.json")):
    i = json.loads(m.read_text())["collection_info"]
    print("%s.%s %s" % (i["namespace"], i["name"], i["version"]))
EOF
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    r = sub.add_parser("run")
    r.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("versions")
    sub.add_parser("image", help="print the image tag of the current recipe")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        build()
    elif a.cmd == "run":
        return run(a.command[1:] if a.command[:1] == ["--"] else a.command)
    elif a.cmd == "versions":
        return run(["sh", "-c", VERSIONS])
    elif a.cmd == "image":
        print(image())
    return 0


if __name__ == "__main__":
    sys.exit(main())
