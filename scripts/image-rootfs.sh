#!/usr/bin/env bash
# Lays out the root file system of the agent-mesh container image:
#   scripts/image-rootfs.sh BINARY ROOTFS
# The binary, the shared libraries it loads (found with ldd), a non-root user
# (65532, "nonroot"), the default node config, and the folders the node uses,
# those it writes owned by that user. The Dockerfile runs it in its build
# stage and scripts/build-image.sh runs it here on an already built binary,
# so both paths produce the same image.
set -euo pipefail

die() { echo "image-rootfs: $*" >&2; exit 1; }
[[ $# -eq 2 ]] || die "usage: $0 BINARY ROOTFS"
BIN="$1"
ROOTFS="$2"
HERE="$(cd "$(dirname "$0")" && pwd)"
[[ -x "$BIN" ]] || die "$BIN is not an executable"
command -v ldd >/dev/null || die "ldd is needed to find the binary's libraries"

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/agent-mesh/identity" "$ROOTFS/etc/agent-mesh/ca" \
  "$ROOTFS/etc/agent-mesh/identities" "$ROOTFS/var/lib/agent-mesh" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp "$BIN" "$ROOTFS/usr/local/bin/agent-mesh"
# Debug information is for the build machine, not the image.
if command -v strip >/dev/null; then strip --strip-debug "$ROOTFS/usr/local/bin/agent-mesh"; fi

# Every library the dynamic loader resolves, and the loader itself, at its own path.
ldd "$BIN" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/agent-mesh:/sbin/nologin\n' \
  > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ROOTFS/etc/group"
printf 'hosts: files dns\n' > "$ROOTFS/etc/nsswitch.conf"
cp "$HERE/../deploy/container/node.toml" "$ROOTFS/etc/agent-mesh/node.toml"
# The data folder, and the folder `ca provision` fills in a one-shot container
# (a new named volume mounted there takes the folder's owner).
chown 65532:65532 "$ROOTFS/var/lib/agent-mesh" "$ROOTFS/etc/agent-mesh/identities"
chmod 0750 "$ROOTFS/var/lib/agent-mesh" "$ROOTFS/etc/agent-mesh/identities"
