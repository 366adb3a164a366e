"""The simulator's Docker CE repository (tests/sim/repo/docker_ce.py): Docker's layout, Release
fields, names, versions and relations as apt sees them, and a payload that is a working dockerd.

Uses the payload cache of this checkout (.cache/sim/docker-payload, made by `./rk setup`); without
it the payload is downloaded once from Debian's archive."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim" / "repo"))

import build_repo  # noqa: E402
import docker_ce  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb") or not shutil.which("gpg") or not shutil.which("apt-get"),
                                reason="needs dpkg-deb, gpg and apt-get")
ENGINE = "5:26.1.5-1~ubuntu.24.04~noble"
FIVE = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("dockerrepo")
    cache = build_repo.docker_cache(str(out / "repo"))
    manifest = docker_ce.payload(cache, quiet=True)
    signer = build_repo.Signer(str(out / "key"), build_repo.DEFAULT_EPOCH)
    try:
        work = out / "work"
        work.mkdir()
        docker_ce.write_repo(str(out / "docker"), cache, manifest, signer, build_repo.DEFAULT_EPOCH, str(work))
        (out / "docker.gpg").write_bytes(signer.public_binary)
    finally:
        signer.close()
    return out, manifest


def stanzas(path: Path) -> dict[str, dict[str, str]]:
    out = {}
    for block in path.read_text().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(" "))
        out[fields["Package"]] = fields
    return out


def test_docker_layout_and_release_fields(repo):
    out, _ = repo
    dist = out / "docker/dists/noble"
    for rel in ("Release", "InRelease", "Release.gpg", "stable/binary-amd64/Packages",
                "stable/binary-amd64/Packages.gz"):
        assert (dist / rel).is_file(), rel
    assert (out / "docker/gpg").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    release = dict(ln.split(": ", 1) for ln in (dist / "Release").read_text().splitlines() if ": " in ln)
    assert (release["Origin"], release["Label"], release["Suite"], release["Components"]) == \
        ("Docker", "Docker CE", "noble", "stable")
    assert "Codename" not in release  # apt-cache policy of Docker's repo shows no n=
    pool = sorted(p.name for p in (dist / "pool/stable/amd64").iterdir())
    assert pool == sorted(["containerd.io_1.7.24-1_amd64.deb", "docker-buildx-plugin_0.16.1-1~ubuntu.24.04~noble_amd64.deb",
                           "docker-ce-cli_5%3a26.1.5-1~ubuntu.24.04~noble_amd64.deb",
                           "docker-ce_5%3a26.1.5-1~ubuntu.24.04~noble_amd64.deb",
                           "docker-compose-plugin_2.29.1-1~ubuntu.24.04~noble_amd64.deb"])


def test_names_versions_and_relations(repo):
    out, _ = repo
    pkgs = stanzas(out / "docker/dists/noble/stable/binary-amd64/Packages")
    assert sorted(pkgs) == sorted(FIVE)
    assert pkgs["docker-ce"]["Version"] == pkgs["docker-ce-cli"]["Version"] == ENGINE
    assert pkgs["docker-ce"]["Conflicts"] == "docker (<< 1.5~), docker-engine, docker.io"
    assert pkgs["docker-ce"]["Replaces"] == "docker-engine"
    assert pkgs["docker-ce"]["Depends"].startswith("containerd.io (>= 1.6.24), docker-ce-cli, iptables")
    assert pkgs["docker-ce-cli"]["Conflicts"] == "docker (<< 1.5~), docker-engine, docker.io"
    assert pkgs["docker-ce-cli"]["Breaks"] == pkgs["docker-ce-cli"]["Replaces"] == "docker-ce (<< 5:0)"
    for field in ("Provides", "Conflicts", "Replaces"):
        assert pkgs["containerd.io"][field] == "containerd, runc", field
    assert pkgs["docker-buildx-plugin"]["Replaces"] == "docker-ce-cli"


def test_payload_is_docker_ce_shaped(repo, tmp_path):
    out, _ = repo
    pool = out / "docker/dists/noble/pool/stable/amd64"
    listing = {}
    for deb in pool.iterdir():
        names = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
        listing[deb.name.split("_")[0]] = {ln.split()[-1].lstrip(".") for ln in names.splitlines()}
    assert {"/usr/bin/dockerd", "/usr/bin/docker-proxy", "/usr/libexec/docker/docker-init",
            "/usr/lib/systemd/system/docker.service", "/usr/lib/systemd/system/docker.socket"} <= listing["docker-ce"]
    assert "/usr/bin/docker" in listing["docker-ce-cli"]
    assert {"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/runc",
            "/etc/containerd/config.toml"} <= listing["containerd.io"]
    assert "/usr/libexec/docker/cli-plugins/docker-buildx" in listing["docker-buildx-plugin"]


def test_dockerd_is_real_and_validates(repo, tmp_path):
    """The engine is a working dockerd: its version, and `--validate` refusing an unknown key."""
    out, _ = repo
    deb = next((out / "docker/dists/noble/pool/stable/amd64").glob("docker-ce_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True)
    dockerd = tmp_path / "x/usr/bin/dockerd"
    assert subprocess.run([dockerd, "--version"], capture_output=True, text=True).stdout.startswith("Docker version 26.1.5")
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text('{"rk-no-such-option": true}')
    good.write_text('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}')
    # dockerd looks up its docker-proxy on PATH: the package's own, not whatever the controller has.
    env = dict(os.environ, PATH=f"{tmp_path / 'x/usr/bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run([dockerd, "--validate", "--config-file", bad], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "don't match any configuration option: rk-no-such-option" in r.stderr
    r = subprocess.run([dockerd, "--validate", "--config-file", good], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "configuration OK" in r.stdout + r.stderr
    unit = (tmp_path / "x/usr/lib/systemd/system/docker.service").read_text()
    assert "ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock" in unit
    assert "ExecReload=/bin/kill -s HUP $MAINPID" in unit


def test_apt_swaps_debian_containerd_and_runc_for_containerd_io(repo, tmp_path):
    """On a host with Debian's docker.io, containerd and runc, apt installs the five packages by
    removing all three (Conflicts + Replaces), as on a real Ubuntu box following Docker's guide."""
    out, _ = repo
    d = tmp_path / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/parts"):
        (d / sub).mkdir(parents=True)
    have = {"docker.io": "20.10.24+dfsg1-1+deb12u1+b6", "containerd": "1.6.20~ds1-1+deb12u3",
            "runc": "1.1.5+ds1-1+deb12u1", "iptables": "1.8.9-2", "libseccomp2": "2.5.4-1+b3",
            "libc6": "2.36-9+deb12u10", "libsystemd0": "252.38-1~deb12u1"}
    extra = {"docker.io": "Depends: containerd, runc\nConflicts: docker-ce, docker-ce-cli\n"}
    (d / "state/status").write_text("\n".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: {v}\nArchitecture: amd64\n{extra.get(p, '')}"
        "Maintainer: x <x@example.org>\nDescription: x\n" for p, v in have.items()))
    (d / "etc/sources.list").write_text(f"deb [arch=amd64 signed-by={out}/docker.gpg] file://{out}/docker noble stable\n")
    opts = []
    for k, v in {"Dir::Etc::SourceList": d / "etc/sources.list", "Dir::Etc::SourceParts": d / "etc/parts",
                 "Dir::Etc::Preferences": d / "etc/parts/none", "Dir::Etc::PreferencesParts": d / "etc/parts",
                 "Dir::State": d / "state", "Dir::State::status": d / "state/status", "Dir::Cache": d / "cache",
                 "Debug::NoLocking": "1", "APT::Architecture": "amd64", "APT::Architectures::": "amd64",
                 "Acquire::Languages": "none", "APT::Sandbox::User": "root", "APT::Install-Recommends": "0"}.items():
        opts += ["-o", f"{k}={v}"]
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert r.returncode == 0 and "NO_PUBKEY" not in r.stderr and "not signed" not in r.stderr, r.stdout + r.stderr
    r = subprocess.run(["apt-get", *opts, "-s", "install", *FIVE], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    removed = sorted(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("Remv "))
    installed = sorted(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("Inst "))
    assert removed == ["containerd", "docker.io", "runc"]
    assert installed == sorted(FIVE)
    assert f"Inst docker-ce ({ENGINE}" in r.stdout


def test_payload_versions_are_in_the_stamp(repo):
    _, manifest = repo
    text = docker_ce.stamp(manifest)
    assert set(manifest) == set(docker_ce.DEBIAN_PAYLOAD)
    for pkg, m in manifest.items():
        assert f"{pkg} {m['version']} {m['sha256']}" in text
    # The stamp the generator writes changes with the payload (inputs_hash reads the manifest).
    cache = build_repo.docker_cache(os.path.join(str(REPO), ".cache", "sim", "repo"))
    assert os.path.exists(os.path.join(cache, "manifest.json"))
