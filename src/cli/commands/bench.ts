// `elisa bench`: ELISA round-trip latency against a plain PIO exit measured in the same run.
import { writeFileSync } from 'node:fs';
import type { CliCommand } from '../command';
import { backendOption, integerOption, parseCommandLine } from '../args';
import { BENCH_MAX_ITERATIONS, formatBench, histogramSvg, measureRoundTrips } from '../../elisa/host/bench';

const USAGE = `usage: elisa bench [--iterations N] [--backend auto|emulated|vmfunc] [--move-fpu] [--host-timing] [--json] [--svg FILE]

Runs the bench app: N gate round trips (default → gate → sub → default) interleaved with N
calls of a function doing one plain port-I/O exit (the baseline), both timed in the guest
with rdtsc. Prints min/median/p99 of each, the ratio of the medians, the cost per switch,
and the backend and host it ran on.
  --iterations N   round trips (default 1000, at most ${BENCH_MAX_ITERATIONS})
  --backend B      auto (default), emulated or vmfunc
  --move-fpu       also move the FPU/SSE state at every switch (2 more ioctls per switch)
  --host-timing    also time each trip from the host (uses the JavaScript switch loop)
  --json           the full result (with samples) as JSON
  --svg FILE       write a histogram of both distributions`;

export const bench: CliCommand = {
  name: 'bench',
  summary: 'measure ELISA round trips against a PIO-exit baseline (min/median/p99, ratio)',
  usage: USAGE,
  async run(argv, io) {
    const { values } = parseCommandLine(argv, {
      iterations: { type: 'string' }, backend: { type: 'string' }, json: { type: 'boolean' }, svg: { type: 'string' },
      'move-fpu': { type: 'boolean' }, 'host-timing': { type: 'boolean' },
    });
    const iterations = integerOption('iterations', values.iterations, 1, BENCH_MAX_ITERATIONS, 1000);
    const backend = backendOption(values.backend);
    const json = values.json ?? false;
    const svg = values.svg;
    const moveFpu = values['move-fpu'] ?? false;
    const hostTiming = values['host-timing'] ?? false;
    const tty = process.stderr.isTTY && !json;
    const result = measureRoundTrips({
      iterations, backend, moveFpu, hostTiming,
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
