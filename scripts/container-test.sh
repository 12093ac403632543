#!/usr/bin/env bash
# The container smoke test (tests/test_container.py) on a machine like CI's: no Docker engine and no
# reachable image registry. So: Debian's podman with runc (crun refuses this kernel's hybrid cgroups)
# and scripts/container-test/containers.conf (default_ulimits = []: raising NOFILE/NPROC is
# forbidden here); a base image with Debian's Python 3.11 (what python:3.11-slim carries) built with
# debootstrap and the host's CA bundle and pip config, so that the image build reaches PyPI through
# the host's network. Prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export CONTAINERS_CONF="$PWD/scripts/container-test/containers.conf"
BASE_IMAGE=${CONTAINER_BASE_IMAGE:-localhost/carbon-optimizer-base:py3.11}
SUITE=bookworm  # its python3 is 3.11, the Dockerfile's default base image's version
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

timed() {
  local name=$1 start tenths
  shift
  start=$(date +%s%N)
  "$@"
  tenths=$(( ($(date +%s%N) - start) / 100000000 ))
  echo "container-test: $name took $((tenths / 10)).$((tenths % 10)) s"
}

install_tools() {
  local missing=()
  for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null; }
}

build_base_image() {
  podman image exists "$BASE_IMAGE" && return 0
  local rootfs
  rootfs=$(mktemp -d /tmp/carbon-base-XXXXXX)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >/dev/null
  test -x "$rootfs/usr/bin/python3.11"
  # The host's CA bundle and pip settings, for pip inside the build (a proxy's CA, a mirror).
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$rootfs/etc/pip.conf"; fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

timed "installing podman, runc, debootstrap" install_tools
timed "base image ($BASE_IMAGE)" build_base_image
# The test builds the image from the Dockerfile itself (so it always tests this tree) and runs it.
timed "image build and smoke test" env CARBON_CONTAINER_TEST=1 CONTAINER_BASE_IMAGE="$BASE_IMAGE" \
  "$VENV/bin/python" -m pytest tests/test_container.py -q -s
# Earlier builds of the image, left untagged by this one (0.5 GB each): only what the test built
# (its label), and never the tagged build stage, whose layers the next run reuses.
podman image prune -f --filter "label=carbon-optimizer.container-test=1" >/dev/null
