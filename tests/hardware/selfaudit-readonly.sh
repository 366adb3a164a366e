#!/usr/bin/env bash
# The host's self-audit (plugins/module_utils/rigkeeper_selfaudit.py) on a real GPU server, read-only.
#
#   [RK_WANTS=VARS.yml] tests/hardware/selfaudit-readonly.sh [OUT_DIR] [REPEAT]
#
# Behind the guard of tests/hardware/guard.sh: the wanted state is compiled (nothing applied) into
# OUT_DIR, then the self-audit runs REPEAT times (default 5) from a copy of exactly the files the
# monitoring role ships, under python3 -I, writing its metrics and state into OUT_DIR only. Prints
# the metrics, the median wall and CPU time of a run; fails when the GPU state changed, the guard
# refused a call or saw no nvidia-smi -q -x, or a run did not succeed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/reports/hardware-selfaudit}
repeat=${2:-5}
mkdir -p "$out/code"
guard=$(mktemp -d)
log="$out/guard.log"
# shellcheck source=tests/hardware/guard.sh
source "$root/tests/hardware/guard.sh"
rk_link_collection "$root"
rk_guard_install "$guard" "$log"
py=${PYTHON:-python3}
export ANSIBLE_CONFIG="$root/ansible.cfg" RIGKEEPER_REPORT_DIR="$out" ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCAL_TEMP="$out/.ansible-tmp" ANSIBLE_REMOTE_TEMP="$out/.ansible-tmp"
cd "$root"
common=(-i localhost, -c local -e "ansible_python_interpreter=$(command -v "$py")" -e "selfaudit_out=$out")
if [ -n "${RK_WANTS:-}" ]; then common+=(-e "@$RK_WANTS"); fi
state() {
  nvidia-smi --query-gpu=index,pci.bus_id,power.limit,persistence_mode,clocks.applications.graphics,compute_mode \
    --format=csv,noheader 2>&1 || true
}
before=$(state)
"$py" -m ansible.cli.playbook "${common[@]}" tests/hardware/selfaudit-wanted.yml > "$out/compile.log" 2>&1 \
  || { tail -40 "$out/compile.log"; exit 5; }
# Exactly what the monitoring role ships (plugins/filter/rigkeeper_wanted.py: SELFAUDIT_FILES).
files=$("$py" -c "import sys; sys.path.insert(0, 'plugins/filter'); import rigkeeper_wanted as w; print(' '.join(w.SELFAUDIT_FILES))")
for f in $files; do cp "plugins/module_utils/$f" "$out/code/$f"; done
"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
json.dump({"wanted_path": out + "/wanted.json", "metrics_path": out + "/rigkeeper.prom",
           "state_path": out + "/selfaudit.json", "p2p_path": out + "/none.json", "interval_s": 300,
           "facts": {}}, open(out + "/config.json", "w"))
PY
status=0
for _ in $(seq "$repeat"); do
  "$py" -I "$out/code/rigkeeper_selfaudit.py" --config "$out/config.json" > "$out/run.log" 2>&1 || status=7
  "$py" -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['duration_s'], s['cpu_s'])" "$out/selfaudit.json" >> "$out/times.txt"
done
after=$(state)
echo "== metrics of the last run"
cat "$out/rigkeeper.prom"
echo "== findings of the last run"
"$py" -I "$out/code/rigkeeper_selfaudit.py" --config "$out/config.json" --show 2>&1 | tail -40 || true
echo "== calls seen by the guard"
sort "$log" | uniq -c
"$py" - "$out/times.txt" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
print("== self-audit runs: %d, median wall %.3f s, median CPU %.3f s (max CPU %.3f s)" % (
    len(rows), statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows), max(r[1] for r in rows)))
PY
if [ "$before" != "$after" ]; then echo "the GPU state changed" >&2; status=3; fi
if grep -q '^REFUSED' "$log"; then echo "the guard refused a state-changing call" >&2; status=3; fi
if command -v nvidia-smi >/dev/null 2>&1 && ! grep -q '^passed: nvidia-smi -q -x' "$log"; then
  echo "the guard saw no nvidia-smi -q -x: this run proves nothing" >&2; status=4
fi
exit $status
