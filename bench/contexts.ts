// Context-building benchmark: a sub context equivalent to libelisa's default (gate and sub
// code pages, 8 MiB sub stack, EPTP list, gate context) plus N application pages, built in
// an arena by the pure-TypeScript builder. Reports build time, table pages and APT fill time,
// with ratios against N = 0 (the libelisa default alone) measured in the same run.
import { cpus } from 'node:os';
import { ArenaAllocator, buildContexts, type MapRequest } from '../src/elisa';

const SIZES = [0, 16, 1024, 65536];
const APP_GVA = 0x1000_0000n;
const APP_GPA = 1n << 40n;
const APP_SOURCE = 1n << 44n; // sources outside the arena: only tables are built for them

interface Sample { buildMs: number; aptMs: number; tablePages: number; totalPages: number }

function once(n: number): Sample {
  const arena = new ArenaAllocator(8192, 1n << 32n);
  const maps: MapRequest[] = [];
  for (let i = 0; i < n; i++) {
    const off = BigInt(i) * 4096n;
    maps.push({ source: { physical: APP_SOURCE + off }, gva: APP_GVA + off, gpa: APP_GPA + off, level: 1, pt: { user: true, writable: true }, ept: { read: true, write: true, execute: true, userExecute: true } });
  }
  const started = process.hrtime.bigint();
  const ctx = buildContexts({ allocator: arena, gva: 0x7f00_0000_0000n, entry: APP_GVA, maps: n > 0 ? maps : [
    { source: { physical: APP_SOURCE }, gva: APP_GVA, gpa: APP_GPA, level: 1, pt: { user: true }, ept: { read: true, execute: true, userExecute: true } },
  ] });
  const buildMs = Number(process.hrtime.bigint() - started) / 1e6;
  const tablePages = ctx.sub.pt.tablePageCount + ctx.sub.ept.tablePageCount + ctx.gate.pt.tablePageCount + ctx.gate.ept.tablePageCount;
  const sample = { buildMs, aptMs: ctx.sub.aptFillMs + ctx.gate.aptFillMs, tablePages, totalPages: arena.stats().inUse };
  ctx.destroy();
  if (arena.stats().inUse !== 0) throw new Error('benchmark leaked pages');
  return sample;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function main(): void {
  console.log(`elisa context build benchmark — pure TypeScript builder, arena allocator (no KVM involved)`);
  console.log(`host: ${cpus()[0]?.model ?? 'unknown CPU'} ×${cpus().length}, node ${process.version}`);
  console.log('N = application 4 KiB pages added to the libelisa default (N = 0: gate + sub code, 8 MiB stack, EPTP list)');
  for (let i = 0; i < 8; i++) once(i % 2 ? 16 : 1024); // warm up the JIT before anything is timed
  // Interleave the sizes so that garbage collection and host load fall on all of them alike.
  const samples = new Map<number, Sample[]>(SIZES.map((n) => [n, []]));
  for (let run = 0; run < 11; run++) {
    for (const n of SIZES) if (n < 65536 || run < 5) samples.get(n)!.push(once(n));
  }
  const rows = SIZES.map((n) => {
    const xs = samples.get(n)!;
    return { n, s: { buildMs: median(xs.map((x) => x.buildMs)), aptMs: median(xs.map((x) => x.aptMs)), tablePages: xs[0]!.tablePages, totalPages: xs[0]!.totalPages } };
  });
  const base = rows[0]!.s;
  console.log('\n     N   build ms (median)  ×N=0   APT fill ms (both ctx)  ×N=0   table pages (PT+EPT+APT, both ctx)  pages in use');
  for (const { n, s } of rows) {
    console.log(`${String(n).padStart(6)}   ${s.buildMs.toFixed(2).padStart(17)}  ${(s.buildMs / base.buildMs).toFixed(2).padStart(5)}   ${s.aptMs.toFixed(3).padStart(22)}  ${(s.aptMs / base.aptMs).toFixed(2).padStart(5)}   ${String(s.tablePages).padStart(34)}  ${String(s.totalPages).padStart(12)}`);
  }
}

main();
