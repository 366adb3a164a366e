"""playbooks/site.yml on a rig that is not fresh (prepare.yml): old CUDA apt entries, needrestart set
to restart services itself with a service on a replaced binary, and apt-daily's stand-in holding
apt's and dpkg's locks when converge started. Then an unknown variable is refused before any change.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

STATE = "/var/lib/rk-test"
BACKUPS = "/var/backups/rigkeeper/apt"
DEB822 = "/etc/apt/sources.list.d/nvidia-cuda.sources"
CUDA_LIST = "/etc/apt/sources.list.d/cuda.list"
CUDA_URI = "file:///srv/rigkeeper-sim/repo/cuda"
KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"


def stanzas(text):
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith("#"))
        if fields:
            out.append(fields)
    return out


# --- Apt sources --------------------------------------------------------------------------------

def test_unsigned_entry_in_sources_list_is_commented_out(host):
    lines = host.file("/etc/apt/sources.list").content_string.splitlines()
    assert f"# disabled by rigkeeper: deb {CUDA_URI}/ /" in lines
    assert [ln for ln in lines if ln.startswith("deb ") and CUDA_URI in ln] == []
    # The rest of the file (Debian's own entry) is as it was.
    before = host.file(f"{STATE}/before/sources.list").content_string.splitlines()
    assert [ln for ln in lines if "rigkeeper" not in ln] == [ln for ln in before if CUDA_URI not in ln]


def test_deb822_stanza_with_another_key_is_disabled_and_its_neighbour_kept(host):
    cuda, other = stanzas(host.file(DEB822).content_string)
    assert cuda["URIs"] == f"{CUDA_URI}/" and cuda["Enabled"] == "no"
    assert other["URIs"].endswith("/libnvidia-container") and "Enabled" not in other


def test_both_files_were_backed_up_as_they_were(host):
    for name in ("sources.list", "nvidia-cuda.sources"):
        backup = host.file(f"{BACKUPS}/{name}")
        assert backup.exists and backup.mode == 0o600, name
        assert backup.content == host.file(f"{STATE}/before/{name}").content, name


def test_rigkeeper_source_is_the_only_enabled_cuda_entry(host):
    lines = [ln for ln in host.file(CUDA_LIST).content_string.splitlines() if ln and not ln.startswith("#")]
    assert lines == [f"deb [signed-by={KEYRING}] {CUDA_URI}/ /"]


def test_apt_get_update_works(host):
    out = host.run("apt-get update")
    assert out.rc == 0, out.stderr
    assert "Conflicting" not in out.stderr
    assert not [ln for ln in out.stderr.splitlines() if ln.startswith(("E:", "W:")) and "repo/cuda" in ln], out.stderr
    policy = host.check_output("apt-cache policy cuda-toolkit-12-8")
    # apt prints file: URIs without the empty authority.
    assert CUDA_URI.replace("file://", "file:") in policy


# --- The dpkg lock ------------------------------------------------------------------------------

def test_the_toolkit_got_installed_after_the_lock_holder_ran_to_completion(host):
    assert host.package("cuda-toolkit-12-8").is_installed
    # The stand-in held the locks for its whole 90 s (longer than apt's default wait of 60 s) and
    # exited cleanly: nothing killed it, nothing broke its locks.
    assert float(host.file(f"{STATE}/lock-holder.done").content_string) >= 90
    unit = host.run("systemctl show rk-lock-holder -p Result -p ExecMainStatus -p ExecMainCode").stdout
    assert "Result=success" in unit and "ExecMainStatus=0" in unit
    # dpkg's database is consistent (no half-installed package from a broken lock).
    assert host.run("dpkg --audit").stdout.strip() == ""


# --- needrestart --------------------------------------------------------------------------------

def test_needrestart_did_not_restart_the_service(host):
    before = host.file(f"{STATE}/rk-testd.mainpid").content_string.strip()
    assert host.service("rk-testd").is_running
    assert host.check_output("systemctl show -p MainPID --value rk-testd") == before
    # It still runs the replaced binary, so needrestart still has it to restart: the trap stayed armed
    # through converge's apt runs (which unpacked packages), and nothing disarmed it another way.
    assert "NEEDRESTART-SVC: rk-testd.service" in host.check_output("needrestart -b -r l")
    assert host.package("cuda-toolkit-12-8").is_installed


# --- Bad input ----------------------------------------------------------------------------------

def _snapshot(host):
    files = host.check_output("find /etc/apt /etc/rigkeeper /etc/profile.d /etc/ld.so.conf.d -type f | sort | xargs sha256sum")
    return {"files": files, "packages": host.check_output("dpkg-query -W -f '${Package} ${Version}\\n'"),
            "managed": host.file("/etc/rigkeeper/managed.json").mtime}


def test_an_unknown_variable_is_refused_before_any_change(host, tmp_path):
    before = _snapshot(host)
    wants = {"rigkeeper_roles": ["cuda_toolkit"], "ssh_users": [{"name": "root", "keys": ["ssh-ed25519 AAAA x"]}],
             # Would change the host if anything ran: another default toolkit.
             "cuda_toolkit_versions": ["12.4"]}
    res = rk_testlib.playbook("playbooks/site.yml", "-e", json.dumps(wants), report_dir=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "`ssh_users` is not a rigkeeper variable; did you mean `ssh_authorized_keys`?" in out
    assert _snapshot(host) == before
    assert not host.package("cuda-toolkit-12-4").is_installed


def test_the_same_run_without_the_typo_passes_preflight(host, tmp_path):
    """The refusal above is the typo's, not the run's: with the right name preflight passes (check mode:
    nothing changes)."""
    wants = {"rigkeeper_roles": ["cuda_toolkit"], "ssh_authorized_keys": []}
    res = rk_testlib.playbook("playbooks/site.yml", "-e", json.dumps(wants), "--tags", "preflight",
                              report_dir=tmp_path, check=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
