# -*- coding: utf-8 -*-
# Apache-2.0
"""Docker decisions of the container_toolkit role, as pure functions.

* Which engine is installed, and what to install (`rk_docker_engines`, `rk_docker_install_plan`):
  any installed engine counts as Docker present; another source replaces it only when asked.
* What /etc/docker/daemon.json should hold (`rk_docker_daemon_wanted`): the file's keys, merged with
  rigkeeper's, every other key kept.
* How Docker takes the change (`rk_docker_daemon_plan`): nothing, a reload (SIGHUP), or a restart.
  What a reload applies is moby's daemon/reload.go and reload_unix.go (v26.1.5): runtimes and the
  default runtime (`if conf.DefaultRuntime != ""`: a removed default is NOT reset by a reload), the
  default shm size, ipc and cgroupns modes, debug, the concurrent download/upload limits, download
  attempts, shutdown timeout, labels, insecure registries, mirrors, non-distributable artifacts,
  live-restore and the network diagnostic port. Everything else (exec-opts, data-root, storage,
  log driver, features: the CDI driver is registered at start in cmd/dockerd/daemon.go) needs a
  restart, and so does removing any key (a reload leaves a key that is not set as it was).
* Whether a restart may go ahead (`rk_docker_restart_guard`): not while containers run, unless
  live-restore is on in the running daemon or it is forced.
* Which CDI mechanism the installed toolkit has (`rk_docker_cdi_mode`).
"""
from __future__ import annotations

import json
import re

from ansible.errors import AnsibleFilterError

# Packages that install a Docker engine (dockerd), and where they come from.
ENGINES = {
    "docker-ce": "docker",        # Docker's repository (download.docker.com)
    "docker.io": "distro",        # Debian / Ubuntu
    "moby-engine": "moby",        # Microsoft's packages (packages.microsoft.com)
    "docker-engine": "legacy",    # Docker's repository before 17.03
}
SOURCES = ("keep", "distro", "docker")
SOURCE_PACKAGES = {
    "distro": ["docker.io"],
    "docker": ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"],
}
SOURCE_NAMES = {"docker": "Docker CE", "distro": "the distribution's docker.io", "moby": "moby-engine",
                "legacy": "docker-engine"}

# daemon.json keys a SIGHUP applies when they are set in the new file (moby daemon/reload.go,
# reload_unix.go, v26.1.5).
RELOADABLE = frozenset({
    "runtimes", "default-runtime", "default-shm-size", "default-ipc-mode", "default-cgroupns-mode",
    "debug", "max-concurrent-downloads", "max-concurrent-uploads", "max-download-attempts",
    "shutdown-timeout", "labels", "insecure-registries", "registry-mirrors",
    "allow-nondistributable-artifacts", "live-restore", "network-diagnostic-port",
})

_CGROUPDRIVER = re.compile(r"^native\.cgroupdriver=")


def _installed(dpkg_query_stdout):
    """{package: version} that dpkg has configured (same reading as rigkeeper_packages)."""
    out = {}
    for line in (dpkg_query_stdout or "").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        status, name, version = parts[0], parts[1].split(":")[0], parts[2]
        if len(status) >= 2 and status[1] == "i" and (len(status) < 3 or status[2] in " \t"):
            out[name] = version
    return out


def rk_docker_engines(dpkg_query_stdout):
    """The installed Docker engines: [{"package", "version", "source"}], in ENGINES order."""
    have = _installed(dpkg_query_stdout)
    return [{"package": p, "version": have[p], "source": s} for p, s in ENGINES.items() if p in have]


def rk_docker_install_plan(dpkg_query_stdout, source="keep", replace=False):
    """What the role installs for Docker.

    source "keep" (the default) keeps any installed engine and installs the distribution's docker.io
    only when none is installed. "distro" / "docker" ask for that source: an engine of another source
    is replaced only with replace=True (apt removes it: the packages conflict), otherwise this is an
    error, reported before anything changes. Returns {"install": [missing packages], "source": the
    engine's source after the run, "engines": rk_docker_engines(...), "replaces": [packages apt
    removes], "error": None or a message}."""
    if source not in SOURCES:
        raise AnsibleFilterError(f"rk_docker_install_plan: source must be one of {', '.join(SOURCES)}, not {source!r}")
    have = _installed(dpkg_query_stdout)
    engines = rk_docker_engines(dpkg_query_stdout)
    plan = {"install": [], "source": None, "engines": engines, "replaces": [], "error": None}
    others = [e for e in engines if source != "keep" and e["source"] != source]
    if source == "keep":
        if engines:
            plan["source"] = engines[0]["source"]
            return plan
        source = "distro"
    if others and not replace:
        found = ", ".join(f"{e['package']} {e['version']} ({SOURCE_NAMES[e['source']]})" for e in others)
        plan["error"] = (
            f"Docker is already installed: {found}. container_toolkit_docker_source={source} would replace it with "
            f"{SOURCE_NAMES[source]} (apt removes the other engine, its running containers stop). Nothing has been "
            "changed. Keep the installed engine (container_toolkit_docker_source: keep, the default), or ask for the "
            "swap with container_toolkit_docker_replace: true.")
        plan["source"] = others[0]["source"]
        return plan
    plan["source"] = source
    plan["install"] = [p for p in SOURCE_PACKAGES[source] if p not in have]
    if others:
        plan["replaces"] = [e["package"] for e in others]
    return plan


