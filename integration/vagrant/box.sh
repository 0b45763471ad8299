#!/bin/bash
# Build (once) a Vagrant libvirt box from the cached integration image; used by
# integration/run-vagrant.
#
#   integration/vagrant/box.sh IMAGE_DIR     -> prints the box dir on stdout (last line)
#
# The box dir is $AUTOSANDBOX_CI_CACHE/vagrant-box-<hash> (default cache root
# /var/cache/autosandbox-ci), <hash> covering the image's hash and this script, and holds
#   autosandbox.box   a libvirt box: tar of box.img (qcow2), metadata.json
#   COMPLETE          written last; a dir without it is never used
# The box is a variant: the image's root.raw is copied, never written. What it adds is what
# boxes carry: a `vagrant` user with passwordless sudo and Vagrant's insecure public key
# (Vagrant swaps it for a fresh key at the first `vagrant up`), sshd without root login, DHCP
# on the first NIC, and rsync for Vagrant's rsync synced folder; plus python3-venv, -wheel and
# -pip, so that `install.sh --offline` can install autosandbox with no network in the
# guest (the image already has the Python dependencies as Debian packages). Those packages
# come from the image's own apt sources, fetched by the host while building.
# The box has no bootloader (root.raw is a bare ext4 file system): boot it with the image's
# vmlinuz/initrd.img and root=LABEL=asroot (run-vagrant passes them to the Vagrantfile).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${AUTOSANDBOX_CI_CACHE:-/var/cache/autosandbox-ci}
# python3-pip: install.sh --offline uses it rather than seeding a venv with pip (minutes under
# TCG); its byte code is compiled here, at native speed.
BOX_PACKAGES="rsync python3-venv python3-wheel python3-pip"

log() { printf '[box.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ $# = 1 ] || die "usage: box.sh IMAGE_DIR"
IMG=$(realpath "$1")
[ -f "$IMG/COMPLETE" ] && [ -f "$IMG/root.raw" ] || die "not a complete image: $IMG"

# Vagrant's insecure public key, as Debian's vagrant package ships it.
PUBKEY=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null |
         sort -V | tail -1)
[ -n "$PUBKEY" ] || die "Vagrant's insecure public key not found (is the vagrant package installed?)"

HASH=$( { basename "$IMG"; cat "${BASH_SOURCE[0]}" "$PUBKEY"; } | sha256sum | cut -c1-16)
DEST=$CACHE_ROOT/vagrant-box-$HASH
if [ -f "$DEST/COMPLETE" ]; then
    touch "$DEST/COMPLETE"    # mtime = last use: build.sh prunes cache dirs unused for 14 days
    log "reusing cached box $DEST"
    echo "$DEST"
    exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.vagrant-box.lock"
log "waiting for box lock $CACHE_ROOT/.vagrant-box.lock"
flock 9
if [ -f "$DEST/COMPLETE" ]; then
    log "reusing cached box $DEST (built by a concurrent run)"
    echo "$DEST"
    exit 0
fi

