#!/usr/bin/env python3
"""Benchmark of the whole playbook on the simulator (not a timed test: a measurement).

    ./rk bench [--transport docker,ssh] [--hosts 1,4,16] [--repeat 3] [--only ROWS] [--reuse]
               [--long SECONDS] [--config 2x4090] [--out bench/results]

Rows (--only picks some; default all):
  floor      a play that only gathers facts (one module call), at every host count: the denominator
  converge   a fresh converge of playbooks/site.yml on one new rig (one run)
  noop       site.yml again on a converged rig (nothing to do), one host
  audit      playbooks/audit.yml --check on N converged rigs at once (forks = N), for each --hosts
  apt        what rigkeeper's driver pin costs every `apt-cache policy` on the rig
Every row is measured over each --transport: `docker exec` (community.docker.docker) and real SSH
to the rig's sshd, published on 127.0.0.1 only (ControlPersist and pipelining on, from ansible.cfg).
Each time is the median of --repeat runs, reported as a ratio to the floor of the same transport
and host count, next to issue #14's target. A no-op run or an audit that reports a change stops
the benchmark. Writes <stamp>.json and <stamp>.md (a table to paste into an issue note) to --out.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sim"))
import simctl  # noqa: E402

ROWS = ("floor", "converge", "noop", "audit", "apt")
TRANSPORTS = ("docker", "ssh")
TRANSPORT_LABELS = {"docker": "docker exec", "ssh": "ssh"}
# Issue #14's targets: at most this many times the floor of the same transport and host count.
TARGETS = {"audit": 1.5, "noop": 2.0}
IMAGE_REPO = "rigkeeper-sim"
IMAGE_PREFIX = "bench-"
LABEL_PREFIX = "org.rigkeeper.bench."
# Paths that do not change what a converge leaves on the rig, left out of the --reuse key (.venv:
# a worktree's link to a shared environment, which git sees as a file).
KEY_EXCLUDE = ("bench/", ".venv")
SSH_USER = "root"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]
# What a rig and one Ansible fork take beyond the measured rigs: the headroom --hosts must leave.
FORK_BYTES = 150 << 20
RESERVE_BYTES = 2 << 30
DEFAULT_RIG_BYTES = 512 << 20

FLOOR_PLAY = """---
- name: Floor (facts only)
  hosts: all
  gather_facts: true
  tasks: []
"""


# Pure parts (tests/unit/test_bench.py) --------------------------------------------------------

@dataclass(frozen=True)
class Rig:
    name: str
    port: int | None = None  # sshd's port on 127.0.0.1


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """Comma-separated names, each one of `allowed`, in `allowed`'s order, without repeats."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"{what}: name at least one of {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"{what}: unknown {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return [n for n in allowed if n in names]


def parse_hosts(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--hosts: {text!r} is not a list of numbers (like 1,4,16)") from None
    if not counts or counts[0] < 1:
        raise ValueError(f"--hosts: {text!r}: host counts are 1 or more")
    return counts


def plan(rows: list[str], counts: list[int]) -> dict[int, list[str]]:
    """What runs at each host count, in order. The floor is measured wherever a ratio needs it;
    the no-op run is a one-host row, so one host is measured when it is asked for. A count with an
    empty list only starts its rigs (the apt timing runs on the first one)."""
    fleet = [r for r in ("floor", "audit") if r in rows]
    if not fleet:
        counts = []
    counts = sorted(set(counts) | ({1} if "noop" in rows else set()))
    if not counts and "apt" in rows:
        counts = [1]
    per_count = {}
    for n in counts:
        wanted = [r for r in ("audit", "noop") if r in rows and (r == "audit" or n == 1)]
        per_count[n] = ["floor"] + wanted if (wanted or "floor" in rows) else []
    return per_count


def inventory_doc(rigs: list[Rig], transport: str, key_file: str | Path) -> dict:
    """The inventory of a measurement: the same rigs, reached with `docker exec` or over SSH to
    127.0.0.1:<port> as root with the simulator's admin key (inventory/sim gives the ssh role the
    matching public key). ControlMaster/ControlPersist and pipelining come from ansible.cfg."""
    hosts = {}
    for rig in rigs:
        if transport == "docker":
            hosts[rig.name] = {"ansible_connection": "community.docker.docker", "ansible_host": rig.name}
        elif transport == "ssh":
            if not rig.port:
                raise ValueError(f"rig {rig.name} has no published sshd port")
            hosts[rig.name] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1",
                               "ansible_port": rig.port, "ansible_user": SSH_USER,
                               "ansible_ssh_private_key_file": str(key_file),
                               "ansible_ssh_common_args": " ".join(SSH_OPTS)}
        else:
            raise ValueError(f"unknown transport {transport!r}")
    return {"all": {"children": {"rigs": {"hosts": hosts}}}}


