// The narrow interface between the context builder and whoever generates the four code
// pages (src/elisa/gate.ts): the builder says where things are, the generator returns bytes.

/** Where the generated code must point. All addresses are guest-virtual except subEptp. */
export interface GateCodeParams {
  /** The requested GVA: the *middle* page (gate code in the gate context, sub code in the sub context). */
  gva: bigint;
  /** GVA of the EPTP list page in the gate and sub contexts (gva + 4 KiB). */
  eptpListGva: bigint;
  /** The sub context's EPTP, which the gate writes into slot 1 and re-checks. */
  subEptp: bigint;
  /** The application's entry function, called on the sub stack. */
  entry: bigint;
  /** Initial RSP on the gate stack (one past its highest byte). */
  gateStackTop: bigint;
  /** Initial RSP on the sub stack (one past its highest byte). */
  subStackTop: bigint;
  /** Guest linear-address width: 48 (4-level paging) or 57 (5-level). */
  vaBits: 48 | 57;
}

/** A VMFUNC instruction's position, for backends that trap it. */
export interface VmfuncSite {
  /** Which page it is on. */
  page: 'top' | 'gate' | 'sub' | 'bottom';
  /** Byte offset of the VMFUNC opcode within that page. */
  offset: number;
  /** EPTP-list slot it selects (ECX). */
  slot: number;
  /** Its guest-virtual address. */
  gva: bigint;
}

/** The four 4 KiB pages of one ELISA gate. */
export interface GateCodePages {
  /** Default context, page below the middle: ends with VMFUNC(0, 511). */
  top: Uint8Array;
  /** Default context, page above the middle: starts with the return path. */
  bottom: Uint8Array;
  /** Gate context, middle page. */
  gate: Uint8Array;
  /** Sub context, middle page. */
  sub: Uint8Array;
  /** Every VMFUNC in the four pages. */
  vmfuncSites: VmfuncSite[];
  /** GVA of the function the guest calls (in the top page), when the generator knows it. */
  entryGva?: bigint;
}

/** Generates the four pages for given addresses. */
export type GateCodeGenerator = (params: GateCodeParams) => GateCodePages;
