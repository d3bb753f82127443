/**
 * Machine code of the ELISA gate: the guest's three-page entry region (top and bottom
 * pages in the default context), the gate code page (gate context) and the sub code
 * page (sub context). The gate and sub code pages are both mapped at the *middle* GVA,
 * in their own contexts; VMFUNC switches the EPT under a running instruction stream,
 * so each page's code is placed where the previous context's VMFUNC left RIP.
 *
 * ```
 *  GVA          default ctx (slot 0)        gate ctx (slot 511)        sub ctx (slot 1)
 *  top          ... elisa_gate_entry:
 *               save, ECX=511, VMFUNC ─┐
 *  middle       (not mapped)           └──> gate code @0: write+check
 *                                           slot 1, IF check,
 *                                           ECX=1, VMFUNC ─────────┐
 *                                           @SUB_ENTRY_OFFSET: ... └──> sub code @SUB_ENTRY_OFFSET:
 *                                                                       clear slot 1, switch stack,
 *                                                                       call entry, RBX = result
 *                                           invalid: clear slot 1,      ...
 *                                           RBX=-1, VMFUNC(0,0) ──┐     VMFUNC(0,0) ──┐ (page end)
 *  bottom       @0: RAX=RBX, restore, ret <───────────────────────┴──────────────────┘
 * ```
 *
 * ## How the guest calls the gate
 * `elisa_gate_entry` (top GVA + {@link GATE_ENTRY_OFFSET}) is a System V AMD64 function
 * `long elisa_gate_entry(long a0, long a1, long a2, long a3, long a4, long a5)`:
 * - In: RDI, RSI, RDX, RCX, R8, R9 arrive unchanged as the six arguments of the sub
 *   entry function (RCX travels in R12 because VMFUNC needs ECX for the list index;
 *   the caller does NOT pass 511 itself, unlike libelisa). Stack arguments do not
 *   reach the sub context: it runs on its own stack and cannot see the guest's.
 * - Out: RAX = the entry function's return value, or -1 when the gate refused
 *   (interrupts enabled, or slot 1 did not hold the sub EPTP after writing it).
 * - Preserved: RBX, RBP, R12 (saved on the guest stack: 32 bytes with the return
 *   address), RSP, and R13–R15 as long as the entry function follows System V.
 *   Clobbered: RAX and RFLAGS; RCX, RDX, RSI, RDI, R8–R11 come back as 0 after a
 *   completed trip (scrubbed so no sub-context data leaks to the guest; vector registers
 *   are NOT scrubbed — an entry function handling secrets in them must clear them).
 * - Interrupts MUST be off (RFLAGS.IF = 0) for the whole trip: an interrupt in the gate
 *   or sub context would run the guest kernel's handler under a foreign EPT. The gate
 *   checks IF and refuses. NMIs and exceptions during the trip are fatal to the guest
 *   (no IDT is mapped in the gate and sub contexts).
 *
 * ## Why the code looks the way it does
 * A guest can place a VMFUNC(0,511) anywhere in its own address space and so enter the
 * gate page at ANY byte offset with ANY register values. Therefore every store into the
 * EPTP list uses a RIP-relative address (a register-based address would let a guest
 * write an arbitrary EPTP into an arbitrary slot), every store of slot 1 is followed by
 * a re-check against an immediate, and the sub context clears slot 1 as its very first
 * instruction. The gate code reads no data from its own page: code pages may be mapped
 * execute-only in the EPT. An immediate may happen to contain VMFUNC's bytes (a sub EPTP
 * of 0x..d4010f..); entering there runs a VMFUNC with the guest's own EAX/ECX, which
 * reaches nothing the guest could not reach anyway (test/elisa/gate-model.test.ts
 * enters the gate page at every byte offset with such an EPTP).
 */
import {
  Assembler, AsmError, Cond, qword, rip,
  rax, rbx, rcx, rbp, rsp, r11, r12, eax, ecx, edx, esi, edi, r8d, r9d, r10d, r11d,
  type Assembled,
} from '../x86/asm';

/** Size of a page and of every generated code page. */
export const PAGE_SIZE = 4096;

/** EPTP-list slot of the guest's own (default) context; the host writes it at activation. */
export const EPTP_SLOT_DEFAULT = 0;
/** EPTP-list slot the gate writes the sub EPTP into (and everyone clears again). */
export const EPTP_SLOT_SUB = 1;
/** EPTP-list slot of the gate context. */
export const EPTP_SLOT_GATE = 511;

/** RFLAGS.IF (bit 9). */
const RFLAGS_IF = 0x200;

/** Opcode bytes of VMFUNC. */
export const VMFUNC_BYTES: readonly number[] = Object.freeze([0x0f, 0x01, 0xd4]);

