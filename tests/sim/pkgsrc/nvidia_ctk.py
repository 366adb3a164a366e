#!/usr/bin/env python3
"""rigkeeper simulator: fake nvidia-ctk (payload of nvidia-container-toolkit-base).

Implements what the container_toolkit role uses, faithfully to NVIDIA/nvidia-container-toolkit:

  nvidia-ctk --version
  nvidia-ctk runtime configure --runtime=docker [--config=PATH] [--set-as-default] [--dry-run]
  nvidia-ctk cdi generate [--output=PATH] [--format=yaml|json] [--device-name-strategy=index|uuid]
  nvidia-ctk system create-dev-char-symlinks [--create-all] [--dev-char-path=PATH]

`runtime configure` follows cmd/nvidia-ctk/runtime/configure and pkg/config/engine/docker of the
toolkit: a missing file is an empty config ("Config file does not exist; using empty config"),
`runtimes.nvidia = {"args": [], "path": "nvidia-container-runtime"}` is added or replaced,
`default-runtime` is set only with --set-as-default, every other key is kept, and the file is
written as Go's json.MarshalIndent(cfg, "", "    ") would (keys sorted, 4-space indent, no final
newline). Log lines are logrus text: "INFO[0000] msg" on a terminal, time=... level=info msg=...
otherwise, on stderr.

The version is baked in by the package build (VERSION below). RIGKEEPER_SIM_ROOT prefixes the
simulator paths (/etc/rigkeeper-sim, /run/rigkeeper-sim, /usr/lib/rigkeeper-sim) and /dev for tests.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys

VERSION = "1.17.8"  # replaced by the package build
# The default GPU description (tests/sim/configs/2x4090.json), baked in by the package build for
# rigs without /etc/rigkeeper-sim/gpus.json; from the source tree the file itself is read.
DEFAULT_CONFIG_JSON = None
COMMIT = "0000000000000000000000000000000000000000"  # the simulator has no upstream commit


def _root() -> str:
    return os.environ.get("RIGKEEPER_SIM_ROOT", "").rstrip("/")


def path(p: str) -> str:
    return _root() + p


class Logger:
    """logrus TextFormatter: colored "LEVEL[0000] msg" on a TTY, key=value otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.start = _dt.datetime.now()
        self.tty = sys.stderr.isatty()

    def _emit(self, level: str, msg: str) -> None:
        if self.quiet and level in ("info", "debug"):
            return
        if self.tty:
            secs = int((_dt.datetime.now() - self.start).total_seconds())
            sys.stderr.write(f"{level.upper()[:4]}[{secs:04d}] {msg}\n")
        else:
            ts = _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
            quoted = json.dumps(msg) if any(c in msg for c in ' "=') else msg
            sys.stderr.write(f'time="{ts}" level={level} msg={quoted}\n')

    def info(self, msg: str) -> None:
        self._emit("info", msg)

    def warning(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)


class Usage(Exception):
    pass


def parse(argv: list[str], flags: dict[str, str], bools: set[str]) -> dict:
    """--name=value, --name value, and boolean --name / --name=true|false (urfave/cli style)."""
    out: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            raise Usage(f"unexpected argument {a!r}")
        name, eq, val = a.lstrip("-").partition("=")
        if name in bools:
            out[name] = (val.lower() in ("1", "true")) if eq else True
        elif name in flags:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise Usage(f"flag needs an argument: -{name}")
                val = argv[i]
            out[name] = val
        else:
            raise Usage(f"flag provided but not defined: -{name}")
        i += 1
    return out


# ---------------------------------------------------------------------------------------------


