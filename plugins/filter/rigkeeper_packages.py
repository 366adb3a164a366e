# -*- coding: utf-8 -*-
# Apache-2.0
"""Package-state filters: which wanted packages dpkg does not have yet.

Opening apt's cache costs seconds on a host with a full archive index (about 3.6 s for Debian
bookworm's 63 000 packages on the simulator, more with Ubuntu's universe), and ansible.builtin.apt
opens it on every call, even when everything is installed. A role reads dpkg's database once
(`dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\n'`, milliseconds) and calls apt only
for what this filter says is missing. The answer is the same apt would reach for `state: present`.
"""
from __future__ import annotations

import fnmatch

DPKG_QUERY_FORMAT = r"${db:Status-Abbrev}\t${Package}\t${Version}\n"


def _installed(dpkg_query_stdout: str) -> dict[str, str]:
    """{package: version} of what dpkg has unpacked and configured ("ii", "hi": installed, any selection)."""
    out: dict[str, str] = {}
    for line in (dpkg_query_stdout or "").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        status, name, version = parts[0], parts[1], parts[2]
        # db:Status-Abbrev: selection (u/i/h/r/p), status (n/c/H/U/F/W/t/i), error flag. Only a
        # configured package ("i") without an error ("R" = reinstall required) counts as present.
        if len(status) >= 2 and status[1] == "i" and (len(status) < 3 or status[2] in " \t"):
            out[name.split(":")[0]] = version
    return out


def rk_packages_missing(wanted, dpkg_query_stdout):
    """The entries of `wanted` that dpkg does not satisfy, in order.

    An entry is "name", "name=version" or "name=version-glob*" (apt's own forms). Raises on anything
    else, so a typo cannot silently look installed.
    """
    if isinstance(wanted, str):
        wanted = [wanted]
    installed = _installed(dpkg_query_stdout)
    missing = []
    for entry in wanted or []:
        if not isinstance(entry, str) or not entry.strip() or any(c.isspace() for c in entry.strip()):
            raise ValueError(f"rk_packages_missing: {entry!r} is not a package name or name=version")
        name, sep, version = entry.strip().partition("=")
        if not name or (sep and not version):
            raise ValueError(f"rk_packages_missing: {entry!r} is not a package name or name=version")
        have = installed.get(name)
        if have is None or (sep and not fnmatch.fnmatchcase(have, version)):
            missing.append(entry)
    return missing


def rk_packages_installed(dpkg_query_stdout):
    """{package: version} for what is installed; for reports and assertions."""
    return _installed(dpkg_query_stdout)


def rk_packages_matching(dpkg_query_stdout, patterns, exclude=()):
    """Installed package names (from the dpkg read above) matching any glob of `patterns` and none
    of `exclude`, sorted: the NVIDIA family without the container toolkit, say."""
    installed = _installed(dpkg_query_stdout)
    return sorted(n for n in installed
                  if any(fnmatch.fnmatchcase(n, p) for p in patterns or ())
                  and not any(fnmatch.fnmatchcase(n, x) for x in exclude or ()))


def rk_apt_policy(apt_cache_policy_stdout):
    """{package: {installed, candidate}} from `apt-cache policy NAME...` (versions, or None for
    "(none)"). A name apt does not know at all is absent from the output, hence from the result:
    callers treat a missing name like one without a candidate."""
    out: dict[str, dict] = {}
    current = None
    for line in (apt_cache_policy_stdout or "").splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
            out[current] = {"installed": None, "candidate": None}
            continue
        if current is None:
            continue
        key, sep, value = line.strip().partition(":")
        if sep and key in ("Installed", "Candidate"):
            value = value.strip()
            out[current][key.lower()] = None if value in ("(none)", "") else value
    return out


class FilterModule:
    def filters(self):
        return {"rk_packages_missing": rk_packages_missing, "rk_packages_installed": rk_packages_installed,
                "rk_apt_policy": rk_apt_policy, "rk_packages_matching": rk_packages_matching}
