#!/usr/bin/env bash
# Read-only P2P measurement on a real GPU server: build roles/p2p_check's program with the host's
# CUDA toolkit and run it, behind the read-only guard.
#
#   tests/hardware/p2p-readonly.sh [OUT_DIR]
#
# Prints (and writes to OUT_DIR): `nvidia-smi topo -m`, `topo -p2p r|w|n|a`, the program's JSON for
# every GPU (--device: device-to-device, host-to-device and device-to-host copy bandwidth) and every
# pair (--pair: peer access off and on), and the GPU state read before and after, which must match.
# Nothing on the machine changes: the guard (tests/hardware/guard.sh) refuses every state-changing
# call, the program is built in a temporary directory, each run has a hard timeout, and the script
# fails if the guard refused anything or saw no nvidia-smi call.
# NVCC (default /usr/local/cuda/bin/nvcc), P2P_SIZE_MIB (64, pairs), LOCAL_SIZE_MIB (1024),
# ITERS (20) and RUN_TIMEOUT (120 s a run) can be set in the environment. With P2P_PLAYBOOK=1 it
# then runs playbooks/p2p_check.yml against localhost behind the same guard (the role builds into the
# temporary directory, not /var/lib/rigkeeper); that needs Python >= 3.11 with ansible-core
# importable (PYTHON, default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/reports/hardware-p2p}
mkdir -p "$out"
guard=$(mktemp -d)
log="$out/guard.log"
# shellcheck source=tests/hardware/guard.sh
source "$root/tests/hardware/guard.sh"
rk_link_collection "$root"
rk_guard_install "$guard" "$log"

nvcc=${NVCC:-/usr/local/cuda/bin/nvcc}
pair_mib=${P2P_SIZE_MIB:-64}
local_mib=${LOCAL_SIZE_MIB:-1024}
iters=${ITERS:-20}
limit=${RUN_TIMEOUT:-120}
src="$root/roles/p2p_check/files/p2p_bench.cu"
work=$(mktemp -d)
trap 'rm -rf "$work" "$guard"' EXIT

state() {
  nvidia-smi --query-gpu=index,pci.bus_id,persistence_mode,power.limit,compute_mode,clocks.applications.graphics,mig.mode.current \
    --format=csv,noheader
}

echo "== GPU state before"
state | tee "$out/state-before.csv"

echo "== nvidia-smi topo -m"
nvidia-smi topo -m | tee "$out/topo-m.txt"
for k in r w n a; do
  echo "== nvidia-smi topo -p2p $k"
  nvidia-smi topo -p2p "$k" | tee "$out/topo-p2p-$k.txt"
done

echo "== build with $("$nvcc" --version | tail -n 2 | head -n 1)"
# SASS for each GPU's compute capability, as roles/p2p_check builds it (no PTX JIT at start).
mapfile -t caps < <(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d ' .' | sort -u)
gencode=()
for c in "${caps[@]}"; do gencode+=(-gencode "arch=compute_$c,code=[sm_$c,compute_$c]"); done
t0=$(date +%s.%N)
"$nvcc" -O2 -std=c++17 "${gencode[@]}" -o "$work/p2p_bench" "$src"
t1=$(date +%s.%N)
echo "built in $(python3 -c "print(round($t1 - $t0, 1))") s: sha256 $(sha256sum "$src" | cut -c1-16) of the source"

run() {
  local name=$1
  shift
  echo "== p2p_bench $*"
  set +e
  timeout --kill-after=10 "$limit" "$work/p2p_bench" "$@" > "$out/$name.json" 2> "$out/$name.stderr"
  local rc=$?
  set -e
  cat "$out/$name.json"
  echo "rc=$rc ($(tail -n 1 "$out/$name.stderr"))"
  [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "TIMEOUT after ${limit}s: a hang is a finding" >&2
}

run list --list
count=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
for ((i = 0; i < count; i++)); do
  run "device$i" --device "$i" --size-mib "$local_mib" --iters "$iters"
done
for ((i = 0; i < count; i++)); do
  for ((j = i + 1; j < count; j++)); do
    run "pair$i-$j" --pair "$i" "$j" --size-mib "$pair_mib" --iters "$iters"
  done
done

if [ "${P2P_PLAYBOOK:-0}" = 1 ]; then
  echo "== playbooks/p2p_check.yml (role p2p_check) against localhost"
  py=${PYTHON:-python3}
  mkdir -p "$work/ansible-tmp"
  set +e
  (cd "$root" && ANSIBLE_CONFIG="$root/ansible.cfg" RIGKEEPER_REPORT_DIR="$out" ANSIBLE_NOCOLOR=1 \
     ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" ANSIBLE_REMOTE_TEMP="$work/ansible-tmp" \
     "$py" -m ansible.cli.playbook -i localhost, -c local -e "ansible_python_interpreter=$(command -v "$py")" \
       -e "p2p_check_dir=$work/role-build" -e p2p_check_fail_on_findings=false \
       -e "p2p_check_local_size_mib=$local_mib" -e "p2p_check_iters=$iters" playbooks/p2p_check.yml) 2>&1 \
    | tee "$out/p2p-check.log"
  prc=${PIPESTATUS[0]}
  set -e
  echo "playbook rc=$prc"
fi

echo "== GPU state after"
state | tee "$out/state-after.csv"
echo "== calls seen by the guard"
cat "$log"
if ! grep -q '^passed: nvidia-smi topo -p2p r' "$log"; then
  echo "the guard saw no nvidia-smi call: this run proves nothing" >&2
  exit 4
fi
if grep -q '^REFUSED' "$log"; then
  echo "the guard refused a state-changing call: see above" >&2
  exit 3
fi
if ! diff -u "$out/state-before.csv" "$out/state-after.csv"; then
  echo "the GPU state changed during the run" >&2
  exit 5
fi
echo "GPU state unchanged; guard refused nothing"
[ "${prc:-0}" -eq 0 ]
