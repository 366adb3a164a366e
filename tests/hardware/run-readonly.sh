#!/usr/bin/env bash
# Read-only run of rigkeeper's facts and preflight on a real GPU server, against localhost.
#
#   tests/hardware/run-readonly.sh [REPORT_DIR]
#
# Safe by construction, in three layers:
#  1. guards first in PATH (tests/hardware/guard.sh) refuse, loudly and with exit 97, every call that
#     changes the machine: state-changing nvidia-smi arguments, setpci writes, modprobe/rmmod,
#     reboot/shutdown, nvidia-persistenced, update-initramfs, systemctl verbs that are not queries and
#     package manager calls that are not queries; they log every call they pass to the real tool;
#  2. both playbooks run with --check;
#  3. only read-only roles run (gpu_facts, preflight with every check set to warn).
# Needs Python >= 3.11 with ansible-core importable (the device run installs it from carried wheels).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/reports/hardware}
mkdir -p "$out"
guard=$(mktemp -d)
log="$out/guard.log"
real=$(command -v nvidia-smi || true)
# shellcheck source=tests/hardware/guard.sh
source "$root/tests/hardware/guard.sh"
rk_link_collection "$root"
rk_guard_install "$guard" "$log"

py=${PYTHON:-python3}
export ANSIBLE_CONFIG="$root/ansible.cfg" RIGKEEPER_REPORT_DIR="$out" ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCAL_TEMP="$out/.ansible-tmp" ANSIBLE_REMOTE_TEMP="$out/.ansible-tmp"
cd "$root"
common=(-i localhost, -c local -e "ansible_python_interpreter=$(command -v "$py")" --check --diff)
set +e
"$py" -m ansible.cli.playbook "${common[@]}" playbooks/facts.yml 2>&1 | tee "$out/facts.log"
rc1=${PIPESTATUS[0]}
"$py" -m ansible.cli.playbook "${common[@]}" playbooks/preflight.yml \
  -e '{"preflight_severities": {"pcie_link": "warn", "ram_vs_vram": "warn", "psu_budget": "warn", "p2p_iommu": "warn", "known_bad_driver": "warn", "gpu_count": "warn", "runfile": "warn"}}' \
  2>&1 | tee "$out/preflight.log"
rc2=${PIPESTATUS[0]}
set -e
echo "== calls seen by the guard"
cat "$log"
if [ -n "$real" ] && ! grep -q '^passed: nvidia-smi -q -x' "$log"; then
  echo "the guard saw no nvidia-smi call: the facts module bypassed it, so this run proves nothing" >&2
  exit 4
fi
if grep -q '^REFUSED' "$log"; then
  echo "the guard refused a state-changing call: see above" >&2
  exit 3
fi
echo "facts rc=$rc1 preflight rc=$rc2"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ]
