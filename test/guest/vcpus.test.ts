// The lower-level pieces on their own, with two vCPUs: each vCPU has its own TSS and
// exception area, and the stubs (which find the area from RSP) report into the right one.
import { expect } from 'chai';
import { GuestMemory, IoDirection, Kvm } from '../../src/kvm/index';
import { decodeReport } from '../../src/x86/exceptions';
import { exceptionAreaGpa, tssSelector } from '../../src/x86/layout';
import { writeSystemStructures } from '../../src/x86/longmode';
import { prepareLongModeVcpu } from '../../src/x86/machine';
import { buildIdentityMap } from '../../src/x86/paging';
import { GuestPort } from '../../src/x86/ports';
import { requireKvm } from '../support/kvm';

describe('exception reports with two vCPUs', function () {
  before(function () { requireKvm(this); });

  it('each vCPU\'s exception lands in its own report, with its own vector and RIP', function () {
    using kvm = Kvm.open();
    using memory = GuestMemory.anonymous('4M');
    using vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
    const bytes = memory.bytes();
    writeSystemStructures(bytes, 2);
    const { cr3 } = buildIdentityMap(bytes, { bytes: memory.size });
    bytes.set([0x0f, 0x0b], 0x200000);                    // vCPU 0: ud2
    bytes.set([0x31, 0xc9, 0xf7, 0xf1], 0x201000);        // vCPU 1: xor %ecx,%ecx; div %ecx
    const expected = [{ vector: 6, rip: 0x200000n }, { vector: 0, rip: 0x201002n }];
    const vcpus = [0, 1].map((i) => {
      const v = vm.createVcpu(i);
      prepareLongModeVcpu(v, { index: i, vcpus: 2, cr3 });
      v.updateRegs({ rip: BigInt(0x200000 + i * 0x1000), rsp: 0x80000n - BigInt(i) * 0x8000n, rflags: 2n });
      return v;
    });
    expect(vcpus.map((v) => v.getSregs().tr.selector)).to.deep.equal([tssSelector(0), tssSelector(1)]);
    vcpus.forEach((v, i) => {
      const exit = v.run({ timeoutMs: 2000 });
      expect(exit.kind).to.equal('io');
      if (exit.kind !== 'io') return;
      expect(exit.port).to.equal(GuestPort.exception);
      expect(exit.direction).to.equal(IoDirection.OUT);
      expect(exit.data[0]).to.equal(expected[i]!.vector);
    });
    const view = new DataView(memory.buffer);
    for (const i of [0, 1]) {
      const r = decodeReport(view, exceptionAreaGpa(i));
      expect({ vector: r.vector, rip: r.rip }).to.deep.equal(expected[i]);
      expect(r.registers.rsp).to.equal(0x80000n - BigInt(i) * 0x8000n);
    }
  });
});
