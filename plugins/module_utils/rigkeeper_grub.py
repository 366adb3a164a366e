# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command line logic for the ``grub_cmdline`` module.

Everything here is pure and stdlib-only (it runs on managed hosts, Python 3.8+).
Shell evaluation of the GRUB default files is *described* here (the script, the
argument vector, the output format) but *run* by the module, so that tests can
exercise each piece on its own.

Terms:
- token: one kernel argument exactly as written (``dyndbg="file foo.c +p"``);
  tokens are never re-quoted or rewritten, so they survive a round trip byte-exact.
- pair: what the kernel makes of a token, ``(key, value)`` with the quotes the
  kernel strips already stripped and ``-`` in the key folded to ``_`` (the kernel
  compares parameter names that way); ``value`` is None for a bare flag.
"""

from __future__ import annotations

import glob
import os

VARIABLES = ('GRUB_CMDLINE_LINUX', 'GRUB_CMDLINE_LINUX_DEFAULT')

# Keys the kernel accepts more than once, each occurrence adding to the others
# (console=tty1 console=ttyS0 on cloud images). They are never collapsed.
DEFAULT_REPEATABLE_KEYS = ('console',)

# Everything after a bare "--" goes to init, not to the kernel.
INIT_SEPARATOR = '--'

# What grub-mkconfig does, minus everything else it does:
#   set -e, source the default files in order, read the variables.
# Paths arrive as positional parameters; nothing is interpolated into this text.
# The sourced files' stdout goes to stderr so that an `echo` in
# /etc/default/grub cannot corrupt the NUL-separated answer written to fd 3.
SOURCE_MARKER = 'RIGKEEPER-GRUB-VARS'
SOURCE_SCRIPT = r'''set -e
set +a
unset GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT
exec 3>&1 1>&2
for __rigkeeper_file in "$@"; do
  . "$__rigkeeper_file"
done
printf '%s\0' "$0" \
  "${GRUB_CMDLINE_LINUX+set}" "${GRUB_CMDLINE_LINUX-}" \
  "${GRUB_CMDLINE_LINUX_DEFAULT+set}" "${GRUB_CMDLINE_LINUX_DEFAULT-}" >&3
'''

DROPIN_HEADER = '''\
# Managed by Ansible (rigkeeper grub_cmdline module). Local edits are overwritten.
#
# grub-mkconfig (update-grub) sources /etc/default/grub, then
# /etc/default/grub.d/*.cfg in lexical order; a later assignment replaces an
# earlier one. This drop-in sorts after the others, so it carries the complete
# kernel command line: the value computed from all the other files, with the
# arguments managed by Ansible added, replaced or removed. Nothing set elsewhere
# is lost; to change an argument set elsewhere, edit that file and re-run the
# play, or manage the argument here. Run update-grub after a change, and reboot
# for the running kernel to see it.
'''


class GrubSourceError(Exception):
    """The default files could not be evaluated; carries the shell's answer."""

    def __init__(self, msg, rc=None, stdout='', stderr=''):
        super(GrubSourceError, self).__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


# --------------------------------------------------------------------------
# Tokens and pairs, with the kernel's own rules (lib/cmdline.c next_arg()).
# --------------------------------------------------------------------------

def split_args(cmdline):
    """Split a command line into tokens the way the kernel does.

    Whitespace separates tokens except inside double quotes; quotes stay in the
    token. ``None`` gives an empty list.
    """
    tokens = []
    if not cmdline:
        return tokens
    current = []
    in_quote = False
    for char in cmdline:
        if char.isspace() and not in_quote:
            if current:
                tokens.append(''.join(current))
                current = []
            continue
        if char == '"':
            in_quote = not in_quote
        current.append(char)
    if current:
        tokens.append(''.join(current))
    return tokens


def normalize_key(key):
    """The kernel treats ``-`` and ``_`` in parameter names as the same."""
    return key.replace('-', '_')


def parse_arg(token):
    """Return the ``(key, value)`` pair the kernel sees for ``token``.

    ``"a=b c"`` and ``a="b c"`` both give ``('a', 'b c')`` (GRUB writes the
    former into the kernel command line for an argument that contains spaces,
    users write the latter). ``quiet`` gives ``('quiet', None)``.
    """
    quoted = token.startswith('"')
    text = token[1:] if quoted else token
    if quoted and text.endswith('"'):
        text = text[:-1]
    key, sep, value = text.partition('=')
    if not sep or not key:
        # next_arg() ignores an "=" in first position: the whole token is the key.
        return normalize_key(text), None
    if value.startswith('"'):
        value = value[1:]
        if value.endswith('"'):
            value = value[:-1]
    return normalize_key(key), value


