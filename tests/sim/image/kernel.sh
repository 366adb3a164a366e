#!/bin/sh
# Build the fake kernel packages the base image ships (run by build.sh, installed with dpkg in the
# image): linux-image-<release> and the linux-image-generic metapackage, with Ubuntu's names and
# version strings. An Ubuntu server has one kernel installed and no headers when it comes from a
# cloud image; the simulated archive (tests/sim/repo/catalog.py) offers the same packages and their
# headers. The image is a placeholder; the scripts are what matters: a kernel's postinst runs
# /etc/kernel/postinst.d (DKMS), the initramfs, GRUB and the reboot-required flag, done by the
# simulator's kernel (/usr/lib/rigkeeper-sim/simkernel.py kernel-postinst).
#   kernel.sh RELEASE VERSION META_VERSION OUTDIR     e.g. 6.8.0-51-generic 6.8.0-51.52 6.8.0.51.52 /tmp/k
set -eu
release=$1 version=$2 meta=$3 out=$4
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
img=$stage/image
mkdir -p "$img/DEBIAN" "$img/boot" "$img/lib/modules/$release/kernel"
echo "rigkeeper simulator kernel image $release" > "$img/boot/vmlinuz-$release"
printf 'CONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\nCONFIG_SECURITY_LOCKDOWN_LSM=y\n' > "$img/boot/config-$release"
: > "$img/lib/modules/$release/modules.order"
cat > "$img/DEBIAN/control" <<CTL
Package: linux-image-$release
Source: linux-signed
Version: $version
Architecture: amd64
Maintainer: Canonical Kernel Team <kernel-team@lists.ubuntu.com>
Installed-Size: 16
Provides: linux-image, fuse-module, kvm-api-4, redhat-cluster-modules, ivtv-modules, virtualbox-guest-modules
Section: kernel
Priority: optional
Description: Signed kernel image generic
 A kernel image for generic (rigkeeper simulator placeholder).
CTL
cat > "$img/DEBIAN/postinst" <<SH
#!/bin/sh
set -e
[ "\$1" = configure ] && /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py kernel-postinst $release
exit 0
SH
cat > "$img/DEBIAN/postrm" <<SH
#!/bin/sh
set -e
[ "\$1" = remove ] || [ "\$1" = purge ] || exit 0
[ -x /usr/lib/rigkeeper-sim/simkernel.py ] && /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py kernel-postrm $release
exit 0
SH
chmod 0755 "$img/DEBIAN/postinst" "$img/DEBIAN/postrm"
meta_dir=$stage/meta
mkdir -p "$meta_dir/DEBIAN"
cat > "$meta_dir/DEBIAN/control" <<CTL
Package: linux-image-generic
Source: linux-meta
Version: $meta
Architecture: amd64
Maintainer: Canonical Kernel Team <kernel-team@lists.ubuntu.com>
Installed-Size: 1
Depends: linux-image-$release
Section: kernel
Priority: optional
Description: Generic Linux kernel image
 This package will always depend on the latest generic kernel image available.
CTL
mkdir -p "$out"
dpkg-deb --root-owner-group -Zgzip --build "$img" "$out/linux-image-${release}_${version}_amd64.deb" >/dev/null
dpkg-deb --root-owner-group -Zgzip --build "$meta_dir" "$out/linux-image-generic_${meta}_amd64.deb" >/dev/null
