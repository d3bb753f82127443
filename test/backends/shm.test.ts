// shm: two guest VMs, each attached to its own sub context; both sub contexts map one
// manager page. Each guest increments the counter there N times through its gate.
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import { ElisaManager, GuestMachine, SHARED_BASE_GPA } from '../../src/elisa/host';
import { runApp, setGuestU64, SHM_GVA } from '../../src/elisa/host/apps';
import { GuestUnexpectedExit } from '../../src/x86/errors';

describe('emulated backend: shm between two guests', function () {
  this.timeout(60_000);
  before(function () { requireKvm(this); });

  it('two guests increment one shared counter N times each: the total is 2N', () => {
    using manager = ElisaManager.create({ arenaPages: 1024 });
    using shared = manager.allocateShared(1);
    const n = 10n;
    using a = GuestMachine.create('shm');
    using b = GuestMachine.create('shm');
    const atts = [a, b].map((g) => {
      setGuestU64(g, 'shm_iterations', n);
      return manager.attach(g, { program: 'sub/shm', shared: [{ shared, gva: SHM_GVA }] });
    });
    const ra = a.run();
    const rb = b.run();
    expect(ra.result).to.equal(n); // A ran first: it saw 1..N
    expect(rb.result).to.equal(2n * n); // B continued from N
    const counter = new DataView(shared.bytes(0).buffer, shared.bytes(0).byteOffset, 8).getBigUint64(0, true);
    expect(counter).to.equal(2n * n);
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
      using guest = GuestMachine.create('probe');
      setGuestU64(guest, 'probe_mode', 5n);
      setGuestU64(guest, 'probe_arg', gpa);
      manager.attach(guest, { program: 'sub/probe', shared: [{ shared, gva: SHM_GVA }] });
      expect(() => guest.run()).to.throw(GuestUnexpectedExit, new RegExp(`read from unbacked guest-physical address 0x${gpa.toString(16)}`));
    }
  });

  it('runApp(shm) reports 2N', () => {
    const report = runApp('shm', { iterations: 5 });
    expect(report.result).to.equal(10n);
    expect(report.ok).to.equal(true);
  });
});
