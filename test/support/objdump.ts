// GNU binutils as an independent oracle for the x86-64 encoder: `as` turns Intel-syntax
// text into bytes, `objdump` turns bytes into text. Both are run once per batch (a
// process start costs far more than a thousand instructions), in a private temp dir.
// binutils is installed by scripts/install-deps.sh; without it these helpers throw.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One disassembled instruction. */
export interface DisasmLine {
  /** Offset from the start of the buffer (not the VMA). */
  readonly offset: number;
  readonly bytes: number[];
  /** objdump's Intel-syntax text, whitespace collapsed, trailing `# target` comment removed. */
  readonly text: string;
  /** The address from a trailing `# 0x...` comment (RIP-relative targets), if any. */
  readonly target?: bigint;
}

function withTempDir<T>(f: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'elisa-binutils-'));
  try {
    return f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error(`${cmd} not found: GNU binutils is required (run scripts/install-deps.sh)`);
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${err.stderr ?? err.message}`);
  }
}

/** Normalizes instruction text: collapsed whitespace, no comment, lower case. */
export function normalize(text: string): string {
  return text.replace(/#.*$/, '').trim().replace(/\s+/g, ' ').toLowerCase();
}

/**
 * Disassembles raw x86-64 bytes with `objdump -D -b binary -m i386:x86-64 -M intel`.
 * `origin` is the VMA of byte 0 (shown in jump targets and RIP comments).
 */
export function disassemble(bytes: Uint8Array, origin = 0n, options: { skipInt3?: boolean } = {}): DisasmLine[] {
  return withTempDir((dir) => {
    const bin = join(dir, 'code.bin');
    writeFileSync(bin, bytes);
    const out = run('objdump', [
      '-D', '-b', 'binary', '-m', 'i386:x86-64', '-M', 'intel', '--insn-width=16',
      `--adjust-vma=0x${origin.toString(16)}`, bin,
    ]);
    const lines: DisasmLine[] = [];
    for (const line of out.split('\n')) {
      // int3 filler can be most of a page; skipping it early saves most of the parsing
      if (options.skipInt3 && line.endsWith('\tint3')) continue;
      const m = /^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t?(.*)$/.exec(line);
      if (!m) continue;
      const addr = BigInt(`0x${m[1]}`);
      const comment = /#\s*(0x[0-9a-f]+)/.exec(m[3]!);
      lines.push({
        offset: Number(addr - origin),
        bytes: m[2]!.trim().split(' ').map((h) => parseInt(h, 16)),
        text: normalize(m[3]!),
        ...(comment ? { target: BigInt(comment[1]!) } : {}),
      });
    }
    return lines;
  });
}

/**
 * Assembles Intel-syntax lines (`.intel_syntax noprefix`, 64-bit) with GNU as and returns
 * the bytes of .text. Lines may contain labels and directives.
 */
export function gnuAssemble(lines: readonly string[]): Uint8Array {
  return withTempDir((dir) => {
    const src = join(dir, 'code.s');
    const obj = join(dir, 'code.o');
    const bin = join(dir, 'code.bin');
    writeFileSync(src, ['.intel_syntax noprefix', '.text', ...lines, ''].join('\n'));
    run('as', ['--64', '-o', obj, src]);
    run('objcopy', ['-O', 'binary', '-j', '.text', obj, bin]);
    return new Uint8Array(readFileSync(bin));
  });
}

/** Hex string of bytes, space separated (for readable assertion messages). */
export function hexBytes(b: ArrayLike<number>): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/** A page (or any buffer) with the virtual address it is mapped at. */
export interface PlacedCode {
  readonly bytes: Uint8Array;
  readonly gva: bigint;
}

/**
 * Disassembles several buffers with one objdump run. Each buffer must end on an
 * instruction boundary (true for generated pages). Offsets are relative to each buffer;
 * RIP-relative targets and branch targets in the text are rebased to the buffer's gva.
 */
export function disassembleMany(buffers: readonly PlacedCode[], options: { skipInt3?: boolean } = {}): DisasmLine[][] {
  const starts: number[] = [];
  let total = 0;
  for (const b of buffers) {
    starts.push(total);
    total += b.bytes.length;
  }
  const all = new Uint8Array(total);
  buffers.forEach((b, i) => all.set(b.bytes, starts[i]!));
  const out: DisasmLine[][] = buffers.map(() => []);
  let page = 0;
  for (const l of disassemble(all, 0n, options)) {
    while (page + 1 < buffers.length && l.offset >= starts[page + 1]!) page++;
    const base = BigInt(starts[page]!);
    const gva = buffers[page]!.gva;
    const rebase = (a: bigint): bigint => BigInt.asUintN(64, a - base + gva);
    const text = l.text.replace(/^((?:j[a-z]+|call|jmp) )0x([0-9a-f]+)$/, (_m, op: string, h: string) => `${op}0x${rebase(BigInt(`0x${h}`)).toString(16)}`);
    out[page]!.push({
      offset: l.offset - starts[page]!,
      bytes: l.bytes,
      text,
      ...(l.target !== undefined ? { target: rebase(l.target) } : {}),
    });
  }
  return out;
}
