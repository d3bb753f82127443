// Codecs between the kernel's x86 KVM structs and plain TypeScript objects.
// Each decode/encode works on a DataView at a byte offset, so the same code
// serves ioctl buffers and the KVM_CAP_SYNC_REGS areas inside kvm_run.
// Layouts are checked against the C headers in test/kvm/layout.test.ts.
import { Sizeof } from './layout';

/** struct kvm_regs: the general-purpose registers, RIP and RFLAGS. */
export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint; rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint; r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** The kvm_regs fields in struct order. */
export const REG_NAMES = ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r9', 'r10', 'r11',
  'r12', 'r13', 'r14', 'r15', 'rip', 'rflags'] as const satisfies readonly (keyof Regs)[];

/** Reads a struct kvm_regs at `off`. */
export function decodeRegs(v: DataView, off = 0): Regs {
  const r = {} as Regs;
  for (let i = 0; i < REG_NAMES.length; i++) r[REG_NAMES[i]] = v.getBigUint64(off + 8 * i, true);
  return r;
}

/** Writes a struct kvm_regs at `off`; values are taken modulo 2^64. */
export function encodeRegs(v: DataView, r: Regs, off = 0): void {
  for (let i = 0; i < REG_NAMES.length; i++) {
    const value = r[REG_NAMES[i]];
    if (typeof value !== 'bigint') throw new TypeError(`Regs.${REG_NAMES[i]} must be a bigint, got ${typeof value}`);
    v.setBigUint64(off + 8 * i, BigInt.asUintN(64, value), true);
  }
}

/** struct kvm_segment: a segment register's hidden part and selector. */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  /** The 4-bit descriptor type field. */
  type: number;
  present: boolean;
  dpl: number;
  /** D/B: default operation size (32-bit) */
  db: boolean;
  /** S: code/data (true) or system (false) descriptor */
  s: boolean;
  /** L: 64-bit code segment */
  l: boolean;
  /** G: limit in 4 KiB units */
  g: boolean;
  avl: boolean;
  unusable: boolean;
}

function decodeSegment(v: DataView, off: number): Segment {
  return {
    base: v.getBigUint64(off, true), limit: v.getUint32(off + 8, true), selector: v.getUint16(off + 12, true),
    type: v.getUint8(off + 14), present: v.getUint8(off + 15) !== 0, dpl: v.getUint8(off + 16),
    db: v.getUint8(off + 17) !== 0, s: v.getUint8(off + 18) !== 0, l: v.getUint8(off + 19) !== 0,
    g: v.getUint8(off + 20) !== 0, avl: v.getUint8(off + 21) !== 0, unusable: v.getUint8(off + 22) !== 0,
  };
}

function encodeSegment(v: DataView, s: Segment, off: number, name: string): void {
  if (s.type < 0 || s.type > 15) throw new RangeError(`${name}.type must be 0..15, got ${s.type}`);
  if (s.dpl < 0 || s.dpl > 3) throw new RangeError(`${name}.dpl must be 0..3, got ${s.dpl}`);
  v.setBigUint64(off, BigInt.asUintN(64, s.base), true);
  v.setUint32(off + 8, s.limit >>> 0, true);
  v.setUint16(off + 12, s.selector & 0xffff, true);
  v.setUint8(off + 14, s.type);
  v.setUint8(off + 15, s.present ? 1 : 0);
  v.setUint8(off + 16, s.dpl);
  v.setUint8(off + 17, s.db ? 1 : 0);
  v.setUint8(off + 18, s.s ? 1 : 0);
  v.setUint8(off + 19, s.l ? 1 : 0);
  v.setUint8(off + 20, s.g ? 1 : 0);
  v.setUint8(off + 21, s.avl ? 1 : 0);
  v.setUint8(off + 22, s.unusable ? 1 : 0);
  v.setUint8(off + 23, 0);
}

/** struct kvm_dtable: GDTR or IDTR. */
export interface DTable { base: bigint; limit: number }

/** struct kvm_sregs: segment, descriptor-table and control registers. */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apicBase: bigint;
  /** Pending external interrupts, one bit per vector (256 bits as 4 words). */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;

