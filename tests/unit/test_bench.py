"""bench/bench.py's pure parts: what runs where, the inventories of both transports, the ratios to
the floor against issue #14's targets, the table, and what the --reuse key follows."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("rk_bench", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["rk_bench"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def m(row, hosts, transport, *runs, **extra):
    return {"row": row, "hosts": hosts, "transport": transport, "runs": list(runs), **extra}


# Options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("docker,ssh", ["docker", "ssh"]),
    ("ssh,docker", ["docker", "ssh"]),
    ("ssh", ["ssh"]),
    (" docker , docker ", ["docker"]),
])
def test_transports_are_parsed_in_a_fixed_order(text, want):
    assert bench.parse_list(text, bench.TRANSPORTS, "--transport") == want


@pytest.mark.parametrize("text, message", [
    ("docker,telnet", "--transport: unknown telnet (choose from docker, ssh)"),
    ("", "--transport: name at least one of docker, ssh"),
    (",", "--transport: name at least one of docker, ssh"),
])
def test_bad_transports_are_refused_by_name(text, message):
    with pytest.raises(ValueError) as e:
        bench.parse_list(text, bench.TRANSPORTS, "--transport")
    assert str(e.value) == message


def test_unknown_row_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--only", "floor,adit"])
    assert e.value.code == 2
    assert "--only: unknown adit (choose from floor, converge, noop, audit, apt)" in capsys.readouterr().err


@pytest.mark.parametrize("text, want", [("1,4,16", [1, 4, 16]), ("16,4,4", [4, 16]), ("2", [2])])
def test_host_counts(text, want):
    assert bench.parse_hosts(text) == want


@pytest.mark.parametrize("text", ["0,4", "a,b", "", "-1"])
def test_bad_host_counts(text):
    with pytest.raises(ValueError, match="--hosts"):
        bench.parse_hosts(text)


# What runs where ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, counts, want", [
    (list(bench.ROWS), [1, 4, 16], {1: ["floor", "audit", "noop"], 4: ["floor", "audit"], 16: ["floor", "audit"]}),
    (["floor", "audit"], [4, 16], {4: ["floor", "audit"], 16: ["floor", "audit"]}),
    # The floor is the denominator: measured alongside even when not asked for.
    (["audit"], [1, 4], {1: ["floor", "audit"], 4: ["floor", "audit"]}),
    # The no-op run is a one-host row: one host is measured for it.
    (["noop"], [4, 16], {1: ["floor", "noop"]}),
    (["audit", "noop"], [4], {1: ["floor", "audit", "noop"], 4: ["floor", "audit"]}),
    (["floor"], [1, 16], {1: ["floor"], 16: ["floor"]}),
    # apt alone starts one rig and times apt on it; converge alone starts no measured rig.
    (["apt"], [1, 4, 16], {1: []}),
    (["converge"], [1, 4, 16], {}),
    (["apt", "audit"], [4], {4: ["floor", "audit"]}),
])
def test_plan(rows, counts, want):
    assert bench.plan(rows, counts) == want


# Inventories ---------------------------------------------------------------------------------------

def test_docker_inventory_reaches_each_rig_by_container_name():
    doc = bench.inventory_doc([bench.Rig("rk-bench-f0", 40001), bench.Rig("rk-bench-f1")], "docker", "/k")
    assert doc == {"all": {"children": {"rigs": {"hosts": {
        "rk-bench-f0": {"ansible_connection": "community.docker.docker", "ansible_host": "rk-bench-f0"},
        "rk-bench-f1": {"ansible_connection": "community.docker.docker", "ansible_host": "rk-bench-f1"},
    }}}}}


def test_ssh_inventory_reaches_each_rig_on_its_loopback_port_as_root_with_the_admin_key():
    doc = bench.inventory_doc([bench.Rig("rk-bench-f0", 40001), bench.Rig("rk-bench-f1", 40002)], "ssh",
                              "/repo/.cache/sim/ssh/rig_admin_ed25519")
    hosts = doc["all"]["children"]["rigs"]["hosts"]
    assert sorted(hosts) == ["rk-bench-f0", "rk-bench-f1"]
    assert hosts["rk-bench-f1"] == {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 40002,
        "ansible_user": "root", "ansible_ssh_private_key_file": "/repo/.cache/sim/ssh/rig_admin_ed25519",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                                   " -o IdentitiesOnly=yes -o LogLevel=ERROR"}
    # ControlMaster/ControlPersist must come from ansible.cfg: an inventory that set ssh_args would
    # replace them.
    assert "ansible_ssh_args" not in hosts["rk-bench-f0"]


def test_ssh_inventory_refuses_a_rig_without_a_port():
    with pytest.raises(ValueError, match="rk-bench-f3 has no published sshd port"):
        bench.inventory_doc([bench.Rig("rk-bench-f3")], "ssh", "/k")


def test_unknown_transport_inventory():
    with pytest.raises(ValueError, match="unknown transport 'winrm'"):
        bench.inventory_doc([bench.Rig("a", 1)], "winrm", "/k")


@pytest.mark.parametrize("transport", ["docker", "ssh"])
def test_written_inventory_gets_the_simulated_rigs_group_vars(tmp_path, transport):
    """Ansible itself reads the inventory: both rigs, their connection, and inventory/sim's
    group_vars (what the converge and audit need), without a file in the repository."""
    b = bench.Bench(argparse.Namespace(long=0), tmp_path)
    inv = b.write_inventory([bench.Rig("rk-bench-f0", 40001), bench.Rig("rk-bench-f1", 40002)], transport, "2")
    assert ROOT not in inv.parents
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inv), "--list"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    hostvars = json.loads(out)["_meta"]["hostvars"]
    assert sorted(hostvars) == ["rk-bench-f0", "rk-bench-f1"]
    f1 = hostvars["rk-bench-f1"]
    assert f1["rigkeeper_expected_gpu_count"] == 2
    assert f1["rigkeeper_cmdline_path"] == "/run/rigkeeper-sim/cmdline"
    if transport == "ssh":
        assert (f1["ansible_connection"], f1["ansible_host"], f1["ansible_port"]) == ("ssh", "127.0.0.1", 40002)
        assert f1["ansible_ssh_private_key_file"] == str(ROOT / ".cache" / "sim" / "ssh" / "rig_admin_ed25519")
    else:
        assert (f1["ansible_connection"], f1["ansible_host"]) == ("community.docker.docker", "rk-bench-f1")


# Runs ----------------------------------------------------------------------------------------------

RECAP = """
PLAY RECAP *********************************************************************
rk-bench-f0                : ok=120  changed=0    unreachable=0    failed=0    skipped=80   rescued=0    ignored=0
rk-bench-f1                : ok=118  changed=2    unreachable=0    failed=0    skipped=80   rescued=0    ignored=1
"""


def test_recap_sums_every_host():
    assert bench.recap("TASK [x] changed=9\n" + RECAP) == {"hosts": 2, "ok": 238, "changed": 2, "unreachable": 0,
                                                            "failed": 0}


def test_recap_of_output_without_one():
    assert bench.recap("ERROR! the playbook could not be found") == {
        "hosts": 0, "ok": 0, "changed": 0, "unreachable": 0, "failed": 0}


def test_long_measurement_runs_once_and_the_floor_always_repeats(tmp_path):
    b = bench.Bench(argparse.Namespace(long=100), tmp_path)
    calls = []

    def run(dt):
        return lambda: calls.append(dt) or dt

    for _ in range(3):
        b.measure("audit", 16, "ssh", run(150.0))
        b.measure("audit", 1, "ssh", run(60.0))
        b.measure("floor", 16, "ssh", run(120.0))
    runs = {(x["row"], x["hosts"]): x["runs"] for x in b.measurements}
    assert runs == {("audit", 16): [150.0], ("audit", 1): [60.0] * 3, ("floor", 16): [120.0] * 3}
    assert len(calls) == 7


# Ratios and targets ---------------------------------------------------------------------------------

MEASURED = [
    m("floor", 1, "docker", 1.8, 1.6, 1.7), m("floor", 1, "ssh", 2.0, 2.2, 2.1),
    m("audit", 1, "docker", 62.0, 61.0, 63.0), m("audit", 1, "ssh", 3.15, 3.0, 3.2),
    m("noop", 1, "docker", 3.4), m("noop", 1, "ssh", 4.3),
    m("converge", 1, "docker", 250.0),
    m("floor", 4, "docker", 4.0), m("audit", 4, "docker", 6.0),
]


def test_ratios_are_to_the_floor_of_the_same_transport_and_host_count():
    got = {(r["row"], r["hosts"], r["transport"]): r for r in bench.ratios(MEASURED)}
    assert set(got) == {("audit", 1, "docker"), ("audit", 1, "ssh"), ("noop", 1, "docker"), ("noop", 1, "ssh"),
                        ("converge", 1, "docker"), ("audit", 4, "docker")}
    a = got[("audit", 1, "docker")]
    assert (a["seconds"], a["floor_s"], a["target_x"], a["met"]) == (62.0, 1.7, 1.5, False)
    assert a["x_floor"] == pytest.approx(62.0 / 1.7)
    s = got[("audit", 1, "ssh")]
    assert s["x_floor"] == pytest.approx(1.5) and s["met"] is True  # at the target is within it
    assert got[("noop", 1, "docker")]["met"] is True  # 3.4 / 1.7 == 2.0
    assert got[("noop", 1, "ssh")]["met"] is False and got[("noop", 1, "ssh")]["target_x"] == 2.0
    assert got[("audit", 4, "docker")]["x_floor"] == pytest.approx(1.5)
    c = got[("converge", 1, "docker")]
    assert (c["target_x"], c["met"]) == (None, None)


def test_ratio_without_its_floor_is_not_a_verdict():
    (r,) = bench.ratios([m("floor", 1, "docker", 2.0), m("audit", 4, "docker", 3.0)])
    assert (r["floor_s"], r["x_floor"], r["met"]) == (None, None, None)


# The table --------------------------------------------------------------------------------------------

def report(**over):
    rep = {"meta": {"when": "20250101T120000", "commit": "0123456789abcdef", "dirty": False, "key": "abc123def456",
                    "cpus": 2, "mem_gib": 23.4, "config": "2x4090", "repeat": 3, "ansible": "ansible-playbook core 2.17"},
           "transports": ["docker", "ssh"], "measurements": MEASURED, "ratios": bench.ratios(MEASURED),
           "notes": [], "stopped": None}
    rep.update(over)
    return rep


def test_markdown_table_one_line_per_row_and_host_count_a_column_pair_per_transport():
    md = bench.render_markdown(report())
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| measurement | hosts | target | docker exec s | x floor | ssh s | x floor |"
    assert table[1] == "|---|---:|---|---:|---|---:|---|"
    assert table[2:] == [
        "| floor: facts only | 1 | — | 1.7 [1.6–1.8] | 1.00 | 2.1 [2.0–2.2] | 1.00 |",
        "| audit of a converged host | 1 | ≤ 1.5x floor | 62.0 [61.0–63.0] | 36.47, **not met** |"
        " 3.1 [3.0–3.2] | 1.50, met |",
        "| no-op re-run of site.yml | 1 | ≤ 2x floor | 3.4 (1 run) | 2.00, met | 4.3 (1 run) | 2.05, **not met** |",
        "| fresh converge of site.yml | 1 | — | 250.0 (1 run) | 147.06 | not measured | — |",
        "| floor, 4 hosts at once (forks 4) | 4 | — | 4.0 (1 run) | 1.00 | not measured | — |",
        "| audit, 4 hosts at once (forks 4) | 4 | ≤ 1.5x floor@4 | 6.0 (1 run) | 1.50, met | not measured | — |",
    ]
    assert "commit 0123456789 (tree key abc123def456), 2 CPUs, 23.4 GiB" in md
    assert "Audit time per host: 4 hosts over docker exec: 1.50 s." in md


def test_markdown_with_one_transport_reused_converge_apt_notes_and_a_stop():
    meas = [m("floor", 1, "ssh", 2.0), m("converge", 1, "ssh", 300.0, reused="20250101T000000")]
    md = bench.render_markdown(report(
        transports=["ssh"], measurements=meas, ratios=bench.ratios(meas),
        apt={"apt_policy_with_pin_s": 0.062, "apt_policy_without_pin_s": 0.05},
        notes=["16 hosts not measured: no room"], stopped="audit.yml over ssh was to change nothing but changed 1 task(s)",
        meta={**report()["meta"], "dirty": True}))
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0] == "| measurement | hosts | target | ssh s | x floor |"
    assert table[3] == "| fresh converge of site.yml | 1 | — | 300.0 (1 run), reused from 20250101T000000 | — |"
    assert "+ uncommitted changes" in md
    assert "0.062 s with rigkeeper's pin, 0.050 s without: +0.012 s" in md
    assert "Note: 16 hosts not measured: no room" in md
    assert md.rstrip().endswith("**Stopped early:** audit.yml over ssh was to change nothing but changed 1 task(s)")


def test_text_table_marks_targets():
    text = bench.render_text(report())
    audit = next(line for line in text.splitlines() if line.startswith("audit of a converged host") and "docker" in line)
    assert audit.split()[-6:] == ["36.47", "≤", "1.5x", "floor", "NOT", "MET"]


# The --reuse key -----------------------------------------------------------------------------------

LISTING = "\n".join([
    "100644 blob 1111111111111111111111111111111111111111\tansible.cfg",
    "100644 blob 2222222222222222222222222222222222222222\tbench/bench.py",
    "100644 blob 3333333333333333333333333333333333333333\troles/ssh/tasks/main.yml",
    "120000 blob 4444444444444444444444444444444444444444\t.venv",
    "100644 blob 5555555555555555555555555555555555555555\tbenchmarks.txt",
])


def key(listing=LISTING, image="sha256:aa", repos="r1", config="2x4090"):
    return bench.reuse_key(listing, image, repos, config)


def test_reuse_key_ignores_the_harness_and_the_venv_link():
    assert key(LISTING.replace("2222", "9999")) == key()
    assert key(LISTING.replace("4444", "9999")) == key()
    assert key("\n".join(line for line in LISTING.splitlines() if "bench/" not in line)) == key()


@pytest.mark.parametrize("changed", [
    dict(listing=LISTING.replace("3333", "9999")),  # a role changed
    dict(listing=LISTING.replace("5555", "9999")),  # a file that only starts like bench
    dict(listing=LISTING + "\n100644 blob 6666666666666666666666666666666666666666\troles/new.yml"),
    dict(image="sha256:bb"),
    dict(repos="r2"),
    dict(config="8xh100"),
])
def test_reuse_key_follows_what_a_converge_reads(changed):
    assert key(**changed) != key()


# Memory -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [("123.5MiB / 23.4GiB", int(123.5 * 2**20)), ("1.5GiB / 2GiB", 3 * 2**29),
                                        ("900kB / 1GB", 900_000), ("0B / 0B", 0)])
def test_parse_mem(text, want):
    assert bench.parse_mem(text) == want


def test_parse_mem_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="cannot read a memory size from '--'"):
        bench.parse_mem("--")


def test_fits_leaves_headroom_for_growth_forks_and_the_machine():
    mib = 2**20
    # 12 new rigs of 200 MiB grow to 300 MiB each (3600) + 16 forks of 150 MiB (2400) + 2048 reserve.
    assert bench.fits(12, 16, 200 * mib, 8048 * mib)
    assert not bench.fits(12, 16, 200 * mib, 8047 * mib)
    assert bench.fits(0, 1, 200 * mib, 2198 * mib)