RECAP_LINE = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def recap(stdout: str) -> dict:
    """Sums of the PLAY RECAP's counters over all hosts (hosts: how many lines it had)."""
    tail = stdout.split("PLAY RECAP")[-1] if "PLAY RECAP" in stdout else ""
    lines = RECAP_LINE.findall(tail)
    return {"hosts": len(lines), "ok": sum(int(x[0]) for x in lines), "changed": sum(int(x[1]) for x in lines),
            "unreachable": sum(int(x[2]) for x in lines), "failed": sum(int(x[3]) for x in lines)}


def median(runs: list[float]) -> float | None:
    return statistics.median(runs) if runs else None


def ratios(measurements: list[dict]) -> list[dict]:
    """Each measured row against the floor of its transport and host count, with its target."""
    floors = {(m["transport"], m["hosts"]): median(m["runs"]) for m in measurements if m["row"] == "floor"}
    out = []
    for m in measurements:
        if m["row"] == "floor" or not m["runs"]:
            continue
        floor = floors.get((m["transport"], m["hosts"]))
        value = median(m["runs"])
        x = value / floor if floor else None
        target = TARGETS.get(m["row"])
        out.append({"row": m["row"], "hosts": m["hosts"], "transport": m["transport"], "seconds": value,
                    "floor_s": floor, "x_floor": x, "target_x": target,
                    "met": (x <= target) if (x is not None and target is not None) else None})
    return out


def reuse_key(tree_listing: str, image_id: str, repo_digest: str, config: str) -> str:
    """The key of a converged rig image: what a converge reads. The repository as it is in the
    working tree (`git ls-tree -r` of tracked and untracked, not ignored files, bench/ left out),
    the simulator's base image, its fake apt repositories and the GPU preset."""
    def excluded(path: str) -> bool:
        return any(path == e or (e.endswith("/") and path.startswith(e)) for e in KEY_EXCLUDE)

    kept = [line for line in tree_listing.splitlines() if line and not excluded(line.split("\t", 1)[-1])]
    blob = "\n".join(kept + ["image " + image_id, "repos " + repo_digest, "config " + config])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def fits(new_rigs: int, forks: int, rig_bytes: int, available_bytes: int) -> bool:
    """Whether `new_rigs` more rigs and `forks` Ansible workers fit in the memory left, with
    headroom (a rig grows while the audit runs: half again its idle size)."""
    need = new_rigs * rig_bytes * 3 // 2 + forks * FORK_BYTES + RESERVE_BYTES
    return need <= available_bytes


def parse_mem(text: str) -> int:
    """`docker stats` memory usage ("123.4MiB / 23.4GiB") -> bytes used."""
    m = re.match(r"\s*([\d.]+)\s*([kKMGT]?i?B)", text)
    if not m:
        raise ValueError(f"cannot read a memory size from {text!r}")
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
             "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}[m.group(2)]
    return int(float(m.group(1)) * scale)


ROW_LABELS = {"floor": "floor: facts only", "audit": "audit of a converged host",
              "noop": "no-op re-run of site.yml", "converge": "fresh converge of site.yml"}


def _label(row: str, hosts: int) -> str:
    if row == "audit" and hosts > 1:
        return f"audit, {hosts} hosts at once (forks {hosts})"
    if row == "floor" and hosts > 1:
        return f"floor, {hosts} hosts at once (forks {hosts})"
    return ROW_LABELS[row]


def _seconds(runs: list[float]) -> str:
    if not runs:
        return "not measured"
    v = median(runs)
    if len(runs) == 1:
        return f"{v:.1f} (1 run)"
    return f"{v:.1f} [{min(runs):.1f}–{max(runs):.1f}]"


