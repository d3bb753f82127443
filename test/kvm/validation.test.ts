// Bad input is refused before any ioctl with an error naming the problem;
// failing ioctls carry their name and errno; disposed objects say so.
import { expect } from 'chai';
import { Cap, DisposedError, GuestMemory, HostError, Kvm, KvmError, type Vm } from '../../src/kvm/index';
import { native } from '../../src/kvm/native';
import { requireKvm } from '../support/kvm';

describe('validation and errors', function () {
  before(function () { requireKvm(this); });

  describe('memory slots', function () {
    let kvm: Kvm;
    let vm: Vm;
    let mem: GuestMemory;
    beforeEach(function () {
      kvm = Kvm.open();
      vm = kvm.createVm();
      mem = GuestMemory.anonymous('64K');
    });
    afterEach(function () {
      kvm.dispose();
      mem.dispose();
    });

    it('rejects an unaligned guest-physical address', function () {
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0x1800, memory: mem }))
        .to.throw(RangeError, 'memory slot 0: guestPhysAddr 0x1800 is not page aligned');
    });
    it('rejects an unaligned offset', function () {
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, offset: 100, size: 4096 }))
        .to.throw(RangeError, 'offset 0x64 into the memory is not page aligned');
    });
    it('rejects zero and non-page-multiple sizes', function () {
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, size: 0 }))
        .to.throw(RangeError, 'size must be > 0, got 0 (use deleteMemoryRegion to remove a slot)');
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, size: 5000 }))
        .to.throw(RangeError, 'size 0x1388 is not a multiple of the page size (4096)');
    });
    it('rejects a range beyond the memory', function () {
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem, offset: 0x8000, size: 0x10000 }))
        .to.throw(RangeError, /offset 0x8000 \+ size 0x10000 exceeds GuestMemory\(anonymous, 64 KiB\)/);
    });
    it('rejects overlapping slots, naming both', function () {
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0x10000, memory: mem, size: 0x4000 });
      expect(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0xe000, memory: mem, offset: 0x8000, size: 0x4000 }))
        .to.throw(RangeError, 'memory slot 1 [0xe000, 0x12000) overlaps slot 0 [0x10000, 0x14000)');
      // adjacent is fine
      vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x14000, memory: mem, offset: 0x8000, size: 0x4000 });
      expect(vm.memoryRegions.map((r) => r.slot)).to.deep.equal([0, 1]);
    });
    it('rejects reusing a slot and out-of-range slot numbers; deleting an unused slot', function () {
      vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0, memory: mem, size: 0x1000 });
      expect(() => vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x100000, memory: mem, size: 0x1000 }))
        .to.throw(Error, /memory slot 2 is already in use .*: delete it first/);
      expect(() => vm.setUserMemoryRegion({ slot: -1, guestPhysAddr: 0x100000, memory: mem }))
        .to.throw(RangeError, /memory slot -1 is out of range/);
      expect(() => vm.setUserMemoryRegion({ slot: vm.maxMemorySlots, guestPhysAddr: 0x100000, memory: mem }))
        .to.throw(RangeError, /out of range/);
      expect(() => vm.deleteMemoryRegion(7)).to.throw(/memory slot 7 of Vm \d+ is not in use/);
      vm.deleteMemoryRegion(2);
      vm.setUserMemoryRegion({ slot: 2, guestPhysAddr: 0x100000, memory: mem, size: 0x1000 });
    });
    it('rejects disposed memory', function () {
      const gone = GuestMemory.anonymous('4K');
      gone.dispose();
      expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: gone })).to.throw(DisposedError, /is disposed/);
    });
    it('a slot KVM itself refuses gives a KvmError with ioctl, errno and the slot', function () {
      let err: unknown;
      try { vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 1n << 62n, memory: mem }); } catch (e) { err = e; }
      expect(err).to.be.instanceOf(KvmError);
      const k = err as KvmError;
      expect([k.ioctl, k.errno, k.code]).to.deep.equal(['KVM_SET_USER_MEMORY_REGION', 22, 'EINVAL']);
      expect(k.message).to.equal('KVM_SET_USER_MEMORY_REGION failed: EINVAL (Invalid argument) (slot 0, gpa 0x4000000000000000, size 0x10000, flags 0)');
      expect(vm.memoryRegions).to.deep.equal([]);
    });
  });

  it('unknown capabilities are refused before any ioctl', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    expect(() => kvm.checkExtension(9999 as Cap)).to.throw(RangeError, 'unknown KVM capability 9999');
    expect(() => vm.enableCap(-1 as Cap)).to.throw(RangeError, 'unknown KVM capability -1');
    expect(() => vm.enableCap(Cap.EXIT_ON_EMULATION_FAILURE, [1, 2, 3, 4, 5])).to.throw(RangeError, /at most 4 arguments/);
  });

  it('a failing ioctl throws KvmError carrying the ioctl name and errno', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    let err: unknown;
    try { vm.enableCap(Cap.S390_CSS_SUPPORT); } catch (e) { err = e; }
    expect(err).to.be.instanceOf(KvmError);
    expect(err).to.include({ ioctl: 'KVM_ENABLE_CAP', errno: 22, code: 'EINVAL' });
    expect((err as Error).message).to.equal('KVM_ENABLE_CAP failed: EINVAL (Invalid argument)');
    vm.createVcpu(0);
    // A duplicate vCPU id: refused in TS, and by KVM (EEXIST) when asked directly.
    expect(() => vm.createVcpu(0)).to.throw(/already has a vCPU 0/);
    expect(() => native.createVcpu(vm.fd, 0)).to.throw(KvmError).with.property('code', 'EEXIST');
  });

  it('MSR accesses KVM refuses name the MSR', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu();
    expect(() => vcpu.getMsrs([0x10, 0xdeadbeef])).to.throw(/KVM_GET_MSRS on Vcpu 0: MSR 0xdeadbeef cannot be read \(the kernel stopped after 1 of 2\)/);
    expect(() => vcpu.setMsrs([{ index: 0xdeadbeef, value: 1n }])).to.throw(/KVM_SET_MSRS on Vcpu 0: MSR 0xdeadbeef = 0x1 was refused/);
  });

  it('opening a missing device is a HostError naming the path', function () {
    expect(() => Kvm.open('/dev/no-such-kvm')).to.throw(HostError, 'open failed: ENOENT (No such file or directory) — /dev/no-such-kvm');
  });

  it('disposed Kvm, Vm, Vcpu and memory are unusable with a clear error; dispose is idempotent', function () {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    const run = vcpu.runView;
    vcpu.dispose();
    vcpu.dispose();
    expect(() => vcpu.getRegs()).to.throw(DisposedError, 'Vcpu 0 is disposed');
    expect(() => vcpu.run()).to.throw(DisposedError, 'Vcpu 0 is disposed');
    expect(() => vcpu.kick()).to.throw(DisposedError, 'Vcpu 0 is disposed');
    expect(run.buffer.byteLength, 'kvm_run buffer detached').to.equal(0);
    expect(() => run.getUint32(0), 'reading kvm_run after dispose').to.throw(TypeError, /detached/);
    expect(vm.vcpus).to.deep.equal([]);
    const vcpu1 = vm.createVcpu(1);
    kvm.dispose(); // disposes the VM, which disposes its vCPUs
    expect(vm.disposed && vcpu1.disposed).to.equal(true);
    expect(() => vm.createVcpu(2)).to.throw(DisposedError, `Vm ${vm.number} is disposed`);
    expect(() => kvm.checkExtension(Cap.SYNC_REGS)).to.throw(DisposedError, 'Kvm is disposed');
    kvm.dispose();
    vm.dispose();
  });

  it('native bindings reject wrongly sized struct buffers and bad arguments', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu();
    expect(() => native.getRegs(vcpu.fd, new Uint8Array(10))).to.throw(RangeError, 'KVM_GET_REGS: struct buffer must be 144 bytes, got 10');
    expect(() => native.setUserMemoryRegion(vm.fd, 0, 0, 0n, 0x2000n, new ArrayBuffer(0x1000), 0n)).to.throw(RangeError, /exceed the memory buffer/);
    expect(() => native.munmap(vcpu.runView.buffer as ArrayBuffer)).to.throw(/in use by a vCPU/);
    expect(() => vcpu.interrupt(256)).to.throw(RangeError, /0\.\.255/);
    expect(() => vcpu.setGuestDebug({ control: 0x8 })).to.throw(RangeError, /unknown control bits 0x8/);
  });
});

