"""The simulator's Docker CE repository: Docker's package names, versions and relations around a
working engine.

The rig must really run containers, so the payload is real: the binaries of Debian's own docker.io,
docker-cli and containerd (Debian 13 "trixie": Docker 26.1.5 and containerd 1.7.24, which run on the
rig's Debian 12 libc) and runc and tini (Debian 12), downloaded once with apt (`apt-get download`,
Debian's archive is the only registry the build machines reach) into a cache, and repacked under
Docker CE's names, versions, file layout and relations:

  * names, relations: docker/docker-ce-packaging deb/common/control as of 2024-05 (commit 7eab4151f4,
    what 26.1.x was built from): docker-ce Conflicts "docker (<< 1.5~), docker-engine, docker.io",
    Replaces docker-engine; docker-ce-cli Conflicts the same, Replaces/Breaks "docker-ce (<< 5:0)";
    docker-buildx-plugin Replaces docker-ce-cli; docker/containerd-packaging debian/control:
    containerd.io Provides, Conflicts and Replaces "containerd, runc".
  * versions: 5:26.1.5-1~ubuntu.24.04~noble of docker-ce/docker-ce-cli, and its upgrade from
    5:26.1.4-1~ubuntu.24.04~noble, in a public apt log from download.docker.com's noble/stable;
    containerd.io 1.7.24-1 (no distribution suffix before containerd 2.x) in several public install
    scripts for noble; the plugin versions have the same "-1~ubuntu.24.04~noble" shape
    (docker-buildx-plugin 0.29.1-1~ubuntu.24.04~noble is quoted for noble), but which buildx and
    compose releases came with 26.1.5 is UNVERIFIED (0.16.1 and 2.29.1 are from that month).
  * layout: deb/common/rules: /usr/bin/dockerd, /usr/bin/docker-proxy,
    /usr/libexec/docker/docker-init, /usr/bin/docker, plugins in /usr/libexec/docker/cli-plugins;
    containerd.io ships runc as /usr/bin/runc and /etc/containerd/config.toml with
    `disabled_plugins = ["cri"]` (containerd-packaging common/containerd.toml).
  * docker.service: moby contrib/init/systemd/docker.service (v26.1.5): Type=notify,
    `ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock`,
    `ExecReload=/bin/kill -s HUP $MAINPID`, Restart=always, StartLimitBurst=3 in 60 s,
    Delegate=yes, KillMode=process; docker.socket with SocketGroup=docker. The docker group is made by
    the postinst (deb/common/docker-ce.postinst: `groupadd --system docker`).
  * repository: Docker's layout, `deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc]
    <url> noble stable`, the pool under dists/noble/pool/stable/amd64/, the armored key at <url>/gpg;
    Release "Origin: Docker", "Label: Docker CE", "Suite: noble", component stable, no Codename field
    (apt-cache policy shows "o=Docker,a=jammy,l=Docker CE,c=stable,b=amd64" in Docker's own docs).

What this does not model is listed in tests/sim/README.md ("Docker CE repository").
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from catalog import Deb

SUITE, COMPONENT = "noble", "stable"
ORIGIN, LABEL = "Docker", "Docker CE"
DOCKER_MAINT = "Docker <support@docker.com>"
CONTAINERD_MAINT = "Containerd team <help@containerd.io>"
NOTE = ("\n .\n Built by the rigkeeper simulator: Docker CE's name, version and relations around the "
        "binaries of\n Debian's docker.io, docker-cli, containerd, runc and tini.")

ENGINE_VERSION = "5:26.1.5-1~ubuntu.24.04~noble"
CONTAINERD_VERSION = "1.7.24-1"
BUILDX_VERSION = "0.16.1-1~ubuntu.24.04~noble"
COMPOSE_VERSION = "2.29.1-1~ubuntu.24.04~noble"

# The Debian packages the payload comes from, and their suite. runc and tini from Debian 12: trixie's
# need a newer libc than the rig's (runc: libc6 >= 2.38).
DEBIAN_PAYLOAD = {"docker.io": "trixie", "docker-cli": "trixie", "containerd": "trixie",
                  "runc": "bookworm", "tini": "bookworm"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Shared by docker-ce and docker-ce-cli (control of 2024-05).
_OLD_ENGINES = "docker (<< 1.5~), docker-engine, docker.io"

SHLIBS = "libc6 (>= 2.34), libsystemd0"


# --- The payload: Debian's packages, downloaded once per version ------------------------------

def _apt_options(root: str, mirror: str) -> list[str]:
    etc = os.path.join(root, "etc")
    os.makedirs(os.path.join(root, "lists", "partial"), exist_ok=True)
    os.makedirs(os.path.join(root, "cache", "archives", "partial"), exist_ok=True)
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "sources.list"), "w", encoding="utf-8") as fh:
        fh.write("".join(f"deb {mirror} {suite} main\n" for suite in sorted(set(DEBIAN_PAYLOAD.values()))))
    open(os.path.join(etc, "status"), "a").close()
    return ["-o", f"Dir::Etc::SourceList={etc}/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root}/lists", "-o", f"Dir::Cache={root}/cache",
            "-o", f"Dir::State::status={etc}/status", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root", "-o", "Acquire::Languages=none", "-q"]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def payload(cache: str, mirror: str | None = None, quiet: bool = False) -> dict[str, dict]:
    """{Debian package: {"version", "file", "sha256"}}, downloaded into CACHE once.

    The manifest (CACHE/manifest.json) names the versions; while it and its files exist nothing is
    fetched again, so a rebuild is offline and the versions stay put (they go into the repository's
    stamp). Delete CACHE to take Debian's current versions."""
    manifest_path = os.path.join(cache, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as fh:
            manifest = json.load(fh)
        if set(manifest) == set(DEBIAN_PAYLOAD) and all(
                os.path.exists(os.path.join(cache, m["file"])) for m in manifest.values()):
            return manifest
    mirror = (mirror or os.environ.get("RIGKEEPER_DEBIAN_MIRROR") or DEFAULT_MIRROR).rstrip("/")
    if not quiet:
        print(f"downloading the Docker CE payload ({', '.join(sorted(DEBIAN_PAYLOAD))}) from {mirror}")
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rkapt") as root:
        opts = _apt_options(root, mirror)
        for cmd in (["apt-get", *opts, "update"],
                    ["apt-get", *opts, "download", *(f"{p}/{s}" for p, s in sorted(DEBIAN_PAYLOAD.items()))]):
            res = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"docker_ce: {' '.join(cmd[:1] + cmd[-1:])} failed (Debian's archive at {mirror}; "
                                 f"set RIGKEEPER_DEBIAN_MIRROR for another):\n{res.stderr.strip()}")
    manifest = {}
    for name in os.listdir(cache):
        if not name.endswith(".deb"):
            continue
        pkg = name.split("_")[0]
        if pkg not in DEBIAN_PAYLOAD:
            continue
        info = subprocess.run(["dpkg-deb", "-f", os.path.join(cache, name), "Version"],
                              check=True, capture_output=True, text=True).stdout.strip()
        manifest[pkg] = {"version": info, "file": name, "sha256": _sha256(os.path.join(cache, name))}
    missing = set(DEBIAN_PAYLOAD) - set(manifest)
    if missing:
        raise SystemExit(f"docker_ce: apt-get download left out {', '.join(sorted(missing))}")
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
    return manifest


