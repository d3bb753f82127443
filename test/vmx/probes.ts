// Tiny guest programs of the in-host suite (test/vmx/guest/*.S, assembled and linked
// with native/guest/linker.ld on the real host by scripts/vmx-e2e.sh, because the
// emulated host has no binutils) and the host side that runs them in a GuestMachine.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Vm } from '../../src/kvm/index';
import { GuestFault, type GuestMachine } from '../../src/x86/index';
import { vmxRoot } from './inhost';

/** Run limit for one probe: Bochs runs everything ~100x slower than hardware. */
export const PROBE_TIMEOUT_MS = 60_000;

/** Path of a probe program on the test disk. */
export function probePath(name: 'hypercall-probe' | 'vmfunc-probe'): string {
  return join(vmxRoot, 'guest', `${name}.elf`);
}

/** Arguments of an ELISA/KVM hypercall: RAX = number, RBX, RCX, RDX, RSI. */
export interface Hypercall {
  nr: number;
  rbx?: bigint | number;
  rcx?: bigint | number;
  rdx?: bigint | number;
  rsi?: bigint | number;
}

/**
 * Executes one VMCALL in `machine`'s vCPU (a fresh run of the hypercall probe on the
 * same VM and vCPU, so state the host keeps per vCPU persists across calls) and
 * returns RAX afterwards as a signed 64-bit value.
 */
export async function hypercall(machine: GuestMachine, call: Hypercall): Promise<bigint> {
  machine.loadElf(probePath('hypercall-probe'));
  const regs = machine.vcpu.getRegs();
  machine.vcpu.setRegs({
    ...regs, rax: BigInt(call.nr), rbx: BigInt(call.rbx ?? 0), rcx: BigInt(call.rcx ?? 0),
    rdx: BigInt(call.rdx ?? 0), rsi: BigInt(call.rsi ?? 0),
  });
  const r = await machine.run({ timeoutMs: PROBE_TIMEOUT_MS });
  if (r.exitCode !== 0 || r.result === undefined) {
    throw new Error(`hypercall probe ended with exit code ${r.exitCode} and result ${String(r.result)}`);
  }
  return BigInt.asIntN(64, r.result);
}

/** How a run of VMFUNCs in the guest ended. */
export type VmfuncOutcome =
  | { kind: 'completed' }
  | { kind: 'fault'; mnemonic: string; atVmfunc: boolean };

/**
 * Runs the VMFUNC probe in `machine`: VMFUNC(0, slot) `times` times in a row. Reports
 * whether every VMFUNC completed or which exception the first one raised.
 */
export async function vmfunc(machine: GuestMachine, slot = 0, times = 1): Promise<VmfuncOutcome> {
  const program = machine.loadElf(probePath('vmfunc-probe'));
  machine.vcpu.setRegs({ ...machine.vcpu.getRegs(), rcx: BigInt(slot), rbx: BigInt(times) });
  try {
    const r = await machine.run({ timeoutMs: PROBE_TIMEOUT_MS });
    if (r.exitCode !== 1) throw new Error(`VMFUNC probe exited with ${r.exitCode}, expected 1`);
    return { kind: 'completed' };
  } catch (err) {
    if (!(err instanceof GuestFault)) throw err;
    return { kind: 'fault', mnemonic: err.mnemonic, atVmfunc: err.rip === BigInt(program.symbols.address('vmfunc_site')) };
  }
}

/**
 * VM exits KVM counted for `vm` so far (all vCPUs), from debugfs (mounted by suite.sh):
 * /sys/kernel/debug/kvm/<pid>-<vm fd>/exits. Counts exits handled inside KVM too, which
 * the host's own run loop never sees.
 */
export function vmExits(vm: Vm): bigint {
  const file = `/sys/kernel/debug/kvm/${process.pid}-${vm.fd}/exits`;
  return BigInt(readFileSync(file, 'utf8').trim());
}

/** -KVM_ENOSYS: KVM's answer to a hypercall number it does not know. */
export const KVM_ENOSYS = -1000n;
/** -KVM_EPERM: the hardened ELISA patch's answer to a caller that may not do this. */
export const KVM_EPERM = -1n;

/** VMCS field encodings (SDM Vol. 3 App. B) used with hypercall 1000/2/x. */
export const VmcsField = { EPT_POINTER: 0x201a, GUEST_RFLAGS: 0x6820, HOST_RIP: 0x6c16 } as const;

/** The ELISA hypercalls (original ABI: RAX = number, RBX = group, RCX = operation, RDX/RSI = arguments). */
export const Elisa = {
  vmcsRead: (field: number): Hypercall => ({ nr: 1000, rbx: 2, rcx: 1, rdx: field }),
  vmcsWrite: (field: number, value: bigint): Hypercall => ({ nr: 1000, rbx: 2, rcx: 2, rdx: field, rsi: value }),
  gpaToHpa: (gpa: number): Hypercall => ({ nr: 1000, rbx: 3, rcx: 1, rdx: gpa }),
  setRendezvousVcpu: (id: bigint): Hypercall => ({ nr: 1001, rbx: 2, rcx: 1, rdx: id }),
  setRendezvousList: (address: bigint | number): Hypercall => ({ nr: 1001, rbx: 2, rcx: 2, rdx: address }),
  vcpuId: (): Hypercall => ({ nr: 1001, rbx: 3, rcx: 1 }),
  activate: (): Hypercall => ({ nr: 1001, rbx: 3, rcx: 2 }),
} as const;

/** Reads little-endian u64 slot `index` of the EPTP list page at `gpa` of `machine`'s memory. */
export function eptpListSlot(machine: GuestMachine, gpa: number, index: number): bigint {
  const b = machine.memory.bytes(gpa + index * 8, 8);
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
}