def kernel_part(tokens):
    """Split tokens into (kernel arguments, init arguments including ``--``)."""
    if INIT_SEPARATOR in tokens:
        index = tokens.index(INIT_SEPARATOR)
        return list(tokens[:index]), list(tokens[index:])
    return list(tokens), []


def validate_arg(arg, option):
    """Raise ValueError unless ``arg`` is exactly one well-formed kernel argument."""
    if not isinstance(arg, str) or not arg:
        raise ValueError('%s: empty argument' % option)
    if any(ord(char) < 32 or ord(char) == 127 for char in arg):
        raise ValueError('%s: %r contains a control character (newline, tab...)' % (option, arg))
    if arg.count('"') % 2:
        raise ValueError('%s: %r has an unbalanced double quote; the kernel would join it with '
                         'the arguments after it' % (option, arg))
    if split_args(arg) != [arg]:
        raise ValueError('%s: %r is more than one kernel argument; quote values containing '
                         'spaces (key="a b") or list the arguments separately' % (option, arg))
    if arg == INIT_SEPARATOR:
        raise ValueError('%s: "--" separates init arguments and cannot be managed' % option)
    if arg.lstrip('"').startswith('=') or parse_arg(arg)[0] == '':
        raise ValueError('%s: %r has no key' % (option, arg))


def matches(spec_pair, pair):
    """Does ``pair`` match an ``args_absent`` spec? ``key`` matches any value."""
    key, value = spec_pair
    if key != pair[0]:
        return False
    return value is None or value == pair[1]


def check_conflicts(args_present, args_absent):
    """Raise ValueError when an argument is wanted both present and absent."""
    for spec in args_absent:
        spec_pair = parse_arg(spec)
        for wanted in args_present:
            if matches(spec_pair, parse_arg(wanted)):
                raise ValueError('%r is in args_present and matches %r in args_absent'
                                 % (wanted, spec))


def apply_args(tokens, args_present=(), args_absent=(), repeatable_keys=DEFAULT_REPEATABLE_KEYS):
    """Return the new token list; ``tokens`` is left untouched.

    - ``args_absent``: ``key`` removes the key with any value (and the bare
      flag), ``key=value`` removes only that value.
    - ``args_present``, key not repeatable: every occurrence of the key is
      replaced by the wanted argument(s) for that key, at the position of the
      first occurrence (``iommu=on`` -> ``iommu=pt`` stays in place, duplicate
      keys collapse); an occurrence that already equals a wanted one keeps its
      spelling. A key not there yet is appended (before ``--``).
    - ``args_present``, repeatable key (console): the exact argument is added
      when missing; other values of the key are kept.
    """
    repeatable = set(normalize_key(key) for key in repeatable_keys)
    kernel, init = kernel_part(tokens)

    absent_pairs = [parse_arg(spec) for spec in args_absent]
    kernel = [token for token in kernel
              if not any(matches(spec, parse_arg(token)) for spec in absent_pairs)]

    # Group wanted arguments by key, keeping first-seen order and dropping repeats.
    groups = []
    by_key = {}
    for arg in args_present:
        pair = parse_arg(arg)
        if pair[0] not in by_key:
            by_key[pair[0]] = []
            groups.append(pair[0])
        if pair not in [parse_arg(known) for known in by_key[pair[0]]]:
            by_key[pair[0]].append(arg)

    for key in groups:
        wanted = by_key[key]
        if key in repeatable:
            have = [parse_arg(token) for token in kernel]
            kernel.extend(arg for arg in wanted if parse_arg(arg) not in have)
            continue
        positions = [index for index, token in enumerate(kernel) if parse_arg(token)[0] == key]
        existing = [kernel[index] for index in positions]
        if [parse_arg(token) for token in existing] == [parse_arg(arg) for arg in wanted]:
            continue
        # Keep the user's spelling of an argument that is already right.
        spelled = dict((parse_arg(token), token) for token in existing)
        replacement = [spelled.get(parse_arg(arg), arg) for arg in wanted]
        if not positions:
            kernel.extend(replacement)
            continue
        first, drop = positions[0], set(positions)
        rebuilt = []
        for index, token in enumerate(kernel):
            if index == first:
                rebuilt.extend(replacement)
            elif index not in drop:
                rebuilt.append(token)
        kernel = rebuilt
    return kernel + init