def runtime_configure(argv: list[str], log: Logger) -> int:
    opts = parse(argv, {"runtime": "", "config": "", "nvidia-runtime-name": "", "runtime-name": "",
                        "nvidia-runtime-path": "", "runtime-path": "", "config-mode": ""},
                 {"set-as-default", "nvidia-set-as-default", "dry-run", "cdi.enabled", "enable-cdi"})
    runtime = opts.get("runtime", "docker")
    if runtime != "docker":
        log.error(f"unable to load config for runtime {runtime}: not supported by the rigkeeper simulator")
        return 1
    name = opts.get("nvidia-runtime-name") or opts.get("runtime-name") or "nvidia"
    rpath = opts.get("nvidia-runtime-path") or opts.get("runtime-path") or "nvidia-container-runtime"
    config_path = opts.get("config") or "/etc/docker/daemon.json"
    real_path = path(config_path) if config_path.startswith("/") else config_path
    try:
        with open(real_path, encoding="utf-8") as f:
            raw = f.read()
    except FileNotFoundError:
        log.info("Config file does not exist; using empty config")
        raw = ""
    try:
        cfg = json.loads(raw) if raw.strip() else {}
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        log.error(f"unable to load config for runtime {runtime}: {e}")
        return 1
    runtimes = cfg.get("runtimes")
    if not isinstance(runtimes, dict):
        runtimes = {}
    runtimes[name] = {"args": [], "path": rpath}
    cfg["runtimes"] = runtimes
    if opts.get("set-as-default") or opts.get("nvidia-set-as-default"):
        cfg["default-runtime"] = name
    if opts.get("cdi.enabled") or opts.get("enable-cdi"):
        features = cfg.get("features") if isinstance(cfg.get("features"), dict) else {}
        features["cdi"] = True
        cfg["features"] = features
    text = json.dumps(cfg, indent=4, sort_keys=True)
    if opts.get("dry-run"):
        sys.stdout.write(text + "\n")
        return 0
    os.makedirs(os.path.dirname(real_path) or ".", exist_ok=True)
    tmp = real_path + ".rigkeeper-sim.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, real_path)
    log.info(f"Wrote updated config to {config_path}")
    log.info(f"It is recommended that {runtime} daemon be restarted.")
    return 0


# ---------------------------------------------------------------------------------------------


def _gpus() -> list[dict] | None:
    """The GPUs NVML would report, or None when no driver is loaded."""
    def read(p):
        try:
            with open(path(p), encoding="utf-8") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
    # NVML needs the loaded module: an installed driver that waits for its reboot gives no spec.
    if not read("/run/rigkeeper-sim/sys/module/nvidia/version"):
        return None
    raw = read("/etc/rigkeeper-sim/gpus.json") or DEFAULT_CONFIG_JSON
    if raw is None:
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "configs", "2x4090.json"), encoding="utf-8") as f:
            raw = f.read()
    driven = read("/run/rigkeeper-sim/sys/module/nvidia/gpus")
    gpus = json.loads(raw)["gpus"]
    if driven is not None:
        keep = {ln.strip().upper() for ln in driven.splitlines() if ln.strip()}
        gpus = [g for g in gpus if g["pci_bus_id"].upper() in keep]
    return gpus


