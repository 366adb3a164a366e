# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache License 2.0 (see pyproject.toml)
"""The probe: compare a host with its compiled wanted state, one resource at a time.

Standard library only, Python 3.8+: it runs inside the ``rigkeeper_probe`` module on the host, in the
controller's action plugin (resources judged from facts) and in the host's own self-audit (no Ansible
there). Nothing here changes the host.

A *resource* is a dict with ``id``, ``role``, ``kind``, ``label`` and the kind's own keys (see
``KINDS`` and docs/probe.md). ``probe(resources, host)`` returns ``{id: result}``; a result is
``{"status": ok|drift|absent|error|warn, "reasons": [...], "diff"?: {...}}``:

- ok: the host holds what is wanted;
- drift: it holds something else (the reasons say what, a file's diff shows it);
- absent: something wanted is not there at all (a package not installed, a file missing, no sshd);
- warn: a finding that is not drift (a reboot the OS asks for);
- error: the resource could not be read; the reason says why. It never stops the other resources.

The observations are read in batches (one ``dpkg-query`` for every package, one ``systemctl show``
for every unit) and commands run concurrently, so a probe of a whole host is a handful of process
starts.
"""

from __future__ import annotations

import difflib
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import stat
import subprocess
import threading

try:
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_apt import family_findings
    from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_grub import boot_line, line_in_sync, plan_dropin
except ImportError:  # the host's self-audit runs without Ansible, these files beside this one
    from rigkeeper_apt import family_findings  # type: ignore
    from rigkeeper_grub import boot_line, line_in_sync, plan_dropin  # type: ignore

OK, DRIFT, ABSENT, ERROR, WARN = 'ok', 'drift', 'absent', 'error', 'warn'
# Worst first: a role's status is its worst resource's.
SEVERITY = {ERROR: 4, DRIFT: 3, ABSENT: 3, WARN: 1, OK: 0}
MAX_DIFF = 64 * 1024
UNIT_DIRS = ('/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system',
             '/lib/systemd/system', '/usr/lib/systemd/system')
HOST_KINDS = ('file', 'directory', 'link', 'package', 'unit', 'command', 'json_file', 'grub',
              'apt_sources', 'nvidia_family', 'authorized_keys')


def result(status, *reasons, **extra):
    out = {'status': status, 'reasons': [r for r in reasons if r]}
    out.update(extra)
    return out


def worst(statuses):
    """The status that counts for a set of results (a role's)."""
    statuses = list(statuses) or [OK]
    return max(statuses, key=lambda s: SEVERITY.get(s, 4))


