#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: grub_cmdline
short_description: Manage kernel command line arguments through one GRUB drop-in
description:
  - Adds, replaces and removes kernel arguments in C(GRUB_CMDLINE_LINUX_DEFAULT) (or
    C(GRUB_CMDLINE_LINUX)) by writing one drop-in file, by default
    C(/etc/default/grub.d/99-rigkeeper.cfg).
  - Reports the value C(grub-mkconfig) will compute, the arguments the kernel will get,
    and whether the running kernel (C(/proc/cmdline)) still differs from what was asked.
  - Does not run C(update-grub); notify a handler that does, and reboot deliberately.
version_added: "0.1.0"
author:
  - rigkeeper developers (@rigkeeper)
notes:
  - "How the value is computed. C(grub-mkconfig) sources C(/etc/default/grub), then
    C(/etc/default/grub.d/*.cfg) in lexical order, and a later assignment replaces an
    earlier one (two C(GRUB_CMDLINE_LINUX_DEFAULT=) lines in one file: the second wins;
    Ubuntu cloud images set the variable in C(50-cloudimg-settings.cfg)). The module
    does not parse these files: it sources them with C(bash) under C(set -e), as
    C(grub-mkconfig) does, and reads the variables back. Paths are passed to the
    shell as positional parameters, never interpolated into shell code."
  - "Why a full value and not C(VAR=\"${VAR} arg\"). The module evaluates every default
    file B(except) its own drop-in, applies O(args_present) and O(args_absent) to that
    value, and writes the complete result into the drop-in as one assignment. The
    result then does not depend on how often or in what order the files are sourced;
    arguments set elsewhere stay in the result unless O(args_absent) removes them, and
    an argument set in C(/etc/default/grub) can be removed without editing that file.
    When a user later edits another file, the next run folds the edit in."
  - "One task per variable and drop-in. The O(args_present) and O(args_absent) of a task
    are the complete set of changes for O(variable); a second task with the same O(path)
    and O(variable) replaces the first one's changes. The drop-in may hold both
    variables: managing one keeps the other's assignment."
  - "The drop-in must sort last among the drop-ins that set O(variable). When a later
    file reassigns the variable the module fails and names the file, rather than
    report a value that C(grub-mkconfig) will not use. Order is the bytewise (C locale)
    glob order: digits sort before letters, so Ubuntu's C(init-select.cfg) runs after
    C(99-rigkeeper.cfg); it only touches the variable on systems that boot upstart."
  - "Validation. The new drop-in is written to a temporary file beside the target (a dot
    file not matching C(*.cfg), so a concurrent C(update-grub) never reads it), checked
    with C(bash -n), then sourced in the full chain in place of the drop-in; the variable
    must come back byte for byte. Only then is it moved into place with C(atomic_move).
    In check mode the temporary file goes to the module's temporary directory instead.
    C(grub-script-check) is not used: it checks C(grub.cfg) syntax, not these shell files."
  - "Argument matching follows the kernel: a token ends at whitespace outside double
    quotes, quotes are kept verbatim in the file (C(dyndbg=\"file foo.c +p\") round-trips
    byte-exact), and C(-) and C(_) are the same in a parameter name
    (C(nvidia-drm.modeset) matches C(nvidia_drm.modeset)). Arguments after C(--) belong
    to init and are left alone; new arguments go before it."
  - The drop-in is single-quoted shell (C(') written as C('\\'')), so it sources back to
    exactly the computed value.
options:
  args_present:
    description:
      - Arguments that must be present, C(key) (a bare flag such as C(quiet)) or C(key=value).
      - For a key not in O(repeatable_keys), every occurrence of the key is replaced by the
        wanted argument at the position of the first occurrence, so C(iommu=on) becomes
        C(iommu=pt) in place, C(amd_iommu=off) removes C(amd_iommu=on), and duplicates
        collapse. A bare C(key) is the flag itself; it replaces C(key=value).
      - Arguments not there yet are appended, in the order given.
    type: list
    elements: str
    default: []
  args_absent:
    description:
      - Arguments that must be absent. C(key) removes the key with any value and the bare
        flag; C(key=value) removes only that value.
      - An entry that matches an entry of O(args_present) is an error.
    type: list
    elements: str
    default: []
  variable:
    description: The variable to manage.
    type: str
    choices: [GRUB_CMDLINE_LINUX_DEFAULT, GRUB_CMDLINE_LINUX]
    default: GRUB_CMDLINE_LINUX_DEFAULT
  path:
    description:
      - The drop-in the module owns. Must be a C(*.cfg) file directly in C(<grub_dir>/grub.d),
        or C(grub-mkconfig) would not read it.
      - Defaults to C(<grub_dir>/grub.d/99-rigkeeper.cfg).
    type: path
  grub_dir:
    description: Directory holding C(grub) and C(grub.d/).
    type: path
    default: /etc/default
  cmdline_path:
    description: The running kernel's command line, read to compute RV(reboot_pending).
    type: path
    default: /proc/cmdline
  repeatable_keys:
    description:
      - Keys the kernel accepts several times, each adding to the others. For these,
        O(args_present) adds the exact argument when missing and keeps other values.
    type: list
    elements: str
    default: [console]
  backup:
    description:
      - Copy the drop-in to a timestamped file (not matching C(*.cfg)) before it is
        overwritten or removed.
    type: bool
    default: true
  state:
    description:
      - V(present) writes the drop-in as described.
      - V(absent) removes the drop-in (both variables); O(args_present) and O(args_absent)
        must then be empty.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The diff is the drop-in's text before and after.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - bash on the managed host
seealso:
  - name: GRUB manual, Simple configuration handling
    description: The variables C(grub-mkconfig) reads from C(/etc/default/grub).
    link: https://www.gnu.org/software/grub/manual/grub/html_node/Simple-configuration.html
'''

EXAMPLES = r'''
- name: Pass-through IOMMU and no mitigations, GPU servers
  grub_cmdline:
    args_present:
      - iommu=pt
      - amd_iommu=on
      - mitigations=off
    args_absent:
      - quiet
      - splash
  notify: Update grub

- name: Report only, on a drifted host
  grub_cmdline:
    args_present: [iommu=pt]
  check_mode: true
  register: kernel_cmdline

- name: Serial console for every boot entry, recovery included
  grub_cmdline:
    variable: GRUB_CMDLINE_LINUX
    args_present: ['console=ttyS0,115200n8']
  notify: Update grub

- name: Give the command line back to the distribution's files
  grub_cmdline:
    state: absent
  notify: Update grub
'''

RETURN = r'''
path:
  description: The drop-in.
  returned: always
  type: str
  sample: /etc/default/grub.d/99-rigkeeper.cfg
cmdline:
  description: The value of O(variable) that C(grub-mkconfig) computes after this run (in check mode, would compute).
  returned: always
  type: str
  sample: quiet splash iommu=pt
cmdline_before:
  description: The value of O(variable) before this run; null when the existing drop-in could not be evaluated.
  returned: always
  type: str
  sample: quiet splash iommu=on
linux_cmdline:
  description: The value of C(GRUB_CMDLINE_LINUX) after this run.
  returned: always
  type: str
  sample: console=tty1 console=ttyS0
kernel_args:
  description: The arguments the kernel gets from the default boot entry, C(GRUB_CMDLINE_LINUX) then C(GRUB_CMDLINE_LINUX_DEFAULT).
  returned: always
  type: list
  elements: str
  sample: [console=tty1, console=ttyS0, quiet, iommu=pt]
running_cmdline:
  description: The text of O(cmdline_path); null when it cannot be read.
  returned: always
  type: str
  sample: BOOT_IMAGE=/vmlinuz-6.8.0-45-generic root=/dev/sda1 ro quiet iommu=on
reboot_pending:
  description:
    - True when the running kernel lacks an argument of O(args_present) (or runs another value of its key),
      or runs an argument that O(args_absent) matches. With O(state=absent), when an argument the removal
      takes away is running, or one it brings in is not.
    - Null when RV(running_cmdline) is null. C(update-grub) must still run before a reboot.
  returned: always
  type: bool
  sample: true
backup_file:
  description: The backup of the drop-in.
  returned: when a backup was made
  type: str
  sample: /etc/default/grub.d/99-rigkeeper.cfg.2843.2025-01-31@10:02:11~
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_grub import (
    VARIABLES,
    GrubSourceError,
    apply_args,
    chain,
    check_conflicts,
    default_dropin_path,
    grub_files,
    is_dropin,
    kernel_args,
    parse_source_output,
    reboot_pending,
    reboot_pending_for_removal,
    render_dropin,
    render_value,
    source_command,
    split_args,
    validate_arg,
)

ENVIRON = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C', LC_CTYPE='C', BASH_ENV='', ENV='')


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            args_present=dict(type='list', elements='str', default=[]),
            args_absent=dict(type='list', elements='str', default=[]),
            variable=dict(type='str', default='GRUB_CMDLINE_LINUX_DEFAULT', choices=['GRUB_CMDLINE_LINUX_DEFAULT', 'GRUB_CMDLINE_LINUX']),
            path=dict(type='path'),
            grub_dir=dict(type='path', default='/etc/default'),
            cmdline_path=dict(type='path', default='/proc/cmdline'),
            repeatable_keys=dict(type='list', elements='str', default=['console'], no_log=False),
            backup=dict(type='bool', default=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
        ),
        supports_check_mode=True,
    )


class GrubCmdline(object):

    def __init__(self, module):
        self.module = module
        params = module.params
        self.grub_dir = params['grub_dir']
        self.path = os.path.abspath(params['path'] or default_dropin_path(self.grub_dir))
        self.variable = params['variable']
        self.args_present = params['args_present']
        self.args_absent = params['args_absent']
        self.repeatable_keys = params['repeatable_keys']
        self.state = params['state']
        self.bash = module.get_bin_path('bash', True)
        self.result = dict(changed=False, path=self.path)

    # -- the shell -----------------------------------------------------------

    def run(self, argv):
        return self.module.run_command(argv, environ_update=ENVIRON, expand_user_and_vars=False)

    def source(self, files):
        rc, stdout, stderr = self.run(source_command(self.bash, files))
        return parse_source_output(rc, stdout, stderr)

    def fail_source(self, error, files, **extra):
        self.module.fail_json(msg=error.msg, rc=error.rc, stdout=error.stdout, stderr=error.stderr,
                              files=files, path=self.path, **extra)

    # -- checks --------------------------------------------------------------

    def check_params(self):
        if self.state == 'absent' and (self.args_present or self.args_absent):
            self.module.fail_json(msg='args_present and args_absent must be empty with state=absent',
                                  path=self.path)
        try:
            for arg in self.args_present:
                validate_arg(arg, 'args_present')
            for arg in self.args_absent:
                validate_arg(arg, 'args_absent')
            check_conflicts(self.args_present, self.args_absent)
        except ValueError as error:
            self.module.fail_json(msg=to_native(error), path=self.path)
        if not is_dropin(self.grub_dir, self.path):
            self.module.fail_json(
                msg='path must be a *.cfg file directly in %s, or grub-mkconfig will not read it'
                    % os.path.join(self.grub_dir, 'grub.d'), path=self.path)
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            self.module.fail_json(msg='path exists and is not a regular file', path=self.path)

    def read_running(self):
        try:
            with open(self.module.params['cmdline_path'], 'rb') as handle:
                return to_text(handle.read(), errors='surrogate_or_strict').strip()
        except (IOError, OSError):
            return None

    # -- the work ------------------------------------------------------------

    def write_candidate(self, content, directory):
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(self.path), suffix='.tmp', dir=directory)
        try:
            os.write(fd, to_bytes(content, errors='surrogate_or_strict'))
        finally:
            os.close(fd)
        return tmp

    def validate(self, tmp, files, expected):
        """bash -n, then the whole chain with ``tmp`` in place of the drop-in."""
        rc, stdout, stderr = self.run([self.bash, '-n', tmp])
        if rc != 0:
            self.module.fail_json(msg='the new drop-in does not parse (bash -n); nothing was written',
                                  rc=rc, stdout=stdout, stderr=stderr, path=self.path)
        files_with_tmp, later = chain(files, self.path, tmp)
        try:
            after = self.source(files_with_tmp)
        except GrubSourceError as error:
            self.fail_source(error, files_with_tmp)
        self.check_effective(after, expected, later)
        return after

    def check_effective(self, after, expected, later):
        got = after[self.variable]
        if got == expected:
            return
        if later:
            msg = ('%s is reassigned by a drop-in that sorts after %s (%s), so grub-mkconfig would '
                   'not use the managed value; give path a name that sorts last'
                   % (self.variable, os.path.basename(self.path), ', '.join(later)))
        else:
            msg = 'the drop-in does not evaluate to the intended value; nothing was written'
        self.module.fail_json(msg=msg, expected=expected, got=got, path=self.path)

    def install(self, tmp):
        if self.module.params['backup'] and os.path.exists(self.path):
            self.result['backup_file'] = self.module.backup_local(self.path)
        self.module.atomic_move(tmp, self.path)

    def present(self, files, base, before, current):
        own = {}
        if current is not None:
            try:
                mine = self.source([self.path])
                own = dict((var, mine[var]) for var in VARIABLES
                           if var != self.variable and mine[var] is not None)
            except GrubSourceError:
                self.module.warn('%s does not evaluate on its own; it is rewritten from scratch' % self.path)

        old_value = base[self.variable] or ''
        tokens = apply_args(split_args(old_value), self.args_present, self.args_absent, self.repeatable_keys)
        new_value = render_value(old_value, tokens)

        if current is None and not own and tokens == split_args(old_value):
            # Nothing to change and no drop-in yet: none is needed.
            return None, base
        assignments = dict(own)
        assignments[self.variable] = new_value
        content = render_dropin(assignments)

        if content == current and before is not None:
            self.check_effective(before, new_value, chain(files, self.path)[1])
            return content, before

        self.result['changed'] = True
        if self.module.check_mode:
            directory = self.module.tmpdir
        else:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
        tmp = self.write_candidate(content, directory)
        try:
            after = self.validate(tmp, files, new_value)
            if not self.module.check_mode:
                self.install(tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return content, after

    def absent(self, base, current):
        if current is None:
            return None, base
        self.result['changed'] = True
        if not self.module.check_mode:
            if self.module.params['backup']:
                self.result['backup_file'] = self.module.backup_local(self.path)
            try:
                os.unlink(self.path)
            except OSError as error:
                self.module.fail_json(msg='cannot remove %s: %s' % (self.path, to_native(error)), path=self.path)
        return None, base

    def __call__(self):
        self.check_params()
        files = grub_files(self.grub_dir)
        current = None
        if self.path in files:
            with open(self.path, 'rb') as handle:
                current = to_text(handle.read(), errors='surrogate_or_strict')

        others = chain(files, self.path)[0]
        try:
            base = self.source(others)
        except GrubSourceError as error:
            self.fail_source(error, others)
        before = base
        if current is not None:
            try:
                before = self.source(files)
            except GrubSourceError:
                before = None

        if self.state == 'present':
            content, after = self.present(files, base, before, current)
        else:
            content, after = self.absent(base, current)

        running = self.read_running()
        if running is None:
            pending = None
        elif self.state == 'present':
            # A wanted argument missing or an unwanted one running, or one this change takes out of
            # GRUB's line (a kernel_params_extra dropped) that the running kernel still has.
            pending = (reboot_pending(running, self.args_present, self.args_absent, self.repeatable_keys)
                       or (before is not None
                           and reboot_pending_for_removal(running, kernel_args(before), kernel_args(after))))
        else:
            pending = reboot_pending_for_removal(
                running, kernel_args(before) if before else [], kernel_args(after))

        self.result.update(
            cmdline=after[self.variable] or '',
            cmdline_before=None if before is None else before[self.variable] or '',
            linux_cmdline=after['GRUB_CMDLINE_LINUX'] or '',
            kernel_args=kernel_args(after),
            running_cmdline=running,
            reboot_pending=pending,
        )
        if self.module._diff:
            self.result['diff'] = dict(before=current or '', after=content or '',
                                       before_header=self.path, after_header=self.path)
        self.module.exit_json(**self.result)


def main():
    module = build_module()
    GrubCmdline(module)()


if __name__ == '__main__':
    main()
