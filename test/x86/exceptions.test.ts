import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { codeSegment64, dataSegment, idtGate, tssDescriptor } from '../../src/x86/descriptors';
import { COMMON_HANDLER_OFFSET, EXCEPTIONS, exceptionStubs, ReportOffset, STUB_SLOT } from '../../src/x86/exceptions';
import { STUBS_GPA } from '../../src/x86/layout';
import { GuestPort } from '../../src/x86/ports';

// Intel SDM vol. 3, table 6-1: the vectors for which the CPU pushes an error code.
const WITH_ERROR_CODE = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

/** The stubs written as GNU assembler source, to be assembled by `as` (an independent encoder). */
function referenceSource(): string {
  const lines = ['.code64', 'stubs:'];
  for (let v = 0; v < 32; v++) {
    lines.push(`.balign ${STUB_SLOT}, 0xcc`, `stub${v}:`);
    if (!WITH_ERROR_CODE.includes(v)) lines.push('push $0');
    lines.push(`push $${v}`, '{disp32} jmp common');
  }
  lines.push('.balign 16, 0xcc', 'common:', 'push %rax', 'mov %rsp, %rax', 'and $-0x2000, %rax');
  for (const r of ['rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'] as const) {
    lines.push(`{disp32} mov %${r}, ${ReportOffset[r]}(%rax)`);
  }
  const frame: [keyof typeof ReportOffset, number][] = [['rax', 0], ['vector', 8], ['errorCode', 16], ['rip', 24],
    ['cs', 32], ['rflags', 40], ['rsp', 48], ['ss', 56]];
  for (const [field, off] of frame) lines.push(`mov ${off}(%rsp), %rbx`, `{disp32} mov %rbx, ${ReportOffset[field]}(%rax)`);
  lines.push('mov %cr2, %rbx', `{disp32} mov %rbx, ${ReportOffset.cr2}(%rax)`);
  lines.push('mov %cr3, %rbx', `{disp32} mov %rbx, ${ReportOffset.cr3}(%rax)`);
  lines.push('mov 8(%rsp), %eax', `mov $${GuestPort.exception}, %edx`, 'out %al, (%dx)', 'cli', '1: hlt', 'jmp 1b');
  return lines.join('\n') + '\n';
}

describe('exception stubs', function () {
  let dir: string;
  before(function () { dir = mkdtempSync(join(tmpdir(), 'elisa-stubs-')); });
  after(function () { rmSync(dir, { recursive: true, force: true }); });

  it('are byte for byte what GNU as assembles from the same instructions', function () {
    writeFileSync(join(dir, 'ref.s'), referenceSource());
    execFileSync('as', ['--64', '-o', join(dir, 'ref.o'), join(dir, 'ref.s')]);
    execFileSync('objcopy', ['-O', 'binary', '-j', '.text', join(dir, 'ref.o'), join(dir, 'ref.bin')]);
    const reference = readFileSync(join(dir, 'ref.bin'));
    const ours = exceptionStubs();
    expect(Buffer.from(ours).toString('hex')).to.equal(reference.toString('hex'));
  });

  it('disassemble (objdump) to push vector / jmp to the common handler, in each 16-byte slot', function () {
    writeFileSync(join(dir, 'stubs.bin'), exceptionStubs());
    const text = execFileSync('objdump', ['-D', '-b', 'binary', '-m', 'i386:x86-64',
      `--adjust-vma=0x${STUBS_GPA.toString(16)}`, join(dir, 'stubs.bin')], { encoding: 'utf8' });
    const common = (STUBS_GPA + COMMON_HANDLER_OFFSET).toString(16);
    for (let v = 0; v < 32; v++) {
      const at = (STUBS_GPA + v * STUB_SLOT).toString(16);
      const re = new RegExp(`^\\s*${at}:[^\\n]*push\\s+\\$0x${WITH_ERROR_CODE.includes(v) ? v.toString(16) : '0'}\\b`, 'm');
      expect(text, `stub ${v}`).to.match(re);
    }
    const jumps = [...text.matchAll(/jmp\s+0x([0-9a-f]+)/g)].map((m) => m[1]);
    expect(jumps.slice(0, 32)).to.deep.equal(Array(32).fill(common));
    expect(text).to.match(/mov\s+%cr2,%rbx/);
    expect(text).to.match(/out\s+%al,\(%dx\)/);
  });

  it('the error-code table agrees with the SDM', function () {
    expect(EXCEPTIONS.flatMap((e, v) => (e.errorCode ? [v] : []))).to.deep.equal(WITH_ERROR_CODE);
    expect(EXCEPTIONS[14]!.mnemonic).to.equal('#PF');
    expect(EXCEPTIONS).to.have.length(32);
  });
});

describe('system descriptors', function () {
  it('code and data segments equal the flat descriptors Linux uses (GDT_ENTRY(0xa09b/0xc093, 0, 0xfffff))', function () {
    expect(codeSegment64()).to.equal(0x00af9b000000ffffn);
    expect(dataSegment()).to.equal(0x00cf93000000ffffn);
  });

  it('a TSS descriptor splits a 64-bit base over both quadwords (SDM fig. 8-4)', function () {
    const [low, high] = tssDescriptor(0x12_3456_789a, 103);
    // bits: limit 15:0 = 0x0067 | base 15:0 = 0x789a | base 23:16 = 0x56 | type+P = 0x8b | limit 19:16+flags = 0 | base 31:24 = 0x34
    expect(low).to.equal(0x34008b56789a0067n);
    expect(high).to.equal(0x12n);
  });

  it('an IDT gate places offset, selector, IST and type where the SDM says (fig. 6-8)', function () {
    const [low, high] = idtGate({ handler: 0x1234_5678_9abc, selector: 0x08, ist: 2, type: 0xe, dpl: 0 });
    expect(low).to.equal(0x5678_8e02_0008_9abcn);
    expect(high).to.equal(0x1234n);
  });
});