def _ratio_cell(r: dict | None, row: str) -> str:
    if row == "floor":
        return "1.00"
    if not r or r["x_floor"] is None:
        return "—"
    cell = f"{r['x_floor']:.2f}"
    if r["met"] is not None:
        cell += ", met" if r["met"] else ", **not met**"
    return cell


def _target(row: str, hosts: int) -> str:
    if row not in TARGETS:
        return "—"
    return f"≤ {TARGETS[row]:g}x floor" + (f"@{hosts}" if row == "audit" and hosts > 1 else "")


def render_markdown(report: dict) -> str:
    """The table for an issue note: one line per row and host count, a column pair per transport."""
    transports = report["transports"]
    by_key = {(m["row"], m["hosts"], m["transport"]): m for m in report["measurements"]}
    rat = {(r["row"], r["hosts"], r["transport"]): r for r in report["ratios"]}
    order = {"floor": 0, "audit": 1, "noop": 2, "converge": 3}
    keys = sorted({(m["row"], m["hosts"]) for m in report["measurements"]}, key=lambda k: (k[1], order[k[0]]))
    m = report["meta"]
    lines = [f"Benchmark ({m['when']}): commit {m['commit'][:10]}{' + uncommitted changes' if m['dirty'] else ''}"
             f" (tree key {m['key']}), {m['cpus']} CPUs, {m['mem_gib']} GiB, GPU preset {m['config']},"
             f" {m['ansible']}. Seconds: median of {m['repeat']} run(s) [min–max]. Floor: a play that"
             " only gathers facts (one module call), same transport and host count. SSH: sshd published on"
             " 127.0.0.1, ControlPersist and pipelining on, every run starting without a live master.", ""]
    head = "| measurement | hosts | target |"
    rule = "|---|---:|---|"
    for t in transports:
        head += f" {TRANSPORT_LABELS[t]} s | x floor |"
        rule += "---:|---|"
    lines += [head, rule]
    for row, hosts in keys:
        line = f"| {_label(row, hosts)} | {hosts} | {_target(row, hosts)} |"
        for t in transports:
            meas = by_key.get((row, hosts, t))
            runs = meas["runs"] if meas else []
            if row == "converge" and meas and meas.get("reused"):
                line += f" {_seconds(runs)}, reused from {meas['reused']} | — |"
            else:
                line += f" {_seconds(runs)} | {_ratio_cell(rat.get((row, hosts, t)), row) if runs else '—'} |"
        lines.append(line)
    per_host = [r for r in report["ratios"] if r["row"] == "audit" and r["hosts"] > 1]
    if per_host:
        lines += ["", "Audit time per host: " + "; ".join(
            f"{r['hosts']} hosts over {TRANSPORT_LABELS[r['transport']]}: {r['seconds'] / r['hosts']:.2f} s"
            for r in per_host) + "."]
    apt = report.get("apt")
    if apt:
        over = apt["apt_policy_with_pin_s"] - apt["apt_policy_without_pin_s"]
        lines += ["", f"`apt-cache policy` on the rig: {apt['apt_policy_with_pin_s']:.3f} s with rigkeeper's pin,"
                      f" {apt['apt_policy_without_pin_s']:.3f} s without: {over:+.3f} s (issue #12's budget: 0.1 s)."]
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    if report.get("stopped"):
        lines += ["", f"**Stopped early:** {report['stopped']}"]
    return "\n".join(lines) + "\n"


def render_text(report: dict) -> str:
    """The same numbers for a terminal."""
    out = [f"{'measurement':<42} {'hosts':>5} {'transport':<11} {'seconds':>9} {'x floor':>8}  target"]
    rat = {(r["row"], r["hosts"], r["transport"]): r for r in report["ratios"]}
    for meas in report["measurements"]:
        v = median(meas["runs"])
        r = rat.get((meas["row"], meas["hosts"], meas["transport"]))
        x = "1.00" if meas["row"] == "floor" else (f"{r['x_floor']:.2f}" if r and r["x_floor"] else "-")
        verdict = "" if not r or r["met"] is None else (" met" if r["met"] else " NOT MET")
        out.append(f"{_label(meas['row'], meas['hosts']):<42} {meas['hosts']:>5} {meas['transport']:<11} "
                   f"{(f'{v:9.1f}' if v is not None else '        -')} {x:>8}  {_target(meas['row'], meas['hosts'])}{verdict}")
    return "\n".join(out)


