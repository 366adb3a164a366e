"""Unpack a few collections of an `ansible` bundle wheel into the running Python's site-packages.

    install_collections.py WHEEL NAMESPACE.NAME [NAMESPACE.NAME ...]

Run by controllerctl.py build inside the image being built (/opt/rk/bin/python). The bundle holds
about a hundred collections (tens of thousands of files); the controller needs only what Molecule's
docker driver and connection use, so only those are unpacked, to ansible_collections/<ns>/<name>
next to ansible-core, where ansible-core finds collections on sys.path. A name the wheel does not
hold is an error: the image would miss a collection the scenarios need.
"""
import sys
import sysconfig
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    wheel, names = argv[0], argv[1:]
    dest = Path(sysconfig.get_paths()["purelib"])
    with zipfile.ZipFile(wheel) as zf:
        members = zf.namelist()
        for name in names:
            ns, coll = name.split(".")
            prefix = f"ansible_collections/{ns}/{coll}/"
            picked = [m for m in members if m.startswith(prefix)]
            if not any(m == prefix + "MANIFEST.json" for m in picked):
                print(f"install_collections: {wheel} holds no collection {name}", file=sys.stderr)
                return 1
            zf.extractall(dest, picked)
            print(f"installed {name} ({len(picked)} files) in {dest / prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
