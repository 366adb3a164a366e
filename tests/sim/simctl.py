#!/usr/bin/env python3
"""simctl: build and drive simulated GPU rigs (Debian 12 systemd containers under Docker).

    simctl.py build                      base image + fake NVIDIA apt repos (each only when its recipe changed),
                                         built from what git tracks (the index), never the working tree
    simctl.py clean                      remove the rigs, images, volumes and .cache/sim it made
    simctl.py up NAME [--config 2x4090] [--ssh-port 2222] [--archive]
    simctl.py restart NAME               the simulator's reboot: /run is wiped, boot unit runs again
    simctl.py down NAME [NAME ...]
    simctl.py exec NAME -- CMD ...
    simctl.py converged [--config 2x4090] a rig converged by playbooks/site.yml, committed as the image
                                         rigkeeper-sim:converged (built once per code and simulator state)

The same functions back the pytest fixtures in tests/sim/conftest.py, the README's main job and the
benchmark, so every consumer starts rigs the same way Molecule's shared platform does
(.config/molecule/config.yml): SYS_ADMIN only (--privileged is refused on these machines), tmpfs /run,
the host's cgroup tree read-only, the repo read-only at /srv/rigkeeper-sim/repo, the GPU presets at
/usr/share/rigkeeper-sim/configs (/etc/rigkeeper-sim/gpus.json links to one), and a restart policy so that `systemctl reboot` inside the rig comes back
as a new boot.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "tests" / "sim"
IMAGE = "rigkeeper-sim:latest"
REPO_DIR = Path(os.environ.get("RIGKEEPER_SIM_REPO", ROOT / ".cache" / "sim" / "repo"))
CONFIGS = SIM / "configs"
LABEL = "org.rigkeeper.sim.rig=1"
# The "Ubuntu archive" a real Ubuntu box already trusts; on the simulated rig it is the local repo.
ARCHIVE_SOURCES = """Types: deb
URIs: file:///srv/rigkeeper-sim/repo/ubuntu
Suites: noble
Components: restricted
Signed-By: /usr/share/keyrings/rigkeeper-sim-archive.gpg
"""


# How every rig runs (Molecule's shared platform says the same): SYS_ADMIN for systemd; NET_ADMIN and
# unconfined seccomp for the Docker daemon the container_toolkit role runs inside the rig.
RIG_RUN_ARGS = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
                "--stop-signal", "SIGRTMIN+3", "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "-v", f"{REPO_DIR}:/srv/rigkeeper-sim/repo:ro",
                "-v", f"{CONFIGS}:/usr/share/rigkeeper-sim/configs:ro"]


def run(cmd, check=True, capture=False, quiet=False, **kw):
    if not quiet:
        print("+ " + " ".join(str(c) for c in cmd), file=sys.stderr)
    return subprocess.run([str(c) for c in cmd], check=check, text=True,
                          capture_output=capture, **kw)


SSH_KEY = ROOT / ".cache" / "sim" / "ssh" / "rig_admin_ed25519"


DEBIAN_SUITE = os.environ.get("RIGKEEPER_DEBIAN_SUITE", "bookworm")
DEBIAN_MIRROR = os.environ.get("RIGKEEPER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What each build reads, as paths in the repository: nothing else reaches the image or the repos.
IMAGE_RECIPE = ["tests/sim/image"]
REPO_RECIPE = ["tests/sim/repo", "tests/sim/pkgsrc", "tests/sim/configs"]


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=check, text=True, capture_output=True)


def recipe(paths: list[str]) -> tuple[str, list[str], list[str]]:
    """(tree, ids, notes) of a build recipe: what git tracks at those paths, as staged in the index.

    `tree` is the index written as a git tree (what `export` reads); `ids` are git's tree ids of the
    paths, which hash file contents, names, modes and the directory structure they imply, so a key
    made of them changes exactly when the tracked input does. `notes` name working-tree changes the
    build will not see (unstaged edits, untracked or ignored files)."""
    if _git("rev-parse", "--is-inside-work-tree", check=False).returncode != 0:
        raise SystemExit(f"simctl: {ROOT} is not a git checkout: the simulator is built only from what git tracks")
    tree = _git("write-tree").stdout.strip()
    ids = []
    for p in paths:
        res = _git("rev-parse", f"{tree}:{p}", check=False)
        if res.returncode != 0:
            raise SystemExit(f"simctl: git tracks nothing at {p}: add the recipe to git first")
        ids.append(f"{p} {res.stdout.strip()}")
    notes = []
    dirty = _git("diff", "--name-only", "--", *paths).stdout.split()
    if dirty:
        notes.append("unstaged changes not built (git add them): " + ", ".join(dirty))
    extra = _git("ls-files", "--others", "--", *paths).stdout.split()
    extra = [e for e in extra if "__pycache__" not in e]
    if extra:
        notes.append("files git does not track, not built: " + ", ".join(extra))
    return tree, ids, notes


def export(tree: str, paths: list[str], dest: Path) -> None:
    """Write the tracked files at `paths` of git tree `tree` under `dest` (same relative paths)."""
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", tree, "--", *paths],
                          check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)


def image_key() -> tuple[str, str, list[str]]:
    """(key, tree, notes) of the base image: its tracked recipe, the Debian suite and mirror."""
    tree, ids, notes = recipe(IMAGE_RECIPE)
    h = hashlib.sha256("\n".join(ids + [DEBIAN_SUITE, DEBIAN_MIRROR]).encode()).hexdigest()[:12]
    return h, tree, notes


def build_image() -> None:
    key, tree, notes = image_key()
    for n in notes:
        print(f"simctl: image recipe: {n}", file=sys.stderr)
    tag = f"rigkeeper-sim:{key}"
    if run(["docker", "image", "inspect", tag], check=False, capture=True, quiet=True).returncode == 0:
        run(["docker", "tag", tag, IMAGE], quiet=True)
        print(f"base image {tag} is current")
        return
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rk-image-") as tmp:
        export(tree, IMAGE_RECIPE, Path(tmp))
        run([Path(tmp) / IMAGE_RECIPE[0] / "build.sh", tag, DEBIAN_SUITE, DEBIAN_MIRROR])
    run(["docker", "tag", tag, IMAGE], quiet=True)
    print(f"base image {tag} built in {time.monotonic() - t0:.0f} s")


def build_repos(force: bool = False) -> None:
    tree, _ids, notes = recipe(REPO_RECIPE)
    for n in notes:
        print(f"simctl: repository recipe: {n}", file=sys.stderr)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rk-repo-") as tmp:
        export(tree, REPO_RECIPE, Path(tmp))
        cmd = [sys.executable, Path(tmp) / "tests/sim/repo/build_repo.py", "--out", REPO_DIR]
        if force:
            cmd.append("--force")
        run(cmd)
    print(f"fake NVIDIA repositories ready in {time.monotonic() - t0:.0f} s")


def build(force: bool = False) -> None:
    build_image()
    if not SSH_KEY.exists():
        # The simulated rig's admin key (inventory/sim gives it to the ssh role): made here, never committed.
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rigkeeper-sim-admin", "-f", SSH_KEY])
    build_repos(force)


def clean() -> None:
    """Remove everything rigkeeper's simulator cached on this machine: rigs, their volumes, the
    images (base and snapshots) and .cache/sim. What CI does first, so it sees a fresh machine."""
    ids = run(["docker", "ps", "-aq", "--filter", "label=" + LABEL], capture=True, quiet=True).stdout.split()
    if ids:
        run(["docker", "rm", "-f", "-v", *ids], capture=True, quiet=True)
    images = run(["docker", "images", "-q", "--filter", "label=org.rigkeeper.sim"], capture=True, quiet=True).stdout.split()
    images += run(["docker", "images", "-q", "--filter", "reference=rigkeeper-*"], capture=True, quiet=True).stdout.split()
    if images:
        # Containers of these images that are not labelled rigs (Molecule's instances, a controller
        # run) would keep an image alive: `docker rmi -f` refuses an image a running container uses.
        users = []
        for image in sorted(set(images)):
            users += run(["docker", "ps", "-aq", "--filter", "ancestor=" + image], capture=True, quiet=True).stdout.split()
        if users:
            run(["docker", "rm", "-f", "-v", *sorted(set(users))], check=False, capture=True, quiet=True)
            ids += users
        run(["docker", "rmi", "-f", *sorted(set(images))], check=False, capture=True, quiet=True)
        left = run(["docker", "images", "-q", "--filter", "reference=rigkeeper-*"], capture=True, quiet=True).stdout.split()
        if left:
            print("simctl clean: these rigkeeper images could not be removed: " + " ".join(sorted(set(left))))
    vols = run(["docker", "volume", "ls", "-q", "--filter", "label=org.rigkeeper.sim"], capture=True, quiet=True).stdout.split()
    if vols:
        run(["docker", "volume", "rm", "-f", *vols], check=False, capture=True, quiet=True)
    shutil.rmtree(ROOT / ".cache" / "sim", ignore_errors=True)
    print(f"removed {len(ids)} rig(s), {len(set(images))} image(s), {len(vols)} volume(s) and .cache/sim")


def config_path(config: str) -> Path:
    p = Path(config)
    if not p.suffix:
        p = CONFIGS / f"{config}.json"
    if not p.is_file():
        raise SystemExit(f"simctl: no GPU config {p} (presets: {', '.join(sorted(c.stem for c in CONFIGS.glob('*.json')))})")
    return p.resolve()


def docker_exec(name: str, *cmd: str, check: bool = True, user: str | None = None):
    args = ["docker", "exec"] + (["-u", user] if user else []) + [name, *cmd]
    return run(args, check=check, capture=True, quiet=True)


def wait_booted(name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        res = docker_exec(name, "systemctl", "is-system-running", check=False)
        state = (res.stdout or "").strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise SystemExit(f"simctl: rig {name} did not finish booting (state: {state or 'unreachable'})")


def up(name: str, config: str = "2x4090", ssh_port: int | None = None, archive: bool = True,
       extra_args: list[str] | None = None) -> None:
    down([name], quiet=True)
    cmd = ["docker", "run", "-d", "--name", name, "--hostname", name,
           "--label", LABEL, "--restart", "unless-stopped",
           *RIG_RUN_ARGS]
    if ssh_port:
        # Loopback only: the rig is never reachable from another machine.
        cmd += ["-p", f"127.0.0.1:{ssh_port}:22"]
    cmd += list(extra_args or [])
    cmd.append(IMAGE)
    run(cmd, capture=True)
    wait_booted(name)
    set_config(name, config)
    if archive:
        trust_archive(name)


def set_config(name: str, config: str) -> None:
    """Choose the rig's GPUs: /etc/rigkeeper-sim/gpus.json links to a preset (the "hardware" stays
    the same across reboots, as a real machine's does)."""
    preset = config_path(config)
    if preset.parent != CONFIGS.resolve():
        raise SystemExit(f"simctl: GPU configs must be presets in {CONFIGS}")
    docker_exec(name, "ln", "-sfn", f"/usr/share/rigkeeper-sim/configs/{preset.name}",
                "/etc/rigkeeper-sim/gpus.json")