# ------------------------------------------------------------------------------------------------
# The host: everything that reads it goes through this object (tests give it a fake tree/runner).
# ------------------------------------------------------------------------------------------------
class Host(object):
    """Reads the host, with caches, so each batch query runs once per probe."""

    def __init__(self, root='/', runner=None, env=None):
        self.root = root
        self._runner = runner
        self.env = dict(os.environ if env is None else env)
        self.env.update(LC_ALL='C', LANG='C')
        self._cache = {}
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------
    def path(self, path):
        if self.root in ('/', ''):
            return path
        return os.path.join(self.root, path.lstrip('/'))

    def lstat(self, path):
        try:
            return os.lstat(self.path(path))
        except OSError:
            return None

    def read_bytes(self, path):
        with open(self.path(path), 'rb') as handle:
            return handle.read()

    def readlink(self, path):
        return os.readlink(self.path(path))

    def listdir(self, path):
        try:
            return sorted(os.listdir(self.path(path)))
        except OSError:
            return []

    def which(self, name):
        if '/' in name:
            return name if os.access(self.path(name), os.X_OK) else None
        dirs = self.env.get('PATH', '').split(':') + ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin',
                                                      '/usr/bin', '/sbin', '/bin']
        for d in dirs:
            if d and os.access(os.path.join(self.path(d), name), os.X_OK):
                return os.path.join(d, name)
        return None

    # -- commands --------------------------------------------------------------------------
    def run(self, argv, timeout=30):
        """(rc, stdout, stderr); rc None when the program is missing, 124 on a timeout."""
        if self._runner is not None:
            return self._runner(argv)
        exe = self.which(argv[0])
        if exe is None:
            return None, '', '%s: command not found' % argv[0]
        try:
            proc = subprocess.run([exe] + list(argv[1:]), check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, '', '%s: no answer within %d s' % (argv[0], timeout)
        except OSError as exc:
            return None, '', '%s: %s' % (argv[0], exc)
        return (proc.returncode, proc.stdout.decode('utf-8', 'replace'),
                proc.stderr.decode('utf-8', 'replace'))

    def cached(self, key, fn):
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = fn()
        with self._lock:
            self._cache[key] = value
        return value

    # -- batch observations ----------------------------------------------------------------
    def systemd_running(self):
        return os.path.isdir(self.path('/run/systemd/system'))

    def packages(self):
        """{name: {version, selection, status}} of every package dpkg knows, or an error text."""
        def query():
            rc, out, err = self.run(['dpkg-query', '-W', '-f',
                                     '${Package}\t${Version}\t${db:Status-Want}\t${db:Status-Status}\n'])
            if rc is None:
                return 'dpkg-query not found: packages cannot be read on this host (not Debian or Ubuntu?)'
            if rc != 0:
                return 'dpkg-query -W failed (rc %s): %s' % (rc, (err or out).strip()[:300])
            found = {}
            for line in out.splitlines():
                parts = line.split('\t')
                if len(parts) >= 4:
                    found[parts[0].split(':')[0]] = {'version': parts[1], 'selection': parts[2],
                                                     'status': parts[3]}
            return found
        return self.cached('packages', query)

    def units(self, names):
        """{name: {property: value}} from one `systemctl show`, or an error text."""
        names = sorted(set(names))
        key = 'units:' + ','.join(names)

        def query():
            props = 'Id,LoadState,ActiveState,SubState,UnitFileState,FragmentPath,DropInPaths'
            rc, out, err = self.run(['systemctl', 'show', '--property=' + props, '--'] + names)
            if rc is None:
                return 'systemctl not found'
            if rc != 0 and not out.strip():
                return 'systemctl show failed (rc %s): %s' % (rc, (err or out).strip()[:300])
            return parse_systemctl_show(out, names)
        return self.cached(key, query)


def parse_systemctl_show(text, names):
    """`systemctl show -p ... a b c` prints one block per unit, in the order asked, separated by a
    blank line. {name: {prop: value}}."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        k, sep, v = line.partition('=')
        if sep:
            current[k] = v
    if current:
        blocks.append(current)
    out = {}
    for name, block in zip(names, blocks):
        out[name] = block
    return out


# ------------------------------------------------------------------------------------------------
# Kinds
# ------------------------------------------------------------------------------------------------
def _mode_text(st_mode):
    return '%04o' % stat.S_IMODE(st_mode)


def _norm_mode(mode):
    if mode is None:
        return None
    text = str(mode)
    if text.startswith('0o'):
        text = text[2:]
    return '%04o' % int(text, 8)


def _owner_reasons(res, st):
    reasons = []
    if res.get('mode') is not None and _mode_text(st.st_mode) != _norm_mode(res['mode']):
        reasons.append('mode %s, wanted %s' % (_mode_text(st.st_mode), _norm_mode(res['mode'])))
    for field, wanted, lookup in (('owner', res.get('owner'), lambda: pwd.getpwuid(st.st_uid).pw_name),
                                  ('group', res.get('group'), lambda: grp.getgrgid(st.st_gid).gr_name)):
        if wanted is None:
            continue
        try:
            have = lookup()
        except KeyError:
            have = str(st.st_uid if field == 'owner' else st.st_gid)
        if have != wanted:
            reasons.append('%s %s, wanted %s' % (field, have, wanted))
    return reasons


def text_diff(before, after, path):
    if len(before) > MAX_DIFF or len(after) > MAX_DIFF:
        return {'prepared': '%s: %d bytes now, %d wanted (too long to show)' % (path, len(before), len(after))}
    return {'before': before, 'after': after, 'before_header': path, 'after_header': path}


def diff_summary(before, after, limit=6):
    """A few changed lines, for a one-line reason."""
    lines = [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm='', n=0)
             if l[:1] in '+-' and not l.startswith(('+++', '---'))]
    more = len(lines) - limit
    return '; '.join(lines[:limit]) + ('; ... (%d more)' % more if more > 0 else '')


def check_file(res, host):
    path = res['path']
    for other in res.get('or_paths') or []:  # the same file at another place counts (first found)
        if host.lstat(path) is None and host.lstat(other) is not None:
            path = other
    st = host.lstat(path)
    state = res.get('state', 'present')
    marker = res.get('marker')
    if state == 'absent':
        if st is None:
            return result(OK)
        if marker is not None:
            try:
                if marker.encode() not in host.read_bytes(path):
                    return result(OK, '%s is not rigkeeper\'s (no marker): left alone' % path)
            except (IOError, OSError):
                pass
        return result(DRIFT, '%s exists, wanted absent' % path)
    if st is None:
        return result(ABSENT, '%s does not exist' % path)
    if not stat.S_ISREG(st.st_mode):
        kind = 'a directory' if stat.S_ISDIR(st.st_mode) else ('a link' if stat.S_ISLNK(st.st_mode) else 'not a file')
        return result(DRIFT, '%s is %s, wanted a regular file' % (path, kind))
    reasons = _owner_reasons(res, st)
    extra = {}
    if 'content' in res or 'sha256' in res or res.get('match') or res.get('not_match'):
        try:
            data = host.read_bytes(path)
        except (IOError, OSError) as exc:
            return result(ERROR, 'cannot read %s: %s' % (path, exc))
        if res.get('sha256') is not None and hashlib.sha256(data).hexdigest() != res['sha256']:
            reasons.append('%s: content differs (sha256 %s, wanted %s)'
                           % (path, hashlib.sha256(data).hexdigest()[:12], res['sha256'][:12]))
        text = data.decode('utf-8', 'replace')
        if res.get('content') is not None and text != res['content']:
            reasons.append('%s differs from the wanted content: %s' % (path, diff_summary(text, res['content'])))
            extra['diff'] = text_diff(text, res['content'], path)
        for pattern in res.get('match') or []:
            if not re.search(pattern, text, re.M):
                reasons.append('%s lacks a line matching %s' % (path, pattern))
        for pattern in res.get('not_match') or []:
            found = re.search(pattern, text, re.M)
            if found:
                reasons.append('%s has %r (not wanted)' % (path, found.group(0)))
    return result(DRIFT if reasons else OK, *reasons, **extra)


def check_directory(res, host):
    path = res['path']
    st = host.lstat(path)
    if res.get('state', 'present') == 'absent':
        return result(OK) if st is None else result(DRIFT, '%s exists, wanted absent' % path)
    if st is None:
        return result(ABSENT, '%s does not exist' % path)
    if not stat.S_ISDIR(st.st_mode):
        return result(DRIFT, '%s is not a directory' % path)
    reasons = _owner_reasons(res, st)
    return result(DRIFT if reasons else OK, *reasons)


def check_link(res, host):
    path = res['path']
    st = host.lstat(path)
    if res.get('state', 'present') == 'absent':
        return result(OK) if st is None else result(DRIFT, '%s exists, wanted absent' % path)
    if st is None:
        # systemd's own default (default.target in the unit directories) when /etc has no link.
        for other in res.get('fallback_paths') or []:
            if host.lstat(other) is not None:
                path, st = other, host.lstat(other)
                break
    if st is None:
        return result(ABSENT, '%s does not exist' % path)
    if not stat.S_ISLNK(st.st_mode):
        return result(DRIFT, '%s is not a symbolic link' % path)
    target = host.readlink(path)
    if res.get('target') is not None and target != res['target']:
        return result(DRIFT, '%s points to %s, wanted %s' % (path, target, res['target']))
    names = res.get('target_names')
    if names and os.path.basename(target) not in names:
        return result(DRIFT, '%s points to %s, wanted %s' % (path, target, ' or '.join(names)))
    return result(OK)


def version_matches(version, wanted):
    """An exact version, or an apt-style glob (580.95.05-*)."""
    if wanted is None:
        return True
    return version == wanted or fnmatch.fnmatchcase(version, wanted)


def check_package(res, host):
    found = host.packages()
    if isinstance(found, str):
        return result(ERROR, found)
    if res.get('any_of'):
        have = [n for n in res['any_of'] if (found.get(n) or {}).get('status') == 'installed']
        if have:
            return result(OK)
        return result(ABSENT, 'none of %s installed' % ', '.join(res['any_of']))
    name = res['name']
    pkg = found.get(name)
    installed = pkg is not None and pkg['status'] == 'installed'
    if res.get('state', 'present') == 'absent':
        if pkg is None or pkg['status'] in ('not-installed', 'config-files'):
            return result(OK)
        return result(DRIFT, '%s %s is installed, wanted absent' % (name, pkg['version']))
    if pkg is None or pkg['status'] in ('not-installed', 'config-files'):
        return result(ABSENT, '%s not installed' % name)
    if not installed:
        return result(DRIFT, '%s %s is %s (dpkg --audit; apt-get -f install)' % (name, pkg['version'], pkg['status']))
    reasons = []
    if not version_matches(pkg['version'], res.get('version')):
        reasons.append('%s %s installed, wanted %s' % (name, pkg['version'], res['version']))
    hold = res.get('hold')
    if hold is True and pkg['selection'] != 'hold':
        reasons.append('%s is not held (apt-mark hold %s)' % (name, name))
    elif hold is False and pkg['selection'] == 'hold':
        reasons.append('%s is held, wanted not held' % name)
    return result(DRIFT if reasons else OK, *reasons)


def _unit_from_files(name, host):
    """What the unit files say when systemd is not running (a container, a chroot, a CI box)."""
    found = {'Id': name, 'LoadState': 'not-found', 'ActiveState': 'inactive', 'UnitFileState': ''}
    for d in UNIT_DIRS:
        p = os.path.join(d, name)
        st = host.lstat(p)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode) and host.readlink(p) == '/dev/null':
            found.update(LoadState='masked', UnitFileState='masked')
            return found
        found.update(LoadState='loaded', FragmentPath=p)
        break
    for d in UNIT_DIRS[:2]:
        for sub in host.listdir(d):
            if sub.endswith(('.wants', '.requires')) and host.lstat(os.path.join(d, sub, name)) is not None:
                found['UnitFileState'] = 'enabled'
    return found


def check_unit(res, host):
    name = res['name']
    live = host.systemd_running()
    if live:
        batch = getattr(host, 'unit_batch', None) or []
        units = host.units(batch if name in batch else [name])
        if isinstance(units, str):
            return result(ERROR, units)
        unit = units.get(name)
        if unit is None:
            return result(ERROR, 'systemctl show said nothing about %s' % name)
    else:
        unit = _unit_from_files(name, host)
    reasons = []
    load = unit.get('LoadState', '')
    if res.get('masked') is True:
        if load != 'masked':
            reasons.append('%s is not masked' % name)
        return result(DRIFT if reasons else OK, *reasons)
    if res.get('masked') is False and load == 'masked':
        reasons.append('%s is masked' % name)
    wants_it = res.get('enabled') is True or res.get('active') is True or res.get('exists') is True
    if load == 'not-found':
        if wants_it:
            return result(ABSENT, '%s is not installed (no unit file)' % name)
        return result(OK)
    enabled = unit.get('UnitFileState', '')
    if res.get('enabled') is True and enabled not in ('enabled', 'enabled-runtime', 'alias', 'linked'):
        reasons.append('%s is not enabled (%s)' % (name, enabled or 'no [Install] link'))
    if res.get('enabled') is False and enabled in ('enabled', 'enabled-runtime'):
        reasons.append('%s is enabled, wanted disabled' % name)
    active = unit.get('ActiveState', '')
    if res.get('active') is True and active != 'active':
        if not live:
            reasons.append('%s is not running: systemd is not running on this host' % name)
        else:
            reasons.append('%s is %s, wanted active' % (name, active or 'not active'))
    if res.get('active') is False and active == 'active':
        reasons.append('%s is active, wanted stopped' % name)
    return result(DRIFT if reasons else OK, *reasons)


def parse_kv(text, lower=True):
    """`sshd -T` lines "key value..." -> {key: [values]} (a key may repeat)."""
    out = {}
    for line in text.splitlines():
        key, _sep, value = line.strip().partition(' ')
        if not key:
            continue
        out.setdefault(key.lower() if lower else key, []).append(value.strip())
    return out


def _dig(data, dotted):
    for part in dotted.split('.') if dotted else []:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None, False
    return data, True


def check_command(res, host):
    argv = res['argv']
    # A directory the program insists on (sshd -T needs /run/sshd, which a socket-activated host
    # makes only at the first connection): made for the call on the tmpfs, removed after.
    made = []
    for d in res.get('run_dirs') or []:
        if host.lstat(d) is None and host.which(argv[0]) is not None:
            try:
                os.mkdir(host.path(d), 0o755)
                made.append(d)
            except OSError:
                pass
    try:
        rc, out, err = host.run(argv, timeout=res.get('timeout', 30))
    finally:
        for d in made:
            try:
                os.rmdir(host.path(d))
            except OSError:
                pass
    what = res.get('program') or argv[0]
    if rc is None:
        return result(ABSENT, '%s not installed (%s not found)' % (what, argv[0]))
    if rc == 124:
        return result(ERROR, '%s did not answer within %s s' % (' '.join(argv), res.get('timeout', 30)))
    if rc != 0 and rc not in (res.get('ok_rc') or []):
        text = (err or out).strip().splitlines()
        return result(ERROR, '%s failed (rc %s): %s'
                      % (' '.join(shlex.quote(a) for a in argv), rc, ' | '.join(text[:4]) or 'no output'))
    parse = res.get('parse', 'text')
    reasons = []
    if parse == 'kv':
        data = parse_kv(out)
        for key, allowed in sorted((res.get('expect_within') or {}).items()):
            have = data.get(key.lower())
            extra = [v for v in ','.join(have or []).split(',') if v and v not in allowed]
            if have is None:
                reasons.append('%s: %s not set' % (what, key))
            elif extra:
                reasons.append('%s: %s offers %s, not in the wanted list' % (what, key, ','.join(extra)))
        for key, wanted in sorted((res.get('expect') or {}).items()):
            have = data.get(key.lower())
            wanted_list = wanted if isinstance(wanted, list) else [wanted]
            wanted_list = [str(w) for w in wanted_list]
            if have is None:
                reasons.append('%s: %s not set, wanted %s' % (what, key, ' '.join(wanted_list)))
            elif [h.lower() for h in have] != [w.lower() for w in wanted_list]:
                reasons.append('%s: %s %s, wanted %s' % (what, key, ' | '.join(have), ' | '.join(wanted_list)))
    elif parse == 'json':
        try:
            data = json.loads(out or 'null')
        except ValueError as exc:
            return result(ERROR, '%s printed no JSON: %s' % (' '.join(argv), exc))
        for dotted, wanted in sorted((res.get('expect') or {}).items()):
            have, found = _dig(data, dotted)
            if not found:
                reasons.append('%s: no %s, wanted %s' % (what, dotted, json.dumps(wanted)))
            elif have != wanted:
                reasons.append('%s: %s is %s, wanted %s' % (what, dotted, json.dumps(have), json.dumps(wanted)))
        for dotted in res.get('has_keys') or []:
            _have, found = _dig(data, dotted)
            if not found:
                reasons.append('%s: %s is missing' % (what, dotted))
    else:
        for pattern in res.get('match') or []:
            if not re.search(pattern, out, re.M):
                reasons.append('%s: output lacks %s' % (what, pattern))
    return result(DRIFT if reasons else OK, *reasons)


def check_authorized_keys(res, host):
    """The user's ~/.ssh/authorized_keys holds every wanted key (and, exclusive, no other)."""
    user = res['user']
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        return result(ABSENT, 'user %s does not exist' % user)
    path = os.path.join(home, '.ssh', 'authorized_keys')
    try:
        text = host.read_bytes(path).decode('utf-8', 'replace')
    except (IOError, OSError):
        return result(ABSENT, '%s does not exist' % path)
    have = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith('#')]

    def key_of(line):
        parts = line.split()
        for i, p in enumerate(parts):
            if p.startswith(('ssh-', 'ecdsa-', 'sk-')) and i + 1 < len(parts):
                return p + ' ' + parts[i + 1]
        return line
    have_keys = set(key_of(l) for l in have)
    want_keys = [key_of(k) for k in res.get('keys') or []]
    reasons = ['%s lacks the key %s...' % (path, k[:40]) for k in want_keys if k not in have_keys]
    if res.get('exclusive'):
        extra = sorted(k for k in have_keys if k not in want_keys)
        if extra:
            reasons.append('%s has %d key(s) not listed (exclusive): %s' % (path, len(extra), ', '.join(e[:40] + '...' for e in extra)))
    return result(DRIFT if reasons else OK, *reasons)