# Not named .tmp-*: build.sh deletes those as leftovers of its own builds.
TMP=$CACHE_ROOT/.vagrant-box-tmp-$$
MNT=$TMP/mnt
mounts=()   # innermost last
umount_all() {
    local i
    for (( i=${#mounts[@]}-1; i>=0; i-- )); do
        umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true
    done
    mounts=()
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    umount_all
    rm -rf --one-file-system "$TMP"
    [ "$rc" = 0 ] || log "box build failed or interrupted (status $rc); nothing was cached"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Leftovers: our temp dirs whose builder is gone (we hold the lock), boxes of pruned images.
safe_rm() {    # unmount what a killed build left mounted below $1, then delete it
    local d m
    d=$(realpath "$1")
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$d"
}
for d in "$CACHE_ROOT"/.vagrant-box-tmp-*; do [ -d "$d" ] && safe_rm "$d"; done
# Boxes of pruned images, and boxes of this image an earlier box.sh made (unused for an hour).
for d in "$CACHE_ROOT"/vagrant-box-*; do
    [ -f "$d/image" ] || continue
    if [ ! -f "$CACHE_ROOT/$(cat "$d/image")/COMPLETE" ] ||
       { [ "$(cat "$d/image")" = "$(basename "$IMG")" ] &&
         [ -n "$(find "$d/COMPLETE" -mmin +60 2>/dev/null)" ]; }; then
        rm -rf --one-file-system "$d"
    fi
done

START=$(date +%s)
mkdir -p "$MNT"
log "copying $IMG/root.raw"
cp --sparse=always "$IMG/root.raw" "$TMP/root.raw"
mount -o loop "$TMP/root.raw" "$MNT"
mounts+=("$MNT")

# ---- what boxes carry -------------------------------------------------------------------
useradd --root "$MNT" --create-home --shell /bin/bash --user-group vagrant
passwd --root "$MNT" -l vagrant >/dev/null
install -d -m 700 -o "$(stat -c %u "$MNT/home/vagrant")" -g "$(stat -c %g "$MNT/home/vagrant")" \
    "$MNT/home/vagrant/.ssh"
install -m 600 -o "$(stat -c %u "$MNT/home/vagrant")" -g "$(stat -c %g "$MNT/home/vagrant")" \
    "$PUBKEY" "$MNT/home/vagrant/.ssh/authorized_keys"
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$MNT/etc/sudoers.d/vagrant"
chmod 440 "$MNT/etc/sudoers.d/vagrant"
# The CI key is for the runners' own VM, not for a box: no root login here.
rm -f "$MNT/root/.ssh/authorized_keys"
printf 'PermitRootLogin no\nPasswordAuthentication no\nUseDNS no\n' \
    >"$MNT/etc/ssh/sshd_config.d/autosandbox-ci.conf"
# DHCP instead of the static address the image has for qemu user networking.
cat >"$MNT/etc/systemd/network/10-qemu-user.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
echo autosandbox-box >"$MNT/etc/hostname"
sed -i 's/autosandbox-ci/autosandbox-box/' "$MNT/etc/hosts"

# ---- packages from the image's own apt sources --------------------------------------------
log "installing into the box: $BOX_PACKAGES"
mount -t proc proc "$MNT/proc"; mounts+=("$MNT/proc")
mount --bind /dev "$MNT/dev"; mounts+=("$MNT/dev")
printf '#!/bin/sh\nexit 101\n' >"$MNT/usr/sbin/policy-rc.d"   # start no service in the chroot
chmod 755 "$MNT/usr/sbin/policy-rc.d"
chroot "$MNT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $BOX_PACKAGES" \
    </dev/null >"$TMP/apt.log" 2>&1 || { tail -30 "$TMP/apt.log" >&2; die "apt in the box failed"; }
rm -f "$MNT/usr/sbin/policy-rc.d"
chroot "$MNT" apt-get clean
rm -rf "$MNT"/var/lib/apt/lists/*_Packages* "$MNT"/var/lib/apt/lists/*_InRelease "$MNT"/tmp/*
for p in $BOX_PACKAGES; do
    chroot "$MNT" dpkg-query -W -f '${Status}\n' "$p" | grep -q 'install ok installed' ||
        die "$p is not installed in the box"
done
# A process the packages left running in the chroot holds the file system: ours, by pid.
for d in /proc/[0-9]*; do
    [ "$(readlink "$d/root" 2>/dev/null)" = "$(realpath "$MNT")" ] || continue
    log "ending ${d#/proc/} ($(cat "$d/comm" 2>/dev/null)), left running in the box's chroot"
    kill -KILL "${d#/proc/}" 2>/dev/null || true
done
sync -f "$MNT"
umount_all
# What was written must be in root.raw before it is converted: a lazy unmount (a file system
# still busy) left the box without its vagrant user once (CI: "Authentication failure" until
# the boot timeout). Checked on the file itself.
! mountpoint -q "$MNT" || die "the box's file system is still mounted at $MNT"
mount -o ro,loop,noload "$TMP/root.raw" "$MNT"
mounts+=("$MNT")
[ -s "$MNT/home/vagrant/.ssh/authorized_keys" ] && [ -f "$MNT/etc/sudoers.d/vagrant" ] ||
    die "root.raw lacks the box's changes after unmounting it"
umount_all

# ---- the box --------------------------------------------------------------------------
log "converting to qcow2"
qemu-img convert -O qcow2 "$TMP/root.raw" "$TMP/box.img"
rm -f "$TMP/root.raw"
vsize=$(( ($(qemu-img info --output=json "$TMP/box.img" |
             python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') \
           + (1 << 30) - 1) >> 30 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$vsize" \
    >"$TMP/metadata.json"
tar -C "$TMP" -cf "$TMP/autosandbox.box" metadata.json box.img
rm -f "$TMP/box.img"
basename "$IMG" >"$TMP/image"
rmdir "$MNT"
echo "built $(date -u +%FT%TZ) in $(( $(date +%s) - START ))s from $IMG" >"$TMP/COMPLETE"
mv -T "$TMP" "$DEST"
trap - EXIT
log "box ready in $DEST after $(( $(date +%s) - START ))s"
echo "$DEST"
