// Tiny guest programs of the in-host suite (test/vmx/guest/*.S, assembled and linked
// with native/guest/linker.ld on the real host by scripts/vmx-e2e.sh, because the
// emulated host has no binutils) and the host side that runs them in a GuestMachine.
import { join } from 'node:path';
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

/** How a VMFUNC(0, 0) in the guest ended. */
export type VmfuncOutcome =
  | { kind: 'completed'; exits: number }
  | { kind: 'fault'; mnemonic: string; atVmfunc: boolean };

/** Runs the VMFUNC probe in `machine` and reports whether VMFUNC completed or faulted. */
export async function vmfunc(machine: GuestMachine): Promise<VmfuncOutcome> {
  const program = machine.loadElf(probePath('vmfunc-probe'));
  try {
    const r = await machine.run({ timeoutMs: PROBE_TIMEOUT_MS });
    if (r.exitCode !== 1) throw new Error(`VMFUNC probe exited with ${r.exitCode}, expected 1`);
    return { kind: 'completed', exits: r.exits };
  } catch (err) {
    if (!(err instanceof GuestFault)) throw err;
    return { kind: 'fault', mnemonic: err.mnemonic, atVmfunc: err.rip === BigInt(program.symbols.address('vmfunc_site')) };
  }
}

/** -KVM_ENOSYS: KVM's answer to a hypercall number it does not know. */
export const KVM_ENOSYS = -1000n;
/** -KVM_EPERM: the hardened ELISA patch's answer to a caller that may not do this. */
export const KVM_EPERM = -1n;
