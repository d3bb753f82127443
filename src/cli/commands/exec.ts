// `elisa exec`: runs one freestanding guest program in a fresh KVM VM and prints its console.
import { existsSync } from 'node:fs';
import { UsageError, type CliCommand, type CliIo } from '../command';
import { integerOption, parseCommandLine } from '../args';
import { GuestError, GuestTimeout } from '../../x86/errors';
import { GuestMachine } from '../../x86/machine';
import { guestProgramPath } from '../../x86/programs';

/** Exit status when the run timed out (as timeout(1) does). */
export const EXIT_TIMEOUT = 124;
/** Exit status when the guest faulted, shut down, failed an assertion or stopped unexpectedly. */
export const EXIT_GUEST_FAILED = 125;

const usage = `usage: elisa exec <guest.elf | name> [--timeout-ms N] [--memory SIZE] [--verbose]

Runs a freestanding x86-64 guest program (static ELF64, e.g. built with native/guest's
runtime) on one vCPU of a new KVM VM, prints what it writes to the console and exits
with the guest's exit code.

  <guest.elf | name>  a path to an ELF file, or the name of a program built in
                      native/guest/out (hello, compute, fault-pf, ...)
  --timeout-ms N      stop the guest after N milliseconds (default 10000)
  --memory SIZE       guest memory, e.g. 64M, 1G (default 64M)
  --verbose           also print exit code, 64-bit result, exits and time on stderr

Exit status: the guest's exit code; ${EXIT_TIMEOUT} if it timed out; ${EXIT_GUEST_FAILED} if it
faulted (CPU exception), triple-faulted, failed a GUEST_ASSERT or stopped unexpectedly.`;

interface ExecArgs {
  program: string;
  timeoutMs: number;
  memory: string;
  verbose: boolean;
}

function parse(argv: string[]): ExecArgs {
  const { values, positionals } = parseCommandLine(argv, {
    'timeout-ms': { type: 'string' }, memory: { type: 'string' }, verbose: { type: 'boolean' },
  }, Infinity);
  if (positionals.length === 0) throw new UsageError('no guest program given');
  if (positionals.length > 1) throw new UsageError(`only one guest program may be given (got ${positionals.map((p) => `'${p}'`).join(' and ')})`);
  return {
    program: positionals[0]!,
    timeoutMs: integerOption('timeout-ms', values['timeout-ms'], 1, 2 ** 31 - 1, 10000),
    memory: values.memory ?? '64M',
    verbose: values.verbose ?? false,
  };
}

/** Prints console text line by line through io.out (which appends the newline itself). */
function lineWriter(io: CliIo): { write(text: string): void; end(): void } {
  let pending = '';
  return {
    write(text) {
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        io.out(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    },
    end() {
      if (pending) io.out(pending);
      pending = '';
    },
  };
}

export const execCommand: CliCommand = {
  name: 'exec',
  summary: 'run a freestanding guest program (ELF) in a new KVM VM and print its console',
  usage,
  async run(argv, io) {
    const args = parse(argv);
    const path = existsSync(args.program) ? args.program : guestProgramPath(args.program);
    const out = lineWriter(io);
    using machine = GuestMachine.create({ memory: args.memory });
    const program = machine.loadElf(path);
    try {
      const r = await program.run({ timeoutMs: args.timeoutMs, onConsole: (text) => out.write(text) });
      out.end();
      if (args.verbose) {
        io.err(`exit code ${r.exitCode}; result ${r.result === undefined ? 'none' : `0x${r.result.toString(16)}`}; ` +
          `${r.exits} exits in ${r.elapsedMs.toFixed(1)} ms`);
      }
      return r.exitCode;
    } catch (err) {
      out.end();
      if (!(err instanceof GuestError)) throw err;
      io.err(`elisa exec: ${err.message}`);
      return err instanceof GuestTimeout ? EXIT_TIMEOUT : EXIT_GUEST_FAILED;
    }
  },
};
