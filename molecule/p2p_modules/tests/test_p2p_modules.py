"""nvidia_driver_p2p_modules on a 2x RTX 4090 rig with Resizable BAR on: after converge the loaded
module is the P2P build DKMS installed in place of the stock one, the pair reads OK, the p2p check
passed, the driver is pinned at exactly that version, one reboot did it; a kernel update gets the
P2P modules; and a tree without the P2P patch makes the run fail naming topo -p2p r."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_shared"))
import rk_testlib  # noqa: E402

V = "580.95.05"
K51, K60 = "6.8.0-51-generic", "6.8.0-60-generic"


def test_dkms_has_the_p2p_modules_instead_of_the_stock_ones(host):
    assert host.run("dkms status").stdout == f"nvidia-p2p/{V}, {K51}, x86_64: installed\n"
    ko = host.file(f"/lib/modules/{K51}/updates/dkms/nvidia.ko").content_string
    assert f"dkms=nvidia-p2p/{V}" in ko and "p2p=1" in ko and f"version={V}" in ko
    conf = host.file(f"/usr/src/nvidia-p2p-{V}/dkms.conf").content_string
    assert 'PACKAGE_NAME="nvidia-p2p"' in conf and f'PACKAGE_VERSION="{V}"' in conf and 'AUTOINSTALL="yes"' in conf
    assert host.file(f"/usr/src/nvidia-p2p-{V}/version.mk").content_string == f"NVIDIA_VERSION = {V}\n"
    # The stock package is still installed (its files untouched), only out of DKMS.
    assert host.package("nvidia-dkms-580-open").is_installed


def test_the_loaded_module_is_the_p2p_build_and_the_pair_reads_ok(host):
    sysmod = "/run/rigkeeper-sim/sys/module/nvidia"
    assert host.file(f"{sysmod}/version").content_string.strip() == V
    assert host.file(f"{sysmod}/p2p").content_string.strip() == "1"
    assert host.file(f"{sysmod}/srcversion").content_string.strip() == host.run("modinfo -F srcversion nvidia").stdout.strip()
    for kind in "rw":
        assert " GPU0\tX\tOK\t" in host.run(f"nvidia-smi topo -p2p {kind}").stdout


def test_one_reboot_for_the_modules(host):
    # The image's first boot, prepare's reboot into the driver, converge's reboot into the P2P
    # modules; check mode and idempotence rebooted nothing.
    assert len(host.file("/var/lib/rigkeeper-sim/boots").content_string.split()) == 3


def test_the_p2p_check_passed_after_the_reboot(host):
    rep = json.loads((rk_testlib.ephemeral() / "reports" / "p2p" / "rk-p2p_modules.json").read_text())
    (pair,) = rep["diagnosis"]["pairs"]
    assert (pair["status"], pair["read"], pair["findings"]) == ("ok", "OK", [])
    on, off = pair["measured"]["p2p_on"], pair["measured"]["p2p_off"]
    assert on["uni_gbps"] > off["uni_gbps"] and on["mismatched_words"] == 0
    assert rep["diagnosis"]["ok"] is True


def test_the_driver_is_pinned_to_that_exact_version(host):
    pref = host.file("/etc/apt/preferences.d/rigkeeper-nvidia").content_string
    assert f"Pin: version {V}-" in pref
    # dpkg names a Multi-Arch: same package with its architecture (libnvidia-compute-580:amd64).
    held = [h.split(":")[0] for h in
            host.check_output("dpkg --get-selections | awk '$2 == \"hold\" {print $1}'").split()]
    assert {"nvidia-dkms-580-open", "nvidia-utils-580", "libnvidia-compute-580"} <= set(held)
    assert host.run("dpkg-query -W -f '${Version}' nvidia-utils-580").stdout.startswith(V + "-")


def test_a_new_kernel_gets_the_p2p_modules(host):
    host.run("sed -i 's/^Suites: noble$/Suites: noble noble-updates/' /etc/apt/sources.list.d/ubuntu-archive-sim.sources")
    res = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                   f"apt-get install -y -qq linux-image-{K60} linux-headers-{K60}")
    assert res.rc == 0, res.stdout + res.stderr
    ko = host.file(f"/lib/modules/{K60}/updates/dkms/nvidia.ko").content_string
    assert f"dkms=nvidia-p2p/{V}" in ko and "p2p=1" in ko
    assert f"nvidia-p2p/{V}, {K60}, x86_64: installed" in host.run("dkms status").stdout
    assert "nvidia/" not in host.run("dkms status").stdout


def test_a_tree_without_the_p2p_patch_fails_naming_topo(host):
    host.run("rm -rf /srv/p2p-stock && cp -a /srv/p2p-fork /srv/p2p-stock && "
             "echo '# NVIDIA Linux Open GPU Kernel Module Source' > /srv/p2p-stock/README.md")
    boots = len(host.file("/var/lib/rigkeeper-sim/boots").content_string.split())
    res = rk_testlib.playbook("molecule/p2p_modules/stock_tree.yml", report_dir=rk_testlib.ephemeral() / "reports-stock")
    assert res.returncode == 2, res.stdout[-3000:]
    assert 'Check "nvidia-smi topo -p2p r" did not hold' in res.stdout
    assert "GPU0-GPU1 reads CNS" in res.stdout
    # It built, installed and loaded (one more reboot), and the pair is CNS on the real rig.
    assert len(host.file("/var/lib/rigkeeper-sim/boots").content_string.split()) == boots + 1
    assert host.file("/run/rigkeeper-sim/sys/module/nvidia/p2p").content_string.strip() == "0"
    assert " GPU0\tX\tCNS\t" in host.run("nvidia-smi topo -p2p r").stdout
