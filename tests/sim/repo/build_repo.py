#!/usr/bin/env python3
"""Build the simulator's signed apt repositories (Ubuntu archive, CUDA repo, libnvidia-container).

    python3 tests/sim/repo/build_repo.py --out DIR [--force] [--url-base file:///srv/rigkeeper-sim/repo]

DIR/key/rigkeeper-sim.asc, .gpg     public key, ASCII-armored and as a binary keyring (signed-by)
DIR/key/secret/signing-key.asc      the (unprotected) secret key; generated once, reused after
DIR/ubuntu/                         archive layout: dists/noble/{Release,InRelease,Release.gpg},
                                    dists/noble/restricted/binary-amd64/Packages(.gz), pool/...
DIR/cuda/                           flat repo ("deb [signed-by=...] URL/cuda /"), + 3bf863cc.pub
DIR/libnvidia-container/            flat repo, + gpgkey
DIR/sources.list.example            the three "deb" lines for URL-BASE

Packages and Release files are written here (MD5Sum/SHA1/SHA256); .debs are built with
`dpkg-deb --root-owner-group -Zgzip --build`; signing uses gpg (InRelease by --clearsign,
Release.gpg by --detach-sign --armor) in a throwaway GNUPGHOME. Needs: dpkg-deb (package
"dpkg", always present on Debian/Ubuntu) and gpg. Output is reproducible: every timestamp comes
from SOURCE_DATE_EPOCH (default 2025-01-01), and a stamp file (DIR/.stamp, a hash of this
generator, tests/sim/pkgsrc, tests/sim/configs, the URL base and the key) skips the work when
nothing changed.
"""
from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.dirname(HERE)
PKGSRC = os.path.join(SIM, "pkgsrc")
CONFIGS = os.path.join(SIM, "configs")
sys.path.insert(0, HERE)

import catalog  # noqa: E402
import docker_ce  # noqa: E402
from catalog import Deb  # noqa: E402

DEFAULT_EPOCH = 1735689600  # 2025-01-01T00:00:00Z
DEFAULT_URL_BASE = "file:///srv/rigkeeper-sim/repo"
KEY_UID = "rigkeeper simulator repository signing key <rigkeeper-sim@invalid>"
ARCHIVE_SUITE, ARCHIVE_COMPONENT = "noble", "restricted"


# --- Payload texts ----------------------------------------------------------------------------

def bake_default_config(src: str, what: str) -> str:
    """Replace the DEFAULT_CONFIG_JSON = None marker with tests/sim/configs/2x4090.json."""
    with open(os.path.join(CONFIGS, "2x4090.json"), encoding="utf-8") as f:
        default = json.dumps(json.load(f), sort_keys=True)
    marker = "DEFAULT_CONFIG_JSON = None"
    assert marker in src, f"{what} lost its DEFAULT_CONFIG_JSON marker"
    return src.replace(marker, f"DEFAULT_CONFIG_JSON = {default!r}", 1)


def nvsim_module() -> str:
    """tests/sim/pkgsrc/nvsim.py with the default GPU description baked in."""
    with open(os.path.join(PKGSRC, "nvsim.py"), encoding="utf-8") as f:
        return bake_default_config(f.read(), "nvsim.py")


def wrapper(module: str, func: str, version: str) -> str:
    return ("#!/usr/bin/python3\n"
            f"# rigkeeper simulator: {func.replace('_main', '')} of NVIDIA driver {version}\n"
            "import sys\n"
            "sys.dont_write_bytecode = True  # a real binary leaves nothing behind in /usr\n"
            "sys.path.insert(0, '/usr/lib/rigkeeper-sim')\n"
            f"import {module}\n"
            f"sys.exit({module}.{func}(sys.argv[1:], version={version!r}))\n")


def ctk_script(version: str) -> str:
    with open(os.path.join(PKGSRC, "nvidia_ctk.py"), encoding="utf-8") as f:
        src = f.read()
    src = src.replace("#!/usr/bin/env python3", "#!/usr/bin/python3", 1)
    src = src.replace('VERSION = "1.17.8"', f"VERSION = {version!r}", 1)
    return bake_default_config(src, "nvidia_ctk.py")


def read_pkgsrc(name: str) -> str:
    with open(os.path.join(PKGSRC, name), encoding="utf-8") as f:
        return f.read()


