// Exits decoded from kvm_run: PIO, MMIO (incl. completing reads and read-only
// slots), HLT, SHUTDOWN, DEBUG and the emulation-failure internal error.
import { expect } from 'chai';
import {
  Cap, ExitReason, GuestDebugFlag, GuestMemory, InternalErrorSuberror, IoDirection, type Exit,
} from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';
import { CODE_ADDR, longModeGuest, realModeGuest } from './guest';

const T = { timeoutMs: 2000 };

function expectKind<K extends Exit['kind']>(e: Exit, kind: K): Extract<Exit, { kind: K }> {
  expect(e.kind, `exit ${JSON.stringify(e, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}`).to.equal(kind);
  return e as Extract<Exit, { kind: K }>;
}

describe('exits', function () {
  before(function () { requireKvm(this); });

  describe('port I/O', function () {
    it('decodes out with port, size, direction and data (1, 2, 4 bytes)', function () {
      using g = realModeGuest(`
        mov $0x41, %al; out %al, $0x10
        mov $0x1234, %ax; mov $0x3f8, %dx; out %ax, %dx
        mov $0xcafebabe, %eax; out %eax, $0x80
        hlt`);
      const a = expectKind(g.vcpu.run(T), 'io');
      expect([a.direction, a.port, a.size, a.count, [...a.data]]).to.deep.equal([IoDirection.OUT, 0x10, 1, 1, [0x41]]);
      const b = expectKind(g.vcpu.run(T), 'io');
      expect([b.port, b.size, [...b.data]]).to.deep.equal([0x3f8, 2, [0x34, 0x12]]);
      const c = expectKind(g.vcpu.run(T), 'io');
      expect([c.port, c.size, [...c.data]]).to.deep.equal([0x80, 4, [0xbe, 0xba, 0xfe, 0xca]]);
      expectKind(g.vcpu.run(T), 'hlt');
    });

    it('completes an in by writing the data view; the guest sees the value', function () {
      using g = realModeGuest(`
        in $0x20, %al; out %al, $0x21
        mov $0x60, %dx; in %dx, %ax; mov %ax, %bx
        hlt`);
      const i = expectKind(g.vcpu.run(T), 'io');
      expect([i.direction, i.port, i.size]).to.deep.equal([IoDirection.IN, 0x20, 1]);
      i.data[0] = 0x5a;
      const o = expectKind(g.vcpu.run(T), 'io');
      expect([o.direction, o.port, [...o.data]]).to.deep.equal([IoDirection.OUT, 0x21, [0x5a]]);
      const w = expectKind(g.vcpu.run(T), 'io');
      expect([w.direction, w.port, w.size]).to.deep.equal([IoDirection.IN, 0x60, 2]);
      w.data.set([0xcd, 0xab]);
      expectKind(g.vcpu.run(T), 'hlt');
      expect(g.vcpu.getRegs().rbx & 0xffffn).to.equal(0xabcdn);
    });

    it('rep outsb: every exit has count*size bytes of data and together they are the string', function () {
      using g = realModeGuest('mov $0x30, %dx; mov $msg, %si; mov $5, %cx; rep outsb; hlt\nmsg: .ascii "hello"');
      let text = '';
      let exits = 0;
      for (;;) {
        const e = g.vcpu.run(T);
        if (e.kind === 'hlt') break;
        const io = expectKind(e, 'io');
        expect([io.port, io.size, io.direction]).to.deep.equal([0x30, 1, IoDirection.OUT]);
        expect(io.count).to.be.within(1, 5);
        expect(io.data.length).to.equal(io.count * io.size);
        text += Buffer.from(io.data).toString('latin1');
        exits++;
      }
      expect(text).to.equal('hello');
      expect(exits).to.be.within(1, 5);
      expect(g.vcpu.getRegs().rcx & 0xffffn).to.equal(0n);
    });
  });

  describe('MMIO', function () {
    // Slot 0 covers [0, 64 KiB); DS = 0x1000 puts data accesses at 0x10000+, unbacked.
    it('decodes a write (address, length, data) and a read completed by the host', function () {
      using g = realModeGuest(`
        mov $0x1000, %ax; mov %ax, %ds
        movl $0xdeadbeef, 0x10
        movw 0x22, %bx
        mov 0x20, %eax
        hlt`);
      const w = expectKind(g.vcpu.run(T), 'mmio');
      expect([w.address, w.length, w.isWrite, [...w.data]]).to.deep.equal([0x10010n, 4, true, [0xef, 0xbe, 0xad, 0xde]]);
      const r2 = expectKind(g.vcpu.run(T), 'mmio');
      expect([r2.address, r2.length, r2.isWrite]).to.deep.equal([0x10022n, 2, false]);
      r2.data.set([0x34, 0x12]);
      const r4 = expectKind(g.vcpu.run(T), 'mmio');
      expect([r4.address, r4.length, r4.isWrite]).to.deep.equal([0x10020n, 4, false]);
      r4.data.set([0x01, 0x02, 0x03, 0x04]);
      expectKind(g.vcpu.run(T), 'hlt');
      const regs = g.vcpu.getRegs();
      expect(regs.rax & 0xffffffffn).to.equal(0x04030201n);
      expect(regs.rbx & 0xffffn).to.equal(0x1234n);
    });

    it('a read-only slot serves reads from memory and turns writes into MMIO exits', function () {
      using rom = GuestMemory.anonymous('4K');
      rom.bytes()[0] = 0x55;
      using g = realModeGuest(`
        mov $0x2000, %ax; mov %ax, %es
        mov %es:0, %al; out %al, $0x10
        movb $0x77, %es:0
        hlt`);
      g.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: 0x20000, memory: rom, readonly: true });
      const o = expectKind(g.vcpu.run(T), 'io');
      expect([...o.data]).to.deep.equal([0x55]);
      const w = expectKind(g.vcpu.run(T), 'mmio');
      expect([w.address, w.length, w.isWrite, [...w.data]]).to.deep.equal([0x20000n, 1, true, [0x77]]);
      expectKind(g.vcpu.run(T), 'hlt');
      expect(rom.bytes()[0]).to.equal(0x55);
      g.vm.deleteMemoryRegion(1);
    });
  });

  it('HLT exits with reason HLT and RIP after the instruction', function () {
    using g = realModeGuest('nop; hlt');
    expect(g.vcpu.runRaw(2000)).to.equal(ExitReason.HLT);
    expect(g.vcpu.lastExit().kind).to.equal('hlt');
    expect(g.vcpu.getRegs().rip).to.equal(BigInt(CODE_ADDR + 2));
  });

  it('a triple fault (ud2 with no IDT in long mode) is a SHUTDOWN exit', function () {
    using g = longModeGuest('ud2');
    expectKind(g.vcpu.run(T), 'shutdown');
  });

  it('single-stepping with KVM_SET_GUEST_DEBUG gives DEBUG exits (#DB, BS in DR6) at each next instruction', function () {
    using g = longModeGuest('nop; nop; hlt');
    g.vcpu.setGuestDebug({ control: GuestDebugFlag.SINGLESTEP });
    for (const pc of [CODE_ADDR + 1, CODE_ADDR + 2]) {
      const d = expectKind(g.vcpu.run(T), 'debug');
      expect(d.exception).to.equal(1);
      expect(d.pc).to.equal(BigInt(pc));
      expect(d.dr6 & (1n << 14n)).to.equal(1n << 14n);
    }
    g.vcpu.setGuestDebug({ control: 0 });
    expectKind(g.vcpu.run(T), 'hlt');
  });

  it('VMFUNC (0f 01 d4) with KVM_CAP_EXIT_ON_EMULATION_FAILURE: what this host does, and resuming past it', function () {
    using g = longModeGuest('vmfunc; mov $7, %ebx; hlt');
    g.vm.enableCap(Cap.EXIT_ON_EMULATION_FAILURE, [1]);
    const e = g.vcpu.run(T);
    if (e.kind === 'shutdown') {
      // Other hosts: a CPU that executes VMFUNC (VMX with no VM function enabled for this
      // guest: KVM injects #UD; AMD: #UD outright) raises #UD in the guest, and with no IDT
      // that is a triple fault. The instruction after it never ran.
      expect(g.vcpu.getRegs().rbx, 'RBX: mov $7 after the VMFUNC must not have run').to.not.equal(7n);
      return;
    }
    // This project's KVM (see DESIGN.md): the emulator cannot handle VMFUNC.
    const ie = expectKind(e, 'internalError');
    expect(ie.suberror).to.equal(InternalErrorSuberror.EMULATION);
    expect(ie.instructionBytes, 'instruction bytes').to.not.equal(undefined);
    expect([...ie.instructionBytes!.subarray(0, 3)]).to.deep.equal([0x0f, 0x01, 0xd4]);
    expect(g.vcpu.getRegs().rip).to.equal(BigInt(CODE_ADDR));
    g.vcpu.updateRegs({ rip: BigInt(CODE_ADDR + 3) });
    expectKind(g.vcpu.run(T), 'hlt');
    expect(g.vcpu.getRegs().rbx).to.equal(7n);
  });
});