/** Reads a struct kvm_sregs at `off`. */
export function decodeSregs(v: DataView, off = 0): Sregs {
  const s = {} as Sregs;
  SEGMENTS.forEach((name, i) => { s[name] = decodeSegment(v, off + 24 * i); });
  s.gdt = { base: v.getBigUint64(off + 192, true), limit: v.getUint16(off + 200, true) };
  s.idt = { base: v.getBigUint64(off + 208, true), limit: v.getUint16(off + 216, true) };
  CONTROL.forEach((name, i) => { s[name] = v.getBigUint64(off + 224 + 8 * i, true); });
  s.interruptBitmap = [0, 1, 2, 3].map((i) => v.getBigUint64(off + 280 + 8 * i, true)) as Sregs['interruptBitmap'];
  return s;
}

/** Writes a struct kvm_sregs at `off`. */
export function encodeSregs(v: DataView, s: Sregs, off = 0): void {
  SEGMENTS.forEach((name, i) => encodeSegment(v, s[name], off + 24 * i, `Sregs.${name}`));
  for (const [name, base] of [['gdt', 192], ['idt', 208]] as const) {
    const t = s[name];
    if (t.limit < 0 || t.limit > 0xffff) throw new RangeError(`Sregs.${name}.limit must be 0..0xffff, got ${t.limit}`);
    v.setBigUint64(off + base, BigInt.asUintN(64, t.base), true);
    v.setUint16(off + base + 8, t.limit, true);
    for (let p = 10; p < 16; p += 2) v.setUint16(off + base + p, 0, true);
  }
  CONTROL.forEach((name, i) => v.setBigUint64(off + 224 + 8 * i, BigInt.asUintN(64, s[name]), true));
  for (let i = 0; i < 4; i++) v.setBigUint64(off + 280 + 8 * i, BigInt.asUintN(64, s.interruptBitmap[i] ?? 0n), true);
}

/** struct kvm_fpu: x87 and SSE state (the legacy FXSAVE view). */
export interface Fpu {
  /** ST0..ST7, 16 bytes each (80-bit values in the low 10). */
  fpr: Uint8Array[];
  fcw: number; fsw: number;
  /** Abridged tag word. */
  ftwx: number;
  lastOpcode: number; lastIp: bigint; lastDp: bigint;
  /** XMM0..XMM15, 16 bytes each. */
  xmm: Uint8Array[];
  mxcsr: number;
}

/** Reads a struct kvm_fpu at `off` (byte arrays are copies). */
export function decodeFpu(v: DataView, off = 0): Fpu {
  const bytes = (at: number) => new Uint8Array(v.buffer.slice(v.byteOffset + at, v.byteOffset + at + 16));
  return {
    fpr: Array.from({ length: 8 }, (_, i) => bytes(off + 16 * i)),
    fcw: v.getUint16(off + 128, true), fsw: v.getUint16(off + 130, true), ftwx: v.getUint8(off + 132),
    lastOpcode: v.getUint16(off + 134, true), lastIp: v.getBigUint64(off + 136, true), lastDp: v.getBigUint64(off + 144, true),
    xmm: Array.from({ length: 16 }, (_, i) => bytes(off + 152 + 16 * i)),
    mxcsr: v.getUint32(off + 408, true),
  };
}

/** Writes a struct kvm_fpu at `off`. */
export function encodeFpu(v: DataView, f: Fpu, off = 0): void {
  const put = (at: number, b: Uint8Array | undefined, name: string) => {
    if (!b || b.length !== 16) throw new RangeError(`Fpu.${name} must be 16 bytes`);
    new Uint8Array(v.buffer, v.byteOffset + at, 16).set(b);
  };
  if (f.fpr.length !== 8) throw new RangeError(`Fpu.fpr must have 8 entries, got ${f.fpr.length}`);
  if (f.xmm.length !== 16) throw new RangeError(`Fpu.xmm must have 16 entries, got ${f.xmm.length}`);
  f.fpr.forEach((b, i) => put(off + 16 * i, b, `fpr[${i}]`));
  v.setUint16(off + 128, f.fcw, true); v.setUint16(off + 130, f.fsw, true);
  v.setUint8(off + 132, f.ftwx); v.setUint8(off + 133, 0);
  v.setUint16(off + 134, f.lastOpcode, true);
  v.setBigUint64(off + 136, f.lastIp, true); v.setBigUint64(off + 144, f.lastDp, true);
  f.xmm.forEach((b, i) => put(off + 152 + 16 * i, b, `xmm[${i}]`));
  v.setUint32(off + 408, f.mxcsr, true); v.setUint32(off + 412, 0, true);
}

