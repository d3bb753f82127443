#!/usr/bin/env bash
# Builds, installs and reports KVM modules (kvm.ko + kvm-intel.ko) carrying the
# ELISA hypercalls (kernel-patch/README.md).
#
#   kvm-module.sh build     [--variant compat|hardened] [--kernel REL] [--out DIR] [--patch FILE]
#   kvm-module.sh install   [--variant compat|hardened] [--from DIR] [--dry-run]
#   kvm-module.sh uninstall [--dry-run]
#   kvm-module.sh status
#   kvm-module.sh fetch     [--kernel REL]      download + unpack headers and source only
#   kvm-module.sh resolve   [--kernel REL]      print what would be used, download nothing
#   kvm-module.sh vermagic  FILE.ko             print the kernel release a module was built for
#   kvm-module.sh in-use                        list processes holding KVM file descriptors
#
# REL is a kernel release as `uname -r` prints it (the default). Headers come
# from /lib/modules/REL/build when installed, otherwise from the Debian/Ubuntu
# packages (apt-get download, unpacked into the cache, never installed); the
# matching source from /usr/src/linux-source-X.Y.tar.xz or the linux-source-X.Y
# package of the same version. Everything downloaded or unpacked lives in
# ${ELISA_CACHE:-$HOME/.cache/elisa-node}/kernel, so repeated runs reuse it.
#
# Exit codes: 0 ok, 1 failure, 2 bad usage, 3 refused (KVM in use, wrong host).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATCH_DIR="$ROOT/kernel-patch"
CACHE="${ELISA_CACHE:-$HOME/.cache/elisa-node}/kernel"
VARIANTS=(compat hardened)
# The sysfs file both patch variants create; it holds "compat" or "hardened".
VARIANT_PARAM=/sys/module/kvm_intel/parameters/elisa_variant
MANAGER_PARAM=/sys/module/kvm_intel/parameters/elisa_manager_pids

