// The shared command-line reader: what each kind of bad input is called.
import { expect } from 'chai';
import { backendOption, integerOption, parseCommandLine } from '../../src/cli/args';
import { UsageError } from '../../src/cli/command';

const spec = { iterations: { type: 'string' }, json: { type: 'boolean' } } as const;

describe('cli argument reader', () => {
  it('returns option values and positionals', () => {
    const r = parseCommandLine(['nop', '--iterations', '7', '--json'], spec, 1);
    expect(r.values).to.deep.equal({ iterations: '7', json: true });
    expect(r.positionals).to.deep.equal(['nop']);
    expect(parseCommandLine(['--iterations=9'], spec).values.iterations).to.equal('9');
  });

  it('names unknown options, missing values, values given to flags and stray arguments', () => {
    const cases: [string[], RegExp][] = [
      [['--frob'], /^unknown option '--frob'$/],
      [['--iterations'], /^--iterations needs a value$/],
      [['--iterations', '--json'], /^--iterations needs a value$/],
      [['--json=yes'], /^--json takes no value$/],
      [['extra'], /^unexpected argument 'extra'$/],
    ];
    for (const [argv, re] of cases) {
      expect(() => parseCommandLine(argv, spec), argv.join(' ')).to.throw(UsageError, re);
    }
    expect(() => parseCommandLine(['a', 'b'], spec, 1)).to.throw(UsageError, /too many arguments: 'a', 'b' \(at most 1\)/);
  });

  it('checks integers against their range and falls back when absent', () => {
    expect(integerOption('n', undefined, 1, 10, 5)).to.equal(5);
    expect(integerOption('n', undefined, 1, 10)).to.equal(undefined);
    expect(integerOption('n', '10', 1, 10)).to.equal(10);
    for (const bad of ['0', '11', '1.5', 'x', '', ' ']) {
      expect(() => integerOption('n', bad, 1, 10), bad).to.throw(UsageError, `--n must be an integer in 1..10, got '${bad}'`);
    }
  });

  it('knows the backends', () => {
    expect(backendOption(undefined)).to.equal('auto');
    for (const b of ['auto', 'emulated', 'vmfunc'] as const) expect(backendOption(b)).to.equal(b);
    expect(() => backendOption('qemu')).to.throw(UsageError, /--backend: 'qemu' is not auto, emulated or vmfunc/);
  });
});