# Ubuntu's unit for nvidia-persistenced (debian/nvidia-persistenced.service of
# canonical/nvidia-graphics-drivers): Type=forking, --no-persistence-mode, no [Install] section
# (udev starts it when the module loads). The 580 packaging has its own unit without
# --no-persistence-mode (and StopWhenUnneeded=true); set PERSISTENCED_NO_PM_BRANCHES to "535 545
# 550" to model that difference. Kept uniform by default: see tests/sim/README.md.
PERSISTENCED_NO_PM_BRANCHES = {"535", "545", "550", "580"}


def persistenced_unit(branch: str) -> str:
    flag = " --no-persistence-mode" if branch in PERSISTENCED_NO_PM_BRANCHES else ""
    return ("[Unit]\nDescription=NVIDIA Persistence Daemon\nWants=syslog.target\n\n"
            "[Service]\nType=forking\n"
            f"ExecStart=/usr/bin/nvidia-persistenced --user nvidia-persistenced{flag} --verbose\n"
            "ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced\n")


def container_cli(version: str) -> str:
    return f"""#!/bin/sh
# rigkeeper simulator: nvidia-container-cli {version}
case "$1" in
  --version|-V)
    printf 'cli-version: {version}\\nlib-version: {version}\\nbuild date: 2025-01-01T00:00+00:00\\n' ;;
  info)
    v=$(cat /run/rigkeeper-sim/sys/module/nvidia/version 2>/dev/null) || {{
      echo "nvidia-container-cli: initialization error: nvml error: driver not loaded" >&2; exit 1; }}
    printf 'NVRM version:   %s\\nCUDA version:   -\\n' "$v" ;;
  *) echo "nvidia-container-cli: simulator supports --version and info" >&2; exit 1 ;;
esac
"""


def nvcc_script(arg) -> str:
    """The fake nvcc of one toolkit: pkgsrc/nvcc.py with its version text and release baked in."""
    text, release = arg
    src = read_pkgsrc("nvcc.py")
    for marker, value in (("VERSION_TEXT = None", f"VERSION_TEXT = {text!r}"), ("RELEASE = None", f"RELEASE = {release!r}")):
        assert marker in src, f"nvcc.py lost its {marker} marker"
        src = src.replace(marker, value, 1)
    return src.replace("#!/usr/bin/env python3", "#!/usr/bin/python3", 1)


def cuda_list(url_base: str) -> str:
    # Real: "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] https://developer.download.nvidia.com/
    # compute/cuda/repos/ubuntu2404/x86_64/ /" (note the trailing slash before " /").
    return f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {url_base}/cuda/ /\n"


