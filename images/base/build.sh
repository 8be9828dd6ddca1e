#!/usr/bin/env bash
# Build the suite's base image from Debian packages, for machines that cannot pull
# python:3.12-slim: a minimal bookworm root filesystem (debootstrap) with python3,
# python3-venv and ca-certificates, imported with `docker import`.
#
# Prints the image reference on its last line of stdout (everything else goes to stderr),
# so callers can do: BASE_IMAGE=$(images/base/build.sh)
#
# The tag is derived from this script's content, so a changed recipe gets a new tag and an
# unchanged one is never rebuilt: if the image exists the script does nothing. The
# debootstrap tarball is cached under build/base/ so a rebuild after `docker rmi` (or on a
# machine whose Docker root was wiped) takes seconds.
#
# Environment:
#   DEBIAN_MIRROR   Debian mirror for debootstrap (default: the host's apt mirror, else
#                   http://deb.debian.org/debian)
#   BASE_REPO       image repository (default: podpatterns/debian-python)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
suite=bookworm
packages=python3,python3-venv,ca-certificates
repo=${BASE_REPO:-podpatterns/debian-python}
recipe_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
tag="$repo:$suite-$recipe_hash"
cache_dir="$root/build/base"
tarball="$cache_dir/$suite-$recipe_hash.tar"

say() { echo "base image: $*" >&2; }

host_mirror() {
    # The first plain http(s) Debian URI the host's apt uses (deb822 or one-line format).
    local uri
    uri=$(grep -hsoE '(URIs:|^deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
            /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
          | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

if docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag already exists"
    echo "$tag"
    exit 0
fi

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { say "needs debootstrap: apt-get install debootstrap"; exit 1; }
    [[ $(id -u) == 0 ]] || { say "debootstrap needs root"; exit 1; }
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    mkdir -p "$cache_dir"
    rootfs=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    # --one-file-system: never follow a mount debootstrap may have left inside on failure.
    trap 'rm -rf --one-file-system "$rootfs"' EXIT
    say "debootstrap $suite ($packages) from $mirror"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
    # What an image does not need: apt's downloaded lists and packages, docs, man pages.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log \
           "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
    # The image is used by containers, not booted: no stale machine identity.
    : > "$rootfs/etc/machine-id"
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf --one-file-system "$rootfs"
    trap - EXIT
fi

say "importing $tarball as $tag"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.title=debian-python org.opencontainers.image.description=\"Debian $suite with python3, python3-venv and ca-certificates\" org.opencontainers.image.base.name=debian:$suite" \
    --message "debootstrap $suite $packages" \
    "$tarball" "$tag" >&2
say "built $tag"
echo "$tag"
