#!/bin/sh
# Runs inside the emulated VT-x host, chrooted into the test disk (see /init of the
# initramfs). Loads Debian's stock KVM modules and the msr driver, runs the in-host
# suite in ONE node process (node start-up costs seconds here), then powers off.
# Every line the host harness reads starts with "ELISA-VMX: ".
export PATH=/bin:/usr/bin
export HOME=/tmp
say() { echo "ELISA-VMX: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
M=/elisa/modules/stock
for ko in msr irqbypass kvm kvm-intel; do
  if ! insmod "$M/$ko.ko"; then
    say "BOOT-FAIL insmod $M/$ko.ko"
    poweroff -f
  fi
done
# Per-VM KVM statistics (exit counts) live in debugfs.
mount -t debugfs debugfs /sys/kernel/debug || say "NOTE debugfs not mounted"
say "KVM-READY $(up)s"
cd /elisa/pkg || { say "BOOT-FAIL no /elisa/pkg"; poweroff -f; }
ELISA_VMX_INHOST=1 ELISA_VMX_ROOT=/elisa node dist/test/vmx/run-in-host.js
say "NODE-EXIT $? $(up)s"
# Kernel lines that mention KVM, or that the kernel considers errors, help when a test
# failed; the host prints them only then.
dmesg | grep -iE 'kvm|vmx|elisa|warn|bug|oops|error' | tail -n 40 | while IFS= read -r l; do
  say "DMESG $l"
done
sync
poweroff -f
