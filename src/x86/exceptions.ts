// Exception reporting: the machine code of the IDT handler stubs (generated here and
// placed in guest memory by the host, so any loaded program gets them), the IDT that
// points at them, and the decoding of the report they leave for the host.
//
// Stub for vector v (16-byte slot at STUBS_GPA + 16 v):
//     push $0            (only for vectors without a CPU-pushed error code)
//     push $v
//     jmp  common        (rel32)
// common, running on an IST stack inside the vCPU's exception area:
//     push %rax; mov %rsp,%rax; and $-EXCEPTION_AREA_SIZE,%rax   → rax = area base
//     store every GPR, then vector, error code, RIP, CS, RFLAGS, RSP, SS, CR2, CR3
//     into the report at the area base; mov vector,%al; out %al,EXCEPTION port
//     cli; 1: hlt; jmp 1b     (the host ends the run; this only parks the vCPU)
import { EXCEPTION_AREA_SIZE, IDT_GPA, Selector, STUBS_GPA } from './layout';
import { GateType, idtGate } from './descriptors';
import { GuestPort } from './ports';

/** The architectural exceptions 0–31: mnemonic, name, whether the CPU pushes an error code. */
export const EXCEPTIONS: readonly { mnemonic: string; name: string; errorCode: boolean }[] = [
  { mnemonic: '#DE', name: 'divide error', errorCode: false },
  { mnemonic: '#DB', name: 'debug', errorCode: false },
  { mnemonic: 'NMI', name: 'non-maskable interrupt', errorCode: false },
  { mnemonic: '#BP', name: 'breakpoint', errorCode: false },
  { mnemonic: '#OF', name: 'overflow', errorCode: false },
  { mnemonic: '#BR', name: 'BOUND range exceeded', errorCode: false },
  { mnemonic: '#UD', name: 'invalid opcode', errorCode: false },
  { mnemonic: '#NM', name: 'device not available', errorCode: false },
  { mnemonic: '#DF', name: 'double fault', errorCode: true },
  { mnemonic: '#CSO', name: 'coprocessor segment overrun', errorCode: false },
  { mnemonic: '#TS', name: 'invalid TSS', errorCode: true },
  { mnemonic: '#NP', name: 'segment not present', errorCode: true },
  { mnemonic: '#SS', name: 'stack-segment fault', errorCode: true },
  { mnemonic: '#GP', name: 'general protection', errorCode: true },
  { mnemonic: '#PF', name: 'page fault', errorCode: true },
  { mnemonic: '#15', name: 'reserved vector 15', errorCode: false },
  { mnemonic: '#MF', name: 'x87 floating-point error', errorCode: false },
  { mnemonic: '#AC', name: 'alignment check', errorCode: true },
  { mnemonic: '#MC', name: 'machine check', errorCode: false },
  { mnemonic: '#XM', name: 'SIMD floating-point exception', errorCode: false },
  { mnemonic: '#VE', name: 'virtualization exception', errorCode: false },
  { mnemonic: '#CP', name: 'control protection', errorCode: true },
  ...[22, 23, 24, 25, 26, 27].map((v) => ({ mnemonic: `#${v}`, name: `reserved vector ${v}`, errorCode: false })),
  { mnemonic: '#HV', name: 'hypervisor injection', errorCode: false },
  { mnemonic: '#VC', name: 'VMM communication', errorCode: true },
  { mnemonic: '#SX', name: 'security exception', errorCode: true },
  { mnemonic: '#31', name: 'reserved vector 31', errorCode: false },
];

/** Vectors with a stub and a present IDT gate. */
export const EXCEPTION_VECTORS = 32;
/** Bytes per stub slot; stub v starts at STUBS_GPA + STUB_SLOT * v. */
export const STUB_SLOT = 16;
/** Offset of the common handler in the stubs page. */
export const COMMON_HANDLER_OFFSET = EXCEPTION_VECTORS * STUB_SLOT;
/** IST index the #DF gate uses (its own stack, so a #DF from a bad stack still reports). */
export const DOUBLE_FAULT_IST = 2;
/** IST index of every other exception gate. */
export const EXCEPTION_IST = 1;

/** General-purpose registers in the order of their x86 encoding numbers. */
export const GPR_NAMES = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const;
/** The name of one general-purpose register. */
export type GprName = (typeof GPR_NAMES)[number];

/** Byte offsets of the fields (each a little-endian u64) in an exception report. */
export const ReportOffset = {
  vector: 0, errorCode: 8, rip: 16, cs: 24, rflags: 32, rsp: 40, ss: 48, cr2: 56, cr3: 64,
  rax: 72, rbx: 80, rcx: 88, rdx: 96, rsi: 104, rdi: 112, rbp: 120,
  r8: 128, r9: 136, r10: 144, r11: 152, r12: 160, r13: 168, r14: 176, r15: 184,
} as const;
/** Bytes in a report. */
export const REPORT_SIZE = 192;

const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

/** mov %reg, disp32(%rax) */
function storeToReport(reg: number, disp: number): number[] {
  return [0x48 | (reg >= 8 ? 0x04 : 0), 0x89, 0x80 | ((reg & 7) << 3), ...le32(disp)];
}

/** mov disp8(%rsp), %rbx */
function loadRbxFromStack(disp: number): number[] {
  return disp === 0 ? [0x48, 0x8b, 0x1c, 0x24] : [0x48, 0x8b, 0x5c, 0x24, disp];
}

/**
 * The stubs page: 32 stubs of STUB_SLOT bytes, then the common handler. Position
 * independent except for nothing: every jump is relative, so it may sit at any address.
 */
