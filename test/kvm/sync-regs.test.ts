// KVM_CAP_SYNC_REGS: registers through kvm_run (no ioctl), and moving a vCPU's
// whole architectural state to a vCPU of another VM in one native call.
import { expect } from 'chai';
import { Cap, GuestMemory, Kvm, SyncRegs, SYNC_REGS_ALL } from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';
import { CODE_ADDR, longModeGuest } from './guest';

const T = { timeoutMs: 2000 };

describe('sync regs', function () {
  before(function () { requireKvm(this); });

  it('this KVM syncs regs, sregs and events', function () {
    using kvm = Kvm.open();
    expect(kvm.checkExtension(Cap.SYNC_REGS)).to.equal(SYNC_REGS_ALL);
  });

  it('registers set through the dirty mask are used by the guest; the valid copy after the exit equals KVM_GET_REGS/SREGS', function () {
    using g = longModeGuest('mov %rbx, %rax; add %rcx, %rax; out %eax, $0x10; hlt');
    g.vcpu.sync.request(SYNC_REGS_ALL);
    expect(() => g.vcpu.sync.regs).to.throw(/REGS not valid/);
    expect(g.vcpu.run(T).kind).to.equal('io'); // first run: fills the valid copy... of the `out`
    // Start over with registers written only through kvm_run.
    g.vcpu.sync.setReg('rip', BigInt(CODE_ADDR));
    g.vcpu.sync.setReg('rbx', 0x1111_0000n);
    g.vcpu.sync.setReg('rcx', 0x2222n);
    expect(g.vcpu.sync.dirty & SyncRegs.REGS).to.equal(SyncRegs.REGS);
    expect(g.vcpu.getRegs().rbx, 'getRegs shows the pending synced value').to.equal(0x1111_0000n);
    const e = g.vcpu.run(T);
    expect(e.kind === 'io' && [...e.data]).to.deep.equal([0x22, 0x22, 0x11, 0x11]);
    expect(g.vcpu.sync.dirty).to.equal(0); // KVM consumed the dirty bits
    expect(g.vcpu.sync.regs).to.deep.equal(g.vcpu.getRegs());
    expect(g.vcpu.sync.getReg('rax')).to.equal(0x1111_2222n);
    expect(g.vcpu.sync.sregs).to.deep.equal(g.vcpu.getSregs());
    expect(g.vcpu.sync.events).to.deep.equal(g.vcpu.getVcpuEvents());
  });

  it('KVM_SET_REGS writes through to a requested synced copy (no stale copy can be loaded later)', function () {
    using g = longModeGuest('out %al, $0x10; out %al, $0x10; hlt');
    g.vcpu.sync.request(SyncRegs.REGS);
    g.vcpu.run(T);
    g.vcpu.updateRegs({ rax: 0xabn });
    expect(g.vcpu.sync.getReg('rax')).to.equal(0xabn);
    g.vcpu.sync.setReg('rdx', 5n); // marks REGS dirty: must not undo the rax written by ioctl
    const e = g.vcpu.run(T);
    expect(e.kind === 'io' && e.data[0]).to.equal(0xab);
  });

  it('rejects masks KVM does not support', function () {
    using g = longModeGuest('hlt');
    expect(() => g.vcpu.sync.request(1 << 5)).to.throw(RangeError, /not supported/);
  });

  it('copySyncedStateTo moves the whole state to a fresh vCPU of another VM; the program continues there', function () {
    // A counter loop that reports every step. VM B's vCPU is never set up: it
    // starts in real mode, and only the copied sregs put it in long mode.
    const source = `
      xor %eax, %eax
      mov $0x10, %ecx
    1: add %ecx, %eax
      out %eax, $0x10
      dec %ecx
      jnz 1b
      hlt`;
    using shared = GuestMemory.memfd('2M');
    using a = longModeGuest(source, { memory: shared });
    using kvmB = Kvm.open();
    const vmB = kvmB.createVm();
    vmB.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: shared });
    const b = vmB.createVcpu(0);
    a.vcpu.sync.request(SYNC_REGS_ALL);
    b.sync.request(SYNC_REGS_ALL);
    const seen: number[] = [];
    const out = (e: ReturnType<typeof a.vcpu.run>) => {
      expect(e.kind).to.equal('io');
      if (e.kind === 'io') seen.push(new DataView(e.data.buffer, e.data.byteOffset, 4).getUint32(0, true));
    };
    out(a.vcpu.run(T));
    out(a.vcpu.run(T));
    // Move A -> B, run two steps in B, move back B -> A, finish in A.
    expect(a.vcpu.copySyncedStateTo(b)).to.equal(SYNC_REGS_ALL);
    out(b.run(T));
    out(b.run(T));
    expect(b.getSregs().efer & 0x400n, 'B is in long mode (EFER.LMA)').to.equal(0x400n);
    expect(b.copySyncedStateTo(a.vcpu)).to.equal(SYNC_REGS_ALL);
    for (;;) {
      const e = a.vcpu.run(T);
      if (e.kind === 'hlt') break;
      out(e);
    }
    const expected: number[] = [];
    for (let c = 0x10, acc = 0; c > 0; c--) expected.push(acc += c);
    expect(seen).to.deep.equal(expected);
    vmB.dispose();
  });

  it('copySyncedStateTo refuses while either vCPU is running', async function () {
    using a = longModeGuest('1: jmp 1b');
    using b = longModeGuest('hlt');
    const p = a.vcpu.runAsync({ timeoutMs: 5000 });
    expect(() => a.vcpu.copySyncedStateTo(b.vcpu)).to.throw(/running/);
    expect(() => b.vcpu.copySyncedStateTo(a.vcpu)).to.throw(/running/);
    a.vcpu.kick();
    await p;
  });
});
