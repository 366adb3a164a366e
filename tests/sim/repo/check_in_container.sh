#!/usr/bin/env bash
# Check the simulator's repositories with the real apt/dpkg of the rig image:
#   tests/sim/repo/check_in_container.sh REPO_DIR [IMAGE]     (IMAGE defaults to rigkeeper-sim:latest)
# Runs a throwaway container (no systemd needed) with REPO_DIR mounted read-only at
# /srv/rigkeeper-sim/repo and goes through: the 535-server transitional trap and the pin that avoids
# it, a branch swap with the resulting version mismatch until "reboot", open modules,
# nvidia-persistenced, fabric manager refusal, power limits as root and as a user, cuda-keyring's
# Signed-By conflict, CUDA toolkits and their alternatives, cuDNN 8/9, the container toolkit.
set -euo pipefail
repo=$(cd "${1:?usage: $0 REPO_DIR [IMAGE]}" && pwd)
image=${2:-rigkeeper-sim:latest}
inner=$(mktemp)
trap 'rm -f "$inner"' EXIT
cat > "$inner" <<'EOF'
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
R=/srv/rigkeeper-sim/repo
cp $R/key/rigkeeper-sim.gpg /usr/share/keyrings/rigkeeper-sim.gpg
rm -f /etc/apt/sources.list.d/* /etc/apt/sources.list
sources() { grep '^deb' $R/sources.list.example | head -"$1" > /etc/apt/sources.list.d/rigkeeper-sim.list; apt-get update -qq; }
inst() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > /tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt-get install $*"; }; }
ver() { dpkg-query -W -f='${Version}' "$1"; }
reboot() { rm -rf /run/rigkeeper-sim; /usr/lib/rigkeeper-sim/sim-modprobe; }

sources 1   # Ubuntu archive only
echo "-- 535-server transitional trap"
inst nvidia-driver-535-server
expect "$(ver nvidia-utils-580-server)" 580.95.05-0ubuntu0.24.04.1 "535-server pulls 580-server"
expect "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)" 580.95.05 "driver after trap"
apt-get purge -y -qq 'nvidia-*' 'libnvidia-*' 'xserver-xorg-video-nvidia-*' > /dev/null; rm -rf /run/rigkeeper-sim
echo "-- pinned genuine 535-server"
printf 'Package: *-535-server\nPin: version 535.261.03-0ubuntu0.24.04.1\nPin-Priority: 1001\n' > /etc/apt/preferences.d/nvidia
inst nvidia-driver-535-server
expect "$(ver nvidia-utils-535-server)" 535.261.03-0ubuntu0.24.04.1 "pinned 535-server"
rm /etc/apt/preferences.d/nvidia
apt-get purge -y -qq 'nvidia-*' 'libnvidia-*' 'xserver-xorg-video-nvidia-*' > /dev/null; rm -rf /run/rigkeeper-sim
echo "-- 535 -> 580 without reboot: mismatch"
inst nvidia-driver-535
expect "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)" 535.261.03 "535 loaded"
inst nvidia-driver-580
set +e; out=$(nvidia-smi); rc=$?; set -e
expect "$rc" 18 "mismatch exit code"
expect "$out" "$(printf 'Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 580.95')" "mismatch text"
reboot
expect "$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)" 580.95.05 "after reboot"
echo "-- open modules"
inst nvidia-driver-580-open
expect "$(cat /usr/lib/rigkeeper-sim/kmod-type)" open "kmod type"
echo "-- persistenced (unit ships --no-persistence-mode)"
grep -q -- '--no-persistence-mode' /lib/systemd/system/nvidia-persistenced.service || fail "unit flag"
id nvidia-persistenced > /dev/null || fail "nvidia-persistenced user"
nvidia-persistenced --user nvidia-persistenced --persistence-mode --verbose
expect "$(nvidia-smi --query-gpu=persistence_mode --format=csv,noheader | sort -u)" Enabled "persistence on"
kill "$(cat /var/run/nvidia-persistenced/nvidia-persistenced.pid)"; sleep 0.5
expect "$(nvidia-smi --query-gpu=persistence_mode --format=csv,noheader | sort -u)" Disabled "persistence off"
echo "-- power limits"
set +e; nvidia-smi -i 1 -pl 700 > /tmp/o; rc=$?; set -e
expect "$rc" 2 "-pl out of range"
nvidia-smi -i 1 -pl 300 > /dev/null
set +e; su -s /bin/sh nobody -c 'nvidia-smi -i 0 -pl 300' > /tmp/o; rc=$?; set -e
expect "$rc" 4 "-pl as a user"
expect "$(nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits | tr '\n' ' ')" "450.00 300.00 " "limits"
echo "-- fabric manager on a 4090 rig"
inst nvidia-fabricmanager-580=580.95.05-0ubuntu0.24.04.1
set +e; nv-fabricmanager -c /usr/share/nvidia/nvswitch/fabricmanager.cfg > /tmp/o; rc=$?; set -e
expect "$rc" 1 "fabric manager without NVSwitch"
echo "-- CUDA repo"
sources 3
inst cuda-keyring
cmp -s /usr/share/keyrings/cuda-archive-keyring.gpg /usr/share/keyrings/rigkeeper-sim.gpg || fail "cuda keyring"
if apt-get update -qq 2> /tmp/err; then fail "two Signed-By values for one source should conflict"; fi
grep -q "Conflicting values set for option Signed-By" /tmp/err || fail "Signed-By conflict text"
rm /etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list; apt-get update -qq
inst cuda-toolkit-12-4 cuda-toolkit-12-8
expect "$(readlink -f /usr/local/cuda)" /usr/local/cuda-12.8 "highest toolkit wins"
update-alternatives --set cuda /usr/local/cuda-12.4 > /dev/null
/usr/local/cuda/bin/nvcc --version | grep -q "release 12.4, V12.4.131" || fail "nvcc 12.4"
inst libcudnn8=8.9.7.29-1+cuda12.2 libcudnn8-dev=8.9.7.29-1+cuda12.2
grep -q "define CUDNN_MAJOR 8" /usr/include/cudnn_version.h || fail "cudnn 8 header"
inst cudnn9-cuda-12
grep -q "define CUDNN_MAJOR 9" /usr/include/cudnn_version.h || fail "cudnn 9 header wins"
inst cuda-drivers-580
expect "$(ver nvidia-driver-580)" 580.95.05-0ubuntu1 "cuda repo driver"
echo "-- container toolkit"
inst nvidia-container-toolkit=1.17.8-1 nvidia-container-toolkit-base=1.17.8-1
nvidia-ctk --version | grep -q "version 1.17.8" || fail "ctk version"
mkdir -p /etc/docker; echo '{"log-driver": "journald"}' > /etc/docker/daemon.json
nvidia-ctk runtime configure --runtime=docker --set-as-default 2> /dev/null
python3 -c 'import json; d=json.load(open("/etc/docker/daemon.json")); assert d["log-driver"]=="journald" and d["default-runtime"]=="nvidia" and d["runtimes"]["nvidia"]=={"args":[],"path":"nvidia-container-runtime"}, d'
nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml 2> /dev/null
grep -q "kind: nvidia.com/gpu" /etc/cdi/nvidia.yaml || fail "cdi spec"
echo "ALL CHECKS PASSED"
EOF
docker run --rm -v "$repo:/srv/rigkeeper-sim/repo:ro" -v "$inner:/check.sh:ro" "$image" bash /check.sh
