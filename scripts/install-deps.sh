#!/usr/bin/env bash
# Installs the Debian packages this project needs to build and test, if missing.
# gcc/make/python3 build the addon and guest programs; binutils (as, objdump)
# cross-checks our x86 encoder. gcc-12, xz-utils, patch, kmod and dwarves
# (pahole, module BTF) build the ELISA-patched KVM modules
# (scripts/kvm-module.sh, check-kernel-patches.sh).
set -euo pipefail
need=(gcc g++ make python3 binutils gcc-12 xz-utils patch kmod dwarves)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
