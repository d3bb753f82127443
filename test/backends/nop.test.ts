// End to end on real KVM: a guest program calls the gate, the emulated backend moves its
// vCPU through the gate and sub contexts (each its own KVM VM) and back.
import { readdirSync } from 'node:fs';
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import { ElisaManager, GuestMachine } from '../../src/elisa/host';
import { EmulatedBackend } from '../../src/elisa/backends/emulated';
import type { VmfuncEvent } from '../../src/elisa/backends/backend';

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe('emulated backend: nop round trip', function () {
  this.timeout(30_000);
  before(function () { requireKvm(this); });

  it('runs nop: the guest calls the gate, the sub context returns 1, the guest prints it', () => {
    using manager = ElisaManager.create({ arenaPages: 512 });
    using guest = GuestMachine.create('nop');
    const trace: VmfuncEvent[] = [];
    const att = manager.attach(guest, { program: 'sub/nop', backend: new EmulatedBackend(), trace });
    expect(att.backend).to.equal('emulated');
    const run = guest.run({ timeoutMs: 10_000 });
    expect(run.console).to.equal('nop returned 1\n');
    expect(run.result).to.equal(1n);
    expect(run.exitCode).to.equal(0);
    // Exactly the three switches of a round trip, each at a generated (rewritten) site.
    expect(trace.map((e) => `${e.from}->${e.to}`)).to.deep.equal(['default->gate', 'gate->sub', 'sub->default']);
    expect(trace.every((e) => e.trap === 'site' && e.failure === undefined)).to.equal(true);
    expect(trace[0]!.rip).to.equal(att.entryGva - att.entryGva % 4096n + 4093n); // VMFUNC(0,511) ends the top page
    expect(att.currentContext).to.equal('default');
    // After the trip, slot 1 is empty again (the sub code cleared it).
    expect(att.contexts.eptpList.get(1)).to.equal(0n);
  });

  it('frees every arena page, VM and fd when the attachment and guest are disposed', () => {
    using manager = ElisaManager.create({ arenaPages: 512 });
    const fdsBefore = openFds();
    const pagesBefore = manager.allocator.stats().inUse;
    for (let i = 0; i < 2; i++) {
      const guest = GuestMachine.create('nop');
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