def trust_archive(name: str) -> None:
    """Make the rig trust the simulated Ubuntu archive, as a real Ubuntu install trusts its own."""
    script = ("install -m 0644 /srv/rigkeeper-sim/repo/key/rigkeeper-sim.gpg "
              "/usr/share/keyrings/rigkeeper-sim-archive.gpg && "
              f"printf '%s' '{ARCHIVE_SOURCES}' > /etc/apt/sources.list.d/ubuntu-archive-sim.sources")
    docker_exec(name, "sh", "-c", script)


def restart(name: str) -> None:
    run(["docker", "restart", "-t", "10", name], capture=True)
    wait_booted(name)


def down(names, quiet: bool = False) -> None:
    for name in names:
        run(["docker", "rm", "-f", "-v", name], check=False, capture=True, quiet=quiet)


# What a converged rig depends on: the code that converges it and the simulator it runs in.
CONVERGED = "rigkeeper-sim:converged"
CONVERGED_INPUTS = ["ansible.cfg", "galaxy.yml", "meta", "roles", "playbooks", "plugins",
                    "inventory/sim"]


def converged_key(config: str) -> str:
    """Digest of the working tree's code (what ansible-playbook runs), the base image and the
    repositories' stamp, and the GPU preset."""
    h = hashlib.sha256()
    for top in CONVERGED_INPUTS:
        base = ROOT / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.name.startswith(".bench"):
                continue
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    img = run(["docker", "image", "inspect", "-f", "{{.Id}}", IMAGE], capture=True, quiet=True).stdout.strip()
    stamp = REPO_DIR / ".stamp"
    h.update(img.encode() + (stamp.read_bytes() if stamp.exists() else b"") + config_path(config).read_bytes())
    return h.hexdigest()[:12]


