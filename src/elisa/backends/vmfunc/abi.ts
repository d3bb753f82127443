// The ELISA hypercall ABI as the vmfunc backend uses it: numbers, groups and operations
// of kernel-patch/{compat,hardened} (VMCALL: RAX = number, RBX = group, RCX = operation,
// RDX, RSI = arguments; result in RAX), the KVM error values that come back, and the
// hardened variant's capability for designating a manager VM. Mirrors
// kernel-patch/*/6.1.patch (arch/x86/kvm/vmx/elisa.c); kernel-patch/README.md is the
// authority once it exists.

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

/** Hypercall numbers. */
export const HC_UTIL = 1000n;
export const HC_NEGOTIATION = 1001n;

/** The hypercalls the backend issues, by what they do. */
export const ElisaCall = {
  /** 1000/2/1: read a VMCS field of the caller (compat: any field; hardened: RFLAGS only). */
  vmcsRead: (field: bigint): Hypercall => ({ nr: HC_UTIL, group: 2n, op: 1n, a0: field }),
  /** 1000/2/2: write a VMCS field of the caller (compat: guest-state only; hardened: RFLAGS.IF only). */
  vmcsWrite: (field: bigint, value: bigint): Hypercall => ({ nr: HC_UTIL, group: 2n, op: 2n, a0: field, a1: value }),
  /** 1000/3/1: host-physical address of the caller's page at guest-physical `gpa` (pins it). */
  gpaToHpa: (gpa: bigint): Hypercall => ({ nr: HC_UTIL, group: 3n, op: 1n, a0: gpa }),
  /** 1001/2/1: manager names the guest vCPU (its id/token) of the next rendezvous. */
  setRendezvousVcpu: (id: bigint): Hypercall => ({ nr: HC_NEGOTIATION, group: 2n, op: 1n, a0: id }),
  /** 1001/2/2: manager names the EPTP list (compat: its HPA; hardened: its GPA in the manager VM). */
  setRendezvousList: (address: bigint): Hypercall => ({ nr: HC_NEGOTIATION, group: 2n, op: 2n, a0: address }),
  /** 1001/2/3 (hardened only): manager revokes the offer/binding of a guest vCPU token. */
  revoke: (token: bigint): Hypercall => ({ nr: HC_NEGOTIATION, group: 2n, op: 3n, a0: token }),
  /** 1001/3/1: the calling vCPU's identifier (compat: keyed hash; hardened: random token). */
  vcpuId: (): Hypercall => ({ nr: HC_NEGOTIATION, group: 3n, op: 1n }),
  /** 1001/3/2: activate EPTP switching on the calling vCPU with the list offered to it. */
  activate: (): Hypercall => ({ nr: HC_NEGOTIATION, group: 3n, op: 2n }),
  /** 1001/3/3 (hardened only): switch EPTP switching off on the calling vCPU. */
  deactivate: (): Hypercall => ({ nr: HC_NEGOTIATION, group: 3n, op: 3n }),
} as const;

/** KVM's hypercall error numbers (include/uapi/linux/kvm_para.h), returned negated in RAX. */
export const KvmHcError = { EPERM: 1, EFAULT: 14, EINVAL: 22, EOPNOTSUPP: 95, ENOSYS: 1000 } as const;

/** VMCS field encodings (SDM vol. 3, appendix B) the hostile-guest checks use. */
export const VmcsField = { EPT_POINTER: 0x201an, GUEST_RFLAGS: 0x6820n, HOST_RIP: 0x6c16n } as const;

/**
 * KVM_ENABLE_CAP capability of the hardened variant that makes a VM an ELISA manager
 * (args[0] = 1; needs CAP_SYS_RAWIO). "ELIS" in ASCII, far above upstream's numbers.
 */
export const KVM_CAP_ELISA_MANAGER = 0x454c4953;

/** Which ELISA patch a loaded kvm_intel carries. */
export type ElisaVariant = 'compat' | 'hardened';

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
