// shm: two guest VMs, each attached to its own sub context; both sub contexts map one
// manager page. Each guest increments the counter there N times through its gate.
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import { ElisaManager, ElisaGuest, SHARED_BASE_GPA } from '../../src/elisa/host';
import { runApp, setGuestU64, SHM_GVA } from '../../src/elisa/host/apps';
import { GuestUnexpectedExit } from '../../src/x86/errors';

describe('emulated backend: shm between two guests', function () {
  this.timeout(60_000);
  before(function () { requireKvm(this); });

  // Two guests → 2N on one shared counter: test/shared/elisa-behaviour.ts (every backend).
  it('one arena page backs the shared page in both sub contexts; each guest made N sub entries', () => {
    using manager = ElisaManager.create({ arenaPages: 1024 });
    using shared = manager.allocateShared(1);
    const n = 10n;
    using a = ElisaGuest.create('shm');
    using b = ElisaGuest.create('shm');
    const atts = [a, b].map((g) => {
      setGuestU64(g, 'shm_iterations', n);
      return manager.attach(g, { program: 'sub/shm', shared: [{ shared, gva: SHM_GVA }] });
    });
    const ra = a.run();
    const rb = b.run();
    expect([ra.result, rb.result]).to.deep.equal([n, 2n * n]);
    expect(atts.map((x) => x.stats.switchesTo.sub)).to.deep.equal([Number(n), Number(n)]);
    // The same physical (arena) page backs both sub contexts.
    const hpa = shared.pages[0]!.address;
    for (const att of atts) {
      const leaf = att.contexts.sub.ept.lookup(SHARED_BASE_GPA);
      expect(leaf.mapped && leaf.output).to.equal(hpa);
    }
  });

  it("neither guest can read the shared page from its default context (not mapped: MMIO exit)", () => {
    using manager = ElisaManager.create({ arenaPages: 1024 });
    using shared = manager.allocateShared(1);
    for (const gpa of [SHARED_BASE_GPA, shared.pages[0]!.address]) {
      using guest = ElisaGuest.create('probe');
      setGuestU64(guest, 'probe_mode', 5n);
      setGuestU64(guest, 'probe_arg', gpa);
      manager.attach(guest, { program: 'sub/probe', shared: [{ shared, gva: SHM_GVA }] });
      expect(() => guest.run()).to.throw(GuestUnexpectedExit, new RegExp(`read from unbacked guest-physical address 0x${gpa.toString(16)}`));
    }
  });

  it('shared pages cannot be freed while a sub context maps them', () => {
    using manager = ElisaManager.create({ arenaPages: 1024 });
    const shared = manager.allocateShared(1);
    const guest = ElisaGuest.create('shm');
    const att = manager.attach(guest, { program: 'sub/shm', shared: [{ shared, gva: SHM_GVA }] });
    expect(shared.users).to.equal(1);
    expect(() => shared.dispose()).to.throw(/still mapped by 1 attachment/);
    att.dispose();
    expect(shared.users).to.equal(0);
    shared.dispose();
    expect(() => manager.attach(guest, { program: 'sub/shm', shared: [{ shared, gva: SHM_GVA }] })).to.throw(/shared pages were disposed/);
    guest.dispose();
    expect(manager.allocator.stats().inUse).to.equal(0);
  });

  it('runApp(shm) reports 2N', () => {
    const report = runApp('shm', { iterations: 5 });
    expect(report.result).to.equal(10n);
    expect(report.ok).to.equal(true);
  });
});
