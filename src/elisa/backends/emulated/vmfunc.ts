// VMFUNC as the CPU defines it (function 0, EPTP switching) and how this backend traps
// it: the encodings and the rules a switch must satisfy, independent of KVM.
import { hex } from '../../address';

/** The I/O port of the rewritten VMFUNC sites (`out 0xd4, al`: 0xd4 is VMFUNC's last opcode byte). */
export const VMFUNC_TRAP_PORT = 0xd4;
/**
 * What each generated VMFUNC (0f 01 d4) is rewritten to: `nop; out 0xd4, al`. The OUT ends
 * where VMFUNC ended, and it starts one byte after the VMFUNC's address: upstream KVM
 * reports a port write with RIP at the OUT and skips it on the next KVM_RUN only if RIP
 * still equals that address, so setting RIP back to the VMFUNC (to raise #UD there when
 * the switch fails) is never mistaken for "continue after the OUT".
 */
export const VMFUNC_TRAP_BYTES: readonly number[] = Object.freeze([0x90, 0xe6, VMFUNC_TRAP_PORT]);
/** Instructions the guest executes at a rewritten site besides the trapping OUT (the nop). */
export const TRAP_EXTRA_INSNS = 1;
/** Where KVM may report RIP for a trap at `site`: at the OUT (upstream KVM) or after it (this project's PVM KVM). */
export const TRAP_RIP_OFFSETS: readonly number[] = Object.freeze([1, 3]);
/** VMFUNC's encoding. */
export const VMFUNC_OPCODE: readonly number[] = Object.freeze([0x0f, 0x01, 0xd4]);

/** The outcome of a VMFUNC: the context to switch to, or why it fails (#UD). */
export type VmfuncOutcome<T> = { ok: true; target: T; slot: number } | { ok: false; failure: string };

/**
 * VMFUNC's rules (SDM: VM functions; EPTP switching), as the CPU applies them: EAX
 * (32 bits) selects the function and only 0 (EPTP switching) is enabled; ECX (32 bits)
 * indexes the 512-entry EPTP list; the entry read now must be the EPTP of a known context.
 * Upper halves of RAX and RCX are ignored.
 */
export function vmfuncOutcome<T>(rax: bigint, rcx: bigint, listEntry: (index: number) => bigint, contexts: ReadonlyMap<bigint, T>): VmfuncOutcome<T> {
  const eax = Number(rax & 0xffffffffn);
  const ecx = Number(rcx & 0xffffffffn);
  if (eax !== 0) return { ok: false, failure: `EAX = ${hex(eax)}: only VM function 0 (EPTP switching) is enabled` };
  if (ecx >= 512) return { ok: false, failure: `ECX = ${hex(ecx)}: the EPTP list has 512 entries` };
  const eptp = listEntry(ecx);
  const target = contexts.get(eptp);
  if (eptp === 0n || target === undefined) {
    return { ok: false, failure: eptp === 0n ? `EPTP list entry ${ecx} is empty` : `EPTP list entry ${ecx} (${hex(eptp)}) is not the EPTP of a context of this vCPU` };
  }
  return { ok: true, target, slot: ecx };
}