T0=$SECONDS
log() { printf '[kvm-module %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { printf 'kvm-module: %s\n' "$*" >&2; exit 1; }
usage_die() { printf 'kvm-module: %s (see the header of %s)\n' "$*" "$0" >&2; exit 2; }
refuse() { printf 'kvm-module: refused: %s\n' "$*" >&2; exit 3; }

# --- pure helpers (no side effects) -------------------------------------------

# "6.1.0-56-amd64" -> "6.1"; "6.12.117+deb12-amd64" -> "6.12"; "6.8.0-45-generic" -> "6.8".
kernel_series() {
  [[ $1 =~ ^([0-9]+)\.([0-9]+)([.+-]|$) ]] || return 1
  printf '%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
}

# Kernel release a .ko was built for: first word of its vermagic string, read
# from the .modinfo section (works without modinfo and for any module).
ko_vermagic() {
  local ko=$1 info
  [ -f "$ko" ] || { echo "no such file: $ko" >&2; return 1; }
  info=$(objcopy -O binary --only-section=.modinfo "$ko" /dev/stdout 2>/dev/null | tr '\0' '\n') ||
    { echo "$ko: not an ELF object with a .modinfo section" >&2; return 1; }
  info=$(printf '%s\n' "$info" | sed -n 's/^vermagic=//p' | head -n1)
  [ -n "$info" ] || { echo "$ko: no vermagic in .modinfo" >&2; return 1; }
  printf '%s\n' "${info%% *}"
}

# Processes holding /dev/kvm or a KVM VM/vCPU fd, as "PID COMM" lines. A VM
# keeps the modules busy even after its creator closed /dev/kvm, so anon-inode
# fds count too.
kvm_users() {
  local fd target pid seen=" "
  for fd in /proc/[0-9]*/fd/*; do
    target=$(readlink "$fd" 2>/dev/null) || continue
    case $target in
      /dev/kvm|anon_inode:kvm-vm|anon_inode:kvm-vcpu:*) ;;
      *) continue ;;
    esac
    pid=${fd#/proc/}; pid=${pid%%/*}
    case $seen in *" $pid "*) continue ;; esac
    seen+="$pid "
    printf '%s %s\n' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')"
  done
}

# --- resolution of headers, source and patch ----------------------------------

apt_updated=0
apt_field() { # PACKAGE[=VERSION] FIELD -> value of FIELD for that package, if apt knows it
  apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n "s/^$2: //p" | head -n1
}
apt_known() {
  if [ -z "$(apt_field "$1" Version)" ] && [ $apt_updated = 0 ] && [ "$(id -u)" = 0 ]; then
    log "apt does not know $1: running apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
    apt_updated=1
  fi
  [ -n "$(apt_field "$1" Version)" ]
}

# Sets KREL SERIES HDR_DIR (if installed) HDR_PKGS HDR_VERSION SRC_TAR (if
# installed) SRC_PKG SRC_VERSION for kernel release $1. Downloads nothing.
resolve() {
  KREL=$1
  SERIES=$(kernel_series "$KREL") || usage_die "not a kernel release: '$KREL'"
  HDR_DIR="" HDR_PKGS="" HDR_VERSION="" SRC_TAR="" SRC_PKG="" SRC_VERSION=""
  if [ -f "/lib/modules/$KREL/build/Makefile" ]; then
    HDR_DIR=$(readlink -f "/lib/modules/$KREL/build")
    HDR_VERSION=$(dpkg-query -W -f='${Version}' "linux-headers-$KREL" 2>/dev/null || true)
  fi
  if [ -z "$HDR_VERSION" ]; then
    apt_known "linux-headers-$KREL" ||
      die "no headers for $KREL: neither /lib/modules/$KREL/build nor a package linux-headers-$KREL"
    HDR_VERSION=$(apt_field "linux-headers-$KREL" Version)
  fi
  if [ -z "$HDR_DIR" ]; then
    # The flavour package plus the -common and kbuild packages it depends on.
    local deps
    deps=$(apt_field "linux-headers-$KREL=$HDR_VERSION" Depends | tr ',' '\n' |
      sed -e 's/|.*//' -e 's/(.*)//' -e 's/ //g' | grep -E '^linux-(headers|kbuild)-' || true)
    HDR_PKGS="linux-headers-$KREL $(echo $deps)"
  fi
  # Source of the same upstream release: Debian names it linux-source-X.Y,
  # Ubuntu linux-source-X.Y.Z.
  local cand
  for cand in "linux-source-$SERIES" "linux-source-${KREL%%-*}"; do
    if [ -f "/usr/src/$cand.tar.xz" ] &&
       [ "$(dpkg-query -W -f='${Version}' "$cand" 2>/dev/null)" = "$HDR_VERSION" ]; then
      SRC_TAR="/usr/src/$cand.tar.xz" SRC_PKG=$cand SRC_VERSION=$HDR_VERSION
      return 0
    fi
  done
  for cand in "linux-source-$SERIES" "linux-source-${KREL%%-*}"; do
    if apt_known "$cand" && apt-cache madison "$cand" | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
         grep -qxF "$HDR_VERSION"; then
      SRC_PKG=$cand SRC_VERSION=$HDR_VERSION
      return 0
    fi
  done
  die "no source for $KREL: need linux-source-$SERIES (or linux-source-${KREL%%-*}) version $HDR_VERSION, the version of its headers"
}

patch_file() { # VARIANT SERIES
  local f="$PATCH_DIR/$1/$2.patch"
  [ -f "$f" ] || die "no $1 patch for Linux $2 (have: $(cd "$PATCH_DIR/$1" 2>/dev/null && ls ./*.patch 2>/dev/null | sed 's|./||; s|.patch||' | tr '\n' ' '))"
  printf '%s\n' "$f"
}

# --- download and unpack (cached) ---------------------------------------------

download() { # PKG=VERSION ... -> .deb files in $CACHE/debs
  mkdir -p "$CACHE/debs"
  local spec pkg ver file missing=()
  for spec in "$@"; do
    pkg=${spec%%=*} ver=${spec#*=}
    file=$(ls "$CACHE/debs/${pkg}_${ver/*:/}_"*.deb 2>/dev/null | head -n1 || true)
    [ -n "$file" ] || missing+=("$spec")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "downloading ${missing[*]}"
    (cd "$CACHE/debs" && apt-get download "${missing[@]}") >&2 || die "apt-get download ${missing[*]} failed"
  fi
}
deb_of() { ls "$CACHE/debs/${1}_${2/*:/}_"*.deb | head -n1; }

# Sets HDR_BUILD: the directory to run make -C in.
fetch_headers() {
  if [ -n "$HDR_DIR" ]; then HDR_BUILD=$HDR_DIR; return; fi
  local dest="$CACHE/headers/$KREL-$HDR_VERSION" pkg specs=()
  if [ ! -f "$dest/.complete" ]; then
    for pkg in $HDR_PKGS; do specs+=("$pkg=$HDR_VERSION"); done
    # kbuild packages may carry a different version than the headers.
    specs=("${specs[@]/linux-kbuild-*/}")
    for pkg in $HDR_PKGS; do
      case $pkg in linux-kbuild-*) specs+=("$pkg=$(apt_field "$pkg" Version)") ;; esac
    done
    specs=($(printf '%s\n' "${specs[@]}" | grep -v '^$'))
    download "${specs[@]}"
    log "unpacking headers into $dest"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    local spec
    for spec in "${specs[@]}"; do dpkg-deb -x "$(deb_of "${spec%%=*}" "${spec#*=}")" "$dest.tmp"; done
    # The flavour's Makefile includes the -common tree by absolute /usr/src
    # path; point it into the unpacked copy.
    sed -i "s|^include /usr/src/|include $dest/usr/src/|" "$dest.tmp/usr/src/linux-headers-$KREL/Makefile"
    rm -rf "$dest" && mv "$dest.tmp" "$dest" && touch "$dest/.complete"
  fi
  HDR_BUILD="$dest/usr/src/linux-headers-$KREL"
}

# Sets SRC_TREE: pristine arch/x86/kvm + virt/kvm of the release (read-only copy).
fetch_source() {
  SRC_TREE="$CACHE/source/$SRC_PKG-$SRC_VERSION"
  [ -f "$SRC_TREE/.complete" ] && return 0
  local tar=$SRC_TAR
  if [ -z "$tar" ]; then
    download "$SRC_PKG=$SRC_VERSION"
    tar="$CACHE/tmp-$SRC_PKG.tar.xz"
    mkdir -p "$CACHE"
    dpkg-deb --fsys-tarfile "$(deb_of "$SRC_PKG" "$SRC_VERSION")" |
      tar -xO "./usr/src/$SRC_PKG.tar.xz" > "$tar"
  fi
  log "unpacking arch/x86/kvm and virt/kvm from $(basename "$tar") (xz, takes a while)"
  rm -rf "$SRC_TREE.tmp" && mkdir -p "$SRC_TREE.tmp"
  tar -xJf "$tar" -C "$SRC_TREE.tmp" --strip-components=1 \
    --wildcards --no-wildcards-match-slash '*/arch/x86/kvm' '*/virt/kvm'
  [ "$tar" = "$SRC_TAR" ] || rm -f "$tar"
  rm -rf "$SRC_TREE" && mv "$SRC_TREE.tmp" "$SRC_TREE" && touch "$SRC_TREE/.complete"
}

# --- build ---------------------------------------------------------------------

# Applies PATCH to a fresh copy of the pristine tree in WORK, then builds kvm.ko
# and kvm-intel.ko there with -Werror. Sets APPLY_SECONDS BUILD_SECONDS.
build_in() { # WORK PATCH LOGFILE
  local work=$1 patch=$2 logf=$3 t
  rm -rf "$work" && mkdir -p "$work" && cp -a "$SRC_TREE/arch" "$SRC_TREE/virt" "$work/"
  t=$SECONDS
  if [ -n "$patch" ]; then
    log "applying $(basename "$(dirname "$patch")")/$(basename "$patch") (zero fuzz)"
    patch -d "$work" -p1 --fuzz=0 --no-backup-if-mismatch --forward --batch < "$patch" > "$logf" 2>&1 ||
      { cat "$logf" >&2; APPLY_SECONDS=$((SECONDS - t)); return 10; }
  fi
  APPLY_SECONDS=$((SECONDS - t))
  # Out-of-tree build of arch/x86/kvm: a Kbuild file (read instead of the
  # Makefile) that finds virt/kvm beside it and the tree's own headers.
  # include/trace exists so that the tracepoint headers' "../../arch/x86/kvm/"
  # relative include resolves into this copy.
  mkdir -p "$work/include/trace"
  sed -e 's|^ccflags-y += -I \$(srctree)/arch/x86/kvm$|ccflags-y += -I $(src) -I $(src)/../../../include/trace|' \
      -e 's|^include \$(srctree)/virt/kvm/Makefile.kvm$|include $(src)/../../../virt/kvm/Makefile.kvm|' \
      "$work/arch/x86/kvm/Makefile" > "$work/arch/x86/kvm/Kbuild"
  grep -q 'include/trace' "$work/arch/x86/kvm/Kbuild" || { echo "unexpected arch/x86/kvm/Makefile layout" >&2; return 11; }
  t=$SECONDS
  log "building kvm.ko + kvm-intel.ko against $HDR_BUILD (-Werror, $(nproc) jobs)"
  local n=0 line
  set +e
  make -C "$HDR_BUILD" M="$work/arch/x86/kvm" CONFIG_KVM_AMD= KCFLAGS=-Werror \
    -j"$(nproc)" modules 2>&1 | tee -a "$logf" | while IFS= read -r line; do
      case $line in *' CC [M] '*|*' LD [M] '*)
        n=$((n + 1)); printf '  [%3d] %s\n' "$n" "${line##*/arch/x86/kvm/}" >&2 ;; esac
    done
  local rc=${PIPESTATUS[0]}
  set -e
  BUILD_SECONDS=$((SECONDS - t))
  if [ "$rc" != 0 ]; then grep -E 'error|warning' "$logf" | head -n 40 >&2; return 12; fi
  [ -f "$work/arch/x86/kvm/kvm.ko" ] && [ -f "$work/arch/x86/kvm/kvm-intel.ko" ] || return 12
}

check_vermagic() { # KO KREL
  local got
  got=$(ko_vermagic "$1") || die "cannot read vermagic of $1"
  [ "$got" = "$2" ] || die "$1 was built for $got, not $2"
}

cmd_build() {
  local variant=hardened krel out="" patch=""
  krel=$(uname -r)
  while [ $# -gt 0 ]; do
    case $1 in
      --variant) variant=${2:?}; shift 2 ;;
      --kernel) krel=${2:?}; shift 2 ;;
      --out) out=${2:?}; shift 2 ;;
      --patch) patch=${2:?}; shift 2 ;;
      *) usage_die "build: unknown option '$1'" ;;
    esac
  done
  case " ${VARIANTS[*]} stock " in *" $variant "*) ;; *) usage_die "unknown variant '$variant' (compat, hardened, stock)" ;; esac
  resolve "$krel"
  if [ -z "$patch" ] && [ "$variant" != stock ]; then patch=$(patch_file "$variant" "$SERIES"); fi
  fetch_headers
  fetch_source
  local work="$CACHE/build/$krel-$variant"
  mkdir -p "$CACHE/build"
  build_in "$work" "$patch" "$work.log" || die "build failed (log: $work.log)"
  local ko
  for ko in kvm.ko kvm-intel.ko; do check_vermagic "$work/arch/x86/kvm/$ko" "$krel"; done
  out=${out:-"$CACHE/modules/$krel/$variant"}
  mkdir -p "$out"
  cp "$work/arch/x86/kvm/kvm.ko" "$work/arch/x86/kvm/kvm-intel.ko" "$out/"
  {
    echo "variant=$variant"
    echo "kernel=$krel"
    echo "source=$SRC_PKG $SRC_VERSION"
    echo "patch=${patch:-none}"
    [ -z "$patch" ] || echo "patch_sha256=$(sha256sum < "$patch" | cut -d' ' -f1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } > "$out/BUILD-INFO"
  log "built in ${BUILD_SECONDS}s; vermagic $krel matches"
  echo "$out/kvm.ko"
  echo "$out/kvm-intel.ko"
}

