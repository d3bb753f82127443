// `elisa run [app]`: runs an ELISA app end to end (guest VM, sub context, round trips)
// on the best available backend and says what ran where and what came back.
import { UsageError, type CliCommand } from '../command';
import { APP_NAMES, runApp, type AppName } from '../../elisa/host/apps';
import type { BackendChoice } from '../../elisa/backends/backend';

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
    let app: AppName = 'nop';
    let backend: BackendChoice = 'auto';
    let iterations: number | undefined;
    let timeoutMs: number | undefined;
    let json = false;
    let positional = 0;
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!;
      const value = (): string => {
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${arg} needs a value`);
        return v;
      };
      if (arg === '--backend') {
        const b = value();
        if (b !== 'auto' && b !== 'emulated' && b !== 'vmfunc') throw new UsageError(`--backend: '${b}' is not auto, emulated or vmfunc`);
        backend = b;
      } else if (arg === '--iterations') {
        iterations = Number(value());
        if (!Number.isInteger(iterations) || iterations < 1 || iterations > 4096) throw new UsageError('--iterations must be an integer in 1..4096');
      } else if (arg === '--timeout') {
        timeoutMs = Number(value());
        if (!(timeoutMs > 0)) throw new UsageError('--timeout must be a positive number of milliseconds');
      } else if (arg === '--json') json = true;
      else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
      else {
        if (positional++ > 0) throw new UsageError(`one app at a time (got '${app}' and '${arg}')`);
        if (!(APP_NAMES as readonly string[]).includes(arg)) throw new UsageError(`unknown app '${arg}' (${APP_NAMES.join(', ')})`);
        app = arg as AppName;
      }
    }
    const report = runApp(app, { backend, ...(iterations !== undefined ? { iterations } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    if (json) {
      io.out(JSON.stringify(report, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
    } else {
      io.out(`elisa run ${app}: backend ${report.backend} (${report.backendWhy})`);
      for (const c of report.console) for (const line of c.trimEnd().split('\n')) if (line) io.out(`  guest: ${line}`);
      io.out(`${report.ok ? 'ok' : 'FAILED'}: ${report.summary}`);
    }
    return report.ok ? 0 : 1;
  },
};
