// Disposing releases everything: file descriptors, mappings (guest memory and
// kvm_run) and vCPU threads, over 100 create/dispose cycles.
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { GuestMemory, Kvm } from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';

const fds = () => readdirSync('/proc/self/fd').length;
const maps = () => readFileSync('/proc/self/maps', 'utf8').split('\n').length;
const threads = () => readdirSync('/proc/self/task').length;

describe('resource release', function () {
  before(function () { requireKvm(this); });

  it('100 create/dispose cycles (Kvm, VM, 2 vCPUs, anonymous + memfd memory, async runs) leak no fd, mapping or thread', async function () {
    this.timeout(120_000);
    const cycle = async () => {
      const kvm = Kvm.open();
      const anon = GuestMemory.anonymous('64K');
      const shared = GuestMemory.memfd('16K');
      const again = shared.remap();
      const vm = kvm.createVm();
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: anon });
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x100000, memory: shared });
      vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x200000, memory: again });
      anon.bytes(0, 1)[0] = 0xf4; // hlt at gpa 0, where vCPU 0 starts (CS base 0, RIP 0)
      const a = vm.createVcpu(0);
      const b = vm.createVcpu(1);
      const s = a.getSregs();
      a.setSregs({ ...s, cs: { ...s.cs, base: 0n, selector: 0 } });
      a.updateRegs({ rip: 0n });
      await a.runAsync({ timeoutMs: 2000 }); // starts a's thread
      b.runAsync({ timeoutMs: 2000 }).catch(() => undefined); // in flight at dispose time
      kvm.dispose(); // disposes the VM and both vCPUs
      anon.dispose();
      shared.dispose();
      again.dispose();
    };
    await cycle(); // let lazily created process-wide resources settle
    const before = { fds: fds(), maps: maps(), threads: threads() };
    for (let i = 0; i < 100; i++) await cycle();
    const after = { fds: fds(), maps: maps(), threads: threads() };
    expect(after.fds, 'open fds').to.equal(before.fds);
    expect(after.threads, 'threads').to.equal(before.threads);
    // Mappings of this process may change for unrelated reasons (V8 heap); leaking
    // 5 per cycle would add 500.
    expect(after.maps - before.maps, 'mappings').to.be.lessThan(20);
  });
});
