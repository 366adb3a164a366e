#!/usr/bin/env bash
# Build the simulated rig's base image: Debian 12 + systemd, made with mmdebstrap from Debian's
# archive and `docker import`ed. Rebuilt only when this recipe (this folder) changes: the image is
# tagged rigkeeper-sim:<hash of the recipe> and rigkeeper-sim:latest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${RIGKEEPER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
hash=$(cd "$here" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
tag="rigkeeper-sim:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" rigkeeper-sim:latest
  echo "base image $tag is current"
  exit 0
fi
pkgs=$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)
tar=$(mktemp --suffix=.tar)
trap 'rm -f "$tar"' EXIT
echo "building $tag with mmdebstrap (Debian 12, $mirror)"
mmdebstrap --quiet --variant=minbase --include="$pkgs" \
  --customize-hook="tar -C '$here/rootfs' -cf - . | tar -C \"\$1\" --no-same-owner -xf -" \
  --customize-hook='chroot "$1" systemctl enable rigkeeper-sim-boot.service' \
  --customize-hook='mkdir -p "$1"/etc/rigkeeper-sim && ln -sfn /usr/share/rigkeeper-sim/configs/2x4090.json "$1"/etc/rigkeeper-sim/gpus.json' \
  --customize-hook='chroot "$1" systemctl mask console-getty.service' \
  --customize-hook='chroot "$1" /usr/sbin/update-grub' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='chroot "$1" systemctl enable ssh-keygen-on-boot.service' \
  --customize-hook='echo rig > "$1"/etc/hostname; rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
  bookworm "$tar" "$mirror"
docker import \
  -c 'CMD ["/lib/systemd/systemd"]' \
  -c 'ENV container=docker' \
  -c 'LABEL org.rigkeeper.sim=base' \
  "$tar" "$tag" >/dev/null
docker tag "$tag" rigkeeper-sim:latest
echo "built $tag"