def check_json_file(res, host):
    path = res['path']
    st = host.lstat(path)
    if st is None:
        return result(ABSENT, '%s does not exist' % path)
    try:
        data = json.loads(host.read_bytes(path).decode('utf-8') or '{}')
    except (IOError, OSError) as exc:
        return result(ERROR, 'cannot read %s: %s' % (path, exc))
    except ValueError as exc:
        return result(DRIFT, '%s is not valid JSON: %s' % (path, exc))
    reasons = _owner_reasons(res, st)
    for dotted, wanted in sorted((res.get('subset') or {}).items()):
        have, found = _dig(data, dotted)
        if not found:
            reasons.append('%s: no %s, wanted %s' % (path, dotted, json.dumps(wanted, sort_keys=True)))
        elif have != wanted:
            reasons.append('%s: %s is %s, wanted %s'
                           % (path, dotted, json.dumps(have, sort_keys=True), json.dumps(wanted, sort_keys=True)))
    for dotted in res.get('absent_keys') or []:
        _have, found = _dig(data, dotted)
        if found:
            reasons.append('%s: %s is set, wanted unset' % (path, dotted))
    for dotted, items in sorted((res.get('contains') or {}).items()):
        have, found = _dig(data, dotted)
        have = have if found and isinstance(have, list) else []
        for item in items:
            if item not in have:
                reasons.append('%s: %s lacks %s' % (path, dotted, json.dumps(item)))
    for dotted, value in sorted((res.get('not_values') or {}).items()):
        have, found = _dig(data, dotted)
        if found and have == value:
            reasons.append('%s: %s is %s (not wanted)' % (path, dotted, json.dumps(value)))
    return result(DRIFT if reasons else OK, *reasons)


