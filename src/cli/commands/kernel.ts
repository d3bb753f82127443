// `elisa kernel`: builds, installs and reports the ELISA-patched KVM modules.
// The work is done by scripts/kvm-module.sh (the same script CI and users run
// directly); this command checks the arguments and relays the script's output.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { UsageError, type CliCommand, type CliIo } from '../command';

/** Path of scripts/kvm-module.sh in this package (works from src/ via tsx and from dist/). */
export function kvmModuleScript(): string {
  for (const up of ['../../..', '../../../..']) {
    const candidate = resolve(__dirname, up, 'scripts', 'kvm-module.sh');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('scripts/kvm-module.sh not found next to this package');
}

const SUBCOMMANDS = ['build', 'install', 'uninstall', 'status'] as const;
type Subcommand = (typeof SUBCOMMANDS)[number];

/** Options each subcommand accepts: name → takes a value. */
const OPTIONS: Record<Subcommand, Record<string, boolean>> = {
  build: { '--variant': true, '--kernel': true, '--out': true },
  install: { '--variant': true, '--kernel': true, '--from': true, '--dry-run': false },
  uninstall: { '--dry-run': false },
  status: {},
};

const VARIANTS = ['compat', 'hardened'];

/**
 * Checks `elisa kernel` arguments and turns them into kvm-module.sh arguments.
 * Throws UsageError naming the first problem.
 */
export function kernelScriptArgs(argv: string[]): string[] {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError('missing subcommand (build, install, uninstall or status)');
  if (!(SUBCOMMANDS as readonly string[]).includes(sub)) {
    throw new UsageError(`unknown subcommand '${sub}' (build, install, uninstall or status)`);
  }
  const allowed = OPTIONS[sub as Subcommand];
  for (let i = 0; i < rest.length; i++) {
    const opt = rest[i]!;
    if (!(opt in allowed)) throw new UsageError(`${sub}: unknown option '${opt}'`);
    if (allowed[opt]) {
      const value = rest[i + 1];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`${sub}: ${opt} needs a value`);
      if (opt === '--variant' && !VARIANTS.includes(value)) {
        throw new UsageError(`${sub}: unknown variant '${value}' (compat or hardened)`);
      }
      i++;
    }
  }
  return [sub, ...rest];
}

/** Runs kvm-module.sh with ARGS, relaying its output to IO; resolves to its exit code. */
export function runKvmModuleScript(args: string[], io: CliIo): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', [kvmModuleScript(), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const relay = (write: (text: string) => void) => {
      let pending = '';
      return {
        data(chunk: Buffer) {
          pending += chunk.toString('utf8');
          const lines = pending.split('\n');
          pending = lines.pop()!;
          for (const line of lines) write(line);
        },
        flush() { if (pending) write(pending); pending = ''; },
      };
    };
    const out = relay((t) => io.out(t));
    const err = relay((t) => io.err(t));
    child.stdout.on('data', out.data);
    child.stderr.on('data', err.data);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      out.flush();
      err.flush();
      resolvePromise(code ?? (signal ? 128 : 1));
    });
  });
}

export const kernelCommand: CliCommand = {
  name: 'kernel',
  summary: 'build, install or inspect KVM modules carrying the ELISA hypercalls',
  usage: [
    'usage: elisa kernel build     [--variant compat|hardened] [--kernel RELEASE] [--out DIR]',
    '       elisa kernel install   [--variant compat|hardened] [--from DIR] [--dry-run]',
    '       elisa kernel uninstall [--dry-run]',
    '       elisa kernel status',
    '',
    'build      apply kernel-patch/VARIANT/X.Y.patch to the source of RELEASE (default:',
    '           `uname -r`; headers and source come from /lib/modules and /usr/src or',
    '           are downloaded with apt into ~/.cache/elisa-node), build kvm.ko and',
    '           kvm-intel.ko with -Werror, check their vermagic, copy them to DIR',
    '           (default ~/.cache/elisa-node/kernel/modules/RELEASE/VARIANT).',
    'install    swap the running kernel\'s KVM modules for the built ones (builds first',
    '           if needed); refuses while any process holds /dev/kvm or a VM, and',
    '           reloads the stock modules if loading fails. Lasts until reboot.',
    'uninstall  unload the patched modules and load the stock ones.',
    'status     which KVM modules and which ELISA variant are loaded.',
    '',
    'The default variant is hardened. See kernel-patch/README.md.',
  ].join('\n'),
  run(argv: string[], io: CliIo): Promise<number> {
    return runKvmModuleScript(kernelScriptArgs(argv), io);
  },
};
