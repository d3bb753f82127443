#!/usr/bin/env bash
# For every ELISA patch variant and every supported Debian kernel: fetch that
# kernel's headers and source (cached outside the clone), apply the patch with
# zero fuzz to a pristine copy, build kvm.ko + kvm-intel.ko with -Werror and
# check their vermagic. Prints a table and exits non-zero if any cell failed.
#
#   scripts/check-kernel-patches.sh [--variant V]... [--kernel REL]...
#
# ELISA_KERNELS (space-separated releases) overrides the kernel list;
# ELISA_CACHE moves the cache (default ~/.cache/elisa-node).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=kvm-module.sh
source "$HERE/kvm-module.sh"

# Supported kernels: the Debian 12 (bookworm) kernel of each series for which
# kernel-patch/ has patches. Bump together with the patches when Debian's
# security archive moves on.
DEFAULT_KERNELS=(6.1.0-56-amd64 6.12.117+deb12-amd64)

variants=() kernels=()
while [ $# -gt 0 ]; do
  case $1 in
    --variant) variants+=("${2:?}"); shift 2 ;;
    --kernel) kernels+=("${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-kernel-patches: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ ${#variants[@]} -gt 0 ] || variants=("${VARIANTS[@]}")
if [ ${#kernels[@]} -eq 0 ]; then
  if [ -n "${ELISA_KERNELS:-}" ]; then read -r -a kernels <<< "$ELISA_KERNELS"; else kernels=("${DEFAULT_KERNELS[@]}"); fi
fi

# Build tools the out-of-tree module build needs (the kernel's own kbuild
# helpers come prebuilt in Debian's linux-kbuild package; pahole from dwarves
# generates module BTF, which 6.12's headers ask for since they ship vmlinux).
bash "$(dirname "$0")/install-deps.sh" make gcc-12 binutils patch xz-utils kmod dwarves apt dpkg

rows=() failed=0
for krel in "${kernels[@]}"; do
  t=$SECONDS
  # A kernel whose packages apt cannot find (the archive moved on) is a
  # failed row, not the end of the run.
  if ! reason=$( (resolve "$krel" > /dev/null) 2>&1 ); then
    for variant in "${variants[@]}"; do
      rows+=("$(printf '%-9s %-22s %-7s %-5s %6s %6s  %s' "$variant" "$krel" no no 0 0 "${reason##*kvm-module: }")")
    done
    failed=1
    continue
  fi
  resolve "$krel"
  fetch_headers
  fetch_source
  fetch_seconds=$((SECONDS - t))
  for variant in "${variants[@]}"; do
    applied=no built=no vermagic=- note=""
    APPLY_SECONDS=0 BUILD_SECONDS=0
    mkdir -p "$CACHE/check"
    work=$(mktemp -d "$CACHE/check/$variant-$krel.XXXXXX")
    if ! pf=$(patch_file "$variant" "$SERIES" 2>&1); then
      note=$pf
    else
      rc=0
      build_in "$work" "$pf" "$work.log" || rc=$?
      case $rc in
        0) applied=yes built=yes ;;
        10) note="patch does not apply with zero fuzz (log: $work.log)" ;;
        *) applied=yes note="build failed (log: $work.log)" ;;
      esac
      if [ $built = yes ]; then
        vermagic=$(ko_vermagic "$work/arch/x86/kvm/kvm-intel.ko" || echo '?')
        [ "$vermagic" = "$krel" ] || { built=no note="vermagic $vermagic != $krel"; }
      fi
    fi
    [ $built = yes ] || failed=1
    rows+=("$(printf '%-9s %-22s %-7s %-5s %6s %6s  %s' "$variant" "$krel" "$applied" "$built" \
      "$APPLY_SECONDS" "$BUILD_SECONDS" "$note")")
    if [ $built = yes ]; then
      # Keep the modules where `kvm-module.sh build` puts them (other tools and
      # the emulated VT-x host pick them up there) and drop the large tree.
      out="$CACHE/modules/$krel/$variant"
      mkdir -p "$out"
      cp "$work/arch/x86/kvm/kvm.ko" "$work/arch/x86/kvm/kvm-intel.ko" "$out/"
      printf 'variant=%s\nkernel=%s\nsource=%s %s\npatch=%s\npatch_sha256=%s\nbuilt=%s\n' \
        "$variant" "$krel" "$SRC_PKG" "$SRC_VERSION" "$pf" "$(sha256sum < "$pf" | cut -d' ' -f1)" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$out/BUILD-INFO"
      rm -rf "$work" "$work.log"
    fi
  done
  log "$krel: fetch/unpack ${fetch_seconds}s"
done

echo
printf '%-9s %-22s %-7s %-5s %6s %6s  %s\n' variant kernel applied built apply_s build_s note
for r in "${rows[@]}"; do echo "$r"; done
echo "total: $((SECONDS - T0))s"
exit $failed