# --- install / uninstall / status ------------------------------------------------

refuse_if_in_use() {
  local users
  users=$(kvm_users)
  [ -z "$users" ] || refuse "KVM is in use (close these VMs first):
$users"
}

run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "would run: $*"; else "$@"; fi; }

load_modules() { # DIR -> loads DIR/kvm.ko then DIR/kvm-intel.ko with configured options
  local opts_kvm opts_intel
  opts_kvm=$(modprobe -c 2>/dev/null | awk '$1=="options" && $2=="kvm" {$1=$2=""; print}' | xargs || true)
  opts_intel=$(modprobe -c 2>/dev/null | awk '$1=="options" && $2=="kvm_intel" {$1=$2=""; print}' | xargs || true)
  # shellcheck disable=SC2086
  run insmod "$1/kvm.ko" $opts_kvm && run insmod "$1/kvm-intel.ko" $opts_intel
}

unload_kvm() {
  local m
  for m in kvm_intel kvm; do
    if [ -d "/sys/module/$m" ]; then run rmmod "$m" || return 1; fi
  done
}

cmd_install() {
  local variant=hardened from=""
  while [ $# -gt 0 ]; do
    case $1 in
      --variant) variant=${2:?}; shift 2 ;;
      --from) from=${2:?}; shift 2 ;;
      --kernel) [ "$2" = "$(uname -r)" ] || refuse "install only targets the running kernel ($(uname -r)), not $2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      *) usage_die "install: unknown option '$1'" ;;
    esac
  done
  case " ${VARIANTS[*]} " in *" $variant "*) ;; *) usage_die "unknown variant '$variant'" ;; esac
  [ "$(id -u)" = 0 ] || [ "${DRY_RUN:-0}" = 1 ] || refuse "install needs root"
  refuse_if_in_use
  grep -qw vmx /proc/cpuinfo || refuse "this CPU has no VMX (Intel VT-x): kvm-intel cannot load here"
  local krel dir
  krel=$(uname -r)
  dir=${from:-"$CACHE/modules/$krel/$variant"}
  if [ ! -f "$dir/kvm-intel.ko" ]; then
    [ -z "$from" ] || die "no kvm-intel.ko in $from"
    log "no $variant build for $krel yet: building"
    cmd_build --variant "$variant" --kernel "$krel" --out "$dir" > /dev/null
  fi
  check_vermagic "$dir/kvm.ko" "$krel"
  check_vermagic "$dir/kvm-intel.ko" "$krel"
  # kvm.ko needs irqbypass; load it (stock) first so insmod finds its symbols.
  run modprobe irqbypass
  log "unloading the current kvm_intel and kvm"
  unload_kvm || refuse "could not unload the current KVM modules"
  log "loading $variant modules from $dir"
  if ! load_modules "$dir"; then
    log "loading failed: restoring the stock modules"
    unload_kvm || true
    run modprobe kvm_intel || die "could not restore the stock modules either: run 'modprobe kvm_intel'"
    die "the $variant modules did not load; stock modules restored (see dmesg)"
  fi
  if [ "${DRY_RUN:-0}" != 1 ]; then
    [ "$(cat "$VARIANT_PARAM" 2>/dev/null)" = "$variant" ] || die "loaded, but $VARIANT_PARAM does not say $variant"
  fi
  log "installed: kvm_intel reports variant $variant (until reboot or uninstall)"
}