/** An error in gate generation: bad parameters, or a violated layout invariant. */
export class GateError extends Error {
  override name = 'GateError';
}

/** Width of guest-virtual addresses: 48 bits (4-level paging) or 57 bits (5-level). */
export type VaBits = 48 | 57;

/** A VMFUNC instruction in a generated page. */
export interface PageVmfunc {
  /** Offset of the instruction's first byte within the page. */
  readonly offset: number;
  /** Its guest-virtual address. */
  readonly gva: bigint;
  /** The EPTP-list slot (ECX) the generated code loads right before it. */
  readonly slot: number;
}

/** One generated 4 KiB page of code. */
export interface GeneratedPage {
  /** Which page this is. */
  readonly role: 'top' | 'bottom' | 'gate' | 'sub';
  /** Guest-virtual address the page must be mapped at (in its context). */
  readonly gva: bigint;
  /** Exactly {@link PAGE_SIZE} bytes; unused bytes are int3 (0xcc). */
  readonly bytes: Uint8Array;
  /** Offsets of the named positions (see the `*_LABEL` names in the generators). */
  readonly labels: ReadonlyMap<string, number>;
  /** Every VMFUNC in the page, in address order (for backends that trap or rewrite them). */
  readonly vmfuncs: readonly PageVmfunc[];
}

/** Parameters of the default-context pages. */
export interface EntryPagesParams {
  /** Page-aligned GVA of the middle page requested by the guest. */
  readonly middleGva: bigint;
  /** Guest-virtual address width (default 48). */
  readonly vaBits?: VaBits;
}

/** Parameters of the gate code page. */
export interface GatePageParams {
  /** Page-aligned GVA of the middle page (where the gate code is mapped in the gate context). */
  readonly middleGva: bigint;
  /** The EPTP of the sub context, written into slot 1. */
  readonly subEptp: bigint;
  /** Page-aligned GVA of the EPTP list page as mapped (writable) in the gate context. */
  readonly eptpListGva: bigint;
  /** Top (exclusive end, 16-byte aligned) of the gate stack, used for the IF check. */
  readonly gateStackTop: bigint;
  /** Guest-virtual address width (default 48). */
  readonly vaBits?: VaBits;
}

/** Parameters of the sub code page. */
export interface SubPageParams {
  /** Page-aligned GVA of the middle page (where the sub code is mapped in the sub context). */
  readonly middleGva: bigint;
  /** Page-aligned GVA of the EPTP list page as mapped (writable) in the sub context. */
  readonly eptpListGva: bigint;
  /** Top (exclusive end, 16-byte aligned) of the sub stack. */
  readonly subStackTop: bigint;
  /** GVA of the entry function called in the sub context (System V ABI). */
  readonly entry: bigint;
  /** Guest-virtual address width (default 48). */
  readonly vaBits?: VaBits;
}

/** Parameters of all four pages. The EPTP list may be mapped at different GVAs in the two contexts. */
export interface GatePagesParams {
  readonly middleGva: bigint;
  readonly subEptp: bigint;
  /** GVA of the EPTP list in the gate context. */
  readonly gateEptpListGva: bigint;
  /** GVA of the EPTP list in the sub context. */
  readonly subEptpListGva: bigint;
  readonly gateStackTop: bigint;
  readonly subStackTop: bigint;
  readonly entry: bigint;
  readonly vaBits?: VaBits;
}

/** The four generated pages. */
export interface GatePages {
  /** Default context, at middleGva - 4096: ends with elisa_gate_entry. */
  readonly top: GeneratedPage;
  /** Default context, at middleGva + 4096: starts with the return path. */
  readonly bottom: GeneratedPage;
  /** Gate context, at middleGva. */
  readonly gate: GeneratedPage;
  /** Sub context, at middleGva. */
  readonly sub: GeneratedPage;
  /** GVA the guest calls: top GVA + {@link GATE_ENTRY_OFFSET}. */
  readonly entryGva: bigint;
}

// Label names, exported so that tests and backends can find positions by name.
/** Top page: the function the guest calls. */
export const LABEL_GATE_ENTRY = 'elisa_gate_entry';
/** Top page: the VMFUNC(0,511) at the end of the page. */
export const LABEL_TO_GATE = 'vmfunc_to_gate';
/** Bottom page: the return path at offset 0. */
export const LABEL_RETURN = 'gate_return';
/** Gate page: start of the gate code (offset 0). */
export const LABEL_GATE_START = 'gate_start';
/** Gate page: the VMFUNC(0,1) into the sub context. */
export const LABEL_TO_SUB = 'vmfunc_to_sub';
/** Gate page / sub page: the offset right after the gate's VMFUNC(0,1), where the sub code starts. */
export const LABEL_SUB_ENTRY = 'sub_entry';
/** Gate page: the invalid-attempt path. */
export const LABEL_INVALID = 'invalid_attempt';
/** Gate page / sub page: the VMFUNC(0,0) that ends the page. */
export const LABEL_TO_DEFAULT = 'vmfunc_to_default';
/** Sub page: the block ending the page (EAX=0, ECX=0, VMFUNC). */
export const LABEL_SUB_EXIT = 'sub_exit';

