#!/bin/sh
# Builds a busybox image as a `docker save` archive (classic layout) from the
# host's busybox-static, without network access.
#
#   scripts/busybox-image.sh OUT.tar [TAG]      (TAG defaults to busybox:latest)
#
# IMAGE_CMD sets the image's Cmd as a JSON array (default ["sh"]), so that a
# long-running one can stand in for Kubernetes' pause image.
#
# The output is byte-for-byte reproducible for a given busybox binary: fixed
# mtimes (SOURCE_DATE_EPOCH, default 2024-01-01), sorted entries, numeric
# owners. So its image id is stable.
set -eu
export LC_ALL=C

usage() {
    echo "usage: $0 OUT.tar [TAG]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
out=$1
tag=${2:-busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
epoch=${SOURCE_DATE_EPOCH:-1704067200}
cmd=${IMAGE_CMD:-'["sh"]'}

if [ ! -x "$busybox" ]; then
    echo "error: $busybox not found: apt-get install busybox-static" >&2
    exit 1
fi
case $tag in
    *[!a-z0-9._/:-]* | "" | :* | /*)
        echo "error: invalid tag '$tag'" >&2
        exit 1
        ;;
esac
# A tag without ':' after its last '/' gets ':latest', as docker does.
case ${tag##*/} in
    *:*) ;;
    *) tag=$tag:latest ;;
esac

case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac
for tool in tar sha256sum date; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is required" >&2
        exit 1
    }
done

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/rootfs
mkdir -p "$root" "$work/archive"

# --- the root filesystem ---------------------------------------------------
mkdir -p "$root/bin" "$root/etc" "$root/proc" "$root/sys" "$root/dev" \
    "$root/tmp" "$root/root" "$root/home/hull" "$root/usr/bin" "$root/usr/sbin" \
    "$root/sbin" "$root/var"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
applets=$("$busybox" --list)
[ -n "$applets" ] || {
    echo "error: $busybox --list printed no applets" >&2
    exit 1
}
for applet in $applets; do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
hull:x:1000:1000:hull:/home/hull:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
nogroup:x:65534:
hull:x:1000:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# --- the layer: everything root-owned except the hull user's home ----------
layer=$work/layer.tar
reproducible="--sort=name --format=gnu --numeric-owner --mtime=@$epoch"
# shellcheck disable=SC2086
tar $reproducible --owner=0 --group=0 --exclude=./home/hull \
    -C "$root" -cf "$layer" .
# shellcheck disable=SC2086
tar $reproducible --owner=1000 --group=1000 --no-recursion \
    -C "$root" -rf "$layer" ./home/hull

diff_id=$(sha256sum "$layer" | cut -d' ' -f1)
mkdir "$work/archive/$diff_id"
mv "$layer" "$work/archive/$diff_id/layer.tar"

# --- the image config and manifest ------------------------------------------
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
config=$work/config.json
printf '%s' "{\"architecture\":\"$arch\",\"config\":{\"Cmd\":$cmd,\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]},\"created\":\"$created\",\"history\":[{\"created\":\"$created\",\"created_by\":\"scripts/busybox-image.sh (busybox-static)\"}],\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}}" >"$config"
config_hex=$(sha256sum "$config" | cut -d' ' -f1)
mv "$config" "$work/archive/$config_hex.json"

printf '%s' "[{\"Config\":\"$config_hex.json\",\"RepoTags\":[\"$tag\"],\"Layers\":[\"$diff_id/layer.tar\"]}]" \
    >"$work/archive/manifest.json"
repo=${tag%:*}
printf '%s' "{\"$repo\":{\"${tag##*:}\":\"$diff_id\"}}" >"$work/archive/repositories"

# shellcheck disable=SC2086
tar $reproducible --owner=0 --group=0 -C "$work/archive" -cf "$work/out.tar" \
    $(cd "$work/archive" && ls)
mv "$work/out.tar" "$out"
echo "sha256:$config_hex"