describe('VM setup calls', function () {
  before(function () { requireKvm(this); });

  it('vCPU ids: default is the lowest never used; a disposed id cannot be reused (KVM keeps the vCPU)', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const a = vm.createVcpu();
    const b = vm.createVcpu();
    expect([a.id, b.id]).to.deep.equal([0, 1]);
    a.dispose();
    expect(() => vm.createVcpu(0)).to.throw(/already created vCPU 0 \(disposed, but KVM keeps vCPUs/);
    expect(vm.createVcpu().id).to.equal(2);
    expect(vm.vcpus.map((v) => v.id)).to.deep.equal([1, 2]);
    expect(() => vm.createVcpu(-1)).to.throw(RangeError, /non-negative integer/);
  });

  it('KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR and a vCPU KVM_ENABLE_CAP reach KVM (errors come back as KvmError)', function () {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.setIdentityMapAddr(0xfffbc000);
    vm.setTssAddr(0xfffbd000);
    const vcpu = vm.createVcpu();
    // KVM refuses the identity map address once a vCPU exists.
    expect(() => vm.setIdentityMapAddr(0xfffbc000)).to.throw(KvmError).with.property('ioctl', 'KVM_SET_IDENTITY_MAP_ADDR');
    expect(() => vcpu.enableCap(Cap.S390_CSS_SUPPORT)).to.throw(KvmError).with.property('ioctl', 'KVM_ENABLE_CAP');
  });
});