# Running things --------------------------------------------------------------------------------

class Stop(Exception):
    """A measurement that must end the benchmark (a failed run, or a no-op that changed something)."""


class Bench:
    def __init__(self, a, work: Path):
        self.a = a
        self.work = work
        self.floor_pb = work / "floor.yml"
        self.floor_pb.write_text(FLOOR_PLAY)
        self.made: list[str] = []
        self.rigs: list[Rig] = []
        self.measurements: list[dict] = []
        self.notes: list[str] = []
        self.runs_done = 0

    # -- Ansible

    def write_inventory(self, rigs: list[Rig], transport: str, tag: str) -> Path:
        """The inventory in a directory of its own whose group_vars is inventory/sim's, so the same
        variables apply as to the simulated rig, without writing into the repository."""
        d = self.work / f"inv-{tag}-{transport}"
        d.mkdir(exist_ok=True)
        gv = d / "group_vars"
        if not gv.exists():
            gv.symlink_to(ROOT / "inventory" / "sim" / "group_vars")
        path = d / "hosts.json"
        path.write_text(json.dumps(inventory_doc(rigs, transport, simctl.SSH_KEY)))
        return path

    def playbook(self, pb: str, inv: Path, forks: int, transport: str, expect_noop: bool = False) -> float:
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORKS=str(forks),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   RIGKEEPER_REPORT_DIR=str(ROOT / "reports" / "bench"))
        cp = None
        if transport == "ssh":
            # Every run starts without a live ControlMaster: ControlPersist shares one connection
            # per host within the run, as it would in one CI job.
            self.runs_done += 1
            cp = self.work / f"cp{self.runs_done}"
            cp.mkdir()
            env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(cp)
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), pb]
        if pb.endswith("audit.yml"):
            cmd.append("--check")
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        dt = time.monotonic() - t0
        if cp is not None:
            for sock in cp.iterdir():
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "rig"],
                               capture_output=True, check=False)
        counts = recap(res.stdout)
        name = Path(pb).name
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-6000:] + res.stderr[-3000:])
            raise Stop(f"{name} over {transport} failed (rc={res.returncode}, {counts})")
        if expect_noop and counts["changed"]:
            sys.stderr.write(res.stdout[-6000:])
            raise Stop(f"{name} over {transport} was to change nothing but changed {counts['changed']} task(s)")
        return dt

    def measure(self, row: str, hosts: int, transport: str, fn) -> None:
        m = next((x for x in self.measurements
                  if (x["row"], x["hosts"], x["transport"]) == (row, hosts, transport)), None)
        if m is None:
            m = {"row": row, "hosts": hosts, "transport": transport, "runs": []}
            self.measurements.append(m)
        if m["runs"] and row != "floor" and self.a.long and m["runs"][0] > self.a.long:
            return  # --long: one run is enough for this one
        dt = fn()
        m["runs"].append(round(dt, 2))
        print(f"bench: {row}@{hosts} over {transport}: {dt:.1f} s", file=sys.stderr, flush=True)

    # -- Rigs

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def wait_ssh(self, port: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        res = None
        while time.monotonic() < deadline:
            res = subprocess.run(["ssh", "-p", str(port), "-i", str(simctl.SSH_KEY), *SSH_OPTS,
                                  "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"{SSH_USER}@127.0.0.1", "true"],
                                 capture_output=True, text=True, check=False)
            if res.returncode == 0:
                return
            time.sleep(1)
        raise Stop(f"sshd on 127.0.0.1:{port} did not let {SSH_USER} in: {res.stderr.strip() if res else ''}")

    def start_rig(self, name: str, image: str | None, ssh: bool) -> Rig:
        """A rig with sshd published on 127.0.0.1 only, on a free port chosen here (a fixed host
        port survives the rig's reboots, which Docker's own pick would not)."""
        for attempt in range(3):
            port = self.free_port() if ssh else None
            simctl.down([name], quiet=True)
            if image is None:
                try:
                    simctl.up(name, config=self.a.config, ssh_port=port)
                except subprocess.CalledProcessError:
                    if attempt == 2:
                        raise
                    continue
            else:
                cmd = ["docker", "run", "-d", "--name", name, "--hostname", name, "--label", simctl.LABEL,
                       "--restart", "unless-stopped", *simctl.RIG_RUN_ARGS]
                if port:
                    cmd += ["-p", f"127.0.0.1:{port}:22"]
                res = simctl.run(cmd + [image], check=False, capture=True)
                if res.returncode != 0:
                    if attempt == 2:
                        raise Stop(f"cannot start {name}: {res.stderr.strip()}")
                    continue
            if name not in self.made:
                self.made.append(name)
            return Rig(name, port)
        raise Stop(f"cannot start {name}")

    def rig_bytes(self) -> int:
        if not self.rigs:
            return DEFAULT_RIG_BYTES
        res = simctl.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}",
                          *[r.name for r in self.rigs]], capture=True, quiet=True)
        used = [parse_mem(line) for line in res.stdout.splitlines() if line.strip()]
        return max(used) if used else DEFAULT_RIG_BYTES

    # -- The converged image

    def tree_key(self) -> str:
        git = ["git", "-C", str(ROOT)]
        index = subprocess.run(git + ["rev-parse", "--git-path", "index"], capture_output=True, text=True,
                               check=True).stdout.strip()
        with tempfile.TemporaryDirectory(prefix="rk-bench-index-") as tmp:
            env = dict(os.environ, GIT_INDEX_FILE=str(Path(tmp) / "index"))
            src = Path(index) if Path(index).is_absolute() else ROOT / index
            if src.exists():
                shutil.copy(src, env["GIT_INDEX_FILE"])
            subprocess.run(git + ["add", "-A"], env=env, check=True, capture_output=True)
            tree = subprocess.run(git + ["write-tree"], env=env, check=True, capture_output=True,
                                  text=True).stdout.strip()
            listing = subprocess.run(git + ["ls-tree", "-r", tree], check=True, capture_output=True,
                                     text=True).stdout
        image = simctl.run(["docker", "image", "inspect", "--format", "{{.Id}}", simctl.IMAGE],
                           capture=True, quiet=True).stdout.strip()
        h = hashlib.sha256()
        for rel in sorted(p.relative_to(simctl.REPO_DIR) for p in simctl.REPO_DIR.rglob("*Release")):
            h.update(str(rel).encode() + b"\0" + (simctl.REPO_DIR / rel).read_bytes())
        return reuse_key(listing, image, h.hexdigest(), self.a.config)

    def image_labels(self, tag: str) -> dict | None:
        res = simctl.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
                         check=False, capture=True, quiet=True)
        if res.returncode != 0:
            return None
        return json.loads(res.stdout or "null") or {}

    def converge(self, transport: str) -> tuple[float, str]:
        name = f"rk-bench-c{transport}"
        rig = self.start_rig(name, None, ssh=(transport == "ssh"))
        simctl.wait_booted(name, timeout=120)
        if transport == "ssh":
            # A fresh box reachable by key, as an installer or cloud-init leaves it.
            pub = simctl.SSH_KEY.with_suffix(".pub").read_text()
            simctl.run(["docker", "exec", "-i", name, "sh", "-c",
                        "install -d -m 0700 /root/.ssh && cat > /root/.ssh/authorized_keys"
                        " && chmod 0600 /root/.ssh/authorized_keys"], input=pub, capture=True, quiet=True)
            self.wait_ssh(rig.port)
        inv = self.write_inventory([rig], transport, "converge")
        dt = self.playbook("playbooks/site.yml", inv, 1, transport)
        print(f"bench: converge over {transport}: {dt:.1f} s", file=sys.stderr, flush=True)
        return dt, name

    def make_image(self, name: str, tag: str, labels: dict) -> None:
        """`docker commit` the (stopped) converged rig, with what --reuse reports as labels."""
        changes = []
        for k, v in labels.items():
            changes += ["--change", f"LABEL {LABEL_PREFIX}{k}={json.dumps(str(v))}"]
        # One converged image at a time: the older ones are other trees'.
        old = simctl.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO],
                         capture=True, quiet=True).stdout.split()
        simctl.run(["docker", "commit", *changes, name, tag], capture=True)
        stale = [t for t in old if t != tag and t.split(":", 1)[1].startswith(IMAGE_PREFIX)]
        if stale:
            simctl.run(["docker", "rmi", *stale], check=False, capture=True)

    # -- The run

    def run(self, report: dict) -> None:
        a = self.a
        key = self.tree_key()
        report["meta"]["key"] = key
        tag = f"{IMAGE_REPO}:{IMAGE_PREFIX}{key}"
        labels = self.image_labels(tag) if a.reuse else None
        converge_rows = {}
        if labels is not None:
            print(f"bench: --reuse: {tag} (converged {labels.get(LABEL_PREFIX + 'when')}) is this tree's",
                  file=sys.stderr)
            for t in a.transports:
                s = labels.get(f"{LABEL_PREFIX}converge_{t}_s")
                if "converge" in a.rows and s:
                    converge_rows[t] = {"runs": [float(s)], "reused": labels.get(LABEL_PREFIX + "when")}
        else:
            if a.reuse:
                print(f"bench: --reuse: no image {tag} for this tree yet: converging", file=sys.stderr)
            # The converge makes the image: over the first transport always, over each with `converge`.
            # The first converged rig waits, stopped, while the others converge, then becomes the image.
            conv = a.transports if "converge" in a.rows else a.transports[:1]
            times, source = {}, None
            for t in conv:
                dt, name = self.converge(t)
                times[t] = round(dt, 2)
                converge_rows[t] = {"runs": [round(dt, 2)]}
                if source is None:
                    source = name
                    empty_docker_state(name)
                    simctl.run(["docker", "stop", name], capture=True)
                else:
                    simctl.down([name], quiet=True)
                    self.made.remove(name)
            self.make_image(source, tag, {"key": key, "when": report["meta"]["when"],
                                          "commit": report["meta"]["commit"],
                                          **{f"converge_{t}_s": v for t, v in times.items()}})
            simctl.down([source], quiet=True)
            self.made.remove(source)
        if "converge" in a.rows:
            for t, v in converge_rows.items():
                self.measurements.append({"row": "converge", "hosts": 1, "transport": t, **v})

        for n, rows in plan(a.rows, a.counts).items():
            new = n - len(self.rigs)
            avail = meminfo_available()
            per_rig = self.rig_bytes()
            if not fits(new, n, per_rig, avail):
                self.notes.append(f"{n} hosts not measured: {new} more rigs of ~{per_rig >> 20} MiB and {n} forks"
                                  f" do not fit in the {avail >> 20} MiB of memory available")
                print(f"bench: {self.notes[-1]}", file=sys.stderr)
                break
            for i in range(len(self.rigs), n):
                self.rigs.append(self.start_rig(f"rk-bench-f{i}", tag, ssh="ssh" in a.transports))
            rigs = self.rigs[:n]
            for rig in rigs:
                simctl.wait_booted(rig.name, timeout=180)
                if rig.port:
                    self.wait_ssh(rig.port)
            invs = {t: self.write_inventory(rigs, t, str(n)) for t in a.transports}
            for _ in range(a.repeat if rows else 0):
                for t in a.transports:
                    self.measure("floor", n, t, lambda: self.playbook(str(self.floor_pb), invs[t], n, t))
                    if "audit" in rows:
                        self.measure("audit", n, t, lambda: self.playbook(
                            "playbooks/audit.yml", invs[t], n, t, expect_noop=True))
                    if "noop" in rows:
                        self.measure("noop", n, t, lambda: self.playbook(
                            "playbooks/site.yml", invs[t], n, t, expect_noop=True))
            if "apt" in a.rows and "apt" not in report:
                report["apt"] = apt_overhead(rigs[0].name)


