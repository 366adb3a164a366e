#!/usr/bin/env bash
# Read-only run of rigkeeper's facts and preflight on a real GPU server, against localhost.
#
#   tests/hardware/run-readonly.sh [REPORT_DIR]
#
# Safe by construction, in three layers:
#  1. a guard `nvidia-smi` first in PATH refuses, loudly and with exit 97, every argument that changes
#     GPU state (-pm -pl -ac -rac -lgc -rgc -lmc -rmc -r -c -mig -e -am -caa --gom and their long
#     forms) and logs every call it passes through to the real binary;
#  2. both playbooks run with --check;
#  3. only read-only roles run (gpu_facts, preflight with every check set to warn).
# Needs Python >= 3.11 with ansible-core importable (the device run installs it from carried wheels).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/reports/hardware}
mkdir -p "$out"
guard=$(mktemp -d)
real=$(command -v nvidia-smi || true)
log="$out/nvidia-smi-guard.log"
: > "$log"

cat > "$guard/nvidia-smi" <<GUARD
#!/usr/bin/env bash
# rigkeeper read-only guard: state-changing nvidia-smi arguments are refused.
for a in "\$@"; do
  case "\$a" in
    -pm|-pl|-ac|-rac|-lgc|-rgc|-lmc|-rmc|-r|-c|-mig|-e|-am|-caa|--gom|\
    --persistence-mode*|--power-limit*|--applications-clocks*|--reset-applications-clocks|\
    --lock-gpu-clocks*|--reset-gpu-clocks|--lock-memory-clocks*|--reset-memory-clocks|\
    --gpu-reset|--compute-mode*|--multi-instance-gpu*|--ecc-config*|--accounting-mode*|\
    --clear-accounted-apps|--gom=*|-pm=*|-pl=*|-c=*|-e=*|-am=*)
      echo "REFUSED: nvidia-smi \$* (state-changing argument '\$a')" | tee -a "$log" >&2
      exit 97 ;;
  esac
done
echo "passed: nvidia-smi \$*" >> "$log"
[ -n "$real" ] || { echo "nvidia-smi: command not found (no driver on this host)" >&2; exit 127; }
exec "$real" "\$@"
GUARD
chmod +x "$guard/nvidia-smi"
export PATH="$guard:$PATH"

# Prove the guard before trusting it: a refused call must fail and change nothing.
if nvidia-smi -pl 1 >/dev/null 2>&1; then
  echo "guard self-test failed: -pl was not refused" >&2; exit 1
fi
sed -i 's/^REFUSED: nvidia-smi -pl 1 .*/self-test: -pl refused as expected/' "$log"

py=${PYTHON:-python3}
export ANSIBLE_CONFIG="$root/ansible.cfg" RIGKEEPER_REPORT_DIR="$out" ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCAL_TEMP="$out/.ansible-tmp" ANSIBLE_REMOTE_TEMP="$out/.ansible-tmp"
cd "$root"
common=(-i localhost, -c local -e "ansible_python_interpreter=$(command -v "$py")" --check --diff)
set +e
"$py" -m ansible.cli.playbook "${common[@]}" playbooks/facts.yml 2>&1 | tee "$out/facts.log"
rc1=${PIPESTATUS[0]}
"$py" -m ansible.cli.playbook "${common[@]}" playbooks/preflight.yml \
  -e '{"preflight_severities": {"pcie_link": "warn", "ram_vs_vram": "warn", "psu_budget": "warn", "p2p_iommu": "warn", "known_bad_driver": "warn", "gpu_count": "warn"}}' \
  2>&1 | tee "$out/preflight.log"
rc2=${PIPESTATUS[0]}
set -e
echo "== nvidia-smi calls seen by the guard"
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
