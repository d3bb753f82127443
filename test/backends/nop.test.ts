// End to end on real KVM: a guest program calls the gate, the emulated backend moves its
// vCPU through the gate and sub contexts (each its own KVM VM) and back.
import { readdirSync } from 'node:fs';
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import { ElisaManager, ElisaGuest } from '../../src/elisa/host';
import { EmulatedBackend } from '../../src/elisa/backends/emulated';
import type { VmfuncEvent } from '../../src/elisa/backends/backend';
import { AppRunError, runAppAsync } from '../../src/elisa/host/async';

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe('emulated backend: nop round trip', function () {
  this.timeout(30_000);
  before(function () { requireKvm(this); });

  // nop returns 1, slot 1 empty afterwards: test/shared/elisa-behaviour.ts (every backend).
  it("nop's round trip is exactly three switches, each trapped at a generated (rewritten) site", () => {
    using manager = ElisaManager.create({ arenaPages: 512 });
    using guest = ElisaGuest.create('nop');
    const trace: VmfuncEvent[] = [];
    const att = manager.attach(guest, { program: 'sub/nop', backend: new EmulatedBackend(), trace });
    expect(att.backend).to.equal('emulated');
    expect(guest.run({ timeoutMs: 10_000 }).result).to.equal(1n);
    // Exactly the three switches of a round trip, each at a generated (rewritten) site.
    expect(trace.map((e) => `${e.from}->${e.to}`)).to.deep.equal(['default->gate', 'gate->sub', 'sub->default']);
    expect(trace.every((e) => e.trap === 'site' && e.failure === undefined)).to.equal(true);
    expect(trace[0]!.rip).to.equal(att.entryGva - att.entryGva % 4096n + 4093n); // VMFUNC(0,511) ends the top page
    expect(att.currentContext).to.equal('default');
  });

  it('frees every arena page, VM and fd when the attachment and guest are disposed', () => {
    using manager = ElisaManager.create({ arenaPages: 512 });
    const fdsBefore = openFds();
    const pagesBefore = manager.allocator.stats().inUse;
    for (let i = 0; i < 2; i++) {
      const guest = ElisaGuest.create('nop');
      const att = manager.attach(guest, { program: 'sub/nop' });
      expect(manager.allocator.stats().inUse).to.be.greaterThan(pagesBefore);
      expect(guest.run().result).to.equal(1n);
      att.dispose();
      att.dispose(); // idempotent
      expect(manager.allocator.stats().inUse).to.equal(pagesBefore);
      // A second attachment on the same guest after disposing the first is fine, and
      // disposing the guest disposes it.
      manager.attach(guest, { program: 'sub/nop' });
      guest.dispose();
      expect(manager.allocator.stats().inUse).to.equal(pagesBefore);
    }
    expect(openFds()).to.equal(fdsBefore);
  });
});

describe('emulated backend: loops and threads', function () {
  this.timeout(60_000);
  before(function () { requireKvm(this); });

  it('the JavaScript switch loop gives the same results as the native one', () => {
    for (const nativeLoop of [true, false]) {
      using manager = ElisaManager.create({ arenaPages: 512 });
      using guest = ElisaGuest.create('args');
      const att = manager.attach(guest, { program: 'sub/args', nativeLoop });
      expect(guest.run().result).to.equal(0x3b80760006a3d5a3n);
      expect(att.stats.switchesTo).to.deep.equal({ default: 1, gate: 1, sub: 1 });
      expect(att.contexts.eptpList.get(1)).to.equal(0n);
    }
  });

  it('runAppAsync runs an app on a worker thread while the event loop keeps turning', async () => {
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    try {
      const report = await runAppAsync('nop');
      expect(report.result).to.equal(1n);
      expect(report.ok).to.equal(true);
    } finally { clearInterval(timer); }
    expect(ticks).to.be.greaterThan(0);
  });

  it('runAppAsync rejects with the error of the run', async () => {
    let error: unknown;
    try { await runAppAsync('nop', { backend: 'vmfunc' }); } catch (err) { error = err; }
    expect(error).to.be.instanceOf(AppRunError);
    expect((error as AppRunError).originalName).to.equal('BackendUnavailableError');
  });
});
