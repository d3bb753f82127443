// `elisa run [app]`: runs an ELISA app end to end (guest VM, sub context, round trips)
// on the best available backend and says what ran where and what came back.
import { UsageError, type CliCommand } from '../command';
import { backendOption, integerOption, parseCommandLine } from '../args';
import { APP_NAMES, runApp, type AppName } from '../../elisa/host/apps';

const USAGE = `usage: elisa run [APP] [--backend auto|emulated|vmfunc] [--iterations N] [--timeout MS] [--json]

Runs an ELISA app: a guest VM whose program enters a sub context through the gate.
  APP            ${APP_NAMES.join(', ')} (default nop: the sub context returns 1, the guest prints it)
  --backend B    auto (default: vmfunc when this host has VMFUNC, else emulated), emulated, vmfunc
  --iterations N loop count for shm (per guest) and bench
  --timeout MS   bound on each guest run (default 30000)
  --json         print the report as JSON
Exit status: 0 when the app produced its expected result, 1 otherwise.`;

export const run: CliCommand = {
  name: 'run',
  summary: 'run an ELISA app (nop, args, shm, bench) end to end on real KVM',
  usage: USAGE,
  async run(argv, io) {
    const { values, positionals } = parseCommandLine(argv, {
      backend: { type: 'string' }, iterations: { type: 'string' }, timeout: { type: 'string' }, json: { type: 'boolean' },
    }, 1);
    const backend = backendOption(values.backend);
    const iterations = integerOption('iterations', values.iterations, 1, 4096);
    const timeoutMs = integerOption('timeout', values.timeout, 1, 2 ** 31 - 1);
    const json = values.json ?? false;
    const app = (positionals[0] ?? 'nop') as AppName;
    if (!(APP_NAMES as readonly string[]).includes(app)) throw new UsageError(`unknown app '${app}' (${APP_NAMES.join(', ')})`);
    const report = runApp(app, { backend, ...(iterations !== undefined ? { iterations } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    if (json) {
      io.out(JSON.stringify(report, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
    } else {
      io.out(`elisa run ${app}: guest ${report.programs.guest} with a sub context running ${report.programs.sub}`);
      io.out(`backend: ${report.backend} (${report.backendWhy})`);
      for (const c of report.console) for (const line of c.trimEnd().split('\n')) if (line) io.out(`  guest: ${line}`);
      io.out(`${report.ok ? 'ok' : 'FAILED'}: ${report.summary}`);
    }
    return report.ok ? 0 : 1;
  },
};
