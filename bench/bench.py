#!/usr/bin/env python3
"""Benchmark of the whole playbook on the simulator (not a timed test: a measurement).

    ./rk bench [--hosts 1,4,16] [--repeat 3] [--out bench/results]

Measures, in one run, against simulated rigs over the same connection (docker exec):
  floor      a play that only gathers facts (gather_facts: true, nothing else)
  converge   fresh converge of playbooks/site.yml on one new rig
  noop       a second run of site.yml on that rig (nothing to do)
  audit      playbooks/audit.yml on the converged rig
  audit@N    the audit on N converged rigs at once (forks = N): time per host
Each time is the median of --repeat runs (converge: one run) and is reported as a ratio to the
floor. Converged rigs for audit@N are clones of the converged one (docker commit), booted fresh.
Prints a table and writes JSON to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sim"))
import simctl  # noqa: E402

FLOOR_PLAY = """---
- name: Floor (facts only)
  hosts: all
  gather_facts: true
  tasks: []
"""


def inventory(names, path: Path, extra_vars: dict | None = None) -> Path:
    hosts = {n: {"ansible_connection": "community.docker.docker", "ansible_host": n} for n in names}
    doc = {"all": {"children": {"rigs": {"hosts": hosts}}}}
    path.write_text(json.dumps(doc))
    return path


def playbook(pb: str, inv: Path, forks: int, env_extra: dict | None = None, expect_noop: bool = False) -> float:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORKS=str(forks),
               RIGKEEPER_REPORT_DIR=str(ROOT / "reports" / "bench"))
    env.update(env_extra or {})
    # The inventory file sits in inventory/sim/, so inventory/sim/group_vars applies to it.
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), pb]
    if pb.endswith("audit.yml"):
        cmd.append("--check")
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-6000:] + res.stderr[-3000:])
        raise SystemExit(f"bench: {pb} failed (rc={res.returncode})")
    changed = sum(int(n) for n in re.findall(r"\bchanged=(\d+)", res.stdout.split("PLAY RECAP")[-1]))
    if expect_noop and changed:
        sys.stderr.write(res.stdout[-6000:])
        raise SystemExit(f"bench: {pb} was to change nothing but changed {changed} task(s)")
    return dt


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,4,16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--config", default="2x4090")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.hosts.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="rk-bench-"))
    # The bench inventory lives next to inventory/sim's group_vars so the same variables apply.
    invdir = ROOT / "inventory" / "sim"
    floor_pb = work / "floor.yml"
    floor_pb.write_text(FLOOR_PLAY)
    made = []
    results = {}
    try:
        simctl.up("rk-bench-0", config=a.config)
        made.append("rk-bench-0")
        inv1 = inventory(["rk-bench-0"], invdir / ".bench-1.json")
        results["floor_s"] = statistics.median(playbook(str(floor_pb), inv1, 1) for _ in range(a.repeat))
        results["converge_s"] = playbook("playbooks/site.yml", inv1, 1)
        results["noop_s"] = statistics.median(playbook("playbooks/site.yml", inv1, 1, expect_noop=True)
                                              for _ in range(a.repeat))
        results["audit_s"] = statistics.median(playbook("playbooks/audit.yml", inv1, 1, expect_noop=True) for _ in range(a.repeat))
        results.update(apt_overhead("rk-bench-0"))
        # Keep what was measured even if the fleet part fails.
        print(json.dumps({k: round(v, 1) for k, v in results.items()}), flush=True)
        # Clone the converged rig for the fleet measurements. Docker's own state inside the rig is
        # left out of the clone: on overlayfs a clone's dockerd cannot rename directories that lie
        # in the image's lower layer ("invalid cross-device link") and never starts; emptied, it
        # starts as on a fresh install, with the configuration rigkeeper wrote (daemon.json).
        simctl.run(["docker", "exec", "rk-bench-0", "sh", "-c",
                    "systemctl stop docker.socket docker.service containerd.service"
                    " && rm -rf /var/lib/docker /var/lib/containerd"], capture=True)
        simctl.run(["docker", "commit", "rk-bench-0", "rigkeeper-sim:bench-converged"], capture=True)
        simctl.down(["rk-bench-0"], quiet=True)
        made.remove("rk-bench-0")
        fleet = {}
        for n in counts:
            names = [f"rk-bench-f{i}" for i in range(n)]
            for name in names:
                if name not in made:
                    simctl.down([name], quiet=True)
                    simctl.run(["docker", "run", "-d", "--name", name, "--hostname", name,
                                "--label", simctl.LABEL, "--restart", "unless-stopped",
                                *simctl.RIG_RUN_ARGS, "rigkeeper-sim:bench-converged"], capture=True)
                    made.append(name)
            for name in names:
                simctl.wait_booted(name, timeout=120)
            inv = inventory(names, invdir / f".bench-{n}.json")
            fl = statistics.median(playbook(str(floor_pb), inv, n) for _ in range(a.repeat))
            au = statistics.median(playbook("playbooks/audit.yml", inv, n, expect_noop=True) for _ in range(a.repeat))
            fleet[n] = {"floor_s": fl, "audit_s": au, "audit_per_host_s": au / n}
            print(json.dumps({f"fleet_{n}": {k: round(v, 1) for k, v in fleet[n].items()}}), flush=True)
        results["fleet"] = fleet
    finally:
        simctl.down(made, quiet=True)
        for p in invdir.glob(".bench-*.json"):
            p.unlink()
    floor = results["floor_s"]
    rows = [("floor: facts only", floor), ("fresh converge of site.yml", results["converge_s"]),
            ("no-op re-run of site.yml", results["noop_s"]), ("audit of a converged host", results["audit_s"])]
    print(f"\n{'measurement':<34} {'seconds':>8} {'x floor':>8}")
    for label, v in rows:
        print(f"{label:<34} {v:8.1f} {v / floor:8.2f}")
    over = results["apt_policy_with_pin_s"] - results["apt_policy_without_pin_s"]
    print(f"\napt-cache policy: {results['apt_policy_with_pin_s']:.3f} s with rigkeeper's pin, "
          f"{results['apt_policy_without_pin_s']:.3f} s without: +{over:.3f} s (budget 0.1 s)")
    print(f"\n{'hosts':>5} {'floor s':>8} {'audit s':>8} {'audit s/host':>13} {'audit x floor':>14}")
    for n, f in results["fleet"].items():
        print(f"{n:>5} {f['floor_s']:8.1f} {f['audit_s']:8.1f} {f['audit_per_host_s']:13.2f} "
              f"{f['audit_s'] / f['floor_s']:14.2f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = out / f"bench-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "repeat": a.repeat, "config": a.config,
                                "cpus": os.cpu_count(), **results}, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
