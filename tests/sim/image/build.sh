#!/usr/bin/env bash
# Build the simulated rig's base image: Debian 12 + systemd, made with mmdebstrap from Debian's
# archive and `docker import`ed.
#
#   build.sh TAG [SUITE] [MIRROR]
#
# Run by `simctl.py build` from an export of what git tracks in tests/sim/image (never from the
# working tree: a dirty or untracked file cannot reach an image); simctl tags the result
# rigkeeper-sim:<key>, where the key hashes that git tree, the suite and the mirror. Every
# directory the rig needs that no tracked file implies is made here from dirs.txt: git does not
# keep empty directories.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:?usage: build.sh TAG [SUITE] [MIRROR]}
suite=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}
pkgs=$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)
# The kernel the rig boots (Ubuntu 24.04's generic flavour, as a cloud image ships it: no headers).
kernel_release=6.8.0-51-generic kernel_version=6.8.0-51.52 kernel_meta=6.8.0.51.52
dirs=$(grep -v '^#' "$here/dirs.txt" | grep -v '^$' | tr '\n' ' ')
tar=$(mktemp --suffix=.tar)
debs=$(mktemp -d)
trap 'rm -rf "$tar" "$debs"' EXIT
"$here/kernel.sh" "$kernel_release" "$kernel_version" "$kernel_meta" "$debs"
echo "building $tag with mmdebstrap (Debian $suite, $mirror)"
mmdebstrap --quiet --variant=minbase --include="$pkgs" \
  --customize-hook="for d in $dirs; do mkdir -p \"\$1\$d\"; done" \
  --customize-hook="tar -C '$here/rootfs' -cf - . | tar -C \"\$1\" --no-same-owner -xf -" \
  --customize-hook="mkdir -p \"\$1/tmp/kernel\" && cp '$debs'/*.deb \"\$1/tmp/kernel/\"" \
  --customize-hook='chroot "$1" sh -c "dpkg -i /tmp/kernel/*.deb >/dev/null" && rm -rf "$1"/tmp/kernel "$1"/run/reboot-required* "$1"/var/lib/rigkeeper-sim' \
  --customize-hook='chroot "$1" systemctl enable rigkeeper-sim-boot.service' \
  --customize-hook='mkdir -p "$1"/etc/rigkeeper-sim && ln -sfn /usr/share/rigkeeper-sim/configs/2x4090.json "$1"/etc/rigkeeper-sim/gpus.json' \
  --customize-hook='chroot "$1" systemctl mask console-getty.service' \
  --customize-hook='chroot "$1" /usr/sbin/update-grub' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='chroot "$1" systemctl enable ssh-keygen-on-boot.service' \
  --customize-hook='echo rig > "$1"/etc/hostname; rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
  "$suite" "$tar" "$mirror"
docker import \
  -c 'CMD ["/lib/systemd/systemd"]' \
  -c 'ENV container=docker' \
  -c 'LABEL org.rigkeeper.sim=base' \
  "$tar" "$tag" >/dev/null
echo "built $tag"
