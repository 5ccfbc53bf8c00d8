#!/usr/bin/env bash
# Build a local Debian bookworm + Python 3.11 base image with debootstrap, for machines that cannot pull from a
# registry (no Docker Hub). Same Debian release and Python minor version as the pinned official python image.
# Usage: infra/docker/base-image.sh [--print-tag | <image tag>]   (root; debootstrap; a Docker engine at $DOCKER_HOST)
# The default tag carries this script's hash, so a cached base built by an older version is never reused.
# The mirror is the one apt already uses here (first deb URI in /etc/apt), overridable with DEBIAN_MIRROR.
# libpython3.11: Triton's python-backend stub links against libpython3.11.so.1.0 (the official image has it in
# /usr/local/lib); without it every model fails to load with "error while loading shared libraries".
set -euo pipefail
default_tag=asr-local/python:3.11-bookworm-$(sha256sum "$0" | cut -c1-8)
[[ ${1:-} == --print-tag ]] && { echo "$default_tag"; exit 0; }
tag=${1:-$default_tag}
command -v debootstrap >/dev/null || { echo "error: debootstrap not installed (apt-get install debootstrap)" >&2; exit 2; }
mirror=${DEBIAN_MIRROR:-$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
  | grep -v security | head -1 | awk '{print $2}' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/asr-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "== debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,libpython3.11,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; echo "error: debootstrap failed (log: $root.log)" >&2; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# `python` / `pip` as in the official image: the images install into a venv (PEP 668 guards Debian's python3).
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap bookworm minbase + python3 from $mirror" - "$tag"
echo "== $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
