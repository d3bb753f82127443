// The round-trip benchmark: the bench app (native/guest/apps/bench) makes K gate round
// trips (default → gate → sub → default: three switches) interleaved with K calls of a
// function doing one plain port-I/O exit, the baseline, each bracketed by rdtsc in the
// guest. Both are measured in the same run, on the same vCPU, so the ratio is robust to
// the machine's load; TSC cycles are converted to time with two calibration marks
// around the loop. The backend additionally times each trip from the host.
import { cpus, hostname, release } from 'node:os';
import type { BackendChoice, SwitchTiming } from '../backends/backend';
import { ElisaManager, selectBackend } from '../host';
import { TRAP_EXTRA_INSNS } from '../backends/emulated/vmfunc';
import { readGuestU64s, setGuestU64 } from './apps';
import { ElisaGuest } from './machine';

/** Ports of the bench guest (apps/bench/main.c). */
export const BENCH_PORTS = { pio: 0x5f0, calibrate: 0x5f1, progress: 0x5f2 } as const;
/**
 * Instructions inside each rdtsc bracket of apps/bench (counted with objdump on the gcc
 * build and the generated gate pages): the block bracket holds 56 register-only
 * instructions; the round-trip bracket 68 besides its 3 VMFUNC traps (12 of the caller,
 * 53 of the top/gate/sub/bottom pages and the entry function, 3 after the call); the PIO
 * bracket 12 besides its OUT. Used to separate instruction cost from exit cost on hosts
 * that emulate guest instructions.
 */
export const BRACKET_INSNS = { block: 56, roundTrip: 68, pio: 12 } as const;

/** Instructions of the round-trip bracket besides its exits, on `backend` (the emulated one adds a nop per trap). */
export function tripInsns(backend: string): number {
  return BRACKET_INSNS.roundTrip + (backend === 'emulated' ? 3 * TRAP_EXTRA_INSNS : 0);
}

/** Most iterations the bench guest has room for. */
export const BENCH_MAX_ITERATIONS = 16384;

/** Distribution of one measured quantity, in microseconds. */
export interface Distribution {
  samples: number;
  minUs: number;
  medianUs: number;
  p99Us: number;
  maxUs: number;
  meanUs: number;
}

/** What one benchmark run measured. */
export interface BenchResult {
  backend: string;
  backendWhy: string;
  /** Whether FPU/SSE state moved at every switch. */
  moveFpu: boolean;
  /** Which loop carried out the switches: 'native' (default) or 'js' (host timing, --move-fpu). */
  loop: 'native' | 'js';
  host: { hostname: string; kernel: string; cpu: string; cpus: number; node: string };
  iterations: number;
  /** TSC ticks per microsecond, from the calibration marks. */
  tscPerUs: number;
  /** Round trips through the gate, timed in the guest (rdtsc around the call). */
  roundTrip: Distribution;
  /** Calls of a function doing one PIO exit, timed the same way (the baseline). */
  pioExit: Distribution;
  /** Round trips as timed by the host (hostTiming only): from the trap of VMFUNC(0,511) until the default vCPU is resumed. */
  roundTripHost: Distribution | undefined;
  /** median round trip / median PIO exit round trip (target ≤ 4). */
  ratio: number;
  /** fastest round trip / fastest PIO exit round trip (least disturbed by the host's load). */
  ratioMin: number;
  /** Median round trip / 3: an upper bound of one switch (includes the gate and sub code's own instructions). */
  perSwitchUs: number;
  /** Median cost of one register-only guest instruction (a 56-instruction block / 56): ~0 where guests run natively. */
  insnUs: number;
  /** Estimated cost of one switch alone: (median round trip − its other instructions) / 3. */
  switchOnlyUs: number;
  /** Estimated cost of the PIO exit alone: median PIO bracket − 12 instructions. */
  pioOnlyUs: number;
  /** Median time the backend's JavaScript took per switch, between the trap exit and the next KVM_RUN (hostTiming only). */
  backendHandlingUs: number | undefined;
  /** Raw samples in microseconds (for histograms). */
  samples: { roundTrip: number[]; pioExit: number[] };
}

/** Options of measureRoundTrips. */
export interface BenchOptions {
  iterations?: number;
  backend?: BackendChoice;
  /** Called with (done, total) as the guest reports progress. */
  onProgress?: (done: number, total: number) => void;
  /** Bound on the run (default 10 minutes). */
  timeoutMs?: number;
  /** Also move the FPU/SSE state at every switch (KVM_GET_XSAVE + KVM_SET_XSAVE; JavaScript loop). */
  moveFpu?: boolean;
  /**
   * Time every trip and switch from the host too. This runs the backend's JavaScript
   * loop (the native loop cannot be timed from JS), so it measures that loop.
   */
  hostTiming?: boolean;
}

/** Summary statistics of samples in microseconds. */
export function distribution(us: number[]): Distribution {
  const xs = [...us].sort((a, b) => a - b);
  const at = (q: number): number => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? NaN;
  return { samples: xs.length, minUs: xs[0] ?? NaN, medianUs: at(0.5), p99Us: at(0.99), maxUs: xs[xs.length - 1] ?? NaN,
    meanUs: xs.reduce((s, x) => s + x, 0) / Math.max(1, xs.length) };
}

/** Runs the bench app once and returns the measurements. */
export function measureRoundTrips(options: BenchOptions = {}): BenchResult {
  const k = options.iterations ?? 1000;
  if (!Number.isInteger(k) || k < 1 || k > BENCH_MAX_ITERATIONS) throw new RangeError(`iterations must be an integer in 1..${BENCH_MAX_ITERATIONS}, got ${k}`);
  const { backend, why } = selectBackend(options.backend ?? 'auto');
  using manager = ElisaManager.create({ arenaPages: 512, backend });
  using guest = ElisaGuest.create('bench');
  setGuestU64(guest, 'bench_iterations', BigInt(k));
  const timing: SwitchTiming = { trips: [], handling: [] };
  const hostTiming = options.hostTiming ?? false;
  manager.attach(guest, { program: 'sub/bench', backend, moveFpu: options.moveFpu ?? false, ...(hostTiming ? { timing } : {}) });
  const marks: number[] = [];
  const ports = new Map<number, (data: Uint8Array) => void>([
    [BENCH_PORTS.pio, () => undefined],
    [BENCH_PORTS.calibrate, () => { marks.push(performance.now()); }],
    [BENCH_PORTS.progress, (d) => options.onProgress?.(new DataView(d.buffer, d.byteOffset, 4).getUint32(0, true), k)],
  ]);
  const run = guest.run({ timeoutMs: options.timeoutMs ?? 600_000, ports });
  if (run.result !== BigInt(k)) throw new Error(`bench guest did ${run.result} iterations instead of ${k}`);
  const [tscStart, tscEnd] = [readGuestU64s(guest, 'bench_tsc_start', 1)[0]!, readGuestU64s(guest, 'bench_tsc_end', 1)[0]!];
  if (marks.length !== 2) throw new Error(`bench guest wrote ${marks.length} calibration marks instead of 2`);
  const tscPerUs = Number(tscEnd - tscStart) / ((marks[1]! - marks[0]!) * 1000);
  const toUs = (cycles: bigint[]): number[] => cycles.map((c) => Number(c) / tscPerUs);
  const trips = toUs(readGuestU64s(guest, 'bench_trip_cycles', k));
  const blocks = toUs(readGuestU64s(guest, 'bench_insn_cycles', k));
  const pios = toUs(readGuestU64s(guest, 'bench_pio_cycles', k));
  const roundTrip = distribution(trips);
  const pioExit = distribution(pios);
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return {
    backend: backend.name, backendWhy: why, moveFpu: options.moveFpu ?? false,
    loop: hostTiming || options.moveFpu ? 'js' : 'native',
    host: { hostname: hostname(), kernel: release(), cpu, cpus: cpus().length, node: process.version },
    iterations: k, tscPerUs, roundTrip, pioExit,
    roundTripHost: hostTiming ? distribution(timing.trips.map((ms) => ms * 1000)) : undefined,
    ratio: roundTrip.medianUs / pioExit.medianUs,
    ratioMin: roundTrip.minUs / pioExit.minUs,
    perSwitchUs: roundTrip.medianUs / 3,
    insnUs: distribution(blocks).medianUs / BRACKET_INSNS.block,
    switchOnlyUs: (roundTrip.medianUs - (tripInsns(backend.name) * distribution(blocks).medianUs) / BRACKET_INSNS.block) / 3,
    pioOnlyUs: pioExit.medianUs - (BRACKET_INSNS.pio * distribution(blocks).medianUs) / BRACKET_INSNS.block,
    backendHandlingUs: hostTiming ? distribution(timing.handling.map((ms) => ms * 1000)).medianUs : undefined,
    samples: { roundTrip: trips, pioExit: pios },
  };
}

/** The result as text lines. */
export function formatBench(r: BenchResult): string[] {
  const f = (x: number): string => x.toFixed(1).padStart(8);
  const row = (name: string, d: Distribution): string => `${name.padEnd(34)}${f(d.minUs)}${f(d.medianUs)}${f(d.p99Us)}   (${d.samples} samples)`;
  return [
    `backend ${r.backend} (${r.backendWhy}), ${r.loop} switch loop${r.moveFpu ? ', FPU/SSE state moved at every switch' : ''}`,
    `host ${r.host.hostname}: ${r.host.cpu}, ${r.host.cpus} CPUs, Linux ${r.host.kernel}, Node ${r.host.node}; TSC ${r.tscPerUs.toFixed(1)} ticks/µs`,
    `${''.padEnd(34)}${'min µs'.padStart(8)}${'median'.padStart(8)}${'p99'.padStart(8)}`,
    row('ELISA round trip (guest rdtsc)', r.roundTrip),
    row('PIO exit round trip (baseline)', r.pioExit),
    ...(r.roundTripHost ? [row('ELISA round trip (host-timed)', r.roundTripHost)] : []),
    `ratio round trip / PIO exit: ${r.ratio.toFixed(2)}x of the medians, ${r.ratioMin.toFixed(2)}x of the minimums  (target <= 4x; a trip is 3 switches)`,
    `guest instruction: ${r.insnUs.toFixed(2)} µs each (median of a 56-instruction block; ~0 where guests run natively)`,
    `per switch: <= ${r.perSwitchUs.toFixed(1)} µs (median trip / 3); ≈ ${r.switchOnlyUs.toFixed(1)} µs if the trip's ${tripInsns(r.backend)} other ` +
      `instructions cost what the block's do (PIO exit alone, likewise: ≈ ${r.pioOnlyUs.toFixed(1)} µs)` +
      (r.backendHandlingUs !== undefined ? `; backend JS per switch ${r.backendHandlingUs.toFixed(2)} µs (median)` : ''),
  ];
}

/** An SVG histogram of both distributions (log-spaced bins). */
export function histogramSvg(r: BenchResult): string {
  const all = [...r.samples.roundTrip, ...r.samples.pioExit].filter((x) => x > 0);
  const lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all)) + 1e-9;
  const bins = 60, w = 720, h = 320, pad = 40;
  const count = (xs: number[]): number[] => {
    const c = new Array<number>(bins).fill(0);
    for (const x of xs) if (x > 0) c[Math.min(bins - 1, Math.floor(((Math.log10(x) - lo) / (hi - lo)) * bins))]!++;
    return c;
  };
  const a = count(r.samples.roundTrip), b = count(r.samples.pioExit);
  const max = Math.max(...a, ...b, 1);
  const bw = (w - 2 * pad) / bins;
  const bars = (c: number[], color: string): string => c.map((n, i) => n === 0 ? '' :
    `<rect x="${(pad + i * bw).toFixed(1)}" y="${(h - pad - ((h - 2 * pad) * n) / max).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${(((h - 2 * pad) * n) / max).toFixed(1)}" fill="${color}" fill-opacity="0.7"/>`).join('');
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => {
    const us = 10 ** (lo + t * (hi - lo));
    return `<text x="${(pad + t * (w - 2 * pad)).toFixed(1)}" y="${h - pad + 16}" font-size="11" text-anchor="middle">${us.toFixed(1)} µs</text>`;
  }).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">` +
    `<text x="${pad}" y="20" font-size="13">ELISA round trip (blue) vs PIO exit round trip (orange), ${r.backend} backend, ${r.iterations} each; ratio of medians ${r.ratio.toFixed(2)}x</text>` +
    `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="black"/>` +
    bars(a, '#1f77b4') + bars(b, '#ff7f0e') + ticks + `</svg>\n`;
}
