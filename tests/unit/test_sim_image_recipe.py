"""The simulator's image and repositories are built from what git tracks, and nothing else.

An empty folder or an untracked file under the image's rootfs/ reached the image once (a cached one)
and hid a missing build step: git keeps neither, so a fresh clone built another image. These tests
fail on either, and check that the cache key follows the tracked input, directories included.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "tests" / "sim" / "image"
sys.path.insert(0, str(ROOT / "tests" / "sim"))
import simctl  # noqa: E402


def git(*args, cwd=ROOT):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tracked():
    try:
        return set(git("ls-files", "--", "tests/sim/image").splitlines())
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("not a git checkout")


def test_rootfs_holds_only_tracked_files_and_no_empty_directory(tracked):
    untracked, empty = [], []
    for dirpath, dirnames, filenames in os.walk(IMAGE):
        rel_dir = Path(dirpath).relative_to(ROOT)
        if not dirnames and not filenames:
            empty.append(str(rel_dir))
        for name in filenames:
            rel = str(rel_dir / name)
            if rel not in tracked:
                untracked.append(rel)
    assert not empty, f"empty directories in the image recipe (list them in tests/sim/image/dirs.txt): {empty}"
    assert not untracked, f"files git does not track in the image recipe (git add or remove them): {untracked}"


def test_dirs_the_rigs_need_are_made_by_the_recipe():
    listed = [ln.strip() for ln in (IMAGE / "dirs.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert "/etc/default/grub.d" in listed
    assert all(d.startswith("/") for d in listed), listed


def _copy_repo(tmp_path):
    """A clone of this repository with the working tree's tracked changes staged."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    return clone


def test_image_key_follows_tracked_input_only(tmp_path, monkeypatch):
    clone = _copy_repo(tmp_path)
    monkeypatch.setattr(simctl, "ROOT", clone)
    key0, _tree, notes = simctl.image_key()
    assert notes == []
    # An untracked file and an empty directory change neither the key nor the export.
    (clone / "tests/sim/image/rootfs/etc/untracked.conf").write_text("x\n")
    (clone / "tests/sim/image/rootfs/etc/emptydir").mkdir()
    key1, tree1, notes = simctl.image_key()
    assert key1 == key0
    assert any("untracked.conf" in n for n in notes)
    out = tmp_path / "export"
    out.mkdir()
    simctl.export(tree1, simctl.IMAGE_RECIPE, out)
    assert not (out / "tests/sim/image/rootfs/etc/untracked.conf").exists()
    assert not (out / "tests/sim/image/rootfs/etc/emptydir").exists()
    assert (out / "tests/sim/image/build.sh").exists()
    # An unstaged edit is not built either; staged, it is, and the key moves.
    packages = clone / "tests/sim/image/packages.txt"
    packages.write_text(packages.read_text() + "less\n")
    key2, _tree, notes = simctl.image_key()
    assert key2 == key0 and any("unstaged" in n for n in notes)
    git("add", "tests/sim/image/packages.txt", cwd=clone)
    key3, _tree, _notes = simctl.image_key()
    assert key3 != key0
    # The Debian mirror and suite are part of the key.
    monkeypatch.setattr(simctl, "DEBIAN_MIRROR", "http://mirror.invalid/debian")
    assert simctl.image_key()[0] != key3