def render_value(original, tokens):
    """The variable's new text: ``original`` itself when the tokens did not change
    (so an untouched value keeps its spacing), else the tokens joined by spaces."""
    if split_args(original) == list(tokens):
        return original
    return ' '.join(tokens)


# --------------------------------------------------------------------------
# The drop-in.
# --------------------------------------------------------------------------

def shell_quote(value):
    """Single-quote ``value`` whole for a POSIX shell (``'`` becomes ``'\\''``)."""
    return "'" + value.replace("'", "'\\''") + "'"


def render_dropin(assignments):
    """Text of the drop-in for ``{variable: value}``; variables in a fixed order."""
    lines = [DROPIN_HEADER]
    for variable in VARIABLES:
        if variable in assignments:
            lines.append('%s=%s\n' % (variable, shell_quote(assignments[variable])))
    return ''.join(lines)


# --------------------------------------------------------------------------
# Which files grub-mkconfig reads, and in what order.
# --------------------------------------------------------------------------

def dropin_dir(grub_dir):
    return os.path.join(grub_dir, 'grub.d')


def default_dropin_path(grub_dir, name='99-rigkeeper.cfg'):
    return os.path.join(dropin_dir(grub_dir), name)


def is_dropin(grub_dir, path):
    """True when grub-mkconfig would source ``path`` as a drop-in."""
    name = os.path.basename(path)
    return (os.path.dirname(os.path.abspath(path)) == os.path.abspath(dropin_dir(grub_dir))
            and name.endswith('.cfg') and not name.startswith('.'))


def _sort_key(path):
    return os.fsencode(os.path.basename(path))


def grub_files(grub_dir):
    """The files grub-mkconfig sources, in order: ``grub`` (when a regular file),
    then ``grub.d/*.cfg`` sorted bytewise (the C locale's glob order)."""
    files = []
    main = os.path.join(grub_dir, 'grub')
    if os.path.isfile(main):
        files.append(os.path.abspath(main))
    pattern = os.path.join(glob.escape(dropin_dir(grub_dir)), '*.cfg')
    for path in sorted(glob.glob(pattern), key=_sort_key):
        if os.path.exists(path):
            files.append(os.path.abspath(path))
    return files


def chain(files, path, replacement=None):
    """``files`` with ``path`` taken out or, with ``replacement``, ``path`` read
    from ``replacement`` at the place the name of ``path`` sorts to.

    Returns ``(files, later)``, ``later`` being the drop-ins that sort after ``path``.
    """
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    others = [f for f in files if f != path]
    later = [f for f in others
             if os.path.dirname(f) == directory and _sort_key(f) > _sort_key(path)]
    if replacement is None:
        return others, later
    index = others.index(later[0]) if later else len(others)
    return others[:index] + [replacement] + others[index:], later


# --------------------------------------------------------------------------
# Talking to the shell.
# --------------------------------------------------------------------------

def source_command(bash, files):
    """argv that evaluates ``files`` in order; paths are positional parameters."""
    return [bash, '-c', SOURCE_SCRIPT, SOURCE_MARKER] + list(files)


def parse_source_output(rc, stdout, stderr):
    """Turn the shell's answer into ``{variable: value or None}``."""
    if rc != 0:
        raise GrubSourceError('evaluating the GRUB default files failed (exit %s); '
                              'update-grub would fail too' % rc, rc, stdout, stderr)
    fields = stdout.split('\0')
    if len(fields) != 6 or fields[0] != SOURCE_MARKER or fields[5] != '':
        raise GrubSourceError('evaluating the GRUB default files gave no usable answer '
                              '(does one of them call exit or close a descriptor?)',
                              rc, stdout, stderr)
    return {
        'GRUB_CMDLINE_LINUX': fields[2] if fields[1] == 'set' else None,
        'GRUB_CMDLINE_LINUX_DEFAULT': fields[4] if fields[3] == 'set' else None,
    }


# --------------------------------------------------------------------------
# The running kernel.
# --------------------------------------------------------------------------

def kernel_args(values):
    """The arguments 10_linux gives the kernel: LINUX, then LINUX_DEFAULT."""
    return (split_args(values.get('GRUB_CMDLINE_LINUX') or '')
            + split_args(values.get('GRUB_CMDLINE_LINUX_DEFAULT') or ''))


