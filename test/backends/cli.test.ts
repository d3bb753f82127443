// `elisa run` and `elisa bench` as a user calls them (through the command objects, with
// captured output), on real KVM.
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import { run } from '../../src/cli/commands/run';
import { bench } from '../../src/cli/commands/bench';
import { measureRoundTrips } from '../../src/elisa/host/bench';
import { UsageError, type CliIo } from '../../src/cli/command';
import { BackendUnavailableError, vmfuncAvailability } from '../../src/elisa/backends/backend';

function capture(): CliIo & { text: () => string } {
  const lines: string[] = [];
  return { out: (t) => lines.push(t), err: (t) => lines.push(t), text: () => lines.join('\n') };
}

describe('elisa run / elisa bench', function () {
  this.timeout(120_000);
  before(function () { requireKvm(this); });

  it('elisa run (default app nop) prints that nop returned 1, on which backend and why, and exits 0', async () => {
    const io = capture();
    expect(await run.run([], io)).to.equal(0);
    expect(io.text()).to.match(/^elisa run nop: guest nop.elf with a sub context running sub\/nop.elf/);
    const vmfunc = vmfuncAvailability();
    // auto: the hardware backend where this host has it, else emulated with the reason.
    if (vmfunc.available) expect(io.text()).to.contain(`\nbackend: vmfunc (VMFUNC available: ${vmfunc.reason})`);
    else expect(io.text()).to.match(/\nbackend: emulated \(vmfunc unavailable: .+\)/);
    expect(io.text()).to.contain('guest: nop returned 1');
    expect(io.text()).to.contain('ok: nop returned 1 (expected 1)');
  });

  it('elisa run --backend vmfunc fails with the reason on a host without VMFUNC (and runs nop on one with it)', async function () {
    const io = capture();
    if (vmfuncAvailability().available) {
      expect(await run.run(['--backend', 'vmfunc'], io)).to.equal(0);
      expect(io.text()).to.contain('\nbackend: vmfunc (requested with --backend vmfunc)');
      expect(io.text()).to.contain('ok: nop returned 1 (expected 1)');
      return;
    }
    let error: unknown;
    try { await run.run(['--backend', 'vmfunc'], io); } catch (err) { error = err; }
    expect(error).to.be.instanceOf(BackendUnavailableError);
    expect(String(error)).to.match(/the vmfunc backend cannot run here: .*VMFUNC/);
  });

  it('elisa run refuses an unknown app with the list of apps', async () => {
    let error: unknown;
    try { await run.run(['nosuchapp'], capture()); } catch (err) { error = err; }
    expect(error).to.be.instanceOf(UsageError);
    expect(String(error)).to.contain("unknown app 'nosuchapp' (nop, args, shm, bench)");
  });

  it('elisa run args --json reports the result as JSON', async () => {
    const io = capture();
    expect(await run.run(['args', '--json'], io)).to.equal(0);
    const report = JSON.parse(io.text());
    expect(report).to.include({ app: 'args', backend: 'emulated', ok: true });
    expect(BigInt(report.result)).to.equal(0x3b80760006a3d5a3n);
  });

  it('measureRoundTrips returns consistent statistics for both distributions', () => {
    const r = measureRoundTrips({ iterations: 24, hostTiming: true });
    expect(r.loop).to.equal('js');
    expect(r.samples.roundTrip).to.have.length(24);
    expect(r.samples.pioExit).to.have.length(24);
    expect(r.roundTripHost!.samples).to.equal(24);
    for (const d of [r.roundTrip, r.pioExit, r.roundTripHost!]) {
      expect(d.minUs).to.be.greaterThan(0);
      expect(d.minUs).to.be.at.most(d.medianUs);
      expect(d.medianUs).to.be.at.most(d.p99Us);
    }
    expect(r.ratio).to.be.closeTo(r.roundTrip.medianUs / r.pioExit.medianUs, 1e-9);
    // Host-timed trips cover less than the guest-timed ones (no default-context code).
    expect(r.roundTripHost!.minUs).to.be.lessThan(r.roundTrip.medianUs);
    expect(r.tscPerUs).to.be.greaterThan(100);
  });

  it('elisa bench --json prints the measurement', async () => {
    const io = capture();
    expect(await bench.run(['--iterations', '8', '--json'], io)).to.equal(0);
    const r = JSON.parse(io.text());
    expect(r.iterations).to.equal(8);
    expect(r.backend).to.equal('emulated');
    expect(r.loop).to.equal('native');
    expect(r.roundTripHost).to.equal(undefined);
    expect(r.ratio).to.be.greaterThan(0);
  });
});
