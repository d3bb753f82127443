// VM-exit counters KVM keeps per VM (summed over its vCPUs), read from debugfs:
// /sys/kernel/debug/kvm/<pid>-<vm fd>/<stat>. They count exits KVM handles in the
// kernel too (interrupts, EPT violations, VMFUNC failures), which a VMM never sees:
// what "no VM exit during a round trip" has to be checked against.
import { existsSync, readFileSync } from 'node:fs';
import type { Vm } from '../../../kvm';

/** Counters read together. */
export interface ExitCounters {
  /** Every VM exit. */
  exits: bigint;
  /** Exits for external interrupts (host timer ticks, IPIs): not caused by the guest. */
  irqExits: bigint;
  /** Port-I/O exits. */
  ioExits: bigint;
  /** Hypercalls handled. */
  hypercalls: bigint;
  /** Guest-physical page faults KVM took (EPT violations: first touch of guest RAM). */
  pfTaken: bigint;
}

/** The debugfs directory of `vm`, or undefined when debugfs is not mounted or has no entry. */
export function vmStatsDir(vm: Vm, pid = process.pid): string | undefined {
  const dir = `/sys/kernel/debug/kvm/${pid}-${vm.fd}`;
  return existsSync(`${dir}/exits`) ? dir : undefined;
}

/** Reads the counters of `vm`; throws naming what is missing. */
export function readExitCounters(vm: Vm): ExitCounters {
  const dir = vmStatsDir(vm);
  if (!dir) throw new Error(`no KVM statistics for VM fd ${vm.fd} in debugfs (mount -t debugfs debugfs /sys/kernel/debug)`);
  const read = (name: string): bigint => BigInt(readFileSync(`${dir}/${name}`, 'utf8').trim());
  return { exits: read('exits'), irqExits: read('irq_exits'), ioExits: read('io_exits'), hypercalls: read('hypercalls'), pfTaken: read('pf_taken') };
}

/** b − a, field by field. */
export function diffCounters(a: ExitCounters, b: ExitCounters): ExitCounters {
  return { exits: b.exits - a.exits, irqExits: b.irqExits - a.irqExits, ioExits: b.ioExits - a.ioExits, hypercalls: b.hypercalls - a.hypercalls,
    pfTaken: b.pfTaken - a.pfTaken };
}
