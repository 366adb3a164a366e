"""End to end on a fresh simulated rig: every role's outcome after playbooks/site.yml, and the same
state after a reboot (container restart: /run wiped, boot units run again)."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402


def smi(host, query):
    out = host.check_output(f"nvidia-smi --query-gpu={query} --format=csv,noheader,nounits")
    return [line.strip() for line in out.splitlines()]


def driver_package(host):
    """The installed driver metapackage: the policy picks the flavour (open modules for Ada on 580)."""
    rows = host.check_output("dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\\n' 'nvidia-driver-580*'")
    installed = [r.split()[:2] for r in rows.splitlines() if r.endswith(" installed")]
    assert len(installed) == 1, rows
    return installed[0]


def check_state(host):
    # nvidia_driver: the policy's branch (580, open modules for Ada), the newest version in the repo,
    # held and pinned.
    name, version = driver_package(host)
    assert name == "nvidia-driver-580-open"
    assert version == "580.95.05-0ubuntu0.24.04.1"
    holds = [h.split(":")[0] for h in
             host.check_output("dpkg --get-selections | awk '$2 == \"hold\" {print $1}'").split()]
    assert name in holds and "libnvidia-compute-580" in holds
    assert "580.95.05" in host.file("/etc/apt/preferences.d/rigkeeper-nvidia").content_string
    assert host.file("/etc/modprobe.d/blacklist-nouveau.conf").contains("^blacklist nouveau")
    assert all(v == "580.95.05" for v in smi(host, "driver_version"))
    # gpu_power: limits and persistence on every card.
    assert smi(host, "power.limit") == ["350.00", "350.00"]
    assert smi(host, "persistence_mode") == ["Enabled", "Enabled"]
    # kernel_params: the boot loader's line and the running line both carry iommu=pt.
    assert "iommu=pt" in host.file("/boot/grub/grub.cfg").content_string
    assert "iommu=pt" in host.file("/run/rigkeeper-sim/cmdline").content_string.split()
    # cuda_toolkit: nvcc of the wanted release, /usr/local/cuda pointing at it.
    assert "release 12.8" in host.check_output("/usr/local/cuda/bin/nvcc --version")
    # container_toolkit: Docker knows the nvidia runtime.
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes
    # headless + ssh.
    assert host.check_output("systemctl get-default") == "multi-user.target"
    assert host.check_output("systemctl is-enabled sleep.target || true") == "masked"
    effective = host.check_output("sshd -T -C user=root,host=localhost,addr=127.0.0.1").splitlines()
    assert "passwordauthentication no" in effective
    assert "permitrootlogin without-password" in effective or "permitrootlogin prohibit-password" in effective
    # What rigkeeper manages here, for the audit.
    assert json.loads(host.file("/etc/rigkeeper/managed.json").content_string)["roles"]


def test_state_after_site(host):
    check_state(host)


def test_state_holds_after_reboot(host):
    rk_testlib.reboot(host)
    check_state(host)


def test_ubuntus_build_stays_the_candidate_with_nvidias_repository_configured(host):
    """cuda_toolkit adds NVIDIA's CUDA repository, whose nvidia-driver-580-open 580.95.05-0ubuntu1 sorts
    above Ubuntu's 580.95.05-0ubuntu0.24.04.1: the source is ubuntu, so the pin names Ubuntu's build."""
    madison = host.check_output("apt-cache madison nvidia-driver-580-open")
    assert "580.95.05-0ubuntu1 | file:/srv/rigkeeper-sim/repo/cuda" in madison
    policy = host.check_output("apt-cache policy nvidia-driver-580-open")
    assert "Candidate: 580.95.05-0ubuntu0.24.04.1" in policy


def test_apt_cannot_move_the_driver(host):
    host.run_expect([0], "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq")
    assert driver_package(host)[1] == "580.95.05-0ubuntu0.24.04.1"


def test_check_mode_on_the_converged_rig_reports_nothing(tmp_path):
    res = rk_testlib.playbook("playbooks/site.yml", report_dir=tmp_path, check=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    summary = rk_testlib.report(tmp_path, "site")
    changed = {c: [t["task"] for t in v["changed"]] for h in summary["hosts"].values() for c, v in h.items()
               if v["changed"] or v["failed"]}
    assert changed == {}


def boot_id(host):
    return host.file("/run/rigkeeper-sim/boot_id").content_string


def test_site_never_reboots_under_gpu_work_and_only_reports_the_os_reboot(host, tmp_path):
    """A training job on GPU 0 and a reboot the OS asks for (a kernel update): site.yml with a kernel
    argument to add (a reason of rigkeeper's own) must not reboot, and the job keeps running. Once
    the job is done the next run reboots for its own reason, never for the OS's."""
    job = host.check_output("setsid sleep 3600 >/dev/null 2>&1 < /dev/null & echo $!")
    host.run_expect([0], "echo '[{\"gpu\": 0, \"pid\": %s, \"process_name\": \"python3\", \"used_memory_mib\": 20480}]'"
                    " > /run/rigkeeper-sim/compute-apps.json" % job)
    host.run_expect([0], "printf '*** System restart required ***\\n' > /var/run/reboot-required && "
                    "echo linux-image-6.8.0-60-generic > /var/run/reboot-required.pkgs")
    before = boot_id(host)
    res = rk_testlib.playbook("playbooks/site.yml", "-e", '{"kernel_params_extra": ["pcie_aspm=off"]}',
                              report_dir=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]
    assert boot_id(host) == before
    assert host.run(f"kill -0 {job}").rc == 0
    assert "pcie_aspm=off" in host.file("/boot/grub/grub.cfg").content_string
    assert "pcie_aspm=off" not in host.file("/run/rigkeeper-sim/cmdline").content_string
    # The job is done: rigkeeper reboots for its own change (the kernel argument).
    host.run(f"kill {job}; rm -f /run/rigkeeper-sim/compute-apps.json")
    res = rk_testlib.playbook("playbooks/site.yml", "-e", '{"kernel_params_extra": ["pcie_aspm=off"]}',
                              report_dir=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:]
    assert boot_id(host) != before
    assert "pcie_aspm=off" in host.file("/run/rigkeeper-sim/cmdline").content_string.split()
    check_state(host)
    # The OS's own reason alone: no reboot (the flag is gone with the reboot; set it again).
    host.run_expect([0], "printf '*** System restart required ***\\n' > /var/run/reboot-required")
    before = boot_id(host)
    res = rk_testlib.playbook("playbooks/site.yml", "-e", '{"kernel_params_extra": ["pcie_aspm=off"]}',
                              report_dir=tmp_path)
    assert res.returncode == 0 and boot_id(host) == before
    # Back to the scenario's own wants (the reboot that drops the argument is rigkeeper's too).
    res = rk_testlib.playbook("playbooks/site.yml", report_dir=tmp_path)
    assert res.returncode == 0 and "pcie_aspm=off" not in host.file("/run/rigkeeper-sim/cmdline").content_string
