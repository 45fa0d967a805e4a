#!/usr/bin/env bash
# Builds the keyd image (docker/Dockerfile) from this checkout's binaries: FROM scratch with
# keyd, keyctl and exactly the shared libraries `ldd` lists for them (glibc, libm, libgcc_s,
# the loader). No registry is needed.
#
#   docker/build-image.sh [TAG] [PROFILE]     TAG default keyd:local, PROFILE release or debug
#   docker/build-image.sh --consumer [TAG]    TAG default keyd-consumer:local
#
# --consumer builds the examples' app image instead: FROM scratch with Debian's static busybox
# (/bin/busybox, package busybox-static) and its applets, so the compose and Swarm examples run
# on a machine that cannot pull from a registry (APP_IMAGE names it; it is their default).
#
# With PROFILE=release the binaries are built first; with debug, the ones in target/debug are
# used as they are. The target directory is $CARGO_TARGET_DIR when set; KEYD_BIN and KEYCTL_BIN
# name other binaries to put in the image (the tests use the builds they run).
set -euo pipefail
if [ "${1:-}" = --consumer ]; then
  tag=${2:-keyd-consumer:local}
  # grep reads the whole list (no -q): under pipefail, a grep that quits at the first match
  # would fail the pipeline with busybox's SIGPIPE.
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -x sh >/dev/null || {
    echo "build-image.sh: /bin/busybox is not a static busybox: apt-get install busybox-static" >&2
    exit 1
  }
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp /bin/busybox "$ctx/busybox"
  printf '%s\n' 'FROM scratch' 'COPY busybox /bin/busybox' \
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]' > "$ctx/Dockerfile"
  docker build --quiet --label keyd.image=consumer -t "$tag" "$ctx" >/dev/null
  echo "$tag"
  exit 0
fi
tag=${1:-keyd:local}
profile=${2:-release}
cd "$(dirname "$0")/.."
if [ "$profile" = release ]; then
  cargo build --release --locked -p keyd -p keyctl
fi
bin=${CARGO_TARGET_DIR:-target}/$profile
keyd_bin=${KEYD_BIN:-$bin/keyd}
keyctl_bin=${KEYCTL_BIN:-$bin/keyctl}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/bin" "$ctx/root/var/lib" "$ctx/root/run"
# The home (0700) and the delivery directory (0755) belong to the compose sidecar's user
# (`keyctl compose` runs keyd as 65532:65532): a named volume mounted there takes that owner and
# mode when first used. A tar carries both, which COPY --chown cannot (it makes the directory
# it creates 0755).
mkdir -p "$ctx/owned/var/lib/keyd" "$ctx/owned/run/secrets"
chmod 0700 "$ctx/owned/var/lib/keyd"
chmod 0755 "$ctx/owned/run/secrets"
tar -C "$ctx/owned" --numeric-owner --owner=65532 --group=65532 --no-recursion \
  -cf "$ctx/owned.tar" ./var/lib/keyd ./run/secrets
cp "$keyd_bin" "$ctx/root/bin/keyd"
cp "$keyctl_bin" "$ctx/root/bin/keyctl"
# Every library the binaries load, at the path the loader looks for it.
# (ldd heads each binary's list with a "PATH:" line when given two: not a library.)
ldd "$keyd_bin" "$keyctl_bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' \
  | sort -u | while read -r lib; do
      mkdir -p "$ctx/root$(dirname "$lib")"
      cp -L "$lib" "$ctx/root$lib"
    done
cp docker/Dockerfile "$ctx/Dockerfile"
docker build --quiet --label keyd.image=true -t "$tag" "$ctx" >/dev/null
echo "$tag"