export function exceptionStubs(): Uint8Array {
  const code: number[] = [];
  for (let v = 0; v < EXCEPTION_VECTORS; v++) {
    const start = v * STUB_SLOT;
    if (!EXCEPTIONS[v]!.errorCode) code.push(0x6a, 0x00);         // push $0
    code.push(0x6a, v);                                            // push $v
    const rel = COMMON_HANDLER_OFFSET - (code.length + 5);
    code.push(0xe9, ...le32(rel));                                 // jmp common
    while (code.length < start + STUB_SLOT) code.push(0xcc);       // int3 padding
  }
  // Stack at this point (after push %rax): rax, vector, error code, then the CPU frame.
  code.push(0x50);                                                 // push %rax
  code.push(0x48, 0x89, 0xe0);                                     // mov %rsp,%rax
  code.push(0x48, 0x25, ...le32(-EXCEPTION_AREA_SIZE >>> 0));      // and $-size,%rax
  const saved: [GprName, number][] = [['rbx', 3], ['rcx', 1], ['rdx', 2], ['rsi', 6], ['rdi', 7],
    ['rbp', 5], ['r8', 8], ['r9', 9], ['r10', 10], ['r11', 11], ['r12', 12], ['r13', 13], ['r14', 14], ['r15', 15]];
  for (const [name, reg] of saved) code.push(...storeToReport(reg, ReportOffset[name]));
  const RBX = 3;
  const fromStack: [keyof typeof ReportOffset, number][] = [['rax', 0], ['vector', 8], ['errorCode', 16],
    ['rip', 24], ['cs', 32], ['rflags', 40], ['rsp', 48], ['ss', 56]];
  for (const [field, disp] of fromStack) {
    code.push(...loadRbxFromStack(disp), ...storeToReport(RBX, ReportOffset[field]));
  }
  code.push(0x0f, 0x20, 0xd3, ...storeToReport(RBX, ReportOffset.cr2));   // mov %cr2,%rbx
  code.push(0x0f, 0x20, 0xdb, ...storeToReport(RBX, ReportOffset.cr3));   // mov %cr3,%rbx
  code.push(0x8b, 0x44, 0x24, 0x08);                               // mov 8(%rsp),%eax
  code.push(0xba, ...le32(GuestPort.exception));                   // mov $port,%edx
  code.push(0xee);                                                 // out %al,(%dx)
  code.push(0xfa);                                                 // cli
  code.push(0xf4, 0xeb, 0xfd);                                     // 1: hlt; jmp 1b
  return Uint8Array.from(code);
}

/** Writes the 256-gate IDT at `idtGpa`: vectors 0–31 point at the stubs, the rest are not present. */
export function writeIdt(view: DataView, idtGpa = IDT_GPA, stubsGpa = STUBS_GPA): void {
  for (let v = 0; v < 256; v++) {
    let low = 0n;
    let high = 0n;
    if (v < EXCEPTION_VECTORS) {
      [low, high] = idtGate({
        handler: stubsGpa + v * STUB_SLOT, selector: Selector.code64,
        ist: v === 8 ? DOUBLE_FAULT_IST : EXCEPTION_IST, type: GateType.interrupt, dpl: 0,
      });
    }
    view.setBigUint64(idtGpa + 16 * v, low, true);
    view.setBigUint64(idtGpa + 16 * v + 8, high, true);
  }
}

/** Limit for IDTR: all 256 gates. */
export const IDT_LIMIT = 256 * 16 - 1;

/** What the stubs stored about one exception. */
export interface ExceptionReport {
  vector: number;
  /** "#PF" etc. */
  mnemonic: string;
  /** "page fault" etc. */
  name: string;
  /** The CPU-pushed error code, or undefined for vectors that have none. */
  errorCode: number | undefined;
  /** RIP of the faulting instruction (for faults) or the next one (for traps). */
  rip: bigint;
  cs: number;
  rflags: bigint;
  ss: number;
  /** CR2 at the time of the exception (the faulting linear address for a #PF). */
  cr2: bigint;
  cr3: bigint;
  /** Every GPR as it was when the exception hit (rsp from the CPU's frame). */
  registers: Record<GprName, bigint>;
}

/** Decodes the report the stubs left at `offset` of `view` (a vCPU's exception area base). */
export function decodeReport(view: DataView, offset: number): ExceptionReport {
  const u64 = (field: keyof typeof ReportOffset): bigint => view.getBigUint64(offset + ReportOffset[field], true);
  const vector = Number(u64('vector') & 0xffn);
  const info = EXCEPTIONS[vector] ?? { mnemonic: `#${vector}`, name: `vector ${vector}`, errorCode: false };
  const registers = {} as Record<GprName, bigint>;
  for (const name of GPR_NAMES) registers[name] = u64(name);
  return {
    vector, mnemonic: info.mnemonic, name: info.name,
    errorCode: info.errorCode ? Number(u64('errorCode') & 0xffffffffn) : undefined,
    rip: u64('rip'), cs: Number(u64('cs') & 0xffffn), rflags: u64('rflags'), ss: Number(u64('ss') & 0xffffn),
    cr2: u64('cr2'), cr3: u64('cr3'), registers,
  };
}

/** Human-readable page-fault error code bits ("write, not present, supervisor"). */
export function describePageFaultError(code: number): string {
  const parts = [
    code & 1 ? 'protection violation' : 'not present',
    code & 2 ? 'write' : 'read',
    code & 4 ? 'user' : 'supervisor',
  ];
  if (code & 8) parts.push('reserved bit set');
  if (code & 16) parts.push('instruction fetch');
  if (code & 32) parts.push('protection key');
  if (code & 0x8000) parts.push('SGX');
  return parts.join(', ');
}
