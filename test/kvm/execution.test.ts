// Running vCPUs: timeouts (sync and async) rescue spinning guests and guests
// stuck in VMCALL, kick() interrupts runAsync, the event loop stays free, the
// vCPU is usable afterwards, and disposing during a run is handled.
import { expect } from 'chai';
import { DisposedError, ExitReason, InterruptCause, type Vcpu } from '../../src/kvm/index';
import { requireKvm } from '../support/kvm';
import { CODE_ADDR, longModeGuest, realModeGuest } from './guest';

/** Guest: spins at CODE_ADDR; a second entry point (CODE_ADDR+0x10) does `out` then `hlt`. */
const SPIN_THEN_ENTRY = `1: jmp 1b\n.org 0x10\nmov $0x99, %al; out %al, $0x44; hlt`;
/** Same in 64-bit with VMCALL in place of the spin (spins inside KVM_RUN on this host). */
const VMCALL_THEN_ENTRY = `vmcall\n1: jmp 1b\n.org 0x10\nmov $0x99, %al; out %al, $0x44; hlt`;

/** Points the vCPU at the second entry point and checks it runs to completion. */
function expectUsable(vcpu: Vcpu): void {
  vcpu.updateRegs({ rip: BigInt(CODE_ADDR + 0x10) });
  const e = vcpu.run({ timeoutMs: 2000 });
  expect(e.kind).to.equal('io');
  if (e.kind === 'io') expect([e.port, e.data[0]]).to.deep.equal([0x44, 0x99]);
  expect(vcpu.run({ timeoutMs: 2000 }).kind).to.equal('hlt');
}

function ms(start: bigint): number { return Number(process.hrtime.bigint() - start) / 1e6; }

