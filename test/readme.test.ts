// README.md's code blocks are real programs: each ```ts block is an examples/ file (with
// the package's name in place of the source path), compiled by tsc with everything else,
// and each runs on real KVM printing exactly what its comments say.
//
// Convention in the examples: a whole-line comment right after a console.log line (and
// any further whole-line comments right after that) is the line that console.log prints.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { requireKvm } from './support/kvm';
import { vmfuncAvailability } from '../src/elisa/backends/backend';

const ROOT = resolve(__dirname, '..', '..');
/** How an example imports the package from its sources, and how the README shows it. */
const SOURCE_IMPORT = "from '../src/index';";
const PACKAGE_IMPORT = "from 'elisa-node';";

/** The bodies of README.md's ```ts blocks, in order. */
function readmeTsBlocks(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

/** examples/*.ts, name → source. */
function exampleSources(): Map<string, string> {
  const dir = join(ROOT, 'examples');
  return new Map(readdirSync(dir).filter((f) => f.endsWith('.ts')).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

/** The output lines an example's comments promise (see the convention above). */
function promisedOutput(source: string): string[] {
  const lines = source.split('\n');
  const promised: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/\bconsole\.log\(/.test(lines[i]!)) continue;
    for (let j = i + 1; j < lines.length && /^\s*\/\/ /.test(lines[j]!); j++) promised.push(lines[j]!.replace(/^\s*\/\/ /, ''));
  }
  return promised;
}

describe('README.md examples', function () {
  this.timeout(60_000);
  const examples = exampleSources();

  it('every ```ts block of README.md is an examples/ file, and every example is in README.md', () => {
    const blocks = readmeTsBlocks();
    expect(blocks, 'README.md ts blocks').to.have.length(examples.size);
    const shown = [...examples].map(([name, source]) => {
      expect(source, `${name} imports the package from its sources`).to.contain(SOURCE_IMPORT);
      return { name, asShown: source.split(SOURCE_IMPORT).join(PACKAGE_IMPORT) };
    });
    for (const [i, block] of blocks.entries()) {
      const match = shown.find((e) => e.asShown === block);
      expect(match, `README.md ts block ${i + 1} (starting ${JSON.stringify(block.split('\n')[0])}) equals no examples/ file`).to.not.equal(undefined);
    }
    for (const e of shown) expect(blocks, `examples/${e.name} is not in README.md`).to.include(e.asShown);
  });

  it('every example promises some output', () => {
    for (const [name, source] of examples) expect(promisedOutput(source), name).to.not.be.empty;
  });

  for (const name of examples.keys()) {
    it(`examples/${name} runs and prints what its comments say`, function () {
      requireKvm(this);
      const js = join(ROOT, 'dist', 'examples', name.replace(/\.ts$/, '.js'));
      const run = spawnSync(process.execPath, [js], { encoding: 'utf8', timeout: 50_000 });
      expect(run.error, 'spawn').to.equal(undefined);
      expect(run.stderr, 'stderr').to.equal('');
      expect(run.status, 'exit status').to.equal(0);
      // The README shows this host's backend; a host with VMFUNC prints vmfunc there.
      const backend = vmfuncAvailability().available ? 'vmfunc' : 'emulated';
      const promised = promisedOutput(examples.get(name)!).map((l) => l.replace(/ emulated$/, ` ${backend}`));
      expect(run.stdout.split('\n').filter((l) => l !== '')).to.deep.equal(promised);
    });
  }
});