// ------------------------------------------------------------------ validation

function hex(v: bigint | number): string {
  return `0x${BigInt(v).toString(16)}`;
}

function canonical(a: bigint, vaBits: VaBits): boolean {
  if (a < 0n || a >= 1n << 64n) return false;
  const low = 1n << BigInt(vaBits - 1);
  return a < low || a >= (1n << 64n) - low;
}

function checkVaBits(v: VaBits | undefined): VaBits {
  const bits = v ?? 48;
  if (bits !== 48 && bits !== 57) throw new GateError(`vaBits must be 48 or 57, not ${String(bits)}`);
  return bits;
}

function checkBig(name: string, v: unknown): bigint {
  if (typeof v !== 'bigint') throw new GateError(`${name} must be a bigint, got ${typeof v}`);
  return v;
}

/** A page-aligned canonical GVA whose whole page is canonical. */
function checkPageGva(name: string, v: unknown, vaBits: VaBits): bigint {
  const a = checkBig(name, v);
  if (a % BigInt(PAGE_SIZE) !== 0n) throw new GateError(`${name} ${hex(a)} is not 4 KiB aligned`);
  if (!canonical(a, vaBits)) throw new GateError(`${name} ${hex(a)} is not a canonical ${vaBits}-bit address`);
  return a;
}

/** Checks that [first, last] are canonical and in the same half (no wrap-around). */
function checkRange(name: string, first: bigint, last: bigint, vaBits: VaBits): void {
  const ok = canonical(first, vaBits) && canonical(last, vaBits) && first <= last && last - first < 1n << BigInt(vaBits - 1);
  if (!ok) {
    throw new GateError(`${name}: ${hex(first)}..${hex(last)} is not a contiguous canonical ${vaBits}-bit range`);
  }
}

function checkMiddle(v: unknown, vaBits: VaBits): bigint {
  const mid = checkPageGva('middleGva', v, vaBits);
  const top = mid - BigInt(PAGE_SIZE);
  const bottomEnd = mid + 2n * BigInt(PAGE_SIZE) - 1n;
  if (top < 0n || !canonical(top, vaBits) || !canonical(bottomEnd, vaBits) || bottomEnd - top >= 1n << BigInt(vaBits - 1)) {
    throw new GateError(
      `middleGva ${hex(mid)}: the gate region (top page at middle-4 KiB to bottom page at middle+4 KiB) ` +
        `must lie inside one canonical ${vaBits}-bit half`,
    );
  }
  return mid;
}

/** A stack top: 16-byte aligned, and the 16 bytes below it canonical. */
function checkStackTop(name: string, v: unknown, vaBits: VaBits): bigint {
  const t = checkBig(name, v);
  if (t % 16n !== 0n) throw new GateError(`${name} ${hex(t)} is not 16-byte aligned`);
  if (t <= 0n || t > 1n << 64n) throw new GateError(`${name} ${hex(t)} is not a stack top (must be in 1..2^64)`);
  checkRange(name, t - 16n, t - 1n, vaBits);
  return t;
}

function checkEntry(v: unknown, vaBits: VaBits): bigint {
  const e = checkBig('entry', v);
  if (!canonical(e, vaBits)) throw new GateError(`entry ${hex(e)} is not a canonical ${vaBits}-bit address`);
  return e;
}

/**
 * Checks an EPTP value (SDM 25.6.11): memory type UC(0) or WB(6), page-walk length 4
 * or 5 (field value 3 or 4), bits 7..11 zero (the root is page aligned), root below 2^52.
 */
export function checkEptp(name: string, v: unknown): bigint {
  const e = checkBig(name, v);
  if (e < 0n || e >= 1n << 64n) throw new GateError(`${name} ${hex(e)} is not a 64-bit value`);
  const mt = Number(e & 7n);
  if (mt !== 0 && mt !== 6) throw new GateError(`${name} ${hex(e)}: memory type ${mt} is neither UC (0) nor WB (6)`);
  const wl = Number((e >> 3n) & 7n);
  if (wl !== 3 && wl !== 4) throw new GateError(`${name} ${hex(e)}: page-walk length field ${wl} means neither 4 nor 5 levels`);
  if ((e >> 7n) & 0x1fn) throw new GateError(`${name} ${hex(e)}: bits 7..11 are set (the EPT root is not a page-aligned address)`);
  if (e >> 52n) throw new GateError(`${name} ${hex(e)}: root address has bits above 51`);
  return e;
}