cmd_uninstall() {
  while [ $# -gt 0 ]; do
    case $1 in --dry-run) DRY_RUN=1; shift ;; *) usage_die "uninstall: unknown option '$1'" ;; esac
  done
  [ "$(id -u)" = 0 ] || [ "${DRY_RUN:-0}" = 1 ] || refuse "uninstall needs root"
  refuse_if_in_use
  unload_kvm || refuse "could not unload the current KVM modules"
  run modprobe kvm_intel || die "modprobe kvm_intel (stock) failed"
  log "stock modules loaded"
}

cmd_status() {
  local krel variant="none" m
  krel=$(uname -r)
  echo "kernel: $krel"
  for m in kvm kvm_intel kvm_amd kvm_pvm; do
    [ -d "/sys/module/$m" ] && echo "module: $m"
  done
  if [ -f "$VARIANT_PARAM" ]; then
    variant=$(cat "$VARIANT_PARAM")
  elif [ -d /sys/module/kvm_intel ]; then
    variant=stock
  fi
  echo "variant: $variant"
  [ -f "$MANAGER_PARAM" ] && echo "manager_pids: $(cat "$MANAGER_PARAM")"
  local v
  for v in "${VARIANTS[@]}"; do
    [ -f "$CACHE/modules/$krel/$v/kvm-intel.ko" ] && echo "built: $v $CACHE/modules/$krel/$v"
  done
  local users
  users=$(kvm_users | wc -l)
  echo "kvm_users: $users"
}

