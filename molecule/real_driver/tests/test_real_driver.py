"""nvidia_driver with Debian 12's real nvidia-driver 535 (non-free, DKMS).

The version is the newest of branch 535 that Debian offers: 535.261.03-1 in bookworm non-free, and
newer builds through bookworm-security when there are (535.309.01-0+deb12u1 in Nov 2026). The tests
read it from apt, so they follow the archive."""

import re

from driver_helpers import DROPIN, PREFS, family

SOURCES = "/etc/apt/sources.list.d/debian-nvidia-nonfree.sources"


def newest_535(host):
    madison = host.check_output("apt-cache madison nvidia-driver")
    versions = [line.split("|")[1].strip() for line in madison.splitlines()]
    assert "535.261.03-1" in versions, madison  # bookworm's own, as FACTS.md records
    return versions[0]  # apt lists the newest first


def headers_kernel(host):
    depends = host.check_output("dpkg-query -W -f='${Depends}' linux-headers-amd64")
    return re.search(r"linux-headers-(\d[^ ,]*-amd64)", depends).group(1)


def test_non_free_source(host):
    text = host.file(SOURCES).content_string
    assert "URIs: http://deb.debian.org/debian\n" in text
    assert "URIs: http://deb.debian.org/debian-security\n" in text
    assert "Components: contrib non-free non-free-firmware" in text
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in text


def test_driver_and_dkms_installed_at_the_newest_535_and_held(host):
    version = newest_535(host)
    assert version.startswith("535.")
    pkgs = family(host)
    for name in ("nvidia-driver", "nvidia-kernel-dkms", "nvidia-driver-libs", "nvidia-kernel-support"):
        assert pkgs[name] == (version, "hold"), (name, pkgs.get(name))
    assert {s for _, s in pkgs.values()} == {"hold"}, pkgs


def test_module_built_for_the_installed_headers(host):
    kernel = headers_kernel(host)
    upstream = newest_535(host).split("-")[0]
    status = host.check_output("dkms status")
    assert re.search(rf"nvidia-current/{re.escape(upstream)}, {re.escape(kernel)}, x86_64: installed", status), status
    built = host.check_output(f"find /lib/modules/{kernel}/updates/dkms -name 'nvidia-current*.ko*'")
    assert re.search(rf"/lib/modules/{re.escape(kernel)}/updates/dkms/nvidia-current\.ko", built), built


def test_the_running_kernel_is_the_hosts(host):
    """Said in molecule.yml: the container runs the host's kernel; DKMS built for Debian's."""
    assert host.check_output("uname -r") != headers_kernel(host)
    assert not host.file(f"/lib/modules/{host.check_output('uname -r')}/updates/dkms").exists


def test_pinned(host):
    version = newest_535(host)
    upstream = version.split("-")[0]
    # The exact version Debian's archive offers (it moved from 535.261.03-1 to 535.309.01-0+deb12u1
    # this month): an exact pin, so no other build of the upstream version wins.
    assert f"Pin: version {version}\nPin-Priority: 1001" in host.file(PREFS).content_string
    assert upstream.startswith("535.")
    policy = host.check_output("apt-cache policy nvidia-driver")
    assert f"*** {version} 1001" in policy
    others = re.findall(r"(?m)^\s+(?:\*\*\* )?(\S+) (-?\d+)$", policy.split("Version table:")[1])
    assert all(prio == "500" for v, prio in others if v != version), policy


def test_library_on_disk_is_the_driver(host):
    upstream = newest_535(host).split("-")[0]
    target = host.check_output("readlink -f /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    assert target == f"/usr/lib/x86_64-linux-gnu/nvidia/current/libnvidia-ml.so.{upstream}"


def test_persistenced_configured_for_persistence_mode(host):
    text = host.file(DROPIN).content_string
    assert "ExecStart=\nExecStart=/usr/bin/nvidia-persistenced --persistence-mode" in text
    assert host.service("nvidia-persistenced").is_enabled
