#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: apt_source_guard
short_description: Disable other apt entries for a repository that rigkeeper is about to declare
description:
  - Finds every entry for one repository URL in C(/etc/apt/sources.list), C(/etc/apt/sources.list.d/*.list)
    (one-line format) and C(/etc/apt/sources.list.d/*.sources) (deb822 format), and disables each entry
    whose C(Signed-By) is not the keyring rigkeeper uses (or that has none).
  - Two entries for one repository with different C(Signed-By) make every apt command fail with
    "Conflicting values set for option Signed-By"; an old unsigned entry (apt-key era) does the same
    next to a signed one. Run this before writing the repository's own source file.
  - "An entry in a one-line file is commented out (C(# disabled by rigkeeper: ) and the original line); a
    deb822 stanza gets C(Enabled: no) (and a comment saying why). Only the conflicting entries change;
    the rest of each file stays byte for byte. Each file is copied to O(backup_dir) before its first
    change."
  - Files that dpkg owns (C(dpkg-query -S)) are never edited. An entry in one for O(url) with another
    C(Signed-By) fails the module before anything changes, naming the package; one that only matches
    O(url_prefixes) is reported with a warning.
  - With O(package) (NVIDIA's C(cuda-keyring)) installed, its own source files are read whatever URL they
    name. When one lists O(url) with O(signed_by), it is the same source, and RV(own_file_needed) is
    false - the caller should not write a competing file. When the package lists only other URLs, or
    O(url) with another keyring, the module fails before anything changes.
version_added: "0.1.0"
author:
  - rigkeeper developers (@rigkeeper)
notes:
  - "URLs are compared the way apt does: a trailing slash does not count, the scheme and host are
    case-insensitive. Variables such as C($(ARCH)) are compared as written."
  - "C(Signed-By) is compared as text, as apt does for the conflict: an inline key (deb822 C(Signed-By:)
    holding an armored key) or a fingerprint is another C(Signed-By) than a keyring path, even for the
    same key."
  - "A deb822 stanza that lists other URIs too keeps them: only the matching URIs are removed from its
    C(URIs) field."
  - "The edited text is parsed again before it is written: the disabled entries must be gone and every
    other entry unchanged. Files are replaced with C(atomic_move) (owner and mode kept); apt ignores the
    temporary file (a dot file without a C(.list) or C(.sources) suffix)."
options:
  url:
    description: The repository URL, as the source rigkeeper writes names it.
    type: str
    required: true
  signed_by:
    description: The keyring (path) rigkeeper's source names in C(signed-by); entries with exactly this value are kept.
    type: path
    required: true
  path:
    description: The source file rigkeeper owns for this repository; its entries are left to the caller.
    type: path
    required: true
  url_prefixes:
    description:
      - Entries whose URL starts with one of these count as the same repository too (older distribution
        directories of NVIDIA's CUDA repository, the nvidia-docker era addresses).
    type: list
    elements: str
    default: []
  disable_files:
    description: Files whose every entry is disabled, whatever URL or Signed-By it names (known stale lists).
    type: list
    elements: path
    default: []
  package:
    description: A package that sets this repository up itself (C(cuda-keyring)); see the description.
    type: str
  backup_dir:
    description: Where each file is copied (once per content) before it is changed.
    type: path
    default: /var/backups/rigkeeper/apt
  sources_list:
    description: apt's main source list (C(Dir::Etc::sourcelist)).
    type: path
    default: /etc/apt/sources.list
  sources_parts:
    description: apt's source directory (C(Dir::Etc::sourceparts)).
    type: path
    default: /etc/apt/sources.list.d
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: One diff per changed file, its text before and after.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: debian
requirements:
  - dpkg-query on the managed host (to tell which files packages own)
seealso:
  - name: sources.list(5)
    description: The one-line and deb822 formats, C(Signed-By), C(Enabled).
    link: https://manpages.debian.org/bookworm/apt/sources.list.5.en.html
'''

EXAMPLES = r'''
- name: Disable other entries for NVIDIA's CUDA repository before writing ours
  apt_source_guard:
    url: https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64
    signed_by: /usr/share/keyrings/cuda-archive-keyring.gpg
    path: /etc/apt/sources.list.d/cuda.list
    url_prefixes: [https://developer.download.nvidia.com/compute/cuda/repos/]
    package: cuda-keyring
  register: cuda_sources

- name: Write our source only when cuda-keyring's is not the same one
  ansible.builtin.template:
    src: cuda.list.j2
    dest: /etc/apt/sources.list.d/cuda.list
    mode: "0644"
  when: cuda_sources.own_file_needed

- name: The container toolkit's repository, and the nvidia-docker list of old
  apt_source_guard:
    url: https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)
    signed_by: /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    path: /etc/apt/sources.list.d/nvidia-container-toolkit.list
    disable_files: [/etc/apt/sources.list.d/nvidia-docker.list]
'''

RETURN = r'''
entries:
  description: Every entry found for the repository, in file order, with what was done to it.
  returned: always
  type: list
  elements: dict
  contains:
    file: {description: The file., type: str}
    line: {description: "The entry's line (one-line format) or its stanza's first line (deb822), from 1.", type: int}
    format: {description: C(one-line) or C(deb822)., type: str}
    types: {description: C(deb) and/or C(deb-src)., type: list}
    uris: {description: The entry's URIs (a deb822 stanza may list several)., type: list}
    signed_by: {description: Its Signed-By (null when none; an inline key shows as C(<inline key>))., type: str}
    owner: {description: "The package that owns the file (dpkg), or null.", type: str}
    action:
      description:
        - C(kept) (same Signed-By), C(own) (in O(path)), C(disabled) (this run, or would be in check mode),
          C(already_disabled), C(dpkg_owned) (conflicting but in a package's file, left alone),
          C(package_source) (the O(package)'s own entry).
      type: str
    reason: {description: Why it was disabled or left alone., type: str}
  sample:
    - {file: /etc/apt/sources.list, line: 3, format: one-line, types: [deb], action: disabled, owner: null,
       uris: ["https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/"], signed_by: null,
       reason: no Signed-By (rigkeeper's source uses /usr/share/keyrings/cuda-archive-keyring.gpg)}
changed_files:
  description: The files changed (in check mode, that would change).
  returned: always
  type: list
  elements: str
backups:
  description: "{file: its backup} for each file copied this run."
  returned: always
  type: dict
own_file_needed:
  description: False when O(package) is installed and lists O(url) with O(signed_by) itself.
  returned: always
  type: bool
package_source:
  description: With O(package) - whether it is installed, its source files and whether they are the same source.
  returned: when O(package) is set
  type: dict
  sample: {package: cuda-keyring, installed: true, same_source: true,
           files: [/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list]}
'''

import os
import re
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

ENVIRON = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C')
DISABLED_PREFIX = '# disabled by rigkeeper: '
# apt reads sources.list.d files with these names only (others are ignored, with a notice).
PARTS_NAME = re.compile(r'^[A-Za-z0-9_.\-]+\.(list|sources)$')
INLINE_KEY = '<inline key>'
TYPES = ('deb', 'deb-src')
FALSE_WORDS = ('no', 'false', 'without', 'off', 'disable', '0')


class SourceError(Exception):
    pass


# ---------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------

def normalize_uri(uri):
    """apt's view of a URI for comparison: no trailing slash, scheme and host in lower case."""
    uri = (uri or '').strip().rstrip('/')
    match = re.match(r'^([A-Za-z][A-Za-z0-9+.\-]*):(//[^/]*)?(.*)$', uri)
    if not match:
        return uri
    # file:///srv/x and file:/srv/x are one URI for apt (an empty authority is no authority).
    authority = (match.group(2) or '').lower()
    return match.group(1).lower() + ':' + ('' if authority == '//' else authority) + match.group(3)


def uri_matches(uri, url, prefixes=()):
    uri = normalize_uri(uri)
    if uri == normalize_uri(url):
        return True
    for prefix in prefixes:
        prefix = normalize_uri(prefix)
        if prefix and (uri == prefix or uri.startswith(prefix + '/')):
            return True
    return False


def _split_lines(text):
    return text.splitlines(True)


def parse_one_line(line):
    """One line of the one-line format: a dict, or None for a blank line, a comment or an unknown type.

    ``deb [ opt=val ... ] uri suite [component ...]``; ``#`` starts a comment anywhere.
    """
    body = line.split('#', 1)[0].strip()
    if not body:
        return None
    parts = body.split(None, 1)
    kind, rest = parts[0], (parts[1] if len(parts) > 1 else '')
    if kind not in TYPES:
        return None
    rest = rest.strip()
    options = {}
    if rest.startswith('['):
        end = rest.find(']')
        if end < 0:
            raise SourceError('unterminated [ options ]')
        for token in rest[1:end].split():
            key, sep, value = token.partition('=')
            if not sep:
                raise SourceError('option %r has no value' % token)
            options[key.rstrip('+-').lower()] = value
        rest = rest[end + 1:].strip()
    words = rest.split()
    if not words:
        raise SourceError('no URI')
    signed = options.get('signed-by')
    return dict(format='one-line', types=[kind], uris=[words[0]], suites=words[1:2], components=words[2:],
                signed_by=signed if signed not in (None, '') else None, enabled=True)


def parse_deb822(text):
    """Stanzas of a deb822 .sources file: dicts with their line span and fields.

    A field's value joins its continuation lines with newlines (a continuation line of " ." is an
    empty line, as in inline keys). Comment lines (``#``) are skipped.
    """
    lines = _split_lines(text)
    stanzas, current, field = [], None, None
    for index, raw in enumerate(lines):
        line = raw.rstrip('\r\n')
        if not line.strip():
            if current is not None:
                stanzas.append(current)
            current, field = None, None
            continue
        if line.startswith('#'):
            continue
        if current is None:
            current = dict(start=index, end=index, fields={})
        current['end'] = index
        if line[0] in ' \t':
            if field is None:
                raise SourceError('line %d: a continuation line without a field' % (index + 1))
            value, first, _unused = current['fields'][field]
            piece = line.strip()
            current['fields'][field] = (value + '\n' + ('' if piece == '.' else piece), first, index)
            continue
        name, sep, value = line.partition(':')
        if not sep or not name.strip():
            raise SourceError('line %d: not a "Field: value" line' % (index + 1))
        field = name.strip().lower()
        current['fields'][field] = (value.strip(), index, index)
    if current is not None:
        stanzas.append(current)
    for stanza in stanzas:
        fields = stanza['fields']

        def get(key):
            return fields.get(key, ('', None, None))[0]

        signed = get('signed-by').strip()
        if 'BEGIN PGP' in signed:
            signed = INLINE_KEY
        stanza.update(format='deb822', types=get('types').split(), uris=get('uris').split(),
                      suites=get('suites').split(), components=get('components').split(),
                      signed_by=' '.join(signed.split()) or None,
                      enabled=get('enabled').strip().lower() not in FALSE_WORDS)
    return stanzas


def parse_file(path, text):
    """Entries of one file: [(entry, where)] where ``where`` is a line index (one-line) or the stanza."""
    out = []
    if path.endswith('.sources'):
        for stanza in parse_deb822(text):
            if set(stanza['types']) & set(TYPES) and stanza['uris']:
                out.append((stanza, stanza))
        return out
    for index, line in enumerate(_split_lines(text)):
        try:
            entry = parse_one_line(line)
        except SourceError as error:
            raise SourceError('line %d: %s' % (index + 1, error))
        if entry is not None:
            out.append((entry, index))
    return out


# ---------------------------------------------------------------------------
# Planning and editing (pure)
# ---------------------------------------------------------------------------

def _line_of(where):
    return (where['start'] if isinstance(where, dict) else where) + 1


def _report(path, entry, where, owner, action, reason=None):
    return dict(file=path, line=_line_of(where), format=entry['format'], types=list(entry['types']),
                uris=list(entry['uris']), signed_by=entry['signed_by'], owner=owner, action=action,
                reason=reason)


def classify(path, entry, url, signed_by, own_path, prefixes, disable_files):
    """(matching URIs, verdict, reason) for one entry; verdict None when it is not about the repository."""
    whole_file = path in disable_files
    uris = [u for u in entry['uris'] if whole_file or uri_matches(u, url, prefixes)]
    if not uris:
        return [], None, None
    if path == own_path:
        return uris, 'own', None
    if not entry['enabled']:
        return uris, 'already_disabled', None
    if whole_file:
        return uris, 'disable', 'listed in disable_files (a stale list of this repository)'
    if entry['signed_by'] == signed_by:
        return uris, 'kept', None
    if entry['signed_by'] is None:
        return uris, 'disable', "no Signed-By (rigkeeper's source uses %s)" % signed_by
    return uris, 'disable', 'Signed-By %s, not %s' % (entry['signed_by'], signed_by)


def disable_text(path, text, targets):
    """The file's text with ``targets`` [(entry, where, uris, reason)] disabled."""
    lines = _split_lines(text)
    if lines and not lines[-1].endswith('\n'):
        lines[-1] += '\n'
    if not path.endswith('.sources'):
        for entry, where, uris, reason in targets:
            lines[where] = DISABLED_PREFIX + lines[where].rstrip('\r\n') + '\n'
        return ''.join(lines)
    # deb822: work from the last stanza up, so earlier line numbers stay valid.
    for entry, stanza, uris, reason in sorted(targets, key=lambda t: t[1]['start'], reverse=True):
        fields = stanza['fields']
        keep = [u for u in entry['uris'] if u not in uris]
        if keep:
            _unused, first, last = fields['uris']
            lines[first:last + 1] = ['URIs: %s\n' % ' '.join(keep)]
            lines.insert(stanza['start'], '%sURIs %s removed from this stanza: %s\n'
                         % (DISABLED_PREFIX, ' '.join(uris), reason))
            continue
        if 'enabled' in fields:
            _unused, first, last = fields['enabled']
            lines[first:last + 1] = ['Enabled: no\n']
        else:
            lines.insert(stanza['end'] + 1, 'Enabled: no\n')
        lines.insert(stanza['start'], '%s%s\n' % (DISABLED_PREFIX, reason))
    return ''.join(lines)


def _signature(entry):
    return (entry['format'], tuple(entry['types']), tuple(entry['uris']), tuple(entry['suites']),
            tuple(entry['components']), entry['signed_by'], entry['enabled'])


def check_edit(path, before, after, targets, url, prefixes, disable_files):
    """The edited text must parse, with the targets disabled and every other entry as it was."""
    whole = path in disable_files
    target_lines = {_line_of(where) for _unused, where, _unused2, _unused3 in targets}
    wanted = []
    for entry, where in parse_file(path, before):
        if not entry['enabled']:
            continue
        if _line_of(where) in target_lines:
            rest = [u for u in entry['uris'] if not (whole or uri_matches(u, url, prefixes))]
            if rest and entry['format'] == 'deb822':
                wanted.append(_signature(dict(entry, uris=rest)))
            continue
        wanted.append(_signature(entry))
    got = [_signature(entry) for entry, _unused in parse_file(path, after) if entry['enabled']]
    return got == wanted


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------

def build_module():
    return AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', required=True),
            signed_by=dict(type='path', required=True),
            path=dict(type='path', required=True),
            url_prefixes=dict(type='list', elements='str', default=[]),
            disable_files=dict(type='list', elements='path', default=[]),
            package=dict(type='str'),
            backup_dir=dict(type='path', default='/var/backups/rigkeeper/apt'),
            sources_list=dict(type='path', default='/etc/apt/sources.list'),
            sources_parts=dict(type='path', default='/etc/apt/sources.list.d'),
        ),
        supports_check_mode=True,
    )


class AptSourceGuard(object):

    def __init__(self, module):
        self.module = module
        p = module.params
        self.url = p['url'].strip()
        self.signed_by = p['signed_by']
        self.own_path = os.path.abspath(p['path'])
        self.prefixes = [x for x in p['url_prefixes'] if x and x.strip()]
        self.disable_files = [os.path.abspath(f) for f in p['disable_files']]
        self.package = p['package']
        self.sources_list = os.path.abspath(p['sources_list'])
        self.sources_parts = os.path.abspath(p['sources_parts'])
        self.backup_dir = p['backup_dir']
        self.dpkg_query = module.get_bin_path('dpkg-query', False)
        self.result = dict(changed=False, entries=[], changed_files=[], backups={}, own_file_needed=True)

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, **dict(self.result, **extra))

    # -- the host ------------------------------------------------------------

    def source_files(self):
        files = []
        if os.path.isfile(self.sources_list):
            files.append(self.sources_list)
        if os.path.isdir(self.sources_parts):
            for name in sorted(os.listdir(self.sources_parts)):
                full = os.path.join(self.sources_parts, name)
                if PARTS_NAME.match(name) and os.path.isfile(full):
                    files.append(full)
        return files

    def read(self, path):
        with open(path, 'rb') as handle:
            return to_text(handle.read(), errors='surrogate_or_strict')

    def query(self, argv, ok=(0,)):
        rc, out, err = self.module.run_command(argv, environ_update=ENVIRON)
        if rc not in ok:
            self.fail('%s failed' % ' '.join(argv[:2]), rc=rc, stdout=out, stderr=err)
        return rc, out

    def owners(self, paths):
        """{path: package} for the paths dpkg knows (dpkg-query -S); one call for all."""
        if not paths or not self.dpkg_query:
            return {}
        _unused, out = self.query([self.dpkg_query, '-S'] + sorted(paths), ok=(0, 1))
        owners = {}
        for line in out.splitlines():
            if line.startswith('diversion by') or ': ' not in line:
                continue
            packages, _sep, path = line.partition(': ')
            if path in paths:
                owners[path] = packages.split(',')[0].strip().split(':')[0]
        return owners

    def package_files(self):
        """(installed, [its apt source files]) for the package."""
        if not self.dpkg_query:
            return False, []
        rc, out = self.query([self.dpkg_query, '-W', '-f=${db:Status-Abbrev}', self.package], ok=(0, 1))
        if rc != 0 or len(out) < 2 or out[1] != 'i':
            return False, []
        _unused, out = self.query([self.dpkg_query, '-L', self.package])
        files = []
        for line in out.splitlines():
            path = line.strip()
            if path == self.sources_list or (os.path.dirname(path) == self.sources_parts
                                             and PARTS_NAME.match(os.path.basename(path))):
                if os.path.isfile(path):
                    files.append(path)
        return True, files

    # -- the work ------------------------------------------------------------

    def backup(self, path, text):
        if not os.path.isdir(self.backup_dir):
            os.makedirs(self.backup_dir, 0o700)
        dest = os.path.join(self.backup_dir, os.path.basename(path))
        if os.path.exists(dest):
            if self.read(dest) == text:
                return None
            dest = '%s.%s' % (dest, time.strftime('%Y%m%dT%H%M%S'))
        shutil.copy2(path, dest)
        os.chmod(dest, 0o600)
        return dest

    def write(self, path, text):
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.rigkeeper-tmp',
                                   dir=os.path.dirname(path))
        try:
            os.write(fd, to_bytes(text, errors='surrogate_or_strict'))
        finally:
            os.close(fd)
        self.module.atomic_move(tmp, path)

    def __call__(self):
        try:
            parsed = {}
            texts = {}
            for path in self.source_files():
                texts[path] = self.read(path)
                parsed[path] = parse_file(path, texts[path])
        except SourceError as error:
            self.fail('%s does not parse as an apt source file (%s): fix or remove it first'
                      % (path, to_native(error)), file=path)
        except (IOError, OSError) as error:
            self.fail('cannot read the apt sources: %s' % to_native(error))

        # The package's own files: read whatever URL they name.
        package_files = []
        if self.package:
            installed, package_files = self.package_files()
            self.result['package_source'] = dict(package=self.package, installed=installed, files=package_files,
                                                 same_source=False)

        found = []
        for path, entries in parsed.items():
            for entry, where in entries:
                uris, verdict, reason = classify(path, entry, self.url, self.signed_by, self.own_path,
                                                 self.prefixes, self.disable_files)
                if path in package_files and entry['enabled']:
                    found.append((path, entry, where, entry['uris'], 'package', reason))
                elif verdict is not None:
                    found.append((path, entry, where, uris, verdict, reason))

        owners = self.owners({f[0] for f in found if f[4] in ('disable', 'package')})
        targets, reports, conflicts, warnings = {}, [], [], []
        for path, entry, where, uris, verdict, reason in found:
            owner = owners.get(path)
            if verdict == 'package':
                reports.append(_report(path, entry, where, owner, 'package_source'))
                continue
            if verdict == 'disable' and owner:
                exact = any(uri_matches(u, self.url) for u in uris)
                text = ('%s line %d (package %s, dpkg -S) lists %s: %s. rigkeeper leaves files of packages alone'
                        % (path, _line_of(where), owner, ' '.join(uris), reason))
                (conflicts if exact else warnings).append(text)
                reports.append(_report(path, entry, where, owner, 'dpkg_owned', reason))
                continue
            if verdict == 'disable':
                targets.setdefault(path, []).append((entry, where, uris, reason))
            reports.append(_report(path, entry, where, owner, 'disabled' if verdict == 'disable' else verdict,
                                   reason))
        self.result['entries'] = reports

        if self.package and self.result['package_source']['installed']:
            self.judge_package(package_files, parsed)
        if conflicts:
            self.fail('Conflicting Signed-By for %s in files a package owns; nothing was changed: %s. Remove the '
                      'package (apt purge) or its entry, or give rigkeeper the same keyring.'
                      % (self.url, '; '.join(conflicts)))
        for text in warnings:
            self.module.warn(text)

        # Compute and check every edit before the first write.
        edits = {}
        for path, file_targets in targets.items():
            after = disable_text(path, texts[path], file_targets)
            if not check_edit(path, texts[path], after, file_targets, self.url, self.prefixes, self.disable_files):
                self.fail('the edit of %s does not parse back as intended; nothing was changed' % path, file=path)
            edits[path] = after

        self.result['changed_files'] = sorted(edits)
        self.result['changed'] = bool(edits)
        if self.module._diff and edits:
            self.result['diff'] = [dict(before=texts[p], after=edits[p], before_header=p, after_header=p)
                                   for p in sorted(edits)]
        if edits and not self.module.check_mode:
            for path in sorted(edits):
                try:
                    made = self.backup(path, texts[path])
                    if made:
                        self.result['backups'][path] = made
                    self.write(path, edits[path])
                except (IOError, OSError) as error:
                    self.fail('cannot disable the entries of %s: %s' % (path, to_native(error)), file=path)
        disabled = sum(len(t) for t in targets.values())
        self.result['msg'] = ('%s %d entr%s for %s in %s' % ('would disable' if self.module.check_mode else 'disabled',
                              disabled, 'y' if disabled == 1 else 'ies', self.url, ', '.join(sorted(edits)))
                              if edits else 'no other entry for %s conflicts' % self.url)
        self.module.exit_json(**self.result)

    def judge_package(self, package_files, parsed):
        """The installed package's sources must be this very repository with this keyring."""
        entries = [(path, entry) for path in package_files for entry, _unused in parsed.get(path, []) if entry['enabled']]
        ours = [(path, entry) for path, entry in entries if any(uri_matches(u, self.url) for u in entry['uris'])]
        listed = ', '.join('%s (%s)' % (' '.join(e['uris']), p) for p, e in entries) or 'no enabled entry'
        if not ours:
            if not entries:
                return
            self.fail('%s is installed and its source lists %s, not %s: rigkeeper does not edit a package\'s '
                      'files and will not add a second source. Point the role at the same URL, or remove the '
                      'package (apt purge %s) and run again. Nothing was changed.'
                      % (self.package, listed, self.url, self.package))
        other = [(p, e) for p, e in ours if e['signed_by'] != self.signed_by]
        if other:
            self.fail('%s is installed and lists %s with Signed-By %s, not %s: nothing was changed.'
                      % (self.package, self.url, other[0][1]['signed_by'], self.signed_by))
        self.result['package_source']['same_source'] = True
        self.result['own_file_needed'] = False


def main():
    module = build_module()
    AptSourceGuard(module)()


if __name__ == '__main__':
    main()