def _pairs(tokens):
    return [parse_arg(token) for token in kernel_part(tokens)[0]]


def reboot_pending(running, args_present=(), args_absent=(), repeatable_keys=DEFAULT_REPEATABLE_KEYS):
    """True when the running kernel lacks a wanted argument (or runs another
    value of a non-repeatable wanted key), or runs an argument wanted absent.
    ``running`` is the text of /proc/cmdline."""
    repeatable = set(normalize_key(key) for key in repeatable_keys)
    have = _pairs(split_args(running))
    wanted = [parse_arg(arg) for arg in args_present]
    for pair in wanted:
        if pair not in have:
            return True
        if pair[0] not in repeatable and any(
                key == pair[0] and (key, value) not in wanted for key, value in have):
            return True
    for spec in args_absent:
        spec_pair = parse_arg(spec)
        if any(matches(spec_pair, pair) for pair in have):
            return True
    return False


def reboot_pending_for_removal(running, before, after):
    """For a removed drop-in: an argument that goes away is still running, or
    one that appears is not. ``before``/``after`` are token lists."""
    have = _pairs(split_args(running))
    old, new = _pairs(before), _pairs(after)
    if any(pair in have for pair in old if pair not in new):
        return True
    return any(pair not in have for pair in new if pair not in old)


# --------------------------------------------------------------------------
# The whole plan, read-only (the probe: what grub_cmdline would write).
# --------------------------------------------------------------------------

def _source(run, bash, files):
    rc, stdout, stderr = run(source_command(bash, files))
    return parse_source_output(rc, stdout, stderr)


def plan_dropin(run, bash, grub_dir, path, assignments, repeatable_keys=DEFAULT_REPEATABLE_KEYS):
    """What a sequence of grub_cmdline calls on one drop-in would leave, without writing.

    ``assignments`` is ``[{variable, args_present, args_absent}]`` in the order the tasks run;
    ``run(argv) -> (rc, stdout, stderr)``. Returns ``{current, content, values, kernel_args}``:
    the drop-in's text now and as computed (None: no drop-in), the variables grub-mkconfig
    would see, and the kernel arguments 10_linux would pass. Same decisions as the module."""
    path = os.path.abspath(path)
    files = grub_files(grub_dir)
    current = None
    if path in files:
        with open(path, 'rb') as handle:
            current = handle.read().decode('utf-8', 'surrogateescape')
    base = _source(run, bash, chain(files, path)[0])
    own = {}
    if current is not None:
        try:
            mine = _source(run, bash, [path])
            own = dict((var, mine[var]) for var in VARIABLES if mine[var] is not None)
        except GrubSourceError:
            own = {}
    content = current
    for item in assignments:
        variable = item.get('variable', 'GRUB_CMDLINE_LINUX_DEFAULT')
        present, absent = item.get('args_present') or [], item.get('args_absent') or []
        for arg in present:
            validate_arg(arg, 'args_present')
        for arg in absent:
            validate_arg(arg, 'args_absent')
        check_conflicts(present, absent)
        old_value = base[variable] or ''
        tokens = apply_args(split_args(old_value), present, absent, repeatable_keys)
        others = dict((var, value) for var, value in own.items() if var != variable)
        if content is None and not others and tokens == split_args(old_value):
            continue
        others[variable] = render_value(old_value, tokens)
        own = others
        content = render_dropin(own)
    values = dict(base)
    values.update(own)
    return {'current': current, 'content': content, 'values': values, 'kernel_args': kernel_args(values)}


def boot_line(grub_cfg_text):
    """The kernel arguments of grub.cfg's first menu entry (what the next boot runs), as tokens;
    None when it has no linux line."""
    for line in (grub_cfg_text or '').splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) >= 2 and parts[0] == 'linux':
            return split_args(parts[2] if len(parts) > 2 else '')
    return None


def line_in_sync(line, kernel_args_wanted, absent=()):
    """grub.cfg's line carries the computed arguments in order and none of the absent ones."""
    wanted = ' %s ' % ' '.join(kernel_args_wanted)
    have = ' %s ' % ' '.join(line)
    if wanted.strip() and wanted not in have:
        return False
    specs = [parse_arg(a) for a in absent]
    return not any(matches(spec, parse_arg(token)) for token in line for spec in specs)