def stamp(manifest: dict[str, dict]) -> str:
    """What the repository stamp adds for this repository: the payload's versions and hashes."""
    return "".join(f"{p} {m['version']} {m['sha256']}\n" for p, m in sorted(manifest.items()))


# --- The packages -----------------------------------------------------------------------------

def docker_service() -> str:
    # moby contrib/init/systemd/docker.service (v26.1.5), its directives in its order.
    return ("[Unit]\nDescription=Docker Application Container Engine\nDocumentation=https://docs.docker.com\n"
            "After=network-online.target docker.socket firewalld.service containerd.service time-set.target\n"
            "Wants=network-online.target containerd.service\nRequires=docker.socket\n\n"
            "[Service]\nType=notify\n"
            "ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n"
            "ExecReload=/bin/kill -s HUP $MAINPID\nTimeoutStartSec=0\nRestartSec=2\nRestart=always\n"
            "StartLimitBurst=3\nStartLimitInterval=60s\nLimitNPROC=infinity\nLimitCORE=infinity\n"
            "TasksMax=infinity\nDelegate=yes\nKillMode=process\nOOMScoreAdjust=-500\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def docker_socket() -> str:
    return ("[Unit]\nDescription=Docker Socket for the API\n\n[Socket]\nListenStream=/run/docker.sock\n"
            "SocketMode=0660\nSocketUser=root\nSocketGroup=docker\n\n[Install]\nWantedBy=sockets.target\n")


def plugin_stub(name: str, version: str, description: str) -> str:
    """A CLI plugin that answers the CLI's metadata call (docker-cli-plugin-metadata) and `version`."""
    upstream = "v" + version.split("-")[0]
    return (f"#!/bin/sh\n# rigkeeper simulator: docker-{name} {upstream} (a stand-in; no {name} inside)\n"
            'case "$1" in\n'
            "  docker-cli-plugin-metadata)\n"
            f'    printf \'{{"SchemaVersion":"0.1.0","Vendor":"Docker Inc.","Version":"{upstream}",'
            f'"ShortDescription":"{description}"}}\\n\' ;;\n'
            f'  *) echo "docker {name} {upstream} (rigkeeper simulator stand-in: nothing else is supported)"; '
            '[ "$2" = version ] || [ "$1" = version ] ;;\n'
            "esac\n")


# Maintainer scripts: what debhelper generates for these packages (dh_installsystemd: enable, then
# start, "|| true"), and docker-ce's own postinst (the docker group before the socket starts).
POSTINST = {
    "docker-ce": """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent group docker > /dev/null; then groupadd --system docker; fi
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload > /dev/null || true
    systemctl enable docker.service docker.socket > /dev/null 2>&1 || true
    systemctl restart docker.socket docker.service > /dev/null 2>&1 || true
  fi
fi
exit 0
""",
    "containerd.io": """#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload > /dev/null || true
  systemctl enable containerd.service > /dev/null 2>&1 || true
  systemctl restart containerd.service > /dev/null 2>&1 || true
fi
exit 0
""",
}
PRERM = {
    "docker-ce": """#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop docker.service docker.socket > /dev/null 2>&1 || true
fi
exit 0
""",
    "containerd.io": """#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop containerd.service > /dev/null 2>&1 || true
fi
exit 0
""",
}


def packages() -> list[tuple[Deb, dict[str, tuple[str, object]]]]:
    """(control, files) per package. files: path -> ("from", (Debian package, its path)) or
    ("text", content) or ("exec", content)."""
    engine = Deb(name="docker-ce", version=ENGINE_VERSION, maintainer=DOCKER_MAINT, section="admin",
                 source="docker-ce", description="Docker: the open-source application container engine" + NOTE,
                 fields={"Depends": f"containerd.io (>= 1.6.24), docker-ce-cli, iptables, libseccomp2 (>= 2.3.0), {SHLIBS}",
                         "Recommends": "apparmor, ca-certificates, docker-ce-rootless-extras, git, libltdl7, pigz, "
                                       "procps, xz-utils",
                         "Suggests": "aufs-tools, cgroupfs-mount | cgroup-lite",
                         "Conflicts": _OLD_ENGINES, "Replaces": "docker-engine"})
    cli = Deb(name="docker-ce-cli", version=ENGINE_VERSION, maintainer=DOCKER_MAINT, section="admin",
              source="docker-ce", description="Docker CLI: the open-source application container engine" + NOTE,
              fields={"Depends": "libc6 (>= 2.34)", "Recommends": "docker-buildx-plugin, docker-compose-plugin",
                      "Conflicts": _OLD_ENGINES, "Replaces": "docker-ce (<< 5:0)", "Breaks": "docker-ce (<< 5:0)"})
    containerd = Deb(name="containerd.io", version=CONTAINERD_VERSION, maintainer=CONTAINERD_MAINT,
                     section="devel", source="containerd.io",
                     description="An open and reliable container runtime" + NOTE,
                     fields={"Depends": "libc6 (>= 2.34), libseccomp2 (>= 2.5.0)",
                             "Provides": "containerd, runc", "Conflicts": "containerd, runc",
                             "Replaces": "containerd, runc"},
                     conffiles=["/etc/containerd/config.toml"])
    buildx = Deb(name="docker-buildx-plugin", version=BUILDX_VERSION, maintainer=DOCKER_MAINT, section="admin",
                 source="docker-ce", description="Docker Buildx cli plugin." + NOTE,
                 fields={"Enhances": "docker-ce-cli", "Replaces": "docker-ce-cli"})
    compose = Deb(name="docker-compose-plugin", version=COMPOSE_VERSION, maintainer=DOCKER_MAINT, section="admin",
                  source="docker-ce", description="Docker Compose (V2) plugin for the Docker CLI." + NOTE,
                  fields={"Enhances": "docker-ce-cli"})
    units = "/usr/lib/systemd/system"
    plugins = "/usr/libexec/docker/cli-plugins"
    return [
        (engine, {"/usr/bin/dockerd": ("from", ("docker.io", "/usr/sbin/dockerd")),
                  "/usr/bin/docker-proxy": ("from", ("docker.io", "/usr/sbin/docker-proxy")),
                  "/usr/libexec/docker/docker-init": ("from", ("tini", "/usr/bin/tini-static")),
                  f"{units}/docker.service": ("text", docker_service()),
                  f"{units}/docker.socket": ("text", docker_socket())}),
        (cli, {"/usr/bin/docker": ("from", ("docker-cli", "/usr/bin/docker"))}),
        (containerd, {"/usr/bin/containerd": ("from", ("containerd", "/usr/bin/containerd")),
                      "/usr/bin/containerd-shim-runc-v2": ("from", ("containerd", "/usr/bin/containerd-shim-runc-v2")),
                      "/usr/bin/ctr": ("from", ("containerd", "/usr/bin/ctr")),
                      "/usr/bin/runc": ("from", ("runc", "/usr/sbin/runc")),
                      f"{units}/containerd.service": ("from", ("containerd", f"{units}/containerd.service")),
                      "/etc/containerd/config.toml": ("text", 'disabled_plugins = ["cri"]\n')}),
        (buildx, {f"{plugins}/docker-buildx": ("exec", plugin_stub("buildx", BUILDX_VERSION, "Docker Buildx"))}),
        (compose, {f"{plugins}/docker-compose": ("exec", plugin_stub("compose", COMPOSE_VERSION, "Docker Compose"))}),
    ]


# --- Building the repository ------------------------------------------------------------------

def _extract(cache: str, manifest: dict, work: str) -> dict[str, str]:
    roots = {}
    for pkg, m in manifest.items():
        root = os.path.join(work, "src", pkg)
        os.makedirs(root)
        subprocess.run(["dpkg-deb", "-x", os.path.join(cache, m["file"]), root], check=True)
        roots[pkg] = root
    return roots


def _build_one(deb: Deb, files: dict, roots: dict[str, str], work: str, out_path: str, epoch: int):
    import build_repo  # the generator's helpers (imported late: build_repo imports this module)
    stage = os.path.join(work, f"{deb.name}_{deb.version}")
    os.makedirs(os.path.join(stage, "DEBIAN"))
    total = 0
    for dest, (kind, arg) in sorted(files.items()):
        target = stage + dest
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if kind == "from":
            src = os.path.join(roots[arg[0]], arg[1].lstrip("/"))
            shutil.copyfile(os.path.realpath(src), target)
            os.chmod(target, 0o755 if os.access(src, os.X_OK) else 0o644)
        else:
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(arg)
            os.chmod(target, 0o755 if kind == "exec" else 0o644)
        total += os.path.getsize(target)
    for name, scripts in (("postinst", POSTINST), ("prerm", PRERM)):
        if deb.name in scripts:
            path = os.path.join(stage, "DEBIAN", name)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(scripts[deb.name])
            os.chmod(path, 0o755)
    if deb.conffiles:
        with open(os.path.join(stage, "DEBIAN", "conffiles"), "w", encoding="utf-8") as fh:
            fh.write("".join(c + "\n" for c in deb.conffiles))
    fields = build_repo.control_fields(deb, max(1, (total + 1023) // 1024 + 4))
    # Enhances is not in the generator's field order: keep it, after Provides.
    if deb.fields.get("Enhances"):
        at = [k for k, _ in fields].index("Section")
        fields.insert(at, ("Enhances", deb.fields["Enhances"]))
    with open(os.path.join(stage, "DEBIAN", "control"), "w", encoding="utf-8") as fh:
        fh.write(build_repo.render_control(fields))
    for dirpath, dirnames, filenames in os.walk(stage):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (epoch, epoch), follow_symlinks=False)
        if dirpath != stage:
            os.chmod(dirpath, 0o755)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    # Fast compression: the payload is some 150 MB of Go binaries, rebuilt at every recipe change.
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", stage, out_path],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    shutil.rmtree(stage)
    return fields


def write_repo(base: str, cache: str, manifest: dict, signer, epoch: int, work: str) -> int:
    """Docker's layout under BASE: dists/noble/{Release,InRelease,Release.gpg},
    dists/noble/stable/binary-amd64/Packages(.gz), dists/noble/pool/stable/amd64/*.deb, gpg."""
    import build_repo
    from concurrent.futures import ThreadPoolExecutor
    shutil.rmtree(base, ignore_errors=True)
    dist = os.path.join(base, "dists", SUITE)
    bindir = os.path.join(dist, COMPONENT, "binary-amd64")
    os.makedirs(bindir)
    work = tempfile.mkdtemp(prefix="rkdocker", dir=work)
    try:
        roots = _extract(cache, manifest, work)
        pkgs = packages()
        built = {}
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
            futures = {deb.key: (deb, pool.submit(_build_one, deb, files, roots, work,
                                                  os.path.join(work, deb.filename), epoch))
                       for deb, files in pkgs}
            for key, (deb, fut) in futures.items():
                built[key] = (os.path.join(work, deb.filename), fut.result())
        data = build_repo._packages([d for d, _ in pkgs], built, base,
                                    lambda d: f"dists/{SUITE}/pool/{COMPONENT}/amd64/{d.filename}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(bindir, "Packages"), "wb") as fh:
        fh.write(data)
    with open(os.path.join(bindir, "Packages.gz"), "wb") as fh:
        fh.write(build_repo.gz(data, epoch))
    comp = f"{COMPONENT}/binary-amd64"
    header = [("Origin", ORIGIN), ("Label", LABEL), ("Suite", SUITE), ("Architectures", "amd64"),
              ("Components", COMPONENT), ("Description", "Docker CE packages for Ubuntu 24.04 (rigkeeper simulator)"),
              ("Date", build_repo._date(epoch))]
    release = os.path.join(dist, "Release")
    with open(release, "w", encoding="utf-8") as fh:
        fh.write(build_repo.release_text(header, dist, [f"{comp}/Packages", f"{comp}/Packages.gz"]))
    signer.sign(release)
    with open(os.path.join(base, "gpg"), "wb") as fh:
        fh.write(signer.public_armored)
    return len(pkgs)
