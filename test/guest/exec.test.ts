// `elisa exec` on real KVM: through the command object (captured output) and as a process.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { UsageError } from '../../src/cli/command';
import { execCommand, EXIT_GUEST_FAILED, EXIT_TIMEOUT } from '../../src/cli/commands/exec';
import { guestProgramPath, packageRoot } from '../../src/x86/programs';
import { requireKvm } from '../support/kvm';

async function exec(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await execCommand.run(argv, { out: (t) => out.push(t), err: (t) => err.push(t) });
  return { code, out, err };
}

describe('elisa exec', function () {
  before(function () { requireKvm(this); });

  it('runs a program by name, prints its console and exits with its exit code', async function () {
    const r = await exec('hello');
    expect(r).to.deep.equal({ code: 42, out: ['Hello from a KVM guest! 2 + 3 = 5'], err: [] });
  });

  it('runs a program by path and reports the result with --verbose', async function () {
    const r = await exec(guestProgramPath('hello'), '--verbose', '--memory', '8M');
    expect(r.code).to.equal(42);
    expect(r.err.join('\n')).to.match(/exit code 42; result 0x1122334455667788; \d+ exits in [\d.]+ ms/);
  });

  it('a fault: console first, then the fault on stderr, exit status 125', async function () {
    const r = await exec('fault-ud');
    expect(r.code).to.equal(EXIT_GUEST_FAILED);
    expect(r.out).to.deep.equal(['executing ud2']);
    expect(r.err.join('\n')).to.match(/#UD \(invalid opcode, vector 6\) at RIP 0x[0-9a-f]+ \(fault_site\)/);
  });

  it('a timeout: exit status 124 and a message naming the limit', async function () {
    const r = await exec('spin', '--timeout-ms', '200');
    expect(r.code).to.equal(EXIT_TIMEOUT);
    expect(r.err.join('\n')).to.match(/did not finish within 200 ms/);
  });

  it('bad command lines are usage errors naming the problem', async function () {
    for (const [argv, re] of [[[], /no guest program/], [['hello', '--timeout-ms', 'x'], /--timeout-ms must be an integer in 1\.\.\d+, got 'x'/],
      [['hello', '--frobnicate'], /unknown option '--frobnicate'/], [['a', 'b'], /only one guest program/]] as const) {
      try {
        await exec(...argv);
        expect.fail(`no error for ${argv.join(' ')}`);
      } catch (e) {
        expect(e).to.be.instanceOf(UsageError);
        expect((e as Error).message).to.match(re);
      }
    }
  });

  it('an unknown program name lists the programs that exist', async function () {
    try {
      await exec('no-such-program');
      expect.fail('no error');
    } catch (e) {
      expect((e as Error).message).to.match(/guest program 'no-such-program' not found .* built programs: .*hello/);
    }
  });

  it('as a process: `elisa exec hello` prints the greeting and exits 42', function () {
    const r = spawnSync(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'exec', 'hello'], { encoding: 'utf8' });
    expect(r.stdout).to.equal('Hello from a KVM guest! 2 + 3 = 5\n');
    expect(r.status).to.equal(42);
  });
});