/** The EPTP list must be within RIP-relative reach of every byte of the middle page. */
function checkListReach(name: string, list: bigint, mid: bigint): void {
  const lo = list + 8n * BigInt(EPTP_SLOT_SUB) - (mid + BigInt(PAGE_SIZE));
  const hi = list + 8n * BigInt(EPTP_SLOT_SUB) - mid;
  if (lo < -(1n << 31n) || hi >= 1n << 31n) {
    throw new GateError(`${name} ${hex(list)} is more than 2 GiB away from the middle page ${hex(mid)} (RIP-relative reach)`);
  }
}

function checkDisjoint(what: string, first: bigint, endExcl: bigint, pages: [string, bigint][]): void {
  for (const [pname, p] of pages) {
    if (first < p + BigInt(PAGE_SIZE) && p < endExcl) {
      throw new GateError(`${what} ${hex(first)}..${hex(endExcl - 1n)} overlaps the ${pname} page at ${hex(p)}`);
    }
  }
}

// ------------------------------------------------------------------ generation helpers

function finish(role: GeneratedPage['role'], gva: bigint, a: Assembler, slots: ReadonlyMap<string, number>): GeneratedPage {
  let out: Assembled;
  try {
    out = a.assemble();
  } catch (e) {
    if (e instanceof AsmError) throw new GateError(`${role} page: ${e.message}`);
    throw e;
  }
  if (out.bytes.length !== PAGE_SIZE) {
    throw new GateError(`${role} page: generated ${out.bytes.length} bytes instead of exactly ${PAGE_SIZE}`);
  }
  const vmfuncs: PageVmfunc[] = [];
  for (const [label, slot] of slots) {
    const offset = out.labels.get(label);
    if (offset === undefined) throw new GateError(`${role} page: internal label ${label} missing`);
    vmfuncs.push({ offset, gva: gva + BigInt(offset), slot });
  }
  vmfuncs.sort((x, y) => x.offset - y.offset);
  return { role, gva, bytes: out.bytes, labels: out.labels, vmfuncs };
}