def converged(config: str = "2x4090") -> str:
    """The image of a rig that playbooks/site.yml converged (tagged rigkeeper-sim:converged), made
    once per code and simulator state: scenarios that start from a converged rig (the audits) clone
    it instead of converging again. Docker's own state inside the rig is left out of the image: on
    overlayfs a clone's dockerd cannot rename directories of the image's lower layer and would not
    start; emptied, it starts as after a fresh install, with the daemon.json rigkeeper wrote."""
    key = converged_key(config)
    tag = f"rigkeeper-sim:converged-{key}"
    if run(["docker", "image", "inspect", tag], check=False, capture=True, quiet=True).returncode == 0:
        run(["docker", "tag", tag, CONVERGED], quiet=True)
        print(f"converged rig {tag} is current")
        return tag
    t0 = time.monotonic()
    name = "rk-converged-build"
    up(name, config)
    try:
        inv = ROOT / "inventory" / "sim" / ".converged.json"
        inv.write_text('{"all": {"children": {"rigs": {"hosts": {"%s": {"ansible_connection": '
                       '"community.docker.docker", "ansible_host": "%s"}}}}}}' % (name, name))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   RIGKEEPER_REPORT_DIR=str(ROOT / "reports" / "converged"))
        playbook = Path(sys.executable).parent / "ansible-playbook"
        res = run([playbook if playbook.exists() else "ansible-playbook", "-i", inv, "playbooks/site.yml"],
                  check=False, capture=True, cwd=ROOT, env=env)
        inv.unlink()
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-6000:] + res.stderr[-2000:])
            raise SystemExit(f"simctl: converging {name} with playbooks/site.yml failed (rc={res.returncode})")
        docker_exec(name, "sh", "-c", "systemctl stop docker.socket docker.service containerd.service 2>/dev/null;"
                    " rm -rf /var/lib/docker /var/lib/containerd")
        run(["docker", "commit", "--change", "LABEL org.rigkeeper.sim=converged", name, tag], capture=True)
        run(["docker", "tag", tag, CONVERGED], quiet=True)
    finally:
        down([name], quiet=True)
    print(f"converged rig {tag} made in {time.monotonic() - t0:.0f} s")
    return tag


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--force", action="store_true")
    sub.add_parser("clean")
    u = sub.add_parser("up")
    u.add_argument("name")
    u.add_argument("--config", default="2x4090")
    u.add_argument("--ssh-port", type=int)
    u.add_argument("--no-archive", action="store_true")
    r = sub.add_parser("restart")
    r.add_argument("name")
    d = sub.add_parser("down")
    d.add_argument("names", nargs="+")
    c = sub.add_parser("converged")
    c.add_argument("--config", default="2x4090")
    e = sub.add_parser("exec")
    e.add_argument("name")
    e.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        build(a.force)
    elif a.cmd == "clean":
        clean()
    elif a.cmd == "up":
        up(a.name, a.config, a.ssh_port, archive=not a.no_archive)
    elif a.cmd == "restart":
        restart(a.name)
    elif a.cmd == "down":
        down(a.names)
    elif a.cmd == "converged":
        converged(a.config)
    elif a.cmd == "exec":
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        return subprocess.call(["docker", "exec", a.name, *cmd])
    return 0


if __name__ == "__main__":
    sys.exit(main())
