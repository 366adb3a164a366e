#!/usr/bin/env bash
# The drift audit on a real GPU server, read-only, timed against its floor.
#
#   [RK_WANTS=VARS.yml] [RK_COLLECTION=rigkeeper-gpu-X.tar.gz] tests/hardware/audit-readonly.sh [REPORT_DIR] [REPEAT]
#
# The audit is rigkeeper.gpu.audit: this repository as the collection (the link ./rk makes, made here
# when missing), or with RK_COLLECTION the built collection installed into REPORT_DIR/collections
# and run the way a user runs it: from REPORT_DIR, no ansible.cfg, the callback enabled by FQCN.
#
# Behind the guard of tests/hardware/guard.sh (every call that changes the machine is refused):
#  - the GPU state every GPU reports (power limit, persistence, application clocks, compute mode)
#    is read before and after, and must read the same;
#  - the floor (a play that only gathers facts, one module call) and playbooks/audit.yml (--check,
#    local connection) run REPEAT times each (default 3), the medians are printed with their ratio;
#  - the audit must run to the end and report every role: ok, drift or not managed, never ERROR
#    (absent components are drift on a server rigkeeper never converged);
#  - the guard must have refused nothing and seen the facts' nvidia-smi call;
#  - the audit's output must hold no deprecation warning.
# Needs Python >= 3.11 with ansible-core importable (PYTHONPATH to carried wheels where the server
# has no package registry).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/reports/hardware-audit}
repeat=${2:-3}
mkdir -p "$out"
guard=$(mktemp -d)
log="$out/guard.log"
# shellcheck source=tests/hardware/guard.sh
source "$root/tests/hardware/guard.sh"
rk_guard_install "$guard" "$log"

py=${PYTHON:-python3}
export RIGKEEPER_REPORT_DIR="$out" ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCAL_TEMP="$out/.ansible-tmp" ANSIBLE_REMOTE_TEMP="$out/.ansible-tmp"
if [ -n "${RK_COLLECTION:-}" ]; then
  RK_COLLECTION=$(cd "$(dirname "$RK_COLLECTION")" && pwd)/$(basename "$RK_COLLECTION")
  [ -z "${RK_WANTS:-}" ] || RK_WANTS=$(cd "$(dirname "$RK_WANTS")" && pwd)/$(basename "$RK_WANTS")
  unset ANSIBLE_CONFIG
  export ANSIBLE_COLLECTIONS_PATH="$out/collections" ANSIBLE_CALLBACKS_ENABLED=rigkeeper.gpu.rigkeeper_report
  cd "$out"
  "$py" -m ansible.cli.galaxy collection install --force -p "$out/collections" "$RK_COLLECTION"
else
  export ANSIBLE_CONFIG="$root/ansible.cfg"
  rk_link_collection "$root"
  cd "$root"
fi
"$py" -m ansible.cli.adhoc --version | head -1
common=(-i localhost, -c local -e "ansible_python_interpreter=$(command -v "$py")")
# RK_WANTS: a vars file with the host's wants (tests/hardware/h200-wants.yml), else the role defaults.
if [ -n "${RK_WANTS:-}" ]; then common+=(-e "@$RK_WANTS"); fi

state() {
  nvidia-smi --query-gpu=index,pci.bus_id,power.limit,persistence_mode,clocks.applications.graphics,compute_mode \
    --format=csv,noheader 2>&1 || true
}
before=$(state)
echo "== GPU state before"
echo "$before"

floor_play="$out/floor.yml"
printf -- '- hosts: all\n  gather_facts: true\n  tasks: []\n' > "$floor_play"

timeit() {  # timeit LABEL CMD... : prints seconds, keeps the last run's output in $out/LABEL.log
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$out/$label.log" 2>&1 || true
  t1=$(date +%s.%N)
  "$py" -c "print(round($t1 - $t0, 3))"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

floors=() audits=()
for _ in $(seq "$repeat"); do
  floors+=("$(timeit floor "$py" -m ansible.cli.playbook "${common[@]}" "$floor_play")")
  audits+=("$(timeit audit "$py" -m ansible.cli.playbook "${common[@]}" rigkeeper.gpu.audit --check)")
done
floor=$(printf '%s\n' "${floors[@]}" | median)
audit=$(printf '%s\n' "${audits[@]}" | median)
after=$(state)

echo "== the audit's report"
cat "$out/audit.md" 2>/dev/null || { echo "no report: the audit did not run to the end" >&2; tail -50 "$out/audit.log"; exit 5; }
echo "== GPU state after"
echo "$after"
echo "== calls seen by the guard"
cat "$log"
printf '== timings (median of %s): floor %.2f s, audit %.2f s, audit/floor %.2f\n' "$repeat" "$floor" "$audit" \
  "$("$py" -c "print($audit / $floor)")"
echo "floor runs: ${floors[*]}; audit runs: ${audits[*]}"

status=0
if [ "$before" != "$after" ]; then
  echo "the GPU state changed during the audit" >&2; status=3
fi
if grep -E 'DEPRECATION WARNING|DeprecationWarning' "$out/audit.log"; then
  echo "the audit printed a deprecation warning (above)" >&2; status=7
fi
if grep -q '^REFUSED' "$log"; then
  echo "the guard refused a state-changing call: see above" >&2; status=3
fi
if command -v nvidia-smi >/dev/null 2>&1 && ! grep -q '^passed: nvidia-smi -q -x' "$log"; then
  echo "the guard saw no nvidia-smi -q -x: the facts bypassed it, so this run proves nothing" >&2; status=4
fi
if "$py" - "$out/audit.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
bad = {(h, c): v["status"] for h, checks in summary["hosts"].items() for c, v in checks.items()
       if v["status"] in ("error", "not reached")}
print("roles reported:", {c: v["status"] for checks in summary["hosts"].values() for c, v in checks.items()})
sys.exit(1 if bad else 0)
PY
then :; else
  echo "the audit reported an ERROR (see audit.md): it must report each role's state" >&2; status=6
fi
exit $status