SCRIPTS = {
    # The fake nvidia-dkms postinst/prerm: the simulator's DKMS (simkernel.py in the image) builds the
    # module for every installed kernel with headers, or removes this version's builds.
    "dkms-postinst": lambda version, kind: f"""#!/bin/sh
set -e
if [ "$1" = configure ] && [ -x /usr/lib/rigkeeper-sim/simkernel.py ]; then
  /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py dkms-install --version {version} --type {kind}
fi
exit 0
""",
    "dkms-prerm": lambda version: f"""#!/bin/sh
set -e
if [ -x /usr/lib/rigkeeper-sim/simkernel.py ]; then
  /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py dkms-remove --version {version}
fi
exit 0
""",
    # Kernel image and headers scripts: what Ubuntu's linux-image postinst does (postinst.d hooks,
    # initramfs, GRUB, reboot-required), done by the simulator's kernel.
    "kernel-script": lambda cases, cmd, release: f"""#!/bin/sh
set -e
case "$1" in
  {cases}) [ ! -x /usr/lib/rigkeeper-sim/simkernel.py ] || /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py {cmd} {release} ;;
esac
exit 0
""",
    # nvidia-compute-utils postinst (debian/templates/nvidia-compute-utils-flavour.postinst.in):
    # create the nvidia-persistenced system user and group. useradd when adduser is absent.
    "persistenced-postinst": lambda: """#!/bin/sh
set -e
NVPD_USER="nvidia-persistenced"
case "$1" in
  configure)
    if ! id "$NVPD_USER" > /dev/null 2>&1; then
      if command -v adduser > /dev/null 2>&1; then
        adduser --system --no-create-home --home /nonexistent --gecos 'NVIDIA Persistence Daemon' --group "$NVPD_USER" > /dev/null
      else
        useradd --system --no-create-home --home-dir /nonexistent --comment 'NVIDIA Persistence Daemon' --user-group --shell /usr/sbin/nologin "$NVPD_USER"
      fi
    fi
    if [ -d /run/systemd/system ]; then systemctl --system daemon-reload > /dev/null || true; fi
    ;;
esac
exit 0
""",
    # nvidia-container-toolkit-base >= 1.18: enable the CDI refresh units and generate once, each
    # step only warning on failure (the real postinst's shape).
    "cdi-refresh-postinst": lambda: """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  case "$(systemctl is-system-running 2>/dev/null || true)" in
    running|degraded)
      systemctl daemon-reload || echo "Warning: Failed to reload systemd daemon" >&2
      systemctl enable --now nvidia-cdi-refresh.path || echo "Warning: Failed to enable nvidia-cdi-refresh.path" >&2
      systemctl enable --now nvidia-cdi-refresh.service || echo "Warning: Failed to enable nvidia-cdi-refresh.service" >&2
      echo "Regenerating NVIDIA CDI specification..."
      systemctl start nvidia-cdi-refresh.service || echo "Warning: Failed to trigger CDI refresh" >&2
      ;;
  esac
fi
exit 0
""",
    # Canonical's precompiled module packages run depmod for their kernel (postinst and postrm).
    "depmod-script": lambda: """#!/bin/sh
set -e
/usr/lib/rigkeeper-sim/simkernel.py depmod || true
exit 0
""",
    "daemon-reload-postinst": lambda: """#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload > /dev/null || true
fi
exit 0
""",
    "ldconfig-postinst": lambda: """#!/bin/sh
set -e
if [ "$1" = configure ]; then ldconfig || true; fi
exit 0
""",
    # /usr/local/cuda and /usr/local/cuda-<major> are update-alternatives links, as with the real
    # toolkit packages (`update-alternatives --set cuda /usr/local/cuda-12.4` is the documented way
    # to switch).
    "cuda-alt-postinst": lambda home, major, prio: f"""#!/bin/sh
set -e
if [ "$1" = configure ]; then
  update-alternatives --install /usr/local/cuda cuda {home} {prio}
  update-alternatives --install /usr/local/cuda-{major} cuda-{major} {home} {prio}
fi
exit 0
""",
    "cuda-alt-prerm": lambda home, major: f"""#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
  update-alternatives --remove cuda {home} || true
  update-alternatives --remove cuda-{major} {home} || true
fi
exit 0
""",
    # libcudnnN-dev: /usr/include/cudnn.h and /usr/include/cudnn_version.h through the "libcudnn"
    # alternative, like NVIDIA's cuDNN packages.
    "cudnn-alt-postinst": lambda major, prio: f"""#!/bin/sh
set -e
if [ "$1" = configure ]; then
  update-alternatives --install /usr/include/cudnn.h libcudnn /usr/include/x86_64-linux-gnu/cudnn_v{major}.h {prio} \\
    --slave /usr/include/cudnn_version.h libcudnn_version_h /usr/include/x86_64-linux-gnu/cudnn_version_v{major}.h \\
    --slave /usr/lib/x86_64-linux-gnu/libcudnn.so libcudnn_so /usr/lib/x86_64-linux-gnu/libcudnn.so.{major}
fi
exit 0
""",
    "cudnn-alt-prerm": lambda major: f"""#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
  update-alternatives --remove libcudnn /usr/include/x86_64-linux-gnu/cudnn_v{major}.h || true
fi
exit 0
""",
}


