#!/usr/bin/env bash
# Installs what `npm run bench` compares the daemon against (Debian 12), only what is missing.
# Not part of the CI test path: the benchmarks are not part of `npm test`.
set -euo pipefail
PACKAGES=(
  qemu-utils        # qemu-img: the bare create loop, and the images of the listing benchmark
  libvirt-daemon    # libvirtd: the dir storage pool peer
  libvirt-clients   # virsh: vol-list --details, vol-create-as
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench packages: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "bench packages: all present"
fi
# libvirtd's QEMU driver refuses to start without the user and group it runs guests as (TOOLCHAIN.md);
# Debian's libvirt-daemon-system would make them, but it also starts system services we do not need.
getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null || $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu
