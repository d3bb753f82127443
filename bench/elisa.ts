// npm run bench:elisa — ELISA round trips vs a plain PIO exit round trip, measured in the
// same run on the same vCPU; then the same with FPU/SSE state moved at every switch, to
// show what that option costs. Prints which backend and host it ran on.
//   npm run bench:elisa -- [--iterations N] [--json] [--svg FILE]
import { writeFileSync } from 'node:fs';
import { formatBench, histogramSvg, measureRoundTrips, type BenchResult } from '../src/elisa/host/bench';

function main(argv: string[]): void {
  let iterations = 2000;
  let json = false;
  let svg: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--iterations') iterations = Number(argv[++i]);
    else if (argv[i] === '--json') json = true;
    else if (argv[i] === '--svg') svg = argv[++i];
    else throw new Error(`bench:elisa: unknown argument ${argv[i]} (--iterations N, --json, --svg FILE)`);
  }
  const progress = (label: string) => (done: number, total: number): void => {
    if (process.stderr.isTTY) process.stderr.write(`\r${label}: ${done}/${total} round trips`);
  };
  const plain = measureRoundTrips({ iterations, onProgress: progress('default') });
  const fpu = measureRoundTrips({ iterations, moveFpu: true, onProgress: progress('--move-fpu') });
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  if (svg) writeFileSync(svg, histogramSvg(plain));
  const strip = (r: BenchResult): Omit<BenchResult, 'samples'> => { const { samples: _s, ...rest } = r; return rest; };
  if (json) {
    console.log(JSON.stringify({ default: strip(plain), moveFpu: strip(fpu),
      fpuCostPerSwitchUs: (fpu.roundTrip.medianUs - plain.roundTrip.medianUs) / 3 }, null, 2));
    return;
  }
  console.log('== default (FPU/SSE state per context, copied once at attach)');
  for (const line of formatBench(plain)) console.log(line);
  console.log('\n== --move-fpu (KVM_GET_FPU + KVM_SET_FPU at every switch)');
  for (const line of formatBench(fpu)) console.log(line);
  console.log(`\nmoving the FPU costs about ${((fpu.roundTrip.medianUs - plain.roundTrip.medianUs) / 3).toFixed(1)} µs per switch ` +
    `(difference of the round-trip medians / 3; same-run baseline ratios ${plain.ratio.toFixed(2)}x vs ${fpu.ratio.toFixed(2)}x)`);
}

main(process.argv.slice(2));