cmd_resolve() {
  local krel
  krel=$(uname -r)
  while [ $# -gt 0 ]; do
    case $1 in --kernel) krel=${2:?}; shift 2 ;; *) usage_die "resolve: unknown option '$1'" ;; esac
  done
  resolve "$krel"
  echo "kernel=$KREL"
  echo "series=$SERIES"
  echo "headers_dir=$HDR_DIR"
  echo "headers_packages=$HDR_PKGS"
  echo "headers_version=$HDR_VERSION"
  echo "source_tarball=$SRC_TAR"
  echo "source_package=$SRC_PKG"
  echo "source_version=$SRC_VERSION"
  local v
  for v in "${VARIANTS[@]}"; do
    if [ -f "$PATCH_DIR/$v/$SERIES.patch" ]; then echo "patch_$v=$PATCH_DIR/$v/$SERIES.patch"; else echo "patch_$v="; fi
  done
}

cmd_fetch() {
  local krel
  krel=$(uname -r)
  while [ $# -gt 0 ]; do
    case $1 in --kernel) krel=${2:?}; shift 2 ;; *) usage_die "fetch: unknown option '$1'" ;; esac
  done
  resolve "$krel"
  fetch_headers
  fetch_source
  echo "headers=$HDR_BUILD"
  echo "source=$SRC_TREE"
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case $cmd in
    build) cmd_build "$@" ;;
    install) cmd_install "$@" ;;
    uninstall) cmd_uninstall "$@" ;;
    status) cmd_status "$@" ;;
    resolve) cmd_resolve "$@" ;;
    fetch) cmd_fetch "$@" ;;
    vermagic) [ $# = 1 ] || usage_die "vermagic FILE.ko"; ko_vermagic "$1" ;;
    in-use) local u; u=$(kvm_users); [ -z "$u" ] || { echo "$u"; exit 1; } ;;
    series) [ $# = 1 ] || usage_die "series RELEASE"; kernel_series "$1" || usage_die "not a kernel release: '$1'" ;;
    ''|-h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ -n "$cmd" ] ;;
    *) usage_die "unknown command '$cmd'" ;;
  esac
}

# Sourcing this file (tests, check-kernel-patches.sh) defines the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
