// Locates the guest programs built by `make -C native/guest` (native/guest/out/*.elf).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

let root: string | undefined;

/** The package's root directory (the one holding our package.json), found from this file. */
export function packageRoot(): string {
  if (root) return root;
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'elisa-node') return (root = dir);
    if (dirname(dir) === dir) throw new Error(`cannot find the elisa-node package root above ${__dirname}`);
  }
}

/** Directory of the built guest programs. */
export function guestProgramDir(): string {
  return join(packageRoot(), 'native', 'guest', 'out');
}

/**
 * Path of the built guest program `name` (e.g. 'hello' → native/guest/out/hello.elf).
 * Throws, listing the programs that exist, if it has not been built.
 */
export function guestProgramPath(name: string): string {
  const file = join(guestProgramDir(), name.endsWith('.elf') ? name : `${name}.elf`);
  if (!existsSync(file)) {
    const have = existsSync(guestProgramDir())
      ? readdirSync(guestProgramDir()).filter((f) => f.endsWith('.elf')).map((f) => f.slice(0, -4)) : [];
    throw new Error(`guest program '${name}' not found at ${file}; built programs: ` +
      `${have.length ? have.join(', ') : 'none'} (build them with \`make -C native/guest\`)`);
  }
  return file;
}
