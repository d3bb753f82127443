import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ElfError, loadSegments, parseElf } from '../../src/x86/elf';
import { guestProgramPath } from '../../src/x86/programs';
import { buildElf } from './elf-builder';

const hello = () => readFileSync(guestProgramPath('hello'));

describe('ELF64 loader', function () {
  describe('a real guest program (hello.elf), checked against binutils', function () {
    it('has the entry point readelf reports', function () {
      const out = execFileSync('readelf', ['-h', guestProgramPath('hello')], { encoding: 'utf8' });
      const entry = Number(/Entry point address:\s+(0x[0-9a-f]+)/.exec(out)![1]);
      expect(parseElf(hello()).entry).to.equal(entry);
    });

    it('has the PT_LOAD segments readelf reports', function () {
      const out = execFileSync('readelf', ['-lW', guestProgramPath('hello')], { encoding: 'utf8' });
      const loads = [...out.matchAll(/^\s*LOAD\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)/gm)]
        .map((m) => ({ offset: Number(m[1]), vaddr: Number(m[2]), paddr: Number(m[3]), filesz: Number(m[4]), memsz: Number(m[5]) }));
      expect(loads).to.have.length.greaterThan(0);
      const segs = parseElf(hello()).segments.map(({ offset, vaddr, paddr, filesz, memsz }) => ({ offset, vaddr, paddr, filesz, memsz }));
      expect(segs).to.deep.equal(loads);
    });

    it('finds every global function nm lists, at nm\'s address', function () {
      const out = execFileSync('nm', ['--defined-only', guestProgramPath('hello')], { encoding: 'utf8' });
      const image = parseElf(hello());
      const fns = [...out.matchAll(/^([0-9a-f]+) T (\S+)$/gm)];
      expect(fns.map((m) => m[2])).to.include.members(['main', 'printf', '_start', 'exit']);
      for (const m of fns) expect(image.symbols.address(m[2]!), m[2]).to.equal(parseInt(m[1]!, 16));
    });

    it('names a missing symbol in its error', function () {
      expect(() => parseElf(hello()).symbols.address('no_such_symbol')).to.throw(ElfError, /'no_such_symbol' not found/);
    });
  });

  describe('bad input', function () {
    it('refuses a file that is not ELF, showing its first bytes', function () {
      expect(() => parseElf(Buffer.from('#!/bin/sh\necho hi\n'), 'script.sh'))
        .to.throw(ElfError, /script.sh is not an ELF file: it starts with \[23 21 2f 62\]/);
      expect(() => parseElf(new Uint8Array(0))).to.throw(ElfError, /not an ELF file/);
    });

    it('refuses a 32-bit ELF made by objcopy from a real program', function () {
      const dir = mkdtempSync(join(tmpdir(), 'elisa-elf32-'));
      try {
        const out = join(dir, 'hello32.elf');
        execFileSync('objcopy', ['-O', 'elf32-i386', guestProgramPath('hello'), out]);
        const file = readFileSync(out);
        expect(file[4]).to.equal(1); // objcopy really wrote ELFCLASS32
        expect(() => parseElf(file)).to.throw(ElfError, /32-bit ELF \(ELFCLASS32\)/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('refuses a crafted 32-bit header too', function () {
      const file = buildElf({ class: 1, segments: [{ paddr: 0x100000, data: new Uint8Array(16), memsz: 16 }] });
      expect(() => parseElf(file)).to.throw(ElfError, /32-bit/);
    });

    it('refuses truncated files: header, program headers, segment data', function () {
      const file = hello();
      expect(() => parseElf(file.subarray(0, 40))).to.throw(ElfError, /truncated: 40 bytes, but an ELF64 header alone needs 64/);
      expect(() => parseElf(file.subarray(0, 100))).to.throw(ElfError, /truncated: its 1 program headers at offset 64 end at 120/);
      expect(() => parseElf(file.subarray(0, 0x1000 + 16))).to.throw(ElfError, /truncated: segment 0 .* needs file bytes/);
    });

    it('refuses position-independent (ET_DYN), relocatable and foreign-machine files', function () {
      const seg = [{ paddr: 0x100000, data: new Uint8Array(16), memsz: 16 }];
      expect(() => parseElf(buildElf({ type: 3, segments: seg }))).to.throw(ElfError, /ET_DYN.*-static -no-pie/);
      expect(() => parseElf(buildElf({ type: 1, segments: seg }))).to.throw(ElfError, /ET_REL/);
      expect(() => parseElf(buildElf({ machine: 3, segments: seg }))).to.throw(ElfError, /machine 3 \(i386\), not x86-64/);
    });

    it('refuses overlapping segments, naming both ranges', function () {
      const file = buildElf({ segments: [
        { paddr: 0x100000, data: new Uint8Array(0x100), memsz: 0x2000 },
        { paddr: 0x101000, data: new Uint8Array(0x10), memsz: 0x10 },
      ] });
      expect(() => parseElf(file)).to.throw(ElfError, /segments overlap: \[0x100000, 0x102000\) and \[0x101000, 0x101010\)/);
    });

    it('refuses p_filesz > p_memsz and an entry point outside every segment', function () {
      expect(() => parseElf(buildElf({ segments: [{ paddr: 0x100000, data: new Uint8Array(32), memsz: 16 }] })))
        .to.throw(ElfError, /p_filesz 32 > p_memsz 16/);
      expect(() => parseElf(buildElf({ entry: 0x200000, segments: [{ paddr: 0x100000, data: new Uint8Array(16), memsz: 16 }] })))
        .to.throw(ElfError, /entry point 0x200000 is not inside any PT_LOAD segment/);
    });

    it('refuses a segment outside guest memory or over host structures, before writing anything', function () {
      const file = buildElf({ segments: [
        { paddr: 0x100000, data: new Uint8Array(16).fill(1), memsz: 16 },
        { paddr: 0x3ff000, data: new Uint8Array(16), memsz: 0x2000 },
      ] });
      const memory = new Uint8Array(0x400000);
      expect(() => loadSegments(file, parseElf(file), memory))
        .to.throw(ElfError, /segment \[0x3ff000, 0x401000\) lies outside guest memory \[0, 0x400000\)/);
      expect(memory[0x100000]).to.equal(0);
      const low = buildElf({ segments: [{ paddr: 0x8000, data: new Uint8Array(16), memsz: 16 }] });
      expect(() => loadSegments(low, parseElf(low), memory, [{ start: 0, end: 0x100000, what: 'host structures' }]))
        .to.throw(ElfError, /overlaps host structures at \[0x0, 0x100000\)/);
    });
  });

  describe('segment placement (property)', function () {
    it('puts file bytes at p_paddr, zeroes [filesz, memsz) and touches nothing else', function () {
      const MEM = 0x100000;
      // Random disjoint segments: cut [0, MEM) into slots, one segment per chosen slot.
      const segArb = fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 6 }).chain((slots) =>
        fc.tuple(...slots.map((slot) => fc.record({
          slot: fc.constant(slot),
          start: fc.integer({ min: 0, max: 0x3000 }),
          filesz: fc.integer({ min: 0, max: 0x300 }),
          extra: fc.integer({ min: 0, max: 0x700 }),
          seed: fc.integer({ min: 1, max: 255 }),
        }))));
      fc.assert(fc.property(segArb, (segs) => {
        const segments = segs.map((s) => ({
          paddr: s.slot * 0x4000 + s.start,
          data: Uint8Array.from({ length: s.filesz }, (_, i) => (s.seed + i * 13) & 0xff || 1),
          memsz: Math.max(1, s.filesz + s.extra),
        }));
        const file = buildElf({ segments });
        const memory = new Uint8Array(MEM).fill(0xaa);
        loadSegments(file, parseElf(file), memory);
        const expected = new Uint8Array(MEM).fill(0xaa);
        for (const s of segments) {
          expected.fill(0, s.paddr, s.paddr + s.memsz);
          expected.set(s.data, s.paddr);
        }
        expect(Buffer.compare(memory, expected)).to.equal(0);
      }), { numRuns: 200 });
    });
  });
});