class Payloads:
    def __init__(self, url_base: str, keyring: bytes):
        self.url_base = url_base
        self.keyring = keyring
        self.nvsim = nvsim_module()

    def render(self, kind: str, arg) -> tuple[bytes | None, int]:
        """(content, mode) of one file; content None means a directory."""
        text = {
            "text": lambda: arg,
            "script": lambda: arg,
            "placeholder": lambda: f"rigkeeper simulator placeholder: {arg}\n",
            "wrapper": lambda: wrapper(*arg),
            "nvsim": lambda: self.nvsim,
            "persistenced-unit": lambda: persistenced_unit(arg),
            "sim-modprobe": lambda: read_pkgsrc("sim-modprobe"),
            "fm-unit": lambda: read_pkgsrc("nvidia-fabricmanager.service"),
            "fm-cfg": lambda: read_pkgsrc("fabricmanager.cfg"),
            "nvcc": lambda: nvcc_script(arg),
            "cuda-list": lambda: cuda_list(self.url_base),
            "container-cli": lambda: container_cli(arg),
            "ctk": lambda: ctk_script(arg),
            "container-runtime": lambda: read_pkgsrc("nvidia-container-runtime"),
            "runtime-hook": lambda: read_pkgsrc("nvidia-container-runtime-hook"),
            "ctk-config": lambda: read_pkgsrc("nvidia-container-runtime-config.toml"),
            "pkgsrc": lambda: read_pkgsrc(arg),
        }
        if kind == "dir":
            return None, 0o755
        if kind == "keyring":
            return self.keyring, 0o644
        body = text[kind]()
        executable = kind in ("wrapper", "script", "sim-modprobe", "nvcc", "container-cli", "ctk",
                              "container-runtime", "runtime-hook")
        return body.encode(), 0o755 if executable else 0o644


# --- Building one .deb ------------------------------------------------------------------------

FIELD_ORDER = ["Pre-Depends", "Depends", "Recommends", "Suggests", "Breaks", "Conflicts", "Replaces",
               "Provides", "Multi-Arch"]


def control_fields(deb: Deb, installed_size: int) -> list[tuple[str, str]]:
    f = [("Package", deb.name)]
    if deb.source and deb.source != deb.name:
        f.append(("Source", deb.source))
    f += [("Version", deb.version), ("Architecture", deb.arch), ("Maintainer", deb.maintainer),
          ("Installed-Size", str(installed_size))]
    for k in FIELD_ORDER:
        if deb.fields.get(k):
            f.append((k, deb.fields[k]))
    f += [("Section", deb.section), ("Priority", "optional"), ("Description", deb.description)]
    return f


def render_control(fields: list[tuple[str, str]]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields)


