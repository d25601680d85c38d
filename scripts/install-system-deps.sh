#!/usr/bin/env bash
# Installs the system tools the daemon and its tests use (Debian 12), only those missing.
set -euo pipefail
PACKAGES=(
  qemu-utils         # qemu-img, qemu-io: every image operation
  qemu-block-extra   # qemu-img on iscsi:// and rbd: URLs (export tests)
  cloud-image-utils  # cloud-localds: cloud-init seed ISOs
  tgt                # tgtd/tgtadm: the user-space iSCSI target
  libiscsi-bin       # iscsi-ls, iscsi-inq: real initiators for the export tests
  genisoimage        # ISO images for the ISO volume tests
  xorriso            # adds a cloud-init set's extra scripts to its seed ISO; reads ISO images back in tests
  xfsprogs           # mkfs.xfs with reflink, for clone tests
  e2fsprogs          # mkfs.ext4 for file-system "unique" roots
  rsync              # the rsync clone algorithm
  rclone             # the rclone clone algorithm (alg: rclone; 501 without it)
  glusterfs-server   # glusterd: two daemons on one Gluster volume mounted twice (test/integration/shared-tree.test.ts)
  glusterfs-client   # mount -t glusterfs, for the same test
  ceph-common        # rbd: Ceph volumes (ELEMENTO_CEPH_POOL)
  tgt-rbd            # tgt's rbd backing store: Ceph volumes exported over iSCSI
  ceph-mon           # a private single-node cluster for the Ceph tests (test/helpers/ceph.ts)
  ceph-osd           # its memstore OSD
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