def _yaml(obj, indent: int = 0) -> list[str]:
    """Just enough YAML for a CDI spec (dicts of lists of dicts of strings), keys sorted like Go's."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(obj, dict):
        for k in sorted(obj):
            v = obj[k]
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines += _yaml(v, indent + (0 if isinstance(v, list) else 1))
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if not isinstance(item, (dict, list)):
                lines.append(f"{pad}- {_scalar(item)}")
                continue
            sub = _yaml(item, indent + 1)
            if sub:
                sub[0] = f"{pad}- " + sub[0].lstrip()
            lines += sub
    return lines


def _scalar(v) -> str:
    if isinstance(v, list):
        return "[]"
    if isinstance(v, dict):
        return "{}"
    s = str(v)
    return f'"{s}"' if s.isdigit() or s in ("", "true", "false", "null") else s


def cdi_generate(argv: list[str], log: Logger) -> int:
    opts = parse(argv, {"output": "", "format": "", "device-name-strategy": "", "driver-root": "",
                        "mode": "", "vendor": "", "class": ""}, {"library-search-path"})
    gpus = _gpus()
    if gpus is None:
        log.error("failed to generate CDI spec: failed to create device CDI specs: failed to "
                  "initialize NVML: ERROR_DRIVER_NOT_LOADED")  # UNVERIFIED exact wording
        return 1
    log.info("Auto-detected mode as 'nvml'")
    strategy = opts.get("device-name-strategy", "index")
    devices = []
    for i, g in enumerate(gpus):
        name = g["uuid"] if strategy == "uuid" else str(i)
        devices.append({"name": name, "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{i}"}]}})
    devices.append({"name": "all", "containerEdits": {
        "deviceNodes": [{"path": f"/dev/nvidia{i}"} for i in range(len(gpus))]}})
    spec = {
        "cdiVersion": "0.5.0",
        "kind": f"{opts.get('vendor', 'nvidia.com')}/{opts.get('class', 'gpu')}",
        "devices": devices,
        "containerEdits": {
            "deviceNodes": [{"path": "/dev/nvidia-modeset"}, {"path": "/dev/nvidia-uvm"},
                            {"path": "/dev/nvidia-uvm-tools"}, {"path": "/dev/nvidiactl"}],
            "env": ["NVIDIA_VISIBLE_DEVICES=void"],
        },
    }
    # --output's environment variable (urfave/cli EnvVars in cmd/nvidia-ctk/cdi/generate): the 1.18
    # nvidia-cdi-refresh.service sets it to /var/run/cdi/nvidia.yaml.
    out = opts.get("output", "") or os.environ.get("NVIDIA_CTK_CDI_OUTPUT_FILE_PATH", "")
    fmt = opts.get("format") or ("json" if out.endswith(".json") else "yaml")
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n" if fmt == "json" else \
        "---\n" + "\n".join(_yaml(spec)) + "\n"
    if not out:
        sys.stdout.write(text)
    else:
        real = path(out) if out.startswith("/") else out
        os.makedirs(os.path.dirname(real) or ".", exist_ok=True)
        with open(real, "w", encoding="utf-8") as f:
            f.write(text)
    log.info("Generated CDI spec with version 0.5.0")
    return 0


# ---------------------------------------------------------------------------------------------


def create_dev_char_symlinks(argv: list[str], log: Logger) -> int:
    """Link /dev/char/<major>:<minor> to the NVIDIA device nodes (toolkit >= 1.12).

    Without --create-all only existing /dev/nvidia* character devices are linked; with it the
    driver's devices (195:<minor> per GPU, 195:255 nvidiactl, 195:254 nvidia-modeset) are linked
    even when the nodes do not exist, as the real flag does. In a container without nodes and
    without --create-all nothing is created, which is not an error.
    """
    opts = parse(argv, {"dev-char-path": "", "driver-root": "", "dev-root": ""},
                 {"create-all", "load-kernel-modules", "create-device-nodes", "watch"})
    dev = path(opts.get("dev-root") or "/dev")
    char_dir = path(opts.get("dev-char-path") or "/dev/char")
    links: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(dev))
    except FileNotFoundError:
        names = []
    import stat as _stat
    for n in names:
        if not n.startswith("nvidia"):
            continue
        try:
            st = os.stat(os.path.join(dev, n))
        except OSError:
            continue
        if _stat.S_ISCHR(st.st_mode):
            links.append((f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", n))
    if opts.get("create-all"):
        gpus = _gpus() or []
        want = [(f"195:{i}", f"nvidia{i}") for i in range(len(gpus))] + \
               [("195:255", "nvidiactl"), ("195:254", "nvidia-modeset")]
        have = {k for k, _ in links}
        links += [x for x in want if x[0] not in have]
    if not links:
        log.info("No NVIDIA device nodes found; no /dev/char symlinks created")  # simulator's note
        return 0
    try:
        os.makedirs(char_dir, exist_ok=True)
        for devno, node in links:
            link = os.path.join(char_dir, devno)
            target = os.path.join("..", node)
            if os.path.islink(link) and os.readlink(link) == target:
                continue
            if os.path.lexists(link):
                os.unlink(link)
            log.info(f"Creating link {link} => {os.path.join(dev, node)}")
            os.symlink(target, link)
    except PermissionError as e:
        log.error(f"failed to create symlink: {e}")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------

COMMANDS = {
    ("runtime", "configure"): runtime_configure,
    ("cdi", "generate"): cdi_generate,
    ("system", "create-dev-char-symlinks"): create_dev_char_symlinks,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet = False
    while argv and argv[0].startswith("-"):
        a = argv.pop(0)
        if a in ("-v", "--version"):
            print(f"NVIDIA Container Toolkit CLI version {VERSION}\ncommit: {COMMIT}")
            return 0
        if a in ("-q", "--quiet"):
            quiet = True
        elif a in ("-d", "--debug"):
            pass
        elif a in ("-h", "--help"):
            argv = []
            break
        else:
            print(f"Incorrect Usage: flag provided but not defined: {a}", file=sys.stderr)
            return 1
    log = Logger(quiet)
    cmd = COMMANDS.get(tuple(argv[:2]))
    if cmd is None:
        print("NAME:\n   NVIDIA Container Toolkit CLI (rigkeeper simulator)\n\nCOMMANDS:\n"
              "   runtime configure, cdi generate, system create-dev-char-symlinks\n", file=sys.stderr)
        return 0 if not argv else 1
    try:
        return cmd(argv[2:], log)
    except Usage as e:
        print(f"Incorrect Usage: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