describe('execution', function () {
  before(function () { requireKvm(this); });

  describe('run() timeout', function () {
    it('stops a guest spinning forever with an intr exit flagged timedOut, after about timeoutMs', function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      const t0 = process.hrtime.bigint();
      const e = g.vcpu.run({ timeoutMs: 100 });
      const elapsed = ms(t0);
      expect(e.kind).to.equal('intr');
      if (e.kind === 'intr') {
        expect(e.timedOut).to.equal(true);
        expect(e.cause).to.equal(InterruptCause.TIMEOUT);
      }
      expect(elapsed).to.be.within(95, 2000);
      expectUsable(g.vcpu);
    });

    it('stops a guest stuck in VMCALL; the vCPU then runs correctly', function () {
      using g = longModeGuest(VMCALL_THEN_ENTRY);
      const e = g.vcpu.run({ timeoutMs: 150 });
      // Hosts that implement VMCALL may exit differently; here it never returns by itself.
      expect(e.kind).to.be.oneOf(['intr', 'hypercall', 'internalError', 'shutdown']);
      if (e.kind === 'intr') expect(e.timedOut).to.equal(true);
      expectUsable(g.vcpu);
    });

    it('runRaw returns ExitReason.INTR on timeout and lastInterruptCause() says TIMEOUT', function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      expect(g.vcpu.runRaw(20)).to.equal(ExitReason.INTR);
      expect(g.vcpu.lastInterruptCause()).to.equal(InterruptCause.TIMEOUT);
      // timeout 0 means "expire now", never "no timeout"
      expect(g.vcpu.runRaw(0)).to.equal(ExitReason.INTR);
      expectUsable(g.vcpu);
      expect(g.vcpu.lastInterruptCause()).to.equal(InterruptCause.NONE);
    });

    it('a run that finishes before its timeout is not interrupted later by the timer', async function () {
      using g = realModeGuest('hlt; 1: jmp 1b');
      expect(g.vcpu.run({ timeoutMs: 30 }).kind).to.equal('hlt');
      await new Promise((r) => setTimeout(r, 60));
      // Now spin with no timeout for a bit via async + kick: a stale timer would show as TIMEOUT.
      const p = g.vcpu.runAsync();
      setTimeout(() => g.vcpu.kick(), 50);
      const e = await p;
      expect(e.kind === 'intr' && e.cause).to.equal(InterruptCause.KICK);
    });

    it('rejects a bad timeout', function () {
      using g = realModeGuest('hlt');
      expect(() => g.vcpu.run({ timeoutMs: -1 })).to.throw(RangeError, /timeoutMs/);
      expect(() => g.vcpu.run({ timeoutMs: NaN })).to.throw(RangeError, /timeoutMs/);
    });
  });

  describe('runAsync()', function () {
    it('runs on its own thread: the event loop keeps running while the guest spins, then times out', async function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      let ticks = 0;
      const timer = setInterval(() => { ticks++; }, 10);
      const t0 = process.hrtime.bigint();
      const e = await g.vcpu.runAsync({ timeoutMs: 200 });
      clearInterval(timer);
      expect(ms(t0)).to.be.within(190, 3000);
      expect(e.kind === 'intr' && e.timedOut).to.equal(true);
      expect(ticks).to.be.greaterThan(5);
      expectUsable(g.vcpu);
    });

    it('a VMCALL guest is stopped by the async timeout', async function () {
      using g = longModeGuest(VMCALL_THEN_ENTRY);
      const e = await g.vcpu.runAsync({ timeoutMs: 150 });
      expect(e.kind).to.be.oneOf(['intr', 'hypercall', 'internalError', 'shutdown']);
      if (e.kind === 'intr') expect(e.cause).to.equal(InterruptCause.TIMEOUT);
      expectUsable(g.vcpu);
    });

    it('kick() stops a run with no timeout; the exit says KICK; running is true only meanwhile', async function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      expect(g.vcpu.kick()).to.equal(false);
      const p = g.vcpu.runAsync();
      expect(g.vcpu.running).to.equal(true);
      await new Promise((r) => setTimeout(r, 30));
      expect(g.vcpu.kick()).to.equal(true);
      const e = await p;
      expect(e.kind === 'intr' && e.cause).to.equal(InterruptCause.KICK);
      expect(g.vcpu.running).to.equal(false);
      expectUsable(g.vcpu);
    });

    it('kick() right after runAsync() (before the thread enters KVM_RUN) is not lost', async function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      for (let i = 0; i < 20; i++) {
        const p = g.vcpu.runAsync({ timeoutMs: 5000 });
        g.vcpu.kick();
        const e = await p;
        expect(e.kind === 'intr' && e.cause, `iteration ${i}`).to.equal(InterruptCause.KICK);
      }
    });

    it('state ioctls and synced registers are refused while a run is in flight (they would block the JS thread)', async function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      g.vcpu.sync.request(1);
      const p = g.vcpu.runAsync();
      expect(() => g.vcpu.getRegs()).to.throw(/Vcpu 0 is running \(runAsync in flight\)/);
      expect(() => g.vcpu.setSregs(g.vcpu.getSregs())).to.throw(/is running/);
      expect(() => g.vcpu.nmi()).to.throw(/is running/);
      expect(() => g.vcpu.sync.request(0)).to.throw(/is running/);
      expect(() => g.vcpu.sync.getReg('rip')).to.throw(/is running/);
      g.vcpu.kick();
      await p;
      expect(g.vcpu.sync.getReg('rip')).to.equal(g.vcpu.getRegs().rip);
    });

    it('returns ordinary exits, and refuses a second run while one is in flight', async function () {
      using g = realModeGuest('mov $0x41, %al; out %al, $0x10; hlt');
      const p = g.vcpu.runAsync({ timeoutMs: 2000 });
      expect(() => g.vcpu.run({ timeoutMs: 10 })).to.throw(/already running/);
      expect(() => g.vcpu.lastExit()).to.throw(/is running/);
      const e = await p;
      expect(e.kind).to.equal('io');
      expect((await g.vcpu.runAsync({ timeoutMs: 2000 })).kind).to.equal('hlt');
    });

    it('disposing the Vm while runAsync is in flight interrupts it and rejects with DisposedError', async function () {
      using g = realModeGuest(SPIN_THEN_ENTRY);
      const p = g.vcpu.runAsync();
      await new Promise((r) => setTimeout(r, 20));
      const t0 = process.hrtime.bigint();
      g.vm.dispose();
      expect(ms(t0)).to.be.lessThan(1000);
      let err: unknown;
      try { await p; } catch (e) { err = e; }
      expect(err).to.be.instanceOf(DisposedError);
      expect(String(err)).to.match(/Vcpu 0 was disposed while runAsync\(\) was in flight/);
      expect(g.vcpu.disposed).to.equal(true);
    });

    it('several vCPUs of several VMs run concurrently on their own threads', async function () {
      using a = realModeGuest(SPIN_THEN_ENTRY);
      using b = realModeGuest(SPIN_THEN_ENTRY);
      const t0 = process.hrtime.bigint();
      const [ea, eb] = await Promise.all([a.vcpu.runAsync({ timeoutMs: 300 }), b.vcpu.runAsync({ timeoutMs: 300 })]);
      expect(ms(t0)).to.be.lessThan(550); // not serialised (that would take >= 600 ms)
      expect(ea.kind === 'intr' && ea.timedOut && eb.kind === 'intr' && eb.timedOut).to.equal(true);
    });
  });
});