def empty_docker_state(name: str) -> None:
    """Leave Docker's own state inside the rig out of the image: on overlayfs a clone's dockerd
    cannot rename directories that lie in the image's lower layer ("invalid cross-device link")
    and never starts; emptied, it starts as on a fresh install, with the configuration rigkeeper
    wrote (daemon.json)."""
    simctl.run(["docker", "exec", name, "sh", "-c",
                "systemctl stop docker.socket docker.service containerd.service"
                " && rm -rf /var/lib/docker /var/lib/containerd"], capture=True)


def meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("bench: no MemAvailable in /proc/meminfo")


APT_POLICY_TIMING = r"""
set -e
time_it() { python3 -c 'import subprocess, sys, time, statistics
runs = []
for _ in range(5):
    t0 = time.monotonic(); subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); runs.append(time.monotonic() - t0)
print(round(statistics.median(runs), 3))' "$@"; }
without=$(mktemp -d)
for f in /etc/apt/preferences.d/*; do
  case "$(basename "$f")" in rigkeeper-nvidia) ;; *) [ -f "$f" ] && cp "$f" "$without/" ;; esac
done
echo "with $(time_it apt-cache policy)"
echo "without $(time_it apt-cache -o Dir::Etc::PreferencesParts=$without policy)"
rm -rf "$without"
"""


