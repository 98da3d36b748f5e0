#!/usr/bin/env bash
# Builds the agent-mesh container image around a binary that is already built,
# with no compiler and no registry (the base is `scratch`):
#   scripts/build-image.sh [BINARY] [TAG...]
# BINARY defaults to target/release/agent-mesh, else target/debug/agent-mesh;
# tags default to agent-mesh:latest and agent-mesh:<version>. The image is the
# Dockerfile's final stage, fed the root file system scripts/image-rootfs.sh
# lays out, so it is the image `docker build .` makes from source.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "build-image: $*" >&2; exit 1; }

BIN="${1:-}"
if [[ -z "$BIN" ]]; then
  for candidate in "$ROOT/target/release/agent-mesh" "$ROOT/target/debug/agent-mesh"; do
    if [[ -x "$candidate" ]]; then BIN="$candidate"; break; fi
  done
fi
[[ -n "$BIN" && -x "$BIN" ]] || die "no binary: build one (cargo build --release) or pass its path"
shift || true
VERSION="$("$BIN" --version | awk '{print $2}')"
TAGS=("$@")
[[ ${#TAGS[@]} -gt 0 ]] || TAGS=("agent-mesh:latest" "agent-mesh:$VERSION")
command -v docker >/dev/null || die "docker is not installed"

CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
"$ROOT/scripts/image-rootfs.sh" "$BIN" "$CONTEXT/rootfs"
tar -C "$CONTEXT/rootfs" --numeric-owner -cf "$CONTEXT/image-rootfs.tar" .
rm -rf "$CONTEXT/rootfs"
{
  echo "FROM scratch AS rootfs"
  echo "ADD image-rootfs.tar /rootfs/"
  sed -n '/^# --- the image/,$p' "$ROOT/Dockerfile"
} > "$CONTEXT/Dockerfile"
grep -q '^COPY --from=rootfs' "$CONTEXT/Dockerfile" || die "the Dockerfile has no final-stage marker"

TAG_ARGS=()
for tag in "${TAGS[@]}"; do TAG_ARGS+=(-t "$tag"); done
DOCKER_BUILDKIT=0 docker build --quiet "${TAG_ARGS[@]}" "$CONTEXT" >/dev/null 2>"$CONTEXT/build.err" \
  || { cat "$CONTEXT/build.err" >&2; die "docker build failed"; }
for tag in "${TAGS[@]}"; do
  echo "$tag $(docker image inspect --format '{{.Size}}' "$tag") bytes"
done