/** struct kvm_vcpu_events: pending/injected exceptions, interrupts, NMI, SMM. */
export interface VcpuEvents {
  exception: { injected: boolean; nr: number; hasErrorCode: boolean; pending: boolean; errorCode: number };
  interrupt: { injected: boolean; nr: number; soft: boolean; shadow: number };
  nmi: { injected: boolean; pending: boolean; masked: boolean };
  sipiVector: number;
  /** VcpuEventsFlag bits saying which optional fields are valid. */
  flags: number;
  smi: { smm: boolean; pending: boolean; smmInsideNmi: boolean; latchedInit: boolean };
  tripleFault: { pending: boolean };
  exceptionHasPayload: boolean;
  exceptionPayload: bigint;
}

/** Reads a struct kvm_vcpu_events at `off`. */
export function decodeVcpuEvents(v: DataView, off = 0): VcpuEvents {
  const b = (at: number) => v.getUint8(off + at) !== 0;
  return {
    exception: { injected: b(0), nr: v.getUint8(off + 1), hasErrorCode: b(2), pending: b(3), errorCode: v.getUint32(off + 4, true) },
    interrupt: { injected: b(8), nr: v.getUint8(off + 9), soft: b(10), shadow: v.getUint8(off + 11) },
    nmi: { injected: b(12), pending: b(13), masked: b(14) },
    sipiVector: v.getUint32(off + 16, true),
    flags: v.getUint32(off + 20, true),
    smi: { smm: b(24), pending: b(25), smmInsideNmi: b(26), latchedInit: b(27) },
    tripleFault: { pending: b(28) },
    exceptionHasPayload: b(55),
    exceptionPayload: v.getBigUint64(off + 56, true),
  };
}

/** Writes a struct kvm_vcpu_events at `off` (reserved bytes zeroed). */
export function encodeVcpuEvents(v: DataView, e: VcpuEvents, off = 0): void {
  const b = (at: number, x: boolean) => v.setUint8(off + at, x ? 1 : 0);
  for (let i = 0; i < Sizeof.kvm_vcpu_events; i++) v.setUint8(off + i, 0);
  b(0, e.exception.injected); v.setUint8(off + 1, e.exception.nr); b(2, e.exception.hasErrorCode); b(3, e.exception.pending);
  v.setUint32(off + 4, e.exception.errorCode >>> 0, true);
  b(8, e.interrupt.injected); v.setUint8(off + 9, e.interrupt.nr); b(10, e.interrupt.soft); v.setUint8(off + 11, e.interrupt.shadow);
  b(12, e.nmi.injected); b(13, e.nmi.pending); b(14, e.nmi.masked);
  v.setUint32(off + 16, e.sipiVector >>> 0, true);
  v.setUint32(off + 20, e.flags >>> 0, true);
  b(24, e.smi.smm); b(25, e.smi.pending); b(26, e.smi.smmInsideNmi); b(27, e.smi.latchedInit);
  b(28, e.tripleFault.pending);
  b(55, e.exceptionHasPayload);
  v.setBigUint64(off + 56, e.exceptionPayload, true);
}

/** Result of KVM_TRANSLATE: a guest-virtual address walked through the guest page tables. */
export interface Translation {
  linearAddress: bigint;
  physicalAddress: bigint;
  valid: boolean;
  writeable: boolean;
  usermode: boolean;
}

