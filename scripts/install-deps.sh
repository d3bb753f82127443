#!/usr/bin/env bash
# Installs Debian packages that are missing, and only those.
#   scripts/install-deps.sh            the packages the build and `npm test` need
#   scripts/install-deps.sh PKG...     these packages (other scripts' own needs)
# gcc/make/python3 build the addon and guest programs; binutils (as, objdump)
# cross-checks our x86 encoder. gcc-12, xz-utils, patch, kmod and dwarves
# (pahole, module BTF) build the ELISA-patched KVM modules
# (scripts/kvm-module.sh, check-kernel-patches.sh).
set -euo pipefail
if [ $# -gt 0 ]; then need=("$@"); else need=(gcc g++ make python3 binutils gcc-12 xz-utils patch kmod dwarves); fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (a concurrent build) may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi
