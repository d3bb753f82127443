// The ELISA apps of native/guest/apps, driven from the host: what `elisa run` runs and
// what the tests and the benchmark build on. Each app is a guest program (default
// context) plus a sub program (native/guest/out/sub/NAME.elf).
import { hex } from '../address';
import type { BackendChoice } from '../backends/backend';
import { ElisaManager, selectBackend, type Attachment } from '../host';
import { ElisaGuest } from './machine';

/** The apps `elisa run` knows. */
export const APP_NAMES = ['nop', 'args', 'shm', 'bench'] as const;
/** One of APP_NAMES. */
export type AppName = (typeof APP_NAMES)[number];

/** Options of runApp. */
export interface AppOptions {
  /** Backend choice (default auto). */
  backend?: BackendChoice;
  /** Bound on each guest run (default 30 s). */
  timeoutMs?: number;
  /** Loop count of shm (per guest) and bench (default 8 and 16). */
  iterations?: number;
}

/** What an app run did. */
export interface AppReport {
  app: AppName;
  /** Backend that ran it. */
  backend: string;
  /** Why that backend was chosen. */
  backendWhy: string;
  /** True when the result is the one the app must produce. */
  ok: boolean;
  /** One line: what ran and what came back. */
  summary: string;
  /** The app's result value. */
  result: bigint | undefined;
  /** Guest console output, per guest. */
  console: string[];
  /** The programs that ran: guest (default context) and sub program, under native/guest/out. */
  programs: { guest: string; sub: string };
  /** App-specific figures. */
  details: Record<string, unknown>;
}

/** The weights of the args app (native/guest/apps/args/sub/args.c), computed independently here. */
export const ARGS_VALUES: readonly bigint[] = [
  0x1000000000000001n, 0x0200000000000020n, 0x0030000000000300n, 0x0004000000004000n, 0x0000500000050000n, 0x0000060000600000n,
];
/** The weighted sum the args sub program must return for ARGS_VALUES. */
export function argsExpected(values: readonly bigint[] = ARGS_VALUES): bigint {
  const w = [3n, 5n, 7n, 11n, 13n, 17n];
  return BigInt.asUintN(64, values.reduce((sum, v, i) => sum + v * w[i]!, 0n));
}

/** GVA of the shared page in the shm sub program (SHM_GVA in apps/shm/sub/shm.c). */
export const SHM_GVA = 0x5000_0000n;

/** Writes a u64 guest variable by symbol (before the run). */
export function setGuestU64(guest: ElisaGuest, symbol: string, value: bigint): void {
  new DataView(guest.memory.buffer).setBigUint64(Number(guest.symbol(symbol)), value, true);
}

/** Reads `count` u64 of a guest array by symbol (after the run). */
export function readGuestU64s(guest: ElisaGuest, symbol: string, count: number): bigint[] {
  const view = new DataView(guest.memory.buffer);
  const at = Number(guest.symbol(symbol));
  return Array.from({ length: count }, (_, i) => view.getBigUint64(at + 8 * i, true));
}

/** Runs one app end to end on a fresh manager and guest(s); everything is disposed afterwards. */
export function runApp(app: AppName, options: AppOptions = {}): AppReport {
  const { backend, why } = selectBackend(options.backend ?? 'auto');
  const timeoutMs = options.timeoutMs ?? 30_000;
  using manager = ElisaManager.create({ arenaPages: 1024, backend });
  const base = { app, backend: backend.name, backendWhy: why, programs: { guest: `${app}.elf`, sub: `sub/${app}.elf (entry elisa_sub_entry)` } };
  switch (app) {
    case 'nop': {
      using guest = ElisaGuest.create('nop');
      manager.attach(guest, { program: 'sub/nop', backend });
      const run = guest.run({ timeoutMs });
      const ok = run.result === 1n;
      return { ...base, ok, result: run.result, console: [run.console],
        summary: `nop returned ${run.result} (expected 1)`, details: { elapsedMs: run.elapsedMs } };
    }
    case 'args': {
      using guest = ElisaGuest.create('args');
      manager.attach(guest, { program: 'sub/args', backend });
      const run = guest.run({ timeoutMs });
      const expected = argsExpected();
      const ok = run.result === expected && run.exitCode === 0;
      return { ...base, ok, result: run.result, console: [run.console],
        summary: `args returned ${run.result === undefined ? 'nothing' : hex(run.result)} (expected ${hex(expected)}); callee-saved registers preserved`,
        details: { elapsedMs: run.elapsedMs } };
    }
    case 'shm': {
      const n = BigInt(options.iterations ?? 8);
      using shared = manager.allocateShared(1);
      using a = ElisaGuest.create('shm', { name: 'shm guest A' });
      using b = ElisaGuest.create('shm', { name: 'shm guest B' });
      const attachments: Attachment[] = [a, b].map((g) => {
        setGuestU64(g, 'shm_iterations', n);
        return manager.attach(g, { program: 'sub/shm', backend, shared: [{ shared, gva: SHM_GVA }] });
      });
      const runA = a.run({ timeoutMs });
      const runB = b.run({ timeoutMs });
      const counter = new DataView(shared.bytes(0).buffer, shared.bytes(0).byteOffset, 8).getBigUint64(0, true);
      const ok = counter === 2n * n && runA.result === n && runB.result === 2n * n;
      return { ...base, ok, result: counter, console: [runA.console, runB.console],
        summary: `shm: two guests each incremented the shared counter ${n} times: counter = ${counter} (expected ${2n * n})`,
        details: { guestA: runA.result, guestB: runB.result, subEntries: attachments.map((x) => x.stats.switchesTo.sub) } };
    }
    case 'bench': {
      const k = options.iterations ?? 16;
      using guest = ElisaGuest.create('bench');
      setGuestU64(guest, 'bench_iterations', BigInt(k));
      manager.attach(guest, { program: 'sub/bench', backend });
      const run = guest.run({ timeoutMs, ports: new Map([[0x5f0, () => undefined]]) });
      const trips = readGuestU64s(guest, 'bench_trip_cycles', k).map(Number).sort((x, y) => x - y);
      const pio = readGuestU64s(guest, 'bench_pio_cycles', k).map(Number).sort((x, y) => x - y);
      const median = (xs: number[]): number => xs[Math.floor(xs.length / 2)]!;
      const ok = run.result === BigInt(k);
      return { ...base, ok, result: run.result, console: [run.console],
        summary: `bench: ${k} round trips, median ${median(trips)} TSC cycles; plain PIO exit median ${median(pio)} cycles; ratio ${(median(trips) / median(pio)).toFixed(2)}`,
        details: { tripCycles: trips, pioCycles: pio } };
    }
    default:
      throw new RangeError(`unknown app '${String(app)}' (${APP_NAMES.join(', ')})`);
  }
}