/** Reads a struct kvm_translation at `off`. */
export function decodeTranslation(v: DataView, off = 0): Translation {
  return {
    linearAddress: v.getBigUint64(off, true), physicalAddress: v.getBigUint64(off + 8, true),
    valid: v.getUint8(off + 16) !== 0, writeable: v.getUint8(off + 17) !== 0, usermode: v.getUint8(off + 18) !== 0,
  };
}

/** struct kvm_cpuid_entry2: one CPUID leaf/subleaf. */
export interface CpuidEntry {
  function: number; index: number;
  /** KVM_CPUID_FLAG_* (1 = significant index). */
  flags: number;
  eax: number; ebx: number; ecx: number; edx: number;
}

/** Reads `count` struct kvm_cpuid_entry2 starting at `off`. */
export function decodeCpuidEntries(v: DataView, count: number, off = 0): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  for (let i = 0; i < count; i++) {
    const o = off + i * Sizeof.kvm_cpuid_entry2;
    out.push({
      function: v.getUint32(o, true), index: v.getUint32(o + 4, true), flags: v.getUint32(o + 8, true),
      eax: v.getUint32(o + 12, true), ebx: v.getUint32(o + 16, true), ecx: v.getUint32(o + 20, true), edx: v.getUint32(o + 24, true),
    });
  }
  return out;
}

/** Encodes CPUID entries as consecutive struct kvm_cpuid_entry2. */
export function encodeCpuidEntries(entries: readonly CpuidEntry[]): Uint8Array {
  const bytes = new Uint8Array(entries.length * Sizeof.kvm_cpuid_entry2);
  const v = new DataView(bytes.buffer);
  entries.forEach((e, i) => {
    const o = i * Sizeof.kvm_cpuid_entry2;
    [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx].forEach((x, k) => v.setUint32(o + 4 * k, x >>> 0, true));
  });
  return bytes;
}

/** One extended control register (struct kvm_xcr), e.g. XCR0 = { xcr: 0, value }. */
export interface Xcr { xcr: number; value: bigint }

/** Reads struct kvm_xcrs (nr_xcrs entries). */
export function decodeXcrs(v: DataView, off = 0): Xcr[] {
  const n = Math.min(v.getUint32(off, true), 16);
  return Array.from({ length: n }, (_, i) => ({ xcr: v.getUint32(off + 8 + 16 * i, true), value: v.getBigUint64(off + 16 + 16 * i, true) }));
}

/** Writes struct kvm_xcrs (at most 16 entries, flags 0). */
export function encodeXcrs(v: DataView, xcrs: readonly Xcr[], off = 0): void {
  if (xcrs.length > 16) throw new RangeError(`at most 16 XCRs (KVM_MAX_XCRS), got ${xcrs.length}`);
  for (let i = 0; i < Sizeof.kvm_xcrs; i++) v.setUint8(off + i, 0);
  v.setUint32(off, xcrs.length, true);
  xcrs.forEach((x, i) => {
    v.setUint32(off + 8 + 16 * i, x.xcr >>> 0, true);
    v.setBigUint64(off + 16 + 16 * i, BigInt.asUintN(64, x.value), true);
  });
}

/** struct kvm_debugregs: DR0-DR3, DR6, DR7. */
export interface DebugRegs { db: [bigint, bigint, bigint, bigint]; dr6: bigint; dr7: bigint; flags: bigint }

/** Reads struct kvm_debugregs. */
export function decodeDebugRegs(v: DataView, off = 0): DebugRegs {
  const q = (i: number) => v.getBigUint64(off + 8 * i, true);
  return { db: [q(0), q(1), q(2), q(3)], dr6: q(4), dr7: q(5), flags: q(6) };
}

/** Writes struct kvm_debugregs (reserved words zeroed). */
export function encodeDebugRegs(v: DataView, d: DebugRegs, off = 0): void {
  for (let i = 0; i < Sizeof.kvm_debugregs; i++) v.setUint8(off + i, 0);
  [...d.db, d.dr6, d.dr7, d.flags].forEach((x, i) => v.setBigUint64(off + 8 * i, BigInt.asUintN(64, x), true));
}