def build_deb(deb: Deb, payloads: Payloads, out_path: str, epoch: int, work: str) -> list[tuple[str, str]]:
    stage = os.path.join(work, f"{deb.name}_{deb.version}")
    os.makedirs(os.path.join(stage, "DEBIAN"))
    total = 0
    for p, (kind, arg) in sorted(deb.files.items()):
        dest = stage + p
        content, mode = payloads.render(kind, arg)
        if content is None:
            os.makedirs(dest, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as fh:
            fh.write(content)
        os.chmod(dest, mode)
        total += len(content)
    for p, target in sorted(deb.links.items()):
        os.makedirs(os.path.dirname(stage + p), exist_ok=True)
        os.symlink(target, stage + p)
    for name, spec in deb.scripts.items():
        key, args = (spec, ()) if isinstance(spec, str) else spec
        script = os.path.join(stage, "DEBIAN", name)
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(SCRIPTS[key](*args))
        os.chmod(script, 0o755)
    if deb.conffiles:
        with open(os.path.join(stage, "DEBIAN", "conffiles"), "w", encoding="utf-8") as fh:
            fh.write("".join(c + "\n" for c in deb.conffiles))
    fields = control_fields(deb, max(1, (total + 1023) // 1024 + 4))
    with open(os.path.join(stage, "DEBIAN", "control"), "w", encoding="utf-8") as fh:
        fh.write(render_control(fields))
    for dirpath, dirnames, filenames in os.walk(stage):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (epoch, epoch), follow_symlinks=False)
        if dirpath != stage:
            os.chmod(dirpath, 0o755)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", stage, out_path],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    shutil.rmtree(stage)
    return fields


def digests(path: str) -> dict[str, str]:
    with open(path, "rb") as fh:
        data = fh.read()
    return {"Size": str(len(data)), "MD5sum": hashlib.md5(data).hexdigest(),
            "SHA1": hashlib.sha1(data).hexdigest(), "SHA256": hashlib.sha256(data).hexdigest()}


def packages_stanza(fields: list[tuple[str, str]], filename: str, sums: dict[str, str]) -> str:
    head = [(k, v) for k, v in fields if k != "Description"]
    desc = [v for k, v in fields if k == "Description"][0]
    extra = [("Filename", filename), ("Size", sums["Size"]), ("MD5sum", sums["MD5sum"]),
             ("SHA1", sums["SHA1"]), ("SHA256", sums["SHA256"]), ("Description", desc)]
    return render_control(head + extra)


def gz(data: bytes, epoch: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=epoch, compresslevel=9) as g:
        g.write(data)
    return buf.getvalue()


def release_text(header: list[tuple[str, str]], base: str, files: list[str]) -> str:
    lines = [f"{k}: {v}" for k, v in header]
    entries = []
    for rel in files:
        with open(os.path.join(base, rel), "rb") as fh:
            data = fh.read()
        entries.append((rel, len(data), hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(),
                        hashlib.sha256(data).hexdigest()))
    for title, idx in (("MD5Sum", 2), ("SHA1", 3), ("SHA256", 4)):
        lines.append(f"{title}:")
        lines += [f" {e[idx]} {e[1]:>16} {e[0]}" for e in entries]
    return "\n".join(lines) + "\n"


# --- GPG --------------------------------------------------------------------------------------

class Signer:
    """gpg in a short-lived GNUPGHOME (short path: gpg-agent's socket must fit in sun_path)."""

    def __init__(self, keydir: str, epoch: int):
        self.keydir = keydir
        self.epoch = epoch
        self.home = tempfile.mkdtemp(prefix="rkgpg")
        os.chmod(self.home, 0o700)
        secret = os.path.join(keydir, "secret", "signing-key.asc")
        if not os.path.exists(secret):
            self._generate(secret)
        self.gpg("--import", secret)
        out = self.gpg("--with-colons", "--list-secret-keys", capture=True)
        self.fpr = [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")][0]
        self.public_armored = self.gpg("--armor", "--export", self.fpr, capture=True).encode()
        self.public_binary = self.gpg("--export", self.fpr, capture_bytes=True)

    def gpg(self, *args: str, capture: bool = False, capture_bytes: bool = False, faked: int | None = None):
        cmd = ["gpg", "--homedir", self.home, "--batch", "--quiet", "--no-tty", "--yes",
               "--pinentry-mode", "loopback", "--passphrase", ""]
        if faked is not None:
            cmd += ["--faked-system-time", f"{faked}!"]
        cmd += list(args)
        r = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if capture_bytes:
            return r.stdout
        return r.stdout.decode() if capture else None

    def _generate(self, secret: str) -> None:
        # Created a day before the fixed signing time, so signatures never predate their key.
        self.gpg("--quick-generate-key", KEY_UID, "ed25519", "sign", "never", faked=self.epoch - 86400)
        os.makedirs(os.path.dirname(secret), exist_ok=True)
        os.chmod(os.path.dirname(secret), 0o700)
        data = self.gpg("--armor", "--export-secret-keys", capture=True)
        with open(secret, "w", encoding="utf-8") as fh:
            fh.write(data)
        os.chmod(secret, 0o600)

    def sign(self, release: str) -> None:
        d = os.path.dirname(release)
        self.gpg("--local-user", self.fpr, "--digest-algo", "SHA512", "--clearsign",
                 "--output", os.path.join(d, "InRelease"), release, faked=self.epoch)
        self.gpg("--local-user", self.fpr, "--digest-algo", "SHA512", "--detach-sign", "--armor",
                 "--output", os.path.join(d, "Release.gpg"), release, faked=self.epoch)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


# --- Repositories -----------------------------------------------------------------------------

def pool_path(deb: Deb) -> str:
    src = deb.source or deb.name
    letter = src[:4] if src.startswith("lib") else src[0]
    return f"pool/{ARCHIVE_COMPONENT}/{letter}/{src}/{deb.filename}"


def docker_cache(out: str) -> str:
    """Where the Docker CE payload is kept (docker_ce.py): .cache/sim/docker-payload of this checkout
    when there is one, else next to OUT (simctl builds into .cache/sim/repo)."""
    mine = os.path.join(os.path.dirname(os.path.dirname(SIM)), ".cache", "sim")
    return os.path.join(mine if os.path.isdir(mine) else os.path.dirname(os.path.abspath(out)), "docker-payload")


def inputs_hash(url_base: str, epoch: int, keydir: str) -> str:
    h = hashlib.sha256()
    h.update(f"{url_base}\n{epoch}\n".encode())
    manifest = os.path.join(docker_cache(os.path.dirname(keydir)), "manifest.json")
    if os.path.exists(manifest):
        with open(manifest, "rb") as fh:
            h.update(fh.read())
    for base in (HERE, PKGSRC, CONFIGS):
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for n in sorted(filenames):
                if n.endswith(".pyc"):
                    continue
                p = os.path.join(dirpath, n)
                h.update(os.path.relpath(p, SIM).encode() + b"\0")
                with open(p, "rb") as fh:
                    h.update(fh.read())
    secret = os.path.join(keydir, "secret", "signing-key.asc")
    if os.path.exists(secret):
        with open(secret, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def build(out: str, url_base: str = DEFAULT_URL_BASE, force: bool = False, epoch: int = DEFAULT_EPOCH,
          quiet: bool = False) -> bool:
    """Build all repositories into OUT. Returns False when the stamp said nothing changed."""
    out = os.path.abspath(out)
    keydir = os.path.join(out, "key")
    stamp_path = os.path.join(out, ".stamp")
    docker_payload = docker_ce.payload(docker_cache(out), quiet=quiet)  # downloaded once per version
    outputs = [os.path.join(out, "docker/dists", docker_ce.SUITE, "InRelease"),
               os.path.join(out, "ubuntu/dists", ARCHIVE_SUITE, "InRelease"),
               os.path.join(out, "cuda/InRelease"), os.path.join(out, "libnvidia-container/InRelease"),
               os.path.join(keydir, "rigkeeper-sim.gpg")]
    digest = inputs_hash(url_base, epoch, keydir)
    if not force and os.path.exists(stamp_path) and all(os.path.exists(p) for p in outputs):
        with open(stamp_path, encoding="utf-8") as fh:
            if fh.read().strip() == digest:
                if not quiet:
                    print(f"{out}: up to date")
                return False
    os.makedirs(out, exist_ok=True)
    signer = Signer(keydir, epoch)
    try:
        digest = inputs_hash(url_base, epoch, keydir)  # the key may just have been generated
        with open(os.path.join(keydir, "rigkeeper-sim.asc"), "wb") as fh:
            fh.write(signer.public_armored)
        with open(os.path.join(keydir, "rigkeeper-sim.gpg"), "wb") as fh:
            fh.write(signer.public_binary)
        payloads = Payloads(url_base, signer.public_binary)
        repos = catalog.repositories()
        # dpkg-deb fsyncs every .deb it writes: build on tmpfs when there is one.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        work = tempfile.mkdtemp(prefix="rkdeb", dir=shm)
        built: dict[tuple[str, str], tuple[str, list]] = {}  # one .deb per (name, version)
        try:
            for name in repos:
                shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            cache = os.path.join(work, "cache")
            os.makedirs(cache)
            todo: dict[tuple[str, str], Deb] = {}
            for debs in repos.values():
                for deb in (d for group in debs.values() for d in group) if isinstance(debs, dict) else debs:
                    todo.setdefault(deb.key, deb)
            with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
                futures = {key: pool.submit(build_deb, deb, payloads, os.path.join(cache, deb.filename), epoch, work)
                           for key, deb in todo.items()}
                for key, fut in futures.items():
                    built[key] = (os.path.join(cache, todo[key].filename), fut.result())
            write_archive(os.path.join(out, "ubuntu"), repos["ubuntu"], built, signer, epoch)
            write_flat(os.path.join(out, "cuda"), repos["cuda"], built, signer, epoch,
                       origin="NVIDIA", label="NVIDIA CUDA", extra_key="3bf863cc.pub")
            write_flat(os.path.join(out, "libnvidia-container"), repos["libnvidia-container"], built, signer,
                       epoch, origin="NVIDIA", label="libnvidia-container", extra_key="gpgkey")
            n_docker = docker_ce.write_repo(os.path.join(out, "docker"), docker_cache(out), docker_payload,
                                            signer, epoch, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(out, "sources.list.example"), "w", encoding="utf-8") as fh:
            kr = "/usr/share/keyrings/rigkeeper-sim.gpg"
            fh.write(f"# rigkeeper simulator repositories; copy key/rigkeeper-sim.gpg to {kr}\n"
                     f"deb [signed-by={kr}] {url_base}/ubuntu {ARCHIVE_SUITE} {ARCHIVE_COMPONENT}\n"
                     f"deb [signed-by={kr}] {url_base}/cuda/ /\n"
                     f"deb [signed-by={kr}] {url_base}/libnvidia-container/ /\n"
                     f"deb [arch=amd64 signed-by={kr}] {url_base}/docker {docker_ce.SUITE} {docker_ce.COMPONENT}\n")
    finally:
        signer.close()
    with open(stamp_path, "w", encoding="utf-8") as fh:
        fh.write(digest + "\n")
    if not quiet:
        print(f"{out}: built {len(built) + n_docker} packages")
    return True


def _place(src: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _packages(debs: list[Deb], built, base: str, rel_of) -> bytes:
    stanzas = []
    for deb in sorted(debs, key=lambda d: (d.name, d.version)):
        path, fields = built[deb.key]
        rel = rel_of(deb)
        _place(path, os.path.join(base, rel))
        stanzas.append(packages_stanza(fields, rel, digests(path)))
    return "\n".join(stanzas).encode()


def _date(epoch: int) -> str:
    return email.utils.formatdate(epoch, usegmt=True).replace("GMT", "UTC")


def write_archive(base: str, suites: dict[str, list[Deb]], built, signer: Signer, epoch: int) -> None:
    """One dists/<suite> per suite (noble, noble-updates), their .debs in one shared pool/."""
    for suite, debs in suites.items():
        dist = os.path.join(base, "dists", suite)
        bindir = os.path.join(dist, ARCHIVE_COMPONENT, "binary-amd64")
        os.makedirs(bindir)
        data = _packages(debs, built, base, pool_path)
        with open(os.path.join(bindir, "Packages"), "wb") as fh:
            fh.write(data)
        with open(os.path.join(bindir, "Packages.gz"), "wb") as fh:
            fh.write(gz(data, epoch))
        with open(os.path.join(bindir, "Release"), "w", encoding="utf-8") as fh:
            fh.write(f"Archive: {suite}\nVersion: 24.04\nComponent: {ARCHIVE_COMPONENT}\n"
                     "Origin: Ubuntu\nLabel: Ubuntu\nArchitecture: amd64\n")
        comp = f"{ARCHIVE_COMPONENT}/binary-amd64"
        header = [("Origin", "Ubuntu"), ("Label", "Ubuntu"), ("Suite", suite), ("Version", "24.04"),
                  ("Codename", ARCHIVE_SUITE), ("Date", _date(epoch)), ("Architectures", "amd64"),
                  ("Components", ARCHIVE_COMPONENT),
                  ("Description", "Ubuntu Noble 24.04 (rigkeeper simulator: NVIDIA packages only)")]
        release = os.path.join(dist, "Release")
        with open(release, "w", encoding="utf-8") as fh:
            fh.write(release_text(header, dist, [f"{comp}/Packages", f"{comp}/Packages.gz", f"{comp}/Release"]))
        signer.sign(release)


def write_flat(base: str, debs: list[Deb], built, signer: Signer, epoch: int, origin: str, label: str,
               extra_key: str) -> None:
    os.makedirs(base)
    data = _packages(debs, built, base, lambda d: f"./{d.filename}")
    with open(os.path.join(base, "Packages"), "wb") as fh:
        fh.write(data)
    with open(os.path.join(base, "Packages.gz"), "wb") as fh:
        fh.write(gz(data, epoch))
    header = [("Origin", origin), ("Label", label), ("Architecture", "x86_64"), ("Date", _date(epoch))]
    release = os.path.join(base, "Release")
    with open(release, "w", encoding="utf-8") as fh:
        fh.write(release_text(header, base, ["Packages", "Packages.gz"]))
    signer.sign(release)
    with open(os.path.join(base, extra_key), "wb") as fh:
        fh.write(signer.public_armored)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    ap.add_argument("--url-base", default=DEFAULT_URL_BASE,
                    help="where the rig sees OUT (used in cuda-keyring's list and sources.list.example)")
    args = ap.parse_args(argv)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    build(args.out, url_base=args.url_base.rstrip("/"), force=args.force, epoch=epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
