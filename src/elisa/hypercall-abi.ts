// The ELISA hypercall ABI as implemented by kernel-patch/ (compat and hardened
// variants), for code that issues the hypercalls (guest and manager programs)
// or configures the host (the Node VMM). kernel-patch/README.md is the prose
// version; arch/x86/kvm/vmx/elisa.c in each patch is the implementation.
//
// Calling convention: VMCALL from 64-bit mode with RAX = hypercall number,
// RBX = group, RCX = operation, RDX and RSI = arguments. The result comes back
// in RAX: a value, 0 for success, or a negative KVM error (see KvmHcError).

/** Hypercall numbers (RAX). */
export const ElisaHypercall = {
  /** Utilities: VMCS access (RFLAGS.IF only in hardened) and GPA→HPA. */
  UTIL: 1000,
  /** Negotiation between a manager and a guest vCPU. */
  NEGOTIATION: 1001,
} as const;

/** Groups (RBX) of hypercall 1000. */
export const UtilGroup = {
  /** Original "debug" group: not implemented by either variant (-KVM_ENOSYS). */
  DEBUG: 1,
  /** VMCS field access; RCX is a UtilVmcsOp. */
  VMCS: 2,
  /** Address translation; RCX is a UtilAddrOp. Manager-only in hardened. */
  ADDR: 3,
} as const;

/** Operations (RCX) of group UtilGroup.VMCS. RDX = VMCS field encoding. */
export const UtilVmcsOp = {
  /** Returns the field's value. Hardened: only GUEST_RFLAGS. */
  READ64: 1,
  /**
   * Writes RSI to the field and returns 0. Compat: guest-state fields only.
   * Hardened: only GUEST_RFLAGS, and only bit 9 (IF) of RSI is used.
   */
  WRITE64: 2,
} as const;

/** Operations (RCX) of group UtilGroup.ADDR. */
export const UtilAddrOp = {
  /**
   * RDX = guest-physical address in the caller's VM; returns the host-physical
   * address of that page's base (the page offset is not added) and keeps the
   * page pinned (compat: until kvm-intel unloads; hardened: until the manager
   * VM and every guest vCPU using its lists are gone).
   */
  GPA_TO_HPA: 1,
} as const;

/** Groups (RBX) of hypercall 1001. */
export const NegotiationGroup = {
  /** Original "debug" group: not implemented (-KVM_ENOSYS). */
  DEBUG: 1,
  /** Manager side; RCX is a ManagerOp. Hardened: designated managers only. */
  MANAGER: 2,
  /** Guest side; RCX is a GuestOp. */
  GUEST: 3,
} as const;

/** Operations (RCX) of group NegotiationGroup.MANAGER. */
export const ManagerOp = {
  /** RDX = the guest vCPU's identifier (from GuestOp.VCPU_ID). Returns 0. */
  SET_VCPU: 1,
  /**
   * Compat: RDX = host-physical address of the EPTP list page, which must be a
   * page GPA_TO_HPA returned. Hardened: RDX = guest-physical address of the
   * list page in the manager's own memory; the host pins it. Returns 0.
   * Hardened: offers the list to the vCPU named by the calling manager vCPU's
   * last SET_VCPU (a new offer for the same vCPU replaces a pending one).
   */
  SET_LIST: 2,
  /**
   * Hardened only: RDX = a guest vCPU identifier. Withdraws the pending offer
   * and ends the active association for that vCPU (its VMFUNC is switched off
   * before its next VM entry). Returns 0, or -KVM_EINVAL if there was none.
   */
  REVOKE: 3,
} as const;

/** Operations (RCX) of group NegotiationGroup.GUEST. */
export const GuestOp = {
  /**
   * Returns this vCPU's identifier: an opaque value with bit 63 clear, stable
   * for the vCPU's lifetime (compat: keyed hash; hardened: random token).
   */
  VCPU_ID: 1,
  /**
   * Activates EPTP switching for the calling vCPU with the list offered to it:
   * the host writes the vCPU's current EPT pointer into slot 0 and enables
   * VMFUNC(0). Returns 0. Hardened: replaces a previous activation, and keeps
   * slot 0 equal to KVM's live EPT pointer from then on.
   */
  ACTIVATE: 2,
  /** Hardened only: switches VMFUNC off for the calling vCPU and ends its association. */
  DEACTIVATE: 3,
} as const;

/**
 * KVM's hypercall error values (include/uapi/linux/kvm_para.h), returned in RAX
 * negated. Note that -KVM_EPERM is -1, i.e. 0xffff_ffff_ffff_ffff.
 */
export const KvmHcError = {
  /** Not permitted: manager call from a non-manager VM, no offer for this vCPU, CPL 3 when refused. */
  EPERM: 1,
  /** No memory behind a guest-physical address. */
  EFAULT: 14,
  /** Malformed argument (unaligned list, address ≥ 2^52, unknown VMCS field in compat, ...). */
  EINVAL: 22,
  /** The CPU cannot switch EPTPs with VMFUNC, or KVM does not use EPT. */
  EOPNOTSUPP: 95,
  /** Unknown hypercall, group or operation; stock KVM answers 1000/1001 with this from CPL 0 (with EPERM from CPL 3). */
  ENOSYS: 1000,
} as const;

/** The RAX value a hypercall returns for a KvmHcError code, as an unsigned 64-bit value. */
export function hcErrorValue(code: number): bigint {
  return BigInt.asUintN(64, -BigInt(code));
}

/**
 * Decodes a RAX value returned by an ELISA hypercall: the KvmHcError name if it
 * is one of the known negated error codes, otherwise undefined (a result).
 */
export function decodeHcError(rax: bigint): keyof typeof KvmHcError | undefined {
  const value = BigInt.asUintN(64, rax);
  for (const [name, code] of Object.entries(KvmHcError) as [keyof typeof KvmHcError, number][]) {
    if (value === hcErrorValue(code)) return name;
  }
  return undefined;
}

/** VMCS encoding of GUEST_RFLAGS, the one field the hardened variant accepts. */
export const VMCS_GUEST_RFLAGS = 0x6820;

/**
 * Hardened only: the capability a VMM enables on a VM fd (KVM_ENABLE_CAP,
 * args[0] = 1, flags and other args 0) to make that VM an ELISA manager.
 * Needs CAP_SYS_RAWIO in the calling process (a manager can reach all host
 * memory through the EPTs it builds). KVM_CHECK_EXTENSION on it returns 1
 * when the hardened kvm-intel is loaded. Value: ASCII "ELIS".
 */
export const KVM_CAP_ELISA_MANAGER = 0x454c4953;

/** Module parameters the patched kvm_intel exposes under /sys/module/kvm_intel/parameters/. */
export const ElisaModuleParam = {
  /** Read-only: "compat" or "hardened" — which patch the loaded module carries. */
  VARIANT: 'elisa_variant',
  /**
   * Hardened only, root-writable: comma-separated PIDs (up to 16) of VMM
   * processes (e.g. QEMU) whose VMs are managers. Checked at every manager
   * hypercall against the process that created the VM.
   */
  MANAGER_PIDS: 'elisa_manager_pids',
  /** Hardened only, root-writable: Y (default) accepts ELISA hypercalls from guest CPL 3. */
  ALLOW_USER: 'elisa_allow_user',
} as const;

/** Directory holding ElisaModuleParam files. */
export const KVM_INTEL_PARAM_DIR = '/sys/module/kvm_intel/parameters';

/** The two patch variants in kernel-patch/. */
export type ElisaVariant = 'compat' | 'hardened';
