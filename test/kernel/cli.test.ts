// `elisa kernel`: argument checking, and the real script's output relayed.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { UsageError, type CliIo } from '../../src/cli/command';
import { kernelCommand, kernelScriptArgs, kvmModuleScript } from '../../src/cli/commands/kernel';
import { main } from '../../src/cli/main';

function capture(): CliIo & { outText: string[]; errText: string[] } {
  const outText: string[] = [];
  const errText: string[] = [];
  return { outText, errText, out: (t) => outText.push(t), err: (t) => errText.push(t) };
}

describe('elisa kernel', function () {
  it('passes valid arguments through to kvm-module.sh unchanged', function () {
    expect(kernelScriptArgs(['build', '--variant', 'compat', '--kernel', '6.1.0-56-amd64', '--out', '/tmp/x']))
      .to.deep.equal(['build', '--variant', 'compat', '--kernel', '6.1.0-56-amd64', '--out', '/tmp/x']);
    expect(kernelScriptArgs(['install', '--dry-run', '--variant', 'hardened']))
      .to.deep.equal(['install', '--dry-run', '--variant', 'hardened']);
    expect(kernelScriptArgs(['status'])).to.deep.equal(['status']);
  });

  it('names the problem in bad arguments', function () {
    const bad: [string[], RegExp][] = [
      [[], /missing subcommand/],
      [['load'], /unknown subcommand 'load'/],
      [['build', '--variant', 'turbo'], /unknown variant 'turbo'/],
      [['build', '--variant'], /--variant needs a value/],
      [['build', '--kernel', '--out', 'x'], /--kernel needs a value/],
      [['status', '--variant', 'compat'], /status: unknown option '--variant'/],
      [['uninstall', '--from', 'x'], /unknown option '--from'/],
    ];
    for (const [argv, message] of bad) {
      expect(() => kernelScriptArgs(argv), argv.join(' ')).to.throw(UsageError, message);
    }
  });

  it('finds scripts/kvm-module.sh from the compiled module', function () {
    expect(existsSync(kvmModuleScript())).to.equal(true);
    expect(kvmModuleScript()).to.match(/scripts\/kvm-module\.sh$/);
  });

  it('relays the script\'s status report line by line, exit code 0', async function () {
    const io = capture();
    const code = await kernelCommand.run(['status'], io);
    expect(code).to.equal(0);
    expect(io.outText[0]).to.match(/^kernel: \S+$/);
    expect(io.outText.some((l) => /^variant: (none|stock|compat|hardened)$/.test(l))).to.equal(true);
  });

  it('is listed by `elisa --help` and exits 2 with usage on a bad subcommand', async function () {
    const written: string[] = [];
    const orig = process.stderr.write.bind(process.stderr);
    (process.stderr as { write: unknown }).write = (chunk: string) => { written.push(String(chunk)); return true; };
    let code: number;
    try {
      code = await main(['kernel', 'explode']);
    } finally {
      (process.stderr as { write: unknown }).write = orig;
    }
    expect(code).to.equal(2);
    expect(written.join('')).to.contain("unknown subcommand 'explode'").and.to.contain('usage: elisa kernel build');
  });
});
