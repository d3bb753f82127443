// `elisa kernel`: argument checking, and the real script's output relayed.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

describe('elisa kernel build (real out-of-tree build for Debian 6.1.0-56-amd64)', function () {
  // Downloads (or reuses from ~/.cache/elisa-node, which .ci/run's
  // check-kernel-patches.sh fills) the Debian 6.1 source and headers and
  // builds the compat modules: ~40 s on a quiet 2-core machine, minutes when
  // loaded or with a cold cache.
  this.timeout(20 * 60_000);
  const release = '6.1.0-56-amd64';
  let out: string;

  before(function () {
    const apt = spawnSync('apt-cache', ['show', '--no-all-versions', `linux-headers-${release}`], { encoding: 'utf8' });
    if (apt.status !== 0 || !/^Version:/m.test(apt.stdout)) this.skip();
    out = mkdtempSync(join(tmpdir(), 'elisa-kernel-build-'));
  });
  after(function () { if (out) rmSync(out, { recursive: true, force: true }); });

  it('produces kvm.ko and kvm-intel.ko whose vermagic (read by modinfo) names the target release', async function () {
    const io = capture();
    const code = await kernelCommand.run(['build', '--variant', 'compat', '--kernel', release, '--out', out], io);
    expect(code, io.errText.join('\n')).to.equal(0);
    expect(io.outText).to.deep.equal([join(out, 'kvm.ko'), join(out, 'kvm-intel.ko')]);
    for (const ko of ['kvm.ko', 'kvm-intel.ko']) {
      const modinfo = spawnSync('modinfo', ['-F', 'vermagic', join(out, ko)], { encoding: 'utf8' });
      expect(modinfo.status, modinfo.stderr).to.equal(0);
      expect(modinfo.stdout.split(' ')[0]).to.equal(release);
    }
    const params = spawnSync('modinfo', ['-F', 'parm', join(out, 'kvm-intel.ko')], { encoding: 'utf8' }).stdout;
    expect(params).to.match(/^elisa_variant:/m);
    const info = readFileSync(join(out, 'BUILD-INFO'), 'utf8');
    expect(info).to.contain('variant=compat\n').and.to.contain(`kernel=${release}\n`)
      .and.to.contain('source=linux-source-6.1 6.1.192-2\n');
    // Progress went to stderr as it happened.
    expect(io.errText.some((l) => /applying compat\/6\.1\.patch \(zero fuzz\)/.test(l))).to.equal(true);
    expect(io.errText.some((l) => /\] vmx\/elisa\.o$/.test(l))).to.equal(true);
  });
});
