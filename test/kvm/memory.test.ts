// Guest memory: anonymous and memfd mappings, sharing between VMs, re-mapping,
// disposal rules (detach before unmap, refusal while in a slot), options, and
// the dirty log.
import { expect } from 'chai';
import { DisposedError, GuestMemory, HostError, Kvm, parseSize } from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';
import { realModeGuest } from './guest';

const T = { timeoutMs: 2000 };

describe('guest memory', function () {
  before(function () { requireKvm(this); });

  it('parseSize understands bytes, bigint and K/M/G suffixes, and rejects the rest', function () {
    expect(parseSize(4096)).to.equal(4096);
    expect(parseSize(8192n)).to.equal(8192);
    expect(parseSize('64K')).to.equal(65536);
    expect(parseSize('2M')).to.equal(2 * 1024 * 1024);
    expect(parseSize('1GiB')).to.equal(1024 ** 3);
    expect(() => parseSize('12 parsecs')).to.throw(TypeError, /not a size/);
    expect(() => parseSize(-4096)).to.throw(RangeError);
    expect(() => parseSize(1.5)).to.throw(RangeError);
  });

  it('anonymous memory is zero-filled, page-multiple, and shows in /proc/self/maps at hostAddress', function () {
    using m = GuestMemory.anonymous('64K');
    expect(m.size).to.equal(65536);
    expect(m.bytes().every((b) => b === 0)).to.equal(true);
    const start = m.hostAddress.toString(16);
    const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8') as string;
    expect(maps).to.match(new RegExp(`^0*${start}-`, 'm'));
    expect(() => GuestMemory.anonymous(0)).to.throw(RangeError, /must not be zero/);
    expect(() => GuestMemory.anonymous(4097)).to.throw(RangeError, /not a multiple of the 4096-byte page size/);
  });

  it('dispose() detaches the ArrayBuffer (views become empty) before unmapping, and is idempotent', function () {
    const m = GuestMemory.anonymous('8K');
    const view = m.bytes();
    view[0] = 1;
    m.dispose();
    expect(view.length).to.equal(0);
    expect(view[0]).to.equal(undefined); // reading a detached view never touches the old mapping
    expect(m.disposed).to.equal(true);
    expect(() => m.buffer).to.throw(DisposedError, /GuestMemory\(anonymous, 8 KiB\) is disposed/);
    m.dispose();
  });

  it('refuses to dispose memory still in a VM slot, naming the VM and slot; allowed once the slot is gone', function () {
    using kvm = Kvm.open();
    const m = GuestMemory.anonymous('16K');
    const vm = kvm.createVm();
    vm.setUserMemoryRegion({ slot: 3, guestPhysAddr: 0x100000, memory: m });
    expect(() => m.dispose()).to.throw(Error, new RegExp(`still in use by Vm ${vm.number} slot 3 \\(gpa 0x100000, 16384 bytes\\)`));
    expect(m.disposed).to.equal(false);
    vm.deleteMemoryRegion(3);
    vm.setUserMemoryRegion({ slot: 4, guestPhysAddr: 0, memory: m });
    vm.dispose(); // releases its slots
    m.dispose();
    expect(m.disposed).to.equal(true);
  });

  describe('shared between VMs', function () {
    const writer = 'mov $0x2000, %ax; mov %ax, %es; movl $0x12345678, %es:0x10; hlt';
    const reader = 'mov $0x2000, %ax; mov %ax, %es; mov %es:0x10, %eax; out %eax, $0x10; hlt';

    it('a memfd page in two VMs: a write by one guest is read by the other', function () {
      using shared = GuestMemory.memfd('4K', { name: 'elisa-test-shared' });
      using a = realModeGuest(writer);
      using b = realModeGuest(reader);
      a.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: shared });
      b.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: shared });
      expect(a.vcpu.run(T).kind).to.equal('hlt');
      const e = b.vcpu.run(T);
      expect(e.kind === 'io' && [...e.data]).to.deep.equal([0x78, 0x56, 0x34, 0x12]);
      a.vm.deleteMemoryRegion(1);
      b.vm.deleteMemoryRegion(1);
    });

    it('remap() maps the same memfd pages at another host address; either can be disposed first', function () {
      const shared = GuestMemory.memfd('8K');
      const again = shared.remap();
      expect(again.hostAddress).to.not.equal(shared.hostAddress);
      expect(again.fd).to.not.equal(shared.fd);
      using a = realModeGuest(writer);
      using b = realModeGuest(reader);
      a.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: shared, offset: 4096, size: 4096 });
      b.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: again, offset: 4096, size: 4096 });
      expect(a.vcpu.run(T).kind).to.equal('hlt');
      expect(new DataView(again.buffer).getUint32(4096 + 0x10, true)).to.equal(0x12345678);
      a.vm.deleteMemoryRegion(1);
      shared.dispose();
      const e = b.vcpu.run(T);
      expect(e.kind === 'io' && [...e.data]).to.deep.equal([0x78, 0x56, 0x34, 0x12]);
      b.vm.deleteMemoryRegion(1);
      again.dispose();
      expect(() => GuestMemory.anonymous('4K').remap()).to.throw(TypeError, /needs memfd-backed memory/);
    });
  });

  describe('options', function () {
    it('lock + populate maps locked, resident memory', function () {
      using m = GuestMemory.anonymous('64K', { lock: true, populate: true });
      const maps = require('node:fs').readFileSync('/proc/self/smaps', 'utf8') as string;
      const start = m.hostAddress.toString(16);
      const block = maps.split(/\n(?=[0-9a-f]+-)/).find((b) => new RegExp(`^0*${start}-`).test(b));
      expect(block, 'mapping in smaps').to.be.a('string');
      expect(block).to.match(/^Locked:\s+64 kB/m);
      expect(block).to.match(/^Rss:\s+64 kB/m);
    });

    it("hugePages 'transparent' sets MADV_HUGEPAGE (hg in VmFlags)", function () {
      using m = GuestMemory.anonymous('4M', { hugePages: 'transparent' });
      const maps = require('node:fs').readFileSync('/proc/self/smaps', 'utf8') as string;
      const start = m.hostAddress.toString(16);
      const block = maps.split(/\n(?=[0-9a-f]+-)/).find((b) => new RegExp(`^0*${start}-`).test(b));
      expect(block).to.match(/^VmFlags:.*\bhg\b/m);
    });

    it("hugePages 'hugetlb' works when pages are reserved, else fails with an error that says so", function () {
      const reserved = Number(require('node:fs').readFileSync('/proc/sys/vm/nr_hugepages', 'utf8'));
      for (const make of [() => GuestMemory.anonymous('2M', { hugePages: 'hugetlb' }), () => GuestMemory.memfd('2M', { hugePages: 'hugetlb' })]) {
        let m: GuestMemory | undefined;
        try { m = make(); } catch (err) {
          expect(err).to.be.instanceOf(HostError);
          expect((err as HostError).code).to.equal('ENOMEM');
          expect(String(err)).to.match(/hugetlb pages.*\/proc\/sys\/vm\/nr_hugepages/);
          expect(reserved, 'failed although huge pages are reserved').to.be.lessThan(2);
        }
        m?.bytes().fill(1);
        m?.dispose();
      }
    });

    it('rejects unknown options and hugetlb sizes that are not 2 MiB multiples', function () {
      expect(() => GuestMemory.anonymous('4K', { hugePages: 'giant' as never })).to.throw(TypeError, /unknown hugePages option 'giant'/);
      expect(() => GuestMemory.anonymous('1M', { hugePages: 'hugetlb' })).to.throw(RangeError, /2 MiB/);
    });
  });

  it('the dirty log reports exactly the pages the guest wrote, then clears', function () {
    using data = GuestMemory.anonymous('32K');
    using g = realModeGuest('mov $0x2000, %ax; mov %ax, %es; movb $1, %es:0x1004; movw $2, %es:0x3ffe; hlt');
    g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: data, logDirtyPages: true });
    expect(g.vm.dirtyPages(1)).to.deep.equal([]);
    expect(g.vcpu.run(T).kind).to.equal('hlt');
    expect(g.vm.dirtyPages(1)).to.deep.equal([1, 3]);
    expect(g.vm.dirtyPages(1)).to.deep.equal([]);
    expect(() => g.vm.dirtyPages(0)).to.throw(/memory slot \d has no dirty log/);
    g.vm.deleteMemoryRegion(1);
  });

  it('dirty logging can be switched on for a slot in use, without removing it', function () {
    using data = GuestMemory.anonymous('16K');
    data.bytes()[0x2000] = 0x99;
    using g = realModeGuest('mov $0x2000, %ax; mov %ax, %es; mov %es:0x2000, %bl; movb $1, %es:0x3000; hlt');
    g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: data });
    g.vm.setDirtyLogging(1, true);
    expect(g.vm.memoryRegions.find((r) => r.slot === 1)?.logDirtyPages).to.equal(true);
    expect(g.vcpu.run(T).kind).to.equal('hlt');
    expect(g.vcpu.getRegs().rbx & 0xffn, 'the slot kept its contents').to.equal(0x99n);
    expect(g.vm.dirtyPages(1)).to.deep.equal([3]);
    g.vm.setDirtyLogging(1, false);
    expect(() => g.vm.dirtyPages(1)).to.throw(/memory slot \d has no dirty log/);
    g.vm.deleteMemoryRegion(1);
  });
});