def _plain(value):
    """A copy made of plain dicts and lists. What Ansible hands a filter may be its lazy containers:
    copy.deepcopy of one copies its templar too, which ansible-core 2.21 reports as a deprecation
    ("Instantiating filter PluginLoader with aliases is deprecated")."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base, extra):
    """Ansible's combine(recursive=True): mappings merge, anything else (lists too) replaces."""
    out = _plain(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _plain(value)
    return out


def rk_docker_daemon_wanted(current, runtime_enabled=True, runtime=None, default_runtime=False,
                            cgroupfs=False, cdi=False, options=None):
    """The daemon.json rigkeeper wants, from the file's current content (a mapping).

    - runtimes.nvidia = runtime when runtime_enabled (other runtimes kept);
    - "default-runtime": "nvidia" when default_runtime; without it, a default-runtime naming nvidia
      is removed (another default is the owner's), unless options set it;
    - cgroupfs: "exec-opts" gets native.cgroupdriver=cgroupfs in place of any native.cgroupdriver=
      entry, other entries kept in order;
    - cdi: "features": {"cdi": true}, other features kept;
    - options: merged last, recursively (lists replace);
    - every other key of the file kept as it is."""
    if not isinstance(current, dict):
        raise AnsibleFilterError(f"rk_docker_daemon_wanted: daemon.json must hold a JSON object, not {type(current).__name__}")
    options = options or {}
    if not isinstance(options, dict):
        raise AnsibleFilterError("rk_docker_daemon_wanted: container_toolkit_daemon_options must be a mapping")
    runtime = runtime if runtime is not None else {"path": "nvidia-container-runtime", "args": []}
    ours = {}
    if runtime_enabled:
        ours["runtimes"] = {"nvidia": runtime}
    if default_runtime:
        ours["default-runtime"] = "nvidia"
    if cgroupfs:
        opts = current.get("exec-opts", [])
        if not isinstance(opts, list):
            raise AnsibleFilterError('rk_docker_daemon_wanted: daemon.json "exec-opts" must be a list')
        ours["exec-opts"] = [o for o in opts if not _CGROUPDRIVER.match(str(o))] + ["native.cgroupdriver=cgroupfs"]
    if cdi:
        ours["features"] = {"cdi": True}
    wanted = _merge(_merge(current, ours), options)
    if not default_runtime and wanted.get("default-runtime") == "nvidia" and "default-runtime" not in options:
        del wanted["default-runtime"]
    return wanted


def _live(info):
    """The running daemon's view from `docker info --format '{{json .}}'` (text or parsed)."""
    if info in (None, ""):
        return None
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError as exc:
            raise AnsibleFilterError(f"rk_docker_daemon_plan: docker info is not JSON: {exc}") from exc
    if not isinstance(info, dict):
        return None
    return {"runtimes": sorted((info.get("Runtimes") or {}).keys()),
            "default_runtime": info.get("DefaultRuntime") or "runc",
            "cgroup_driver": info.get("CgroupDriver") or "",
            "live_restore": bool(info.get("LiveRestoreEnabled"))}


def rk_docker_daemon_plan(current, wanted, live_info=None):
    """How Docker takes `wanted`: {"write": bool, "action": "none"|"reload"|"restart",
    "changed": [top-level keys that differ], "restart_keys": [those a reload does not apply],
    "reasons": [why, one line each], "live_restore": bool}.

    live_info is `docker info --format '{{json .}}'` of the running daemon (None when Docker is not
    running: then nothing is reloaded or restarted, Docker reads the file when it starts). The live
    daemon is compared too, so a reload or restart lost to a failed run happens on the next one."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        raise AnsibleFilterError("rk_docker_daemon_plan: current and wanted must be mappings")
    changed = sorted(k for k in set(current) | set(wanted) if current.get(k, None) != wanted.get(k, None)
                     or (k in current) != (k in wanted))
    restart_keys = sorted(k for k in changed if k not in RELOADABLE or k not in wanted)
    reasons = []
    for k in changed:
        if k not in wanted:
            reasons.append(f"{k} removed (a reload leaves it as it was)")
        elif k in RELOADABLE:
            reasons.append(f"{k} changed (a reload applies it)")
        else:
            reasons.append(f"{k} changed (needs a restart)")
    live = _live(live_info)
    if live is None:
        return {"write": bool(changed), "action": "none", "changed": changed, "restart_keys": restart_keys,
                "reasons": reasons, "live_restore": False}
    want_runtimes = sorted((wanted.get("runtimes") or {}).keys())
    missing = [r for r in want_runtimes if r not in live["runtimes"]]
    if missing:
        reasons.append(f"the running daemon lacks the runtime(s) {', '.join(missing)} (a reload applies them)")
    want_default = wanted.get("default-runtime") or "runc"
    reload_live = bool(missing)
    restart_live = False
    if live["default_runtime"] != want_default:
        if "default-runtime" in wanted:
            reload_live = True
            reasons.append(f"the running daemon's default runtime is {live['default_runtime']}, not {want_default} "
                           "(a reload applies it)")
        else:
            restart_live = True
            reasons.append(f"the running daemon's default runtime is {live['default_runtime']}, not runc "
                           "(a reload does not reset it)")
    driver = next((str(o).split("=", 1)[1] for o in reversed(wanted.get("exec-opts") or [])
                   if _CGROUPDRIVER.match(str(o))), None)
    if driver and live["cgroup_driver"] and live["cgroup_driver"] != driver:
        restart_live = True
        reasons.append(f"the running daemon's cgroup driver is {live['cgroup_driver']}, not {driver} (needs a restart)")
    if restart_keys or restart_live:
        action = "restart"
    elif changed or reload_live:
        action = "reload"
    else:
        action = "none"
    return {"write": bool(changed), "action": action, "changed": changed, "restart_keys": restart_keys,
            "reasons": reasons, "live_restore": live["live_restore"]}


def rk_docker_restart_guard(plan, running=None, force=False):
    """May the planned restart go ahead? {"allowed": bool, "msg": str}.

    running is `docker ps --format '{{json .}}'` output (one JSON object a line) or a list of such
    objects: the containers a restart would stop. A restart is allowed with none running, with
    live-restore on in the running daemon (containers keep running through the restart), or forced."""
    if plan.get("action") != "restart":
        return {"allowed": True, "msg": ""}
    if isinstance(running, str):
        rows = []
        for line in running.splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise AnsibleFilterError(f"rk_docker_restart_guard: not docker ps JSON: {line!r}") from exc
        running = rows
    running = running or []
    if not running or plan.get("live_restore") or force:
        return {"allowed": True, "msg": ""}
    listing = "; ".join(f"{c.get('Names', '?')} ({str(c.get('ID', '?'))[:12]}, image {c.get('Image', '?')}, "
                        f"{c.get('Status', '?')})" for c in running)
    return {"allowed": False, "msg": (
        f"Docker needs a restart for {', '.join(plan.get('restart_keys') or []) or 'the running daemon to match'} "
        f"({'; '.join(plan.get('reasons') or [])}), and a restart stops the {len(running)} running container(s): "
        f"{listing}. Live-restore is off. Nothing has been changed. Stop them first, turn on \"live-restore\" "
        "(a reload applies it), or set container_toolkit_docker_restart_force: true.")}


def _version_tuple(version):
    upstream = str(version or "").split(":", 1)[-1].split("-", 1)[0]
    parts = []
    for p in re.split(r"[.~+]", upstream):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts)


def rk_docker_cdi_mode(toolkit_version):
    """"refresh" when the installed toolkit (dpkg version, "1.18.0-1") ships nvidia-cdi-refresh
    (1.18 and later), else "generate" (nvidia-ctk cdi generate, by the role)."""
    v = _version_tuple(toolkit_version)
    if not v:
        raise AnsibleFilterError(f"rk_docker_cdi_mode: {toolkit_version!r} is not a toolkit version")
    return "refresh" if v >= (1, 18) else "generate"


class FilterModule:
    def filters(self):
        return {
            "rk_docker_engines": rk_docker_engines,
            "rk_docker_install_plan": rk_docker_install_plan,
            "rk_docker_daemon_wanted": rk_docker_daemon_wanted,
            "rk_docker_daemon_plan": rk_docker_daemon_plan,
            "rk_docker_restart_guard": rk_docker_restart_guard,
            "rk_docker_cdi_mode": rk_docker_cdi_mode,
        }