_SOURCE_LINE_RE = re.compile(r'^\s*(deb|deb-src)\s+(\[[^\]]*\]\s+)?(\S+)')


def enabled_source_urls(text, deb822):
    """URIs of the enabled entries of one sources file."""
    urls = []
    if not deb822:
        for line in text.splitlines():
            match = _SOURCE_LINE_RE.match(line)
            if match:
                urls.append(match.group(3))
        return urls
    for stanza in re.split(r'\n\s*\n', text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith('#') or not line.strip() or line[:1] in ' \t':
                continue
            key, _sep, value = line.partition(':')
            fields[key.strip().lower()] = value.strip()
        if fields.get('enabled', 'yes').lower() == 'no':
            continue
        urls.extend(fields.get('uris', '').split())
    return urls


def check_apt_sources(res, host):
    """No enabled apt entry whose URI contains one of `absent_urls`."""
    files = ['/etc/apt/sources.list'] + ['/etc/apt/sources.list.d/' + n for n in host.listdir('/etc/apt/sources.list.d')
                                         if n.endswith(('.list', '.sources'))]
    reasons, seen = [], []
    for path in files:
        try:
            text = host.read_bytes(path).decode('utf-8', 'replace')
        except (IOError, OSError):
            continue
        for url in enabled_source_urls(text, path.endswith('.sources')):
            seen.append(url.rstrip('/'))
            for needle in res.get('absent_urls') or []:
                if needle in url:
                    reasons.append('%s still lists %s' % (path, url))
    for wanted in res.get('present_urls') or []:
        if wanted.rstrip('/') not in seen:
            return result(ABSENT, 'no enabled apt source for %s' % wanted)
    return result(DRIFT if reasons else OK, *reasons)


def check_grub(res, host):
    """The GRUB drop-in holds what grub_cmdline would write, and grub.cfg boots it."""
    bash = host.which('bash')
    if bash is None:
        return result(ERROR, 'bash not found: GRUB defaults cannot be evaluated')

    def run(argv):
        rc, out, err = host.run(argv)
        return rc, out, err
    try:
        plan = plan_dropin(run, bash, host.path(res.get('grub_dir', '/etc/default')), host.path(res['path']),
                           res['assignments'], res.get('repeatable_keys') or ['console'])
    except Exception as exc:  # a broken chain of GRUB files is this resource's error, not the probe's
        return result(ERROR, 'GRUB defaults do not evaluate: %s' % exc)
    reasons, extra = [], {}
    if plan['current'] is None and plan['content'] is not None:
        return result(ABSENT, '%s does not exist: GRUB boots without rigkeeper\'s kernel arguments' % res['path'])
    if plan['content'] != plan['current']:
        before, after = plan['current'] or '', plan['content'] or ''
        reasons.append('%s differs from what rigkeeper computes: %s' % (res['path'], diff_summary(before, after)))
        extra['diff'] = text_diff(before, after, res['path'])
    cfg = res.get('grub_cfg')
    if cfg and not reasons:
        try:
            line = boot_line(host.read_bytes(cfg).decode('utf-8', 'replace'))
        except (IOError, OSError):
            line = None
        if line is None:
            reasons.append('%s has no kernel line: update-grub has not run' % cfg)
        elif not line_in_sync(line, plan['kernel_args'], res.get('absent_all') or []):
            reasons.append('%s boots "%s", not the computed "%s": update-grub has not run'
                           % (cfg, ' '.join(line), ' '.join(plan['kernel_args'])))
    return result(DRIFT if reasons else OK, *reasons, **extra)


def check_nvidia_family(res, host):
    """The NVIDIA driver family: installed at one version, held, pinned, no other branch."""
    found = host.packages()
    if isinstance(found, str):
        return result(ERROR, found)
    try:
        pin_text = host.read_bytes(res['preferences_path']).decode('utf-8', 'replace')
    except (IOError, OSError):
        pin_text = None
    rc, out, err = host.run(['apt-cache', 'pkgnames'])
    if rc != 0:
        return result(ERROR, 'apt-cache pkgnames failed: %s' % (err.strip() or rc))
    status, reasons = family_findings(res, found, pin_text, out.split())
    if status == ABSENT:
        try:
            loaded = host.read_bytes('/proc/driver/nvidia/version').decode('utf-8', 'replace')
        except (IOError, OSError):
            loaded = ''
        match = re.search(r'Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)', loaded)
        if match:
            # A driver runs that no package of the family installed: NVIDIA's .run installer, or the
            # host of a container that mounts its driver in (the lent H200 server: /usr/local/nvidia).
            reasons.append('yet driver %s is loaded, installed outside apt (NVIDIA\'s .run installer, or a '
                           'container host\'s driver): the role would install packages beside it; remove it '
                           'first (nvidia-uninstall) or leave nvidia_driver out of rigkeeper_roles' % match.group(1))
    return result(status, *reasons)


# ------------------------------------------------------------------------------------------------
# Checks judged from the facts (on the controller, or by the host's self-audit).
# ------------------------------------------------------------------------------------------------
def _r(status, *reasons):
    return {'status': status, 'reasons': [r for r in reasons if r]}


def judge_fact(res, facts):
    """Result of a ``fact`` resource. ``facts``: {rigkeeper_host, nvidia_gpu}."""
    host = facts.get('rigkeeper_host') or {}
    gpu = facts.get('nvidia_gpu') or {}
    check, p = res['check'], res.get('params') or {}
    if check == 'cmdline':
        if host.get('cmdline') is None:
            return _r('error', 'the running kernel command line could not be read')
        diff = cmdline_diff(host['cmdline'], p.get('present', []), p.get('absent', []))
        if diff['in_sync']:
            return _r('ok')
        return _r('drift', 'the running kernel lacks %s%s (GRUB boots them after a reboot)'
                  % (' '.join(diff['missing']) or 'nothing',
                     (' and still runs %s' % ' '.join(diff['unwanted'])) if diff['unwanted'] else ''))
    if check == 'acs_off':
        acs = host.get('acs') or {}
        if not acs.get('checked'):
            return _r('warn', 'ACS could not be read (lspci -vvv needs root and pciutils)')
        bridges = acs.get('enabled_bridges') or []
        return _r('drift', 'ACS is on at %s' % ', '.join(bridges)) if bridges else _r('ok')
    if check == 'no_gpu':
        return _r('drift', 'no GPU answers (%s): the power limits cannot be applied' % p.get('error'))
    if check == 'power_limits':
        if not gpu.get('present'):
            return _r('drift', 'no GPU answers (%s)' % (gpu.get('error') or 'nvidia-smi not available'))
        have = dict((g['bus_id'].upper(), g.get('power_limit_w')) for g in gpu.get('gpus') or [])
        reasons = []
        for bus, watts in sorted(p.get('limits', {}).items()):
            if bus not in have:
                reasons.append('GPU %s is missing' % bus)
            elif have[bus] is None or abs(float(have[bus]) - float(watts)) > 0.01:
                reasons.append('GPU %s at %s W, wanted %s W' % (bus, have[bus], watts))
        return _r('drift' if reasons else 'ok', *reasons)
    if check == 'persistence':
        if not gpu.get('present'):
            return _r('drift', 'no GPU answers (%s)' % (gpu.get('error') or 'nvidia-smi not available'))
        off = [g['bus_id'] for g in gpu.get('gpus') or [] if g.get('persistence_mode') is not True]
        return _r('drift', 'persistence mode off on %s' % ', '.join(off)) if off else _r('ok')
    if check == 'driver_running':
        if not gpu.get('present'):
            return _r('drift', 'the driver does not answer: %s' % (gpu.get('error') or 'nvidia-smi not available'))
        if host.get('driver_mismatch'):
            return _r('drift', 'driver %s installed but %s running: a reboot is pending'
                      % (host.get('driver_installed_version'), host.get('driver_running_version')))
        return _r('ok')
    if check == 'gpu_count':
        want = p.get('count')
        have = gpu.get('count') or 0
        if want and have != want:
            return _r('drift', '%d GPU(s) answer, %d expected' % (have, want))
        return _r('ok')
    if check == 'driver_absent':
        if host.get('driver_installed_version'):
            return _r('drift', 'driver %s is installed, wanted absent' % host['driver_installed_version'])
        return _r('ok')
    if check == 'nouveau_off':
        nouveau = host.get('nouveau') or {}
        if nouveau.get('loaded'):
            return _r('drift', 'nouveau is loaded%s: the NVIDIA driver cannot take the GPUs before a reboot'
                      % (' and in use (the console)' if nouveau.get('in_use') else ''))
        return _r('ok')
    if check == 'reboot_required':
        if host.get('reboot_required_file'):
            why = ', '.join(host.get('reboot_required_pkgs') or []) or '/var/run/reboot-required'
            return _r('warn', 'the OS asks for a reboot (%s)' % why)
        return _r('ok')
    return _r('error', 'unknown fact check %r' % check)


# Keys the kernel reads several times (console=tty1 console=ttyS0): every value counts.
CMDLINE_MULTI_VALUED = ('console',)


def _cmdline_args(cmdline):
    args = {}
    for token in (cmdline or '').split():
        key, sep, value = token.partition('=')
        args.setdefault(key, []).append(value if sep else None)
    return args


def _cmdline_has(args, key, value):
    values = args.get(key)
    if not values:
        return False
    return value in values if key in CMDLINE_MULTI_VALUED else values[-1] == value


def cmdline_diff(cmdline, present=(), absent=()):
    """The running command line against the wanted arguments: {in_sync, missing, unwanted}. A
    repeated key counts by its last value (the kernel's rule), except console (every value)."""
    args = _cmdline_args(cmdline)
    missing, unwanted = [], []
    for arg in present or []:
        key, sep, value = str(arg).partition('=')
        if key not in args or (sep and not _cmdline_has(args, key, value)):
            missing.append(arg)
    for arg in absent or []:
        key, sep, value = str(arg).partition('=')
        if sep:
            if _cmdline_has(args, key, value):
                unwanted.append(arg)
        elif key in args:
            last = args[key][-1]
            unwanted.append(arg if last is None else '%s=%s' % (key, last))
    return {'in_sync': not missing and not unwanted, 'missing': missing, 'unwanted': unwanted}


CHECKS = {
    'file': check_file,
    'directory': check_directory,
    'link': check_link,
    'package': check_package,
    'unit': check_unit,
    'command': check_command,
    'json_file': check_json_file,
    'grub': check_grub,
    'apt_sources': check_apt_sources,
    'nvidia_family': check_nvidia_family,
    'authorized_keys': check_authorized_keys,
}


def probe(resources, host, parallel=True):
    """{id: result} for every resource. Batch reads first (packages, units), then every check; the
    checks that run a command run in threads (they wait on other processes, not on Python)."""
    results = {}
    host.unit_batch = sorted(set(r['name'] for r in resources if r.get('kind') == 'unit'))
    if host.unit_batch and host.systemd_running():
        host.units(host.unit_batch)
    if any(r.get('kind') in ('package', 'nvidia_family') for r in resources):
        host.packages()

    def one(res):
        check = CHECKS.get(res.get('kind'))
        if check is None:
            results[res['id']] = result(ERROR, 'unknown resource kind %r' % res.get('kind'))
            return
        try:
            results[res['id']] = check(res, host)
        except Exception as exc:  # one resource's failure never stops the others
            results[res['id']] = result(ERROR, '%s: %s: %s' % (res.get('label') or res['id'], type(exc).__name__, exc))

    slow = [r for r in resources if r.get('kind') in ('command', 'grub')]
    threads = []
    if parallel:
        for res in slow:
            t = threading.Thread(target=one, args=(res,))
            t.start()
            threads.append(t)
    else:
        for res in slow:
            one(res)
    for res in resources:
        if res not in slow:
            one(res)
    for t in threads:
        t.join()
    return results


def summarize(compiled, results, diff=False):
    """Each role's state from the probe's results: ``(state, reboot)``.

    ``compiled``: {role: [resource, ...]}; ``results``: {id: result} (a ``severity: warning``
    resource's finding is turned into ``warn`` in place). ``state``: {role: {status, findings,
    counts}}; a role's status is its worst finding (absent counts as drift). ``reboot``: the findings
    that only a reboot brings (the driver installed but not running, the kernel's command line, the
    OS's own request), as warnings with ``rigkeeper`` true when rigkeeper's own change waits for it;
    they are not the role's drift. The action plugin and the host's self-audit both use this.
    """
    for resources in compiled.values():
        for r in resources:
            got = results.get(r['id'])
            if r.get('severity') == 'warning' and got and got['status'] not in (OK, ERROR):
                got['status'] = WARN
    state, reboot = {}, []
    for role, resources in compiled.items():
        findings, counts = [], {}
        for r in resources:
            got = results.get(r['id'], {'status': ERROR, 'reasons': ['no result']})
            counts[got['status']] = counts.get(got['status'], 0) + 1
            if got['status'] == OK:
                continue
            finding = {'id': r['id'], 'label': r['label'], 'status': got['status'],
                       'reasons': got.get('reasons') or []}
            if diff and got.get('diff'):
                finding['diff'] = got['diff']
            if r.get('reboot') and got['status'] != ERROR:
                reboot.append(dict(finding, status=WARN, label='%s: %s' % (role, r['label']),
                                   rigkeeper=r['reboot'] is True))
                continue
            findings.append(finding)
        worst_status = max([f['status'] for f in findings] or [OK], key=lambda st: SEVERITY.get(st, 4))
        state[role] = {'status': {ABSENT: DRIFT}.get(worst_status, worst_status), 'findings': findings,
                       'counts': counts}
    return state, reboot
