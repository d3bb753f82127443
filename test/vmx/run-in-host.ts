// In-host runner of the vmx e2e suite: runs inside the emulated VT-x host (started by
// /elisa/suite.sh on the test disk) and reports each test as a serial-console marker
// (see ./markers.ts). Mocha is driven programmatically in this one process because
// every Node start-up costs seconds in the emulated host.
//
// It refuses to run elsewhere: the suite loads and unloads KVM modules.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { doneLine, failLine, MARKER, passLine, skipLine } from './markers';

if (process.env.ELISA_VMX_INHOST !== '1') {
  console.error('run-in-host.js runs only inside the emulated VT-x host (scripts/vmx-e2e.sh); '
    + 'it loads and unloads KVM modules. Use `npm run test:vmx` instead.');
  process.exit(2);
}

/** One console line per call: a single write(2) so kernel messages cannot split it. */
function emit(line: string): void {
  process.stdout.write(`${line}\n`);
}

const t0 = performance.now();
// mocha 12's CommonJS entry exports the class as `Mocha`.
const { Mocha: MochaClass } = require('mocha') as { Mocha: typeof Mocha };
emit(`${MARKER}MOCHA-LOADED ${((performance.now() - t0) / 1000).toFixed(1)}s`);

/** Reports through markers only: the host harness builds the human summary. */
class MarkerReporter {
  constructor(runner: Mocha.Runner) {
    let passing = 0;
    let failing = 0;
    let pending = 0;
    runner.on('pass', (test: Mocha.Test) => {
      passing++;
      emit(passLine(test.fullTitle(), test.duration ?? 0));
    });
    runner.on('fail', (test: Mocha.Runnable, err: Error & { actual?: unknown; expected?: unknown }) => {
      failing++;
      const stack = (err.stack ?? '').split('\n').slice(1, 6).join('\n');
      const diff = 'expected' in err && 'actual' in err
        ? `\nexpected: ${String(err.expected)}\nactual:   ${String(err.actual)}` : '';
      emit(failLine(test.fullTitle(), `${err.message}${diff}\n${stack}`));
    });
    runner.on('pending', (test: Mocha.Test) => {
      pending++;
      emit(skipLine(test.fullTitle()));
    });
    runner.once('end', () => emit(doneLine(passing, failing, pending)));
  }
}

const mocha = new MochaClass({ ui: 'bdd', timeout: 120_000, reporter: MarkerReporter as never, color: false });
const dir = __dirname;
// Files run in name order; a file that swaps KVM modules must say so in its name
// (numbered prefixes keep stock-module checks before the swaps).
for (const f of readdirSync(dir).filter((n) => n.endsWith('.vmx.js')).sort()) mocha.addFile(join(dir, f));
const tFiles = performance.now();
mocha.run((failures) => {
  emit(`${MARKER}SUITE-TIME ${((performance.now() - tFiles) / 1000).toFixed(1)}s`);
  process.exitCode = failures > 0 ? 1 : 0;
});