def apt_overhead(name: str) -> dict:
    """What rigkeeper's driver pin costs every apt command on the host (issue #12's budget: 0.1 s):
    `apt-cache policy` with the host's preferences, and with the same ones minus rigkeeper's."""
    out = simctl.run(["docker", "exec", name, "sh", "-c", APT_POLICY_TIMING], capture=True).stdout
    vals = dict(line.split() for line in out.splitlines() if line.strip())
    return {"apt_policy_with_pin_s": float(vals["with"]), "apt_policy_without_pin_s": float(vals["without"])}


def git_out(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transport", default="docker,ssh", help="docker, ssh or both (default: docker,ssh)")
    ap.add_argument("--hosts", default="1,4,16", help="host counts of the audit and floor (default: 1,4,16)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, median reported (default: 3)")
    ap.add_argument("--only", default=",".join(ROWS), help=f"rows to measure (default: all of {','.join(ROWS)})")
    ap.add_argument("--reuse", action="store_true",
                    help="skip the converge when this tree's converged rig image exists (bench/README.md)")
    ap.add_argument("--long", type=float, default=0, metavar="SECONDS",
                    help="a measurement whose first run took longer than this runs only once (default: never)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--config", default="2x4090")
    a = ap.parse_args(argv)
    try:
        a.transports = parse_list(a.transport, TRANSPORTS, "--transport")
        a.rows = parse_list(a.only, ROWS, "--only")
        a.counts = parse_hosts(a.hosts)
    except ValueError as e:
        ap.error(str(e))
    if a.repeat < 1:
        ap.error("--repeat: at least 1")
    simctl.config_path(a.config)  # an unknown preset is refused before any rig starts
    if "ssh" in a.transports and not simctl.SSH_KEY.exists():
        raise SystemExit(f"bench: no {simctl.SSH_KEY}: run ./rk setup first")
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    version = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--version"],
                             capture_output=True, text=True).stdout.splitlines()[0]
    report = {"meta": {"when": stamp, "commit": git_out("rev-parse", "HEAD"),
                       "dirty": bool(git_out("status", "--porcelain", "--untracked-files=no")),
                       "key": None, "cpus": os.cpu_count(),
                       "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1),
                       "config": a.config, "repeat": a.repeat, "long_s": a.long or None,
                       "ansible": version.replace("[", "").replace("]", "").strip(),
                       "rows": a.rows, "hosts": a.counts},
              "transports": a.transports, "measurements": [], "ratios": [], "notes": [], "stopped": None}
    work = Path(tempfile.mkdtemp(prefix="rk-bench-"))
    bench = Bench(a, work)
    rc = 0
    try:
        bench.run(report)
    except Stop as e:
        report["stopped"] = str(e)
        rc = 1
    except KeyboardInterrupt:
        report["stopped"] = "interrupted"
        rc = 130
    finally:
        simctl.down(bench.made, quiet=True)
        shutil.rmtree(work, ignore_errors=True)
        report["measurements"] = bench.measurements
        report["ratios"] = ratios(bench.measurements)
        report["notes"] = bench.notes
        if a.long:
            report["notes"].append(f"--long {a.long:g}: a measurement whose first run took longer than"
                                   f" {a.long:g} s was run once.")
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{stamp}.md").write_text(render_markdown(report))
        print("\n" + render_text(report))
        print(f"\nwrote {out / (stamp + '.json')} and {out / (stamp + '.md')}")
        if report["stopped"]:
            print(f"bench: stopped: {report['stopped']}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
