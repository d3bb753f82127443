// `elisa bench`: ELISA round-trip latency against a plain PIO exit measured in the same run.
import { writeFileSync } from 'node:fs';
import { UsageError, type CliCommand } from '../command';
import type { BackendChoice } from '../../elisa/backends/backend';
import { BENCH_MAX_ITERATIONS, formatBench, histogramSvg, measureRoundTrips } from '../../elisa/host/bench';

const USAGE = `usage: elisa bench [--iterations N] [--backend auto|emulated|vmfunc] [--move-fpu] [--json] [--svg FILE]

Runs the bench app: N gate round trips (default → gate → sub → default) interleaved with N
calls of a function doing one plain port-I/O exit (the baseline), both timed in the guest
with rdtsc. Prints min/median/p99 of each, the ratio of the medians, the cost per switch,
and the backend and host it ran on.
  --iterations N   round trips (default 1000, at most ${BENCH_MAX_ITERATIONS})
  --backend B      auto (default), emulated or vmfunc
  --move-fpu       also move the FPU/SSE state at every switch (2 more ioctls per switch)
  --json           the full result (with samples) as JSON
  --svg FILE       write a histogram of both distributions`;

export const bench: CliCommand = {
  name: 'bench',
  summary: 'measure ELISA round trips against a PIO-exit baseline (min/median/p99, ratio)',
  usage: USAGE,
  async run(argv, io) {
    let iterations = 1000;
    let backend: BackendChoice = 'auto';
    let json = false;
    let svg: string | undefined;
    let moveFpu = false;
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!;
      const value = (): string => {
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${arg} needs a value`);
        return v;
      };
      if (arg === '--iterations') {
        iterations = Number(value());
        if (!Number.isInteger(iterations) || iterations < 1 || iterations > BENCH_MAX_ITERATIONS) throw new UsageError(`--iterations must be an integer in 1..${BENCH_MAX_ITERATIONS}`);
      } else if (arg === '--backend') {
        const b = value();
        if (b !== 'auto' && b !== 'emulated' && b !== 'vmfunc') throw new UsageError(`--backend: '${b}' is not auto, emulated or vmfunc`);
        backend = b;
      } else if (arg === '--json') json = true;
      else if (arg === '--svg') svg = value();
      else if (arg === '--move-fpu') moveFpu = true;
      else throw new UsageError(`unknown option ${arg}`);
    }
    const tty = process.stderr.isTTY && !json;
    const result = measureRoundTrips({
      iterations, backend, moveFpu,
      onProgress: (done, total) => {
        if (tty) process.stderr.write(`\r[${'#'.repeat(Math.round((30 * done) / total)).padEnd(30)}] ${done}/${total} round trips`);
        else if (!json && done % 4096 === 0) io.err(`${done}/${total} round trips`);
      },
    });
    if (tty) process.stderr.write('\r\x1b[K');
    if (svg) writeFileSync(svg, histogramSvg(result));
    if (json) io.out(JSON.stringify(result, null, 2));
    else {
      for (const line of formatBench(result)) io.out(line);
      if (svg) io.out(`histogram written to ${svg}`);
    }
    return 0;
  },
};
