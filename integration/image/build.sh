#!/bin/bash
# Build (once) and cache the Debian bookworm image used by integration/run-container
# and integration/run-vm.
#
#   integration/image/build.sh            -> prints the cache dir on stdout (last line)
#
# The cache dir is $AUTOSANDBOX_CI_CACHE/<hash> (default /var/cache/autosandbox-ci/<hash>),
# where <hash> covers every file in integration/image/ (this script, packages.txt, ...).
# Changing any of them builds a new image; otherwise the cached one is reused.
#
# Cache dir contents:
#   root.raw              ext4 root filesystem (label asroot), never modified by the runners
#   vmlinuz, initrd.img   kernel + initrd for qemu direct kernel boot
#   id_ed25519[.pub]      ssh key authorized for root inside the image
#   packages.lst          dpkg -l of the image
#   build.log             mmdebstrap log
#   COMPLETE              written last; a dir without it is never used
#
# The build runs in a temp dir next to the cache and is renamed into place at the end,
# so an interrupted build is never reused. Concurrent callers serialise on a flock.
# Logs go to stderr; only the final path goes to stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${AUTOSANDBOX_CI_CACHE:-/var/cache/autosandbox-ci}
SUITE=bookworm
MIRROR=${AUTOSANDBOX_CI_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${AUTOSANDBOX_CI_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
IMAGE_SIZE=${AUTOSANDBOX_CI_IMAGE_SIZE:-4G}
FS_LABEL=asroot

log() { printf '[build.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap root mode, mkfs -d ownership)"

# ---- input hash -------------------------------------------------------------------
# Hash over the names and contents of all files in integration/image/ (sorted).
HASH=$(cd "$HERE" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z |
       xargs -0 sha256sum | sha256sum | cut -c1-16)
DEST=$CACHE_ROOT/$HASH

if [ -f "$DEST/COMPLETE" ]; then
    touch "$DEST/COMPLETE"          # mtime = last use, for pruning
    log "reusing cached image $DEST"
    echo "$DEST"
    exit 0
fi

# ---- host tools -------------------------------------------------------------------
need_pkgs=()
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null  || need_pkgs+=(e2fsprogs)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v systemctl >/dev/null  || need_pkgs+=(systemd)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing host packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
log "waiting for build lock $CACHE_ROOT/.lock"
flock 9
# Someone else may have finished the same build while we waited.
if [ -f "$DEST/COMPLETE" ]; then
    log "reusing cached image $DEST (built by a concurrent run)"
    echo "$DEST"
    exit 0
fi
# Remove a directory tree safely: first unmount anything still mounted below it (an
# mmdebstrap killed hard can leave /proc, /sys, /dev mounts in its chroot), then delete
# without crossing into other filesystems.
safe_rm() {
    local d=$1 m
    [ -e "$d" ] || return 0
    d=$(realpath "$d")
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$d"
}
# We hold the lock, so every temp dir is a leftover of an interrupted build.
for d in "$CACHE_ROOT"/.tmp-* "$DEST"; do safe_rm "$d"; done
# Prune images unused for 14 days.
find "$CACHE_ROOT" -mindepth 2 -maxdepth 2 -name COMPLETE -mtime +14 -printf '%h\0' |
    xargs -0 -r rm -rf

TMP=$CACHE_ROOT/.tmp-$HASH-$$
ROOT=$TMP/tree
mkdir -p "$TMP"
MM_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [ -n "$MM_PID" ] && kill -0 "$MM_PID" 2>/dev/null; then
        log "stopping mmdebstrap (pid $MM_PID)"
        kill -TERM -- "-$MM_PID" 2>/dev/null || kill -TERM "$MM_PID" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$MM_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$MM_PID" 2>/dev/null
        wait "$MM_PID" 2>/dev/null
    fi
    safe_rm "$TMP"
    [ "$rc" = 0 ] || log "build failed or interrupted (status $rc); nothing was cached"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

START=$(date +%s)
PKGS=$(grep -v '^[[:space:]]*#' "$HERE/packages.txt" | tr -s ' \n' ',' | sed 's/^,//;s/,$//')

log "building $SUITE image into $TMP (packages: $PKGS)"
ssh-keygen -q -t ed25519 -N '' -C autosandbox-ci -f "$TMP/id_ed25519"

# In its own process group (so cleanup can stop it and its apt/dpkg children), in the
# background (so a signal to this script is handled at once, not after mmdebstrap ends).
setsid mmdebstrap --variant=minbase --mode=root --format=directory \
    --include="$PKGS" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='APT::Install-Recommends "false"' \
    "$SUITE" "$ROOT" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" \
    </dev/null >"$TMP/build.log" 2>&1 &
MM_PID=$!
mm_rc=0
wait "$MM_PID" || mm_rc=$?
MM_PID=
[ "$mm_rc" = 0 ] || { tail -50 "$TMP/build.log" >&2; die "mmdebstrap failed (status $mm_rc)"; }
log "mmdebstrap done after $(( $(date +%s) - START ))s"

# ---- customise the tree -------------------------------------------------------------
echo autosandbox-ci >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tautosandbox-ci\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$ROOT/etc/hosts"
# Root is mounted rw by the kernel command line (VM) or by nspawn (container).
printf '# root is given on the kernel command line (root=LABEL=%s rw)\n' "$FS_LABEL" >"$ROOT/etc/fstab"
# Empty machine-id: systemd generates one at boot (no first-boot prompts, see mask below).
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

# root: key-only ssh login (the key lives next to the image in the cache).
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$TMP/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
passwd --root "$ROOT" -l root >/dev/null
mkdir -p "$ROOT/etc/ssh/sshd_config.d"
cat >"$ROOT/etc/ssh/sshd_config.d/autosandbox-ci.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF

# VM network: static address for qemu user-mode networking (10.0.2.0/24). In the
# container (--private-network) there is only lo, so this matches nothing.
mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/10-qemu-user.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
systemctl --root="$ROOT" enable systemd-networkd.service >/dev/null 2>&1

# Things that make boot slow, degraded or noisy in a container/VM without network.
systemctl --root="$ROOT" mask \
    systemd-networkd-wait-online.service \
    systemd-remount-fs.service \
    systemd-firstboot.service \
    apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    >/dev/null 2>&1
# The packaged nginx/redis units would listen on :80/:6379; the tests run their own
# units (integration/services/), so the packaged ones stay off.
systemctl --root="$ROOT" disable nginx.service redis-server.service >/dev/null 2>&1 || true
# The stock services of test_zoo.py stay off too (quiet boot, ports free); each test starts
# the one it learns, with its package defaults.
for u in memcached postgresql chrony dnsmasq unbound apache2 apache-htcacheclean haproxy \
         mosquitto; do
    systemctl --root="$ROOT" disable "$u.service" >/dev/null 2>&1 || true
done
# auditd cannot work in a container (no audit netlink in a non-initial user/pid ns):
# skip it there, keep it in the VM where the audit tests run.
mkdir -p "$ROOT/etc/systemd/system/auditd.service.d"
cat >"$ROOT/etc/systemd/system/auditd.service.d/autosandbox-ci.conf" <<'EOF'
[Unit]
ConditionVirtualization=!container
EOF
# Keep the journal in memory: faster, and the raw image is never written anyway.
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$ROOT/etc/systemd/journald.conf.d/autosandbox-ci.conf"

chroot "$ROOT" dpkg -l >"$TMP/packages.lst"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*_Packages* "$ROOT"/tmp/* 2>/dev/null || true

# ---- kernel + initrd for direct boot ------------------------------------------------
kver=$(cd "$ROOT/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -1)
[ -n "$kver" ] || die "no kernel in $ROOT/boot"
cp "$ROOT/boot/vmlinuz-$kver" "$TMP/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$TMP/initrd.img"
echo "$kver" >"$TMP/kernel-version"

# ---- filesystem image (no loop device needed) -------------------------------------------
log "creating ext4 image ($IMAGE_SIZE)"
mkfs.ext4 -q -L "$FS_LABEL" -d "$ROOT" "$TMP/root.raw" "$IMAGE_SIZE" >&2
safe_rm "$ROOT"

echo "built $(date -u +%FT%TZ) in $(( $(date +%s) - START ))s, kernel $kver" >"$TMP/COMPLETE"
mv -T "$TMP" "$DEST"
trap - EXIT
log "image ready in $DEST after $(( $(date +%s) - START ))s"
echo "$DEST"
