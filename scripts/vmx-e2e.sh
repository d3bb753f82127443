#!/usr/bin/env bash
# End-to-end test on an emulated VT-x host (`npm run test:vmx`).
#
# Boots Debian's 6.1 kernel in Bochs (CPU corei7_haswell_4770: VMX + EPT + VMFUNC EPTP
# switching), loads KVM there, runs this package's in-host suite (test/vmx/*.vmx.ts) with
# the machine's own `node`, and turns the serial-console markers into a mocha-style
# summary and exit code. One boot per run; everything reusable is cached outside the
# clone under $ELISA_CACHE/vmx (default ~/.cache/elisa-node/vmx), keyed by content hashes.
#
# Needs: root (apt-get), `npm ci` done in this clone (dist/, build/Release, node_modules).
# Environment:
#   ELISA_CACHE         cache root (default $HOME/.cache/elisa-node)
#   ELISA_VMX_TIMEOUT   seconds the emulated host may run before Bochs is killed (default 720)
#   ELISA_VMX_KEEP=1    keep the work directory (serial log, Bochs log) even on success
#   ELISA_VMX_VARIANTS  ELISA KVM module variants to build and test (default "compat hardened")
set -euo pipefail

main() {
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/scripts/vmx
KVER=6.1.0-56-amd64
KPKG=linux-image-$KVER
CACHE=${ELISA_CACHE:-$HOME/.cache/elisa-node}/vmx
TIMEOUT=${ELISA_VMX_TIMEOUT:-720}
mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/elisa-vmx.XXXXXX)
BOCHS_PID=

