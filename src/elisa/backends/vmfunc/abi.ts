// The ELISA hypercall ABI as the vmfunc backend uses it: numbers, groups and operations
// of kernel-patch/{compat,hardened} (VMCALL: RAX = number, RBX = group, RCX = operation,
// RDX, RSI = arguments; result in RAX), the KVM error values that come back, and the
// hardened variant's capability for designating a manager VM. Mirrors
// kernel-patch/*/6.1.patch (arch/x86/kvm/vmx/elisa.c) through src/elisa/hypercall-abi.ts,
// whose values a test reads back out of the patches.

import {
  ElisaHypercall, GuestOp, KVM_CAP_ELISA_MANAGER, KvmHcError, ManagerOp, NegotiationGroup, UtilAddrOp, UtilGroup, UtilVmcsOp, VMCS_GUEST_RFLAGS,
  type ElisaVariant,
} from '../../hypercall-abi';

/** One hypercall: the registers the caller loads before VMCALL. */
export interface Hypercall {
  /** RAX: 1000 (UTIL) or 1001 (NEGOTIATION). */
  nr: bigint;
  /** RBX: group. */
  group: bigint;
  /** RCX: operation. */
  op: bigint;
  /** RDX: first argument. */
  a0?: bigint;
  /** RSI: second argument. */
  a1?: bigint;
}

/** Hypercall numbers (src/elisa/hypercall-abi.ts is the one definition, checked against the patches). */
export const HC_UTIL = BigInt(ElisaHypercall.UTIL);
export const HC_NEGOTIATION = BigInt(ElisaHypercall.NEGOTIATION);

const call = (nr: bigint, group: number, op: number, a0?: bigint, a1?: bigint): Hypercall => ({
  nr, group: BigInt(group), op: BigInt(op), ...(a0 === undefined ? {} : { a0 }), ...(a1 === undefined ? {} : { a1 }),
});

/** The hypercalls the backend issues, by what they do. */
export const ElisaCall = {
  /** 1000/2/1: read a VMCS field of the caller (compat: any field; hardened: RFLAGS only). */
  vmcsRead: (field: bigint): Hypercall => call(HC_UTIL, UtilGroup.VMCS, UtilVmcsOp.READ64, field),
  /** 1000/2/2: write a VMCS field of the caller (compat: guest-state only; hardened: RFLAGS.IF only). */
  vmcsWrite: (field: bigint, value: bigint): Hypercall => call(HC_UTIL, UtilGroup.VMCS, UtilVmcsOp.WRITE64, field, value),
  /** 1000/3/1: host-physical address of the caller's page at guest-physical `gpa` (pins it). */
  gpaToHpa: (gpa: bigint): Hypercall => call(HC_UTIL, UtilGroup.ADDR, UtilAddrOp.GPA_TO_HPA, gpa),
  /** 1001/2/1: manager names the guest vCPU (its id/token) of the next rendezvous. */
  setRendezvousVcpu: (id: bigint): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.MANAGER, ManagerOp.SET_VCPU, id),
  /** 1001/2/2: manager names the EPTP list (compat: its HPA; hardened: its GPA in the manager VM). */
  setRendezvousList: (address: bigint): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.MANAGER, ManagerOp.SET_LIST, address),
  /** 1001/2/3 (hardened only): manager revokes the offer/binding of a guest vCPU token. */
  revoke: (token: bigint): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.MANAGER, ManagerOp.REVOKE, token),
  /** 1001/3/1: the calling vCPU's identifier (compat: keyed hash; hardened: random token). */
  vcpuId: (): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.GUEST, GuestOp.VCPU_ID),
  /** 1001/3/2: activate EPTP switching on the calling vCPU with the list offered to it. */
  activate: (): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.GUEST, GuestOp.ACTIVATE),
  /** 1001/3/3 (hardened only): switch EPTP switching off on the calling vCPU. */
  deactivate: (): Hypercall => call(HC_NEGOTIATION, NegotiationGroup.GUEST, GuestOp.DEACTIVATE),
} as const;

export { KvmHcError, KVM_CAP_ELISA_MANAGER, type ElisaVariant };

/** VMCS field encodings (SDM vol. 3, appendix B) the hostile-guest checks use. */
export const VmcsField = { EPT_POINTER: 0x201an, GUEST_RFLAGS: BigInt(VMCS_GUEST_RFLAGS), HOST_RIP: 0x6c16n } as const;

/**
 * The error a hypercall result encodes, or undefined for a plain value. Results in
 * [-4095, -1] are errors (as in Linux); identifiers and addresses never fall there.
 */
export function hypercallError(result: bigint): string | undefined {
  const signed = BigInt.asIntN(64, result);
  if (signed >= 0n || signed < -4095n) return undefined;
  const code = Number(-signed);
  const name = Object.entries(KvmHcError).find(([, v]) => v === code)?.[0];
  return name ? `-KVM_${name} (${signed})` : `error ${signed}`;
}

/** Describes a hypercall for messages: "1000/3/1(0x800000000)". */
export function describeHypercall(call: Hypercall): string {
  const args = [call.a0, call.a1].filter((a) => a !== undefined).map((a) => `0x${a!.toString(16)}`);
  return `${call.nr}/${call.group}/${call.op}${args.length ? `(${args.join(', ')})` : ''}`;
}