/** Throws unless `page.bytes` holds `expect` at `offset`. */
function expectBytes(page: GeneratedPage, offset: number, expect: readonly number[], what: string): void {
  const got = Array.from(page.bytes.subarray(offset, offset + expect.length));
  if (offset < 0 || got.length !== expect.length || got.some((b, i) => b !== expect[i])) {
    const h = (xs: readonly number[]): string => xs.map((b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new GateError(`${page.role} page layout invariant violated: ${what}: at offset ${hex(offset)} expected [${h(expect)}], found [${h(got)}]`);
  }
}

function labelOf(page: GeneratedPage, name: string): number {
  const o = page.labels.get(name);
  if (o === undefined) throw new GateError(`${page.role} page: label ${name} missing`);
  return o;
}

/** Bytes of `mov eax, imm32` / `mov ecx, imm32`. */
const movEax = (v: number): number[] => [0xb8, ...le32(v)];
const movEcx = (v: number): number[] => [0xb9, ...le32(v)];
function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/**
 * Checks that the instruction at `offset` is `mov qword [rip+d], 0` (48 c7 05 d32 00000000)
 * and that it addresses `target` when the page is mapped at `gva`.
 */
function expectClearSlot(page: GeneratedPage, offset: number, target: bigint, what: string): void {
  expectBytes(page, offset, [0x48, 0xc7, 0x05], `${what} (mov qword [rip+disp32], imm32)`);
  expectBytes(page, offset + 7, [0, 0, 0, 0], `${what} (stores 0)`);
  const d = page.bytes.subarray(offset + 3, offset + 7);
  const disp = BigInt.asIntN(32, BigInt(d[0]! | (d[1]! << 8) | (d[2]! << 16)) | (BigInt(d[3]!) << 24n));
  const addr = page.gva + BigInt(offset + 11) + disp;
  if (addr !== target) throw new GateError(`${page.role} page layout invariant violated: ${what} writes ${hex(addr)} instead of slot 1 at ${hex(target)}`);
}

// ------------------------------------------------------------------ the pages

/**
 * Builds the default-context pages: `top` (at middleGva - 4 KiB) ending with
 * elisa_gate_entry, whose last instruction VMFUNC(0, 511) ends exactly at the end of
 * the page, and `bottom` (at middleGva + 4 KiB) starting with the return path. The
 * middle page stays unmapped in the default context.
 */
export function buildEntryPages(params: EntryPagesParams): { top: GeneratedPage; bottom: GeneratedPage } {
  const vaBits = checkVaBits(params.vaBits);
  const mid = checkMiddle(params.middleGva, vaBits);
  const topGva = mid - BigInt(PAGE_SIZE);
  const bottomGva = mid + BigInt(PAGE_SIZE);

  const t = new Assembler({ origin: topGva });
  t.placeEnding(PAGE_SIZE, () => {
    t.bind(t.label(LABEL_GATE_ENTRY));
    t.endbr64();
    t.push(rbp);
    t.mov(rbp, rsp);
    t.push(rbx); // RBX carries the result back; restore the caller's afterwards
    t.push(r12); // R12 carries the 4th argument past VMFUNC, which needs ECX
    t.mov(r12, rcx);
    t.mov(eax, 0); // VM function 0: EPTP switching
    t.mov(ecx, EPTP_SLOT_GATE);
    t.bind(t.label(LABEL_TO_GATE));
    t.vmfunc();
  });
  const top = finish('top', topGva, t, new Map([[LABEL_TO_GATE, EPTP_SLOT_GATE]]));

  const b = new Assembler({ origin: bottomGva });
  b.bind(b.label(LABEL_RETURN));
  b.mov(rax, rbx);
  b.pop(r12);
  b.pop(rbx);
  b.leave();
  b.ret();
  b.placeAt(PAGE_SIZE);
  const bottom = finish('bottom', bottomGva, b, new Map());

  checkEntryPages(top, bottom);
  return { top, bottom };
}

function checkEntryPages(top: GeneratedPage, bottom: GeneratedPage): void {
  const v = labelOf(top, LABEL_TO_GATE);
  if (v !== PAGE_SIZE - 3) throw new GateError(`top page layout invariant violated: VMFUNC(0,511) at ${hex(v)}, not at the last 3 bytes`);
  expectBytes(top, PAGE_SIZE - 13, [...movEax(0), ...movEcx(EPTP_SLOT_GATE), ...VMFUNC_BYTES], 'EAX=0, ECX=511, VMFUNC ending the page');
  expectBytes(top, labelOf(top, LABEL_GATE_ENTRY), [0xf3, 0x0f, 0x1e, 0xfa], 'elisa_gate_entry starts with endbr64');
  if (labelOf(bottom, LABEL_RETURN) !== 0) throw new GateError('bottom page layout invariant violated: the return path does not start at offset 0');
  expectBytes(bottom, 0, [0x48, 0x89, 0xd8], 'return path starts with mov rax, rbx');
}

/**
 * Builds the gate code page (gate context, mapped at middleGva): write the sub EPTP
 * into slot 1, re-check it, check RFLAGS.IF == 0 on the gate stack, VMFUNC(0, 1).
 * The invalid-attempt path (slot check failed or IF = 1) clears slot 1, sets RBX = -1
 * and ends the page with VMFUNC(0, 0), so it lands on the bottom page's return path.
 */
export function buildGateCodePage(params: GatePageParams): GeneratedPage {
  const vaBits = checkVaBits(params.vaBits);
  const mid = checkMiddle(params.middleGva, vaBits);
  const subEptp = checkEptp('subEptp', params.subEptp);
  const list = checkPageGva('eptpListGva', params.eptpListGva, vaBits);
  checkListReach('eptpListGva', list, mid);
  const stackTop = checkStackTop('gateStackTop', params.gateStackTop, vaBits);
  checkDisjoint('EPTP list page', list, list + BigInt(PAGE_SIZE), [['middle (gate code)', mid]]);
  checkDisjoint('gate stack top slot', stackTop - 8n, stackTop, [['middle (gate code)', mid], ['EPTP list', list]]);
  const page = generateGatePage(mid, subEptp, list, stackTop);
  checkGatePage(page, list);
  return page;
}

/** Emits the gate code page without checking the invariants (see buildGateCodePage). */
function generateGatePage(mid: bigint, subEptp: bigint, list: bigint, stackTop: bigint): GeneratedPage {
  const slot1 = rip(list + 8n * BigInt(EPTP_SLOT_SUB));

  const a = new Assembler({ origin: mid });
  const invalid = a.label(LABEL_INVALID);
  a.bind(a.label(LABEL_GATE_START));
  // movabs keeps every instruction's size independent of the values, so the
  // VMFUNC(0,1) offset (= the sub entry offset) is a constant of this code.
  a.movabs(rax, subEptp);
  a.mov(qword(slot1), rax);
  // Re-check against the immediate: a guest entering at the store above with its own
  // RAX must not leave its value in slot 1.
  a.movabs(rax, subEptp);
  a.cmp(qword(slot1), rax);
  a.jcc(Cond.NE, invalid, 'near');
  // PUSHFQ needs a stack, and the guest's is not mapped here: borrow the gate stack.
  a.mov(rcx, rsp);
  a.movabs(rsp, BigInt.asUintN(64, stackTop)); // a top of 2^64 is RSP = 0: pushes wrap, as on the CPU
  a.pushfq();
  a.pop(rax);
  a.mov(rsp, rcx);
  a.test(rax, RFLAGS_IF);
  a.jcc(Cond.NE, invalid, 'near');
  a.mov(eax, 0);
  a.mov(ecx, EPTP_SLOT_SUB);
  a.bind(a.label(LABEL_TO_SUB));
  a.vmfunc();
  a.bind(a.label(LABEL_SUB_ENTRY)); // nothing runs here in the gate context
  a.placeEnding(PAGE_SIZE, () => {
    a.bind(invalid);
    a.mov(qword(slot1), 0);
    a.cmp(qword(slot1), 0);
    const cleared = a.label('invalid_slot_cleared');
    a.jcc(Cond.E, cleared, 'short');
    a.ud2(); // slot 1 still set: stop rather than return with the sub context reachable
    a.bind(cleared);
    a.mov(rbx, -1);
    a.mov(eax, 0);
    a.mov(ecx, EPTP_SLOT_DEFAULT);
    a.bind(a.label(LABEL_TO_DEFAULT));
    a.vmfunc();
  });
  return finish('gate', mid, a, new Map([[LABEL_TO_SUB, EPTP_SLOT_SUB], [LABEL_TO_DEFAULT, EPTP_SLOT_DEFAULT]]));
}

function checkGatePage(page: GeneratedPage, list: bigint): void {
  const landing = labelOf(page, LABEL_SUB_ENTRY);
  if (landing !== SUB_ENTRY_OFFSET) {
    throw new GateError(`gate page layout invariant violated: VMFUNC(0,1) ends at ${hex(landing)}, the sub code expects ${hex(SUB_ENTRY_OFFSET)}`);
  }
  expectBytes(page, landing - 13, [...movEax(0), ...movEcx(EPTP_SLOT_SUB), ...VMFUNC_BYTES], 'EAX=0, ECX=1, VMFUNC before the sub entry offset');
  expectBytes(page, PAGE_SIZE - 20, [0x48, 0xc7, 0xc3, 0xff, 0xff, 0xff, 0xff, ...movEax(0), ...movEcx(EPTP_SLOT_DEFAULT), ...VMFUNC_BYTES],
    'invalid path ends the page with RBX=-1, EAX=0, ECX=0, VMFUNC');
  expectClearSlot(page, labelOf(page, LABEL_INVALID), list + 8n * BigInt(EPTP_SLOT_SUB), 'invalid path clears slot 1');
}

/**
 * Builds the sub code page (sub context, mapped at middleGva). Its code starts at
 * {@link SUB_ENTRY_OFFSET}, right where the gate's VMFUNC(0,1) leaves RIP: clear slot 1,
 * switch to the sub stack, call the entry function with the caller's six argument
 * registers, keep the result in RBX, zero the other caller-saved registers, restore RSP,
 * and end the page with VMFUNC(0,0) so
 * execution continues at the bottom page's return path.
 */
export function buildSubCodePage(params: SubPageParams): GeneratedPage {
  const vaBits = checkVaBits(params.vaBits);
  const mid = checkMiddle(params.middleGva, vaBits);
  const list = checkPageGva('eptpListGva', params.eptpListGva, vaBits);
  checkListReach('eptpListGva', list, mid);
  const stackTop = checkStackTop('subStackTop', params.subStackTop, vaBits);
  const entry = checkEntry(params.entry, vaBits);
  checkDisjoint('EPTP list page', list, list + BigInt(PAGE_SIZE), [['middle (sub code)', mid]]);
  checkDisjoint('sub stack top', stackTop - 16n, stackTop, [['middle (sub code)', mid], ['EPTP list', list]]);
  const slot1 = rip(list + 8n * BigInt(EPTP_SLOT_SUB));

  const a = new Assembler({ origin: mid });
  const exit = a.label(LABEL_SUB_EXIT);
  a.placeAt(SUB_ENTRY_OFFSET);
  a.bind(a.label(LABEL_SUB_ENTRY));
  a.mov(qword(slot1), 0); // first thing: the sub context cannot be re-entered without the gate
  a.mov(rax, rsp); // the guest's RSP, meaningless here, restored for the return path
  a.movabs(rsp, BigInt.asUintN(64, stackTop));
  a.push(rax);
  a.push(rbp);
  a.mov(rbp, rsp);
  a.mov(rcx, r12); // the caller's 4th argument (RCX was VMFUNC's index)
  a.movabs(r11, entry);
  a.mov(eax, 0); // AL = 0 vector registers, in case the entry function is variadic
  a.call(r11);
  a.mov(rbx, rax); // RBX survives VMFUNC and the bottom page moves it to RAX
  // The entry function may leave sub-context data (pointers, secrets) in the caller-saved
  // registers, which the guest sees after the return: zero them (libelisa does not).
  for (const r of [ecx, edx, esi, edi, r8d, r9d, r10d, r11d]) a.xor(r, r);
  a.leave();
  a.pop(rsp);
  a.jmp(exit);
  a.placeEnding(PAGE_SIZE, () => {
    a.bind(exit);
    a.mov(eax, 0);
    a.mov(ecx, EPTP_SLOT_DEFAULT);
    a.bind(a.label(LABEL_TO_DEFAULT));
    a.vmfunc();
  });
  const page = finish('sub', mid, a, new Map([[LABEL_TO_DEFAULT, EPTP_SLOT_DEFAULT]]));
  checkSubPage(page, list);
  return page;
}

function checkSubPage(page: GeneratedPage, list: bigint): void {
  const entry = labelOf(page, LABEL_SUB_ENTRY);
  if (entry !== SUB_ENTRY_OFFSET) {
    throw new GateError(`sub page layout invariant violated: sub entry at ${hex(entry)}, the gate's VMFUNC(0,1) ends at ${hex(SUB_ENTRY_OFFSET)}`);
  }
  expectClearSlot(page, entry, list + 8n * BigInt(EPTP_SLOT_SUB), 'sub entry clears slot 1');
  expectBytes(page, PAGE_SIZE - 13, [...movEax(0), ...movEcx(EPTP_SLOT_DEFAULT), ...VMFUNC_BYTES], 'EAX=0, ECX=0, VMFUNC ending the page');
}

/**
 * Builds all four pages and checks the invariants that span pages: the sub code starts
 * exactly where the gate's VMFUNC(0,1) ends, and both VMFUNC(0,0) end their page so
 * execution continues at offset 0 of the bottom page.
 */
export function buildGatePages(params: GatePagesParams): GatePages {
  const { top, bottom } = buildEntryPages(params);
  const gate = buildGateCodePage({ ...params, eptpListGva: params.gateEptpListGva });
  const sub = buildSubCodePage({ ...params, eptpListGva: params.subEptpListGva });
  const pages = { top, bottom, gate, sub, entryGva: top.gva + BigInt(labelOf(top, LABEL_GATE_ENTRY)) };
  verifyGatePages(pages, params);
  return pages;
}

/**
 * Checks the layout invariants on the bytes of four gate pages (as built by
 * {@link buildGatePages}, possibly copied or transported since), and throws a
 * {@link GateError} naming the first violated one:
 * VMFUNC(0,511) with EAX=0, ECX=511 ends the top page and elisa_gate_entry starts with
 * endbr64; the return path starts the bottom page; the gate's VMFUNC(0,1) ends exactly at
 * {@link SUB_ENTRY_OFFSET}, where the sub code starts by clearing slot 1; the gate's
 * invalid-attempt path clears slot 1 and ends the page with RBX=-1 and VMFUNC(0,0); the
 * sub page ends with VMFUNC(0,0); both VMFUNC(0,0) therefore continue at the bottom page.
 */
export function verifyGatePages(pages: GatePages, params: Pick<GatePagesParams, 'gateEptpListGva' | 'subEptpListGva'>): void {
  const { top, bottom, gate, sub } = pages;
  for (const p of [top, bottom, gate, sub]) {
    if (p.bytes.length !== PAGE_SIZE) throw new GateError(`${p.role} page is ${p.bytes.length} bytes, not ${PAGE_SIZE}`);
  }
  if (top.gva + BigInt(PAGE_SIZE) !== gate.gva || gate.gva !== sub.gva || gate.gva + BigInt(PAGE_SIZE) !== bottom.gva) {
    throw new GateError('layout invariant violated: top, middle (gate and sub) and bottom pages are not consecutive');
  }
  for (const p of [top, bottom, gate, sub]) {
    for (const v of p.vmfuncs) expectBytes(p, v.offset, VMFUNC_BYTES, `exported VMFUNC site at ${hex(v.offset)}`);
  }
  checkEntryPages(top, bottom);
  checkGatePage(gate, params.gateEptpListGva);
  checkSubPage(sub, params.subEptpListGva);
  if (labelOf(gate, LABEL_SUB_ENTRY) !== labelOf(sub, LABEL_SUB_ENTRY)) {
    throw new GateError('layout invariant violated: the sub entry is not right after the gate VMFUNC(0,1)');
  }
  for (const p of [gate, sub]) {
    const last = p.vmfuncs[p.vmfuncs.length - 1];
    if (!last || last.offset + 3 !== PAGE_SIZE || last.gva + 3n !== bottom.gva || last.slot !== EPTP_SLOT_DEFAULT) {
      throw new GateError(`layout invariant violated: the ${p.role} page's VMFUNC(0,0) does not end at the bottom page`);
    }
  }
  if (pages.entryGva !== top.gva + BigInt(labelOf(top, LABEL_GATE_ENTRY))) {
    throw new GateError('layout invariant violated: entryGva is not the address of elisa_gate_entry');
  }
}

/**
 * The default layout of libelisa, made safe: in the gate context the EPTP list is the
 * page after the middle one and the gate stack the page after that; in the sub context
 * the list is the page after the middle one and a `subStackSize` stack (8 MiB in
 * libelisa) follows it. Throws if that runs past the canonical half instead of wrapping.
 */
export function libelisaLayout(middleGva: bigint, subStackSize = 8n << 20n, vaBits: VaBits = 48):
  Pick<GatePagesParams, 'middleGva' | 'gateEptpListGva' | 'subEptpListGva' | 'gateStackTop' | 'subStackTop' | 'vaBits'> {
  const bits = checkVaBits(vaBits);
  const mid = checkMiddle(middleGva, bits);
  if (typeof subStackSize !== 'bigint' || subStackSize <= 0n || subStackSize % BigInt(PAGE_SIZE) !== 0n) {
    throw new GateError(`subStackSize ${String(subStackSize)} is not a positive multiple of 4 KiB`);
  }
  const page = BigInt(PAGE_SIZE);
  const gateStackTop = mid + 3n * page;
  const subStackTop = mid + 2n * page + subStackSize;
  checkRange('gate stack', mid + 2n * page, gateStackTop - 1n, bits);
  checkRange('sub stack', mid + 2n * page, subStackTop - 1n, bits);
  return { middleGva: mid, gateEptpListGva: mid + page, subEptpListGva: mid + page, gateStackTop, subStackTop, vaBits: bits };
}

// ------------------------------------------------------------------ for backends without VMFUNC

/** Bytes that replace a VMFUNC in {@link trapVmfuncs}: `nop; out imm8, al`. */
export function vmfuncTrapBytes(port: number): number[] {
  if (!Number.isInteger(port) || port < 0 || port > 255) throw new GateError(`trap port ${port} does not fit in an imm8`);
  return [0x90, 0xe6, port];
}

/**
 * A copy of `page` in which every VMFUNC site is replaced by `nop; out port, al`
 * (90 e6 port), for a backend that realises EPTP switching by trapping. The OUT comes
 * last so that it ends exactly where VMFUNC ended: once the backend completes the port
 * write and switches contexts, execution continues at the same next instruction (for
 * the page-ending sites, at the start of the following page in the new context). AL is
 * 0 at every generated site (EAX = 0 for VMFUNC leaf 0); the backend reads ECX for the
 * list index. Throws if a site does not hold a VMFUNC.
 */
export function trapVmfuncs(page: GeneratedPage, port: number): Uint8Array {
  const trap = vmfuncTrapBytes(port);
  const out = Uint8Array.from(page.bytes);
  for (const v of page.vmfuncs) {
    expectBytes(page, v.offset, VMFUNC_BYTES, `VMFUNC site at ${hex(v.offset)} to trap`);
    out.set(trap, v.offset);
  }
  return out;
}

// ------------------------------------------------------------------ layout constants

/**
 * Offset in the middle page right after the gate's VMFUNC(0,1): where the sub code
 * starts. Computed once from the gate code itself; the gate code's size does not depend
 * on the embedded values (movabs, disp32 and imm32 fields have fixed sizes), and every
 * generated gate and sub page is checked against this value.
 */
export const SUB_ENTRY_OFFSET: number = labelOf(
  generateGatePage(0x10000n, 0x1en, 0x11000n, 0x13000n),
  LABEL_SUB_ENTRY,
);

/** Offset of elisa_gate_entry in the top page (the guest calls top GVA + this). */
export const GATE_ENTRY_OFFSET: number = labelOf(buildEntryPages({ middleGva: 0x10000n }).top, LABEL_GATE_ENTRY);

/** Offset of the return path in the bottom page (always 0: both VMFUNC(0,0) end their page). */
export const RETURN_OFFSET = 0;
