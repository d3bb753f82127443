// Assembles a snippet of GNU assembler text into flat machine code with the
// system binutils (`as` then `objcopy -O binary`), for tiny test guests.
// Results are cached per source text for the life of the process.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cache = new Map<string, Uint8Array>();

/**
 * Assembles `source` (AT&T syntax unless it says `.intel_syntax`). Start it with
 * `.code16`, `.code32` or `.code64`; the default is 64-bit. Code is linked at
 * address 0 unless `origin` is given (so absolute labels resolve correctly).
 */
export function assemble(source: string, origin = 0): Uint8Array {
  const key = `${origin}\n${source}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const dir = mkdtempSync(join(tmpdir(), 'elisa-as-'));
  try {
    writeFileSync(join(dir, 'a.s'), `${source}\n`);
    try {
      execFileSync('as', ['--64', '-o', join(dir, 'a.o'), join(dir, 'a.s')], { stdio: ['ignore', 'pipe', 'pipe'] });
      execFileSync('ld', ['-m', 'elf_x86_64', '-Ttext', `0x${origin.toString(16)}`, '-e', '0', '--oformat', 'elf64-x86-64',
        '-o', join(dir, 'a.elf'), join(dir, 'a.o')], { stdio: ['ignore', 'pipe', 'pipe'] });
      execFileSync('objcopy', ['-O', 'binary', '-j', '.text', join(dir, 'a.elf'), join(dir, 'a.bin')], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      throw new Error(`assembling failed: ${e.stderr?.toString() || e.message}\n--- source ---\n${source}`);
    }
    const code = new Uint8Array(readFileSync(join(dir, 'a.bin')));
    cache.set(key, code);
    return code;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