log() { echo "vmx-e2e: $*"; }
die() { log "ERROR: $*"; log "work directory kept: $WORK"; exit 1; }
cleanup() {
  if [ -n "$BOCHS_PID" ] && kill -0 "$BOCHS_PID" 2>/dev/null; then kill "$BOCHS_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# Phase timing: `phase NAME` starts a phase, the next call (or `phase_end`) reports it.
PHASES=()
PHASE_NAME=
PHASE_T0=0
now() { date +%s.%N; }
phase_end() {
  if [ -n "$PHASE_NAME" ]; then
    local dt; dt=$(awk -v a="$PHASE_T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    PHASES+=("$(printf '%-10s %6ss' "$PHASE_NAME" "$dt")")
    log "phase $PHASE_NAME: ${dt}s"
  fi
  PHASE_NAME=
}
phase() { phase_end; PHASE_NAME=$1; PHASE_T0=$(now); log "phase $1 ..."; }
T_START=$(now)

# Content only: the same files at another path (a fresh clone) give the same key.
hash_files() { sha256sum "$@" | cut -d' ' -f1 | sha256sum | cut -c1-16; }

# --- deps: Debian packages (only what is missing) ----------------------------------
phase deps
PKGS=(bochs bochsbios vgabios seabios grub-pc-bin grub-common xorriso mtools busybox-static
      e2fsprogs cpio kmod binutils gcc make patch xz-utils)
bash "$ROOT/scripts/install-deps.sh" "${PKGS[@]}"
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, and the ext2 image keeps root ownership)"

# --- kernel: Debian's image package, extracted and depmod'ed --------------------------
phase kernel
mkdir -p "$CACHE/dl"
deb=$(ls "$CACHE"/dl/"${KPKG}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  (cd "$CACHE/dl" && apt-get -o DPkg::Lock::Timeout=600 download "$KPKG" >/dev/null 2>&1) \
    || { apt-get -o DPkg::Lock::Timeout=600 update -qq && (cd "$CACHE/dl" && apt-get download "$KPKG" >/dev/null 2>&1); } \
    || die "apt-get download $KPKG failed"
  deb=$(ls "$CACHE"/dl/"${KPKG}"_*.deb | head -n1)
fi
KDIR=$CACHE/kernel-$(sha256sum "$deb" | cut -c1-16)
if [ ! -e "$KDIR/.done" ]; then
  rm -rf "$KDIR" && mkdir -p "$KDIR"
  dpkg-deb -x "$deb" "$KDIR"
  depmod -b "$KDIR" "$KVER"
  touch "$KDIR/.done"
fi
KMOD=$KDIR/lib/modules/$KVER
VMLINUZ=$KDIR/boot/vmlinuz-$KVER

# Prints the .ko paths (relative to $KMOD) that loading module $1 needs, dependencies
# first, each once (modules.dep lists every transitive dependency of a module).
mod_closure() {
  local name=$1 line deps rel d
  line=$(grep -E "(^|/)${name}\.ko:" "$KMOD/modules.dep") || die "module $name not in $KVER"
  rel=${line%%:*}
  deps=${line#*:}
  # modules.dep lists dependencies so that the last one must be loaded first.
  for d in $(echo "$deps" | tr ' ' '\n' | tac); do echo "$d"; done
  echo "$rel"
}

# --- package: this clone, built --------------------------------------------------------
phase package
cd "$ROOT"
[ -d node_modules/mocha ] || die "node_modules missing: run npm ci first"
npm run -s build
[ -f build/Release/elisa_kvm.node ] || die "build/Release/elisa_kvm.node missing: run npm ci (it builds the addon)"
[ -f dist/test/vmx/run-in-host.js ] || die "dist/test/vmx/run-in-host.js missing after the build"

# Builds kvm.ko + kvm-intel.ko with PATCH into OUT (scripts/kvm-module.sh checks the
# vermagic; headers and source come from its cache under $ELISA_CACHE/kernel).
build_variant() { # VARIANT PATCH OUT
  rm -rf "$3"
  bash "$ROOT/scripts/kvm-module.sh" build --variant "$1" --kernel "$KVER" --patch "$2" --out "$3"
}

# --- ELISA KVM modules (scripts/kvm-module.sh), built once per patch/script content ---
phase modules
VARIANTS=${ELISA_VMX_VARIANTS-compat hardened}
declare -A VARIANT_DIR=()
for v in $VARIANTS; do
  patch=$ROOT/kernel-patch/$v/6.1.patch
  [ -f "$patch" ] && [ -f "$ROOT/scripts/kvm-module.sh" ] \
    || die "no $v patch for 6.1 or no scripts/kvm-module.sh (set ELISA_VMX_VARIANTS to choose variants)"
  d=$CACHE/modules-$v-$(hash_files "$patch" "$ROOT/scripts/kvm-module.sh" "$deb")
  if [ ! -f "$d/kvm-intel.ko" ]; then
    log "building the $v modules for $KVER (scripts/kvm-module.sh; cached afterwards)"
    build_variant "$v" "$patch" "$d.tmp" >"$WORK/kvm-module-$v.log" 2>&1 \
      || { tail -n 30 "$WORK/kvm-module-$v.log"; die "building the $v modules failed (log: $WORK/kvm-module-$v.log)"; }
    rm -rf "$d" && mv "$d.tmp" "$d"
  fi
  VARIANT_DIR[$v]=$d
  # Keep one build per variant: older ones belong to older patches.
  for old in "$CACHE"/modules-"$v"-*; do [ "$old" = "$d" ] || rm -rf "$old"; done
done

# --- guest probes of the in-host suite: assembled here (the emulated host has no binutils)
phase guests
mkdir -p "$WORK/guest"
shopt -s nullglob
for src in "$ROOT"/test/vmx/guest/*.S; do
  b=$(basename "$src" .S)
  # Same layout as every guest program (native/guest/linker.ld: entry at 1 MiB).
  gcc -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,"$ROOT/native/guest/linker.ld" \
    -Wl,--no-warn-rwx-segments -o "$WORK/guest/$b.elf" "$src" || die "assembling $src"
done
shopt -u nullglob

# --- boot ISO: kernel + initramfs (disk drivers and /init) -----------------------------
phase iso
BUSYBOX=/bin/busybox
INITRD_MODS=()
# ext4 needs the crc32c crypto driver even for ext2 (it probes it at mount time).
for m in crc32c_generic ata_piix sd_mod ext4; do
  while read -r ko; do
    case " ${INITRD_MODS[*]:-} " in *" $ko "*) ;; *) INITRD_MODS+=("$ko") ;; esac
  done < <(mod_closure "$m")
done
iso_key=$(cd "$KMOD" && hash_files "$VMLINUZ" "$BUSYBOX" "$HERE/init" "$HERE/grub.cfg" "${INITRD_MODS[@]}")
ISO=$CACHE/boot-$iso_key.iso
if [ ! -f "$ISO" ]; then
  ird=$WORK/initramfs
  mkdir -p "$ird/bin" "$ird/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/mnt"
  cp "$BUSYBOX" "$ird/bin/busybox"
  cp "$HERE/init" "$ird/init"
  chmod 755 "$ird/init"
  : > "$ird/modules.list"
  for ko in "${INITRD_MODS[@]}"; do
    cp "$KMOD/$ko" "$ird/modules/"
    basename "$ko" >> "$ird/modules.list"
  done
  isodir=$WORK/isodir
  mkdir -p "$isodir/boot/grub"
  cp "$VMLINUZ" "$isodir/boot/vmlinuz"
  # Uncompressed: GRUB reads ~6 MB/s, but the emulated CPU decompresses far slower.
  (cd "$ird" && find . | sort | cpio -o -H newc --quiet -R 0:0) > "$isodir/boot/initrd.img"
  cp "$HERE/grub.cfg" "$isodir/boot/grub/grub.cfg"
  grub-mkrescue -o "$ISO.tmp" "$isodir" >"$WORK/grub-mkrescue.log" 2>&1 \
    || { cat "$WORK/grub-mkrescue.log"; die "grub-mkrescue failed"; }
  mv "$ISO.tmp" "$ISO"
  rm -rf "$ird" "$isodir"
fi
for old in "$CACHE"/boot-*.iso; do [ "$old" = "$ISO" ] || rm -f "$old"; done

# --- test disk: busybox, node + libraries, KVM modules, this package -------------------
phase disk
R=$WORK/rootfs
mkdir -p "$R/bin" "$R/usr/bin" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/elisa/modules/stock" "$R/elisa/pkg"
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
NODE=$(command -v node)
cp "$NODE" "$R/usr/bin/node"
# Shared libraries node needs, at the paths ldd resolves them to (keeps the loader happy).
ldd "$NODE" | awk '/=> \//{ print $3 } /^\t\/[^ ]+ \(/{ print $1 }' | while read -r lib; do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
for m in msr kvm-intel; do
  while read -r ko; do cp "$KMOD/$ko" "$R/elisa/modules/stock/"; done < <(mod_closure "$m")
done
for v in "${!VARIANT_DIR[@]}"; do
  mkdir -p "$R/elisa/modules/$v"
  # Self-built modules carry debug info (kvm.ko ~19 MB): the emulated CPU would copy
  # and relocate all of it at insmod. Debian's own modules are stripped the same way.
  for ko in kvm.ko kvm-intel.ko; do strip --strip-debug -o "$R/elisa/modules/$v/$ko" "${VARIANT_DIR[$v]}/$ko"; done
done
cp "$HERE/suite.sh" "$R/elisa/suite.sh"
cp -r "$WORK/guest" "$R/elisa/guest"
# The package as an installed copy: compiled JS, the addon, guest programs, and the
# run-time closure of mocha/chai/bindings (not the TypeScript toolchain).
P=$R/elisa/pkg
cp package.json "$P/"
cp -r dist "$P/dist"
find "$P/dist" -name '*.map' -delete
mkdir -p "$P/build/Release" "$P/native/guest"
cp build/Release/elisa_kvm.node "$P/build/Release/"
[ -d native/guest/out ] && cp -r native/guest/out "$P/native/guest/out"
while read -r d; do
  mkdir -p "$P/$(dirname "$d")"
  cp -r "$d" "$P/$d"
done < <(node "$HERE/node-deps.js" mocha chai bindings)
disk_key=$( (cd "$R" && find . -type f -print0 | sort -z | xargs -0 sha256sum; find . -type l -printf '%p %l\n' | sort) \
  | sha256sum | cut -c1-16)
DISK=$CACHE/disk-$disk_key.img
if [ ! -f "$DISK" ]; then
  rm -f "$CACHE"/disk-*.img   # one disk image at a time: they are ~200 MB each
  kb=$(du -sk "$R" | cut -f1)
  # Bochs derives the geometry from the size: a multiple of 16 heads * 63 sectors * 512 B.
  cyl_bytes=516096
  size=$(( ( (kb * 1024 * 5 / 4 + 16 * 1024 * 1024) / cyl_bytes + 1) * cyl_bytes ))
  truncate -s "$size" "$DISK.tmp"
  mke2fs -q -t ext2 -F -L elisa-vmx -d "$R" "$DISK.tmp" || die "mke2fs failed"
  mv "$DISK.tmp" "$DISK"
fi
rm -rf "$R"

# --- boot: Bochs, headless, until the suite says DONE (or time runs out) ---------------
phase boot
SERIAL=$WORK/serial.log
: > "$SERIAL"
# Bochs keeps a "<image>.lock" beside a disk image, and a killed Bochs leaves it behind:
# point it at a per-run link so the lock lives (and dies) with the work directory.
ln -s "$DISK" "$WORK/disk.img"
sed -e "s|@ISO@|$ISO|" -e "s|@DISK@|$WORK/disk.img|" -e "s|@SERIAL@|$SERIAL|" -e "s|@LOG@|$WORK/bochs.log|" \
  "$HERE/bochsrc.in" > "$WORK/bochsrc"
printf 'c\nquit\n' > "$WORK/bochs.rc"
(cd "$WORK" && exec bochs -q -f "$WORK/bochsrc" -rc "$WORK/bochs.rc" </dev/null >"$WORK/bochs.out" 2>&1) &
BOCHS_PID=$!
t_boot=$(now)
# Milestones of the boot, with the wall-clock time at which the host first saw them
# (polling every second): where a slow or stuck boot spends its time.
MILESTONES=("Booting \`ELISA|GRUB started the kernel" "^\[ *[0-9]+\.[0-9]+\]|kernel decompressed, printing"
  "ELISA-VMX: INITRAMFS|initramfs /init runs" "ELISA-VMX: ROOT|test disk mounted"
  "ELISA-VMX: KVM-READY|KVM modules loaded" "ELISA-VMX: NODE-STARTED|node started"
  "ELISA-VMX: MOCHA-LOADED|mocha loaded"
  "ELISA-VMX: DONE|in-host suite done")
SEEN=()
elapsed() { awk -v a="$t_boot" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }
note_milestones() {
  local i pat
  for i in "${!MILESTONES[@]}"; do
    [ -z "${SEEN[$i]:-}" ] || continue
    pat=${MILESTONES[$i]%%|*}
    if grep -qE "$pat" "$SERIAL"; then SEEN[$i]=$(elapsed); log "  +${SEEN[$i]}s ${MILESTONES[$i]#*|}"; fi
  done
}
verdict=exited
while kill -0 "$BOCHS_PID" 2>/dev/null; do
  sleep 1
  note_milestones
  if grep -q 'ELISA-VMX: DONE' "$SERIAL"; then
    # Let suite.sh print its kernel-log excerpt and power off; kill Bochs if it lingers.
    for _ in $(seq 1 30); do kill -0 "$BOCHS_PID" 2>/dev/null || break; sleep 1; done
    verdict=done; break
  fi
  if grep -qE 'ELISA-VMX: BOOT-FAIL|Kernel panic' "$SERIAL"; then sleep 3; verdict=crashed; break; fi
  if [ "$(elapsed)" -ge "$TIMEOUT" ]; then verdict=timeout; break; fi
  grep -q 'ELISA-VMX: ' "$SERIAL" || [ "$(elapsed)" -lt 400 ] \
    || { log "no marker on the serial console after 400 s: the boot is stuck"; verdict=stuck; break; }
done
if kill -0 "$BOCHS_PID" 2>/dev/null; then
  kill "$BOCHS_PID" 2>/dev/null || true; wait "$BOCHS_PID" 2>/dev/null || true
else
  log "  +$(elapsed)s Bochs exited"
fi
BOCHS_PID=
if grep -q 'ELISA-VMX: DONE' "$SERIAL"; then verdict=done; fi
case $verdict in
  timeout) log "the emulated host did not finish within ${TIMEOUT}s (ELISA_VMX_TIMEOUT); Bochs killed" ;;
  crashed) log "the emulated host failed to start the suite or panicked; Bochs stopped" ;;
  exited) log "Bochs exited before the suite finished; its last words:"; tail -n 5 "$WORK/bochs.out" | sed 's/^/    /' ;;
esac
phase_end

# --- summary (last, so that its closing "vmx: N passed, N failed" line ends the output)
cp "$SERIAL" "$CACHE/last-serial.log"
log "phase timings:"
for p in "${PHASES[@]}"; do log "  $p"; done
log "$(printf '%-10s %6ss' total "$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')")"
status=0
node "$ROOT/dist/test/vmx/summary.js" "$SERIAL" > "$WORK/summary.txt" || status=$?
if [ "$status" -ne 0 ] || [ "${ELISA_VMX_KEEP:-0}" = 1 ]; then
  if [ "$status" -ne 0 ]; then
    log "last lines of the serial console:"
    tail -n 25 "$SERIAL" | sed 's/^/    /'
  fi
  log "work directory kept: $WORK (serial.log, bochs.log, bochsrc)"
  cat "$WORK/summary.txt"
else
  cat "$WORK/summary.txt"
  rm -rf "$WORK"
fi
exit "$status"
}

main "$@"
