// The ELISA behaviours every backend must share (issue 5: "the same test file runs against
// both backends"). Registered for `emulated` by test/backends/behaviour.test.ts (npm test,
// real /dev/kvm) and for `vmfunc` by test/vmx/vmfunc-suite.ts, once per kernel variant,
// inside the emulated VT-x host (npm run test:vmx). A behaviour that differs between the
// two is a bug in one of them, or a limit documented in docs/backends.md and expressed by
// an option below, never by a branch on the backend's name.
//
// Node runs 60–80× slower inside Bochs: each case is one small guest run, and the managers
// are small.
import { expect } from 'chai';
import type { Backend } from '../../src/elisa/backends/backend';
import { ElisaManager, ElisaGuest, type Attachment } from '../../src/elisa/host';
import { setGuestU64, SHM_GVA } from '../../src/elisa/host/apps';
import { GuestFault, GuestUnexpectedExit } from '../../src/x86/errors';

/** RAX = -1 as the guest reports it (an unsigned 64-bit result). */
const MINUS_ONE = (1n << 64n) - 1n;
/** The #UD exception vector. */
const UD = 6;

/** Where the backends legitimately differ (each difference is in docs/backends.md). */
export interface ElisaBehaviourOptions {
  /**
   * The backend sees every switch (emulated: each VMFUNC is an exit) and counts them in
   * `stats.switchesTo`, so "no sub code ran" is checked there too. With hardware
   * switching (vmfunc) nothing exits, the counters stay zero and say nothing.
   */
  observesSwitches: boolean;
  /**
   * What a VMFUNC of the guest's own code does once its attachment (or manager) is gone.
   * 'ud': #UD in the guest (KVM on a VMX host with VM functions off). 'ud-or-host-exit':
   * the emulated backend leaves the guest to its host KVM, which on a host without VMX
   * (AMD, PVM) cannot execute VMFUNC at all and stops the run with an emulation failure
   * at the VMFUNC; on a VMX host it is #UD as above. Either way no gate code runs.
   */
  vmfuncAfterTeardown: 'ud' | 'ud-or-host-exit';
  /** Per-run timeout (Bochs needs far more than KVM on this machine). */
  timeoutMs: number;
  /** Called in the suite's `before` hook (e.g. to skip where the backend cannot run). */
  before?: (ctx: Mocha.Context) => void;
}

/** The weighted sum the args app's sub program computes, computed here independently. */
function argsWeighted(): bigint {
  const a = [0x1000000000000001n, 0x0200000000000020n, 0x0030000000000300n, 0x0004000000004000n, 0x0000500000050000n, 0x0000060000600000n];
  const w = [3n, 5n, 7n, 11n, 13n, 17n];
  return BigInt.asUintN(64, a.reduce((s, x, i) => s + x * w[i]!, 0n));
}

/** The offset in the gate code page of its second `movabs rax, imm64` (48 b8): the re-check after the slot-1 store. */
function gateRecheckOffset(att: Attachment): number {
  const gate = att.contexts.dataPages.gateCode.bytes;
  for (let i = 1; i + 1 < gate.length; i++) if (gate[i] === 0x48 && gate[i + 1] === 0xb8) return i;
  throw new Error('the gate code page has no second movabs rax: the gate layout changed');
}

/** Runs the guest and returns the exception it ended with (fails the test if it ended otherwise). */
function runToFault(guest: ElisaGuest, timeoutMs: number): GuestFault {
  try { guest.run({ timeoutMs }); } catch (err) {
    if (err instanceof GuestFault) return err;
    throw err;
  }
  throw new Error(`guest ${guest.name} ran to completion; expected an exception`);
}

/**
 * Registers the shared behaviour suite for one backend. `makeBackend` is called in hooks
 * and tests (not at registration), so it may return a backend created in an outer
 * `before` (vmfunc: after the kernel variant is loaded).
 */
export function describeElisaBehaviour(name: string, makeBackend: () => Backend, opts: ElisaBehaviourOptions): void {
  describe(`ELISA behaviour shared by every backend: ${name}`, function () {
    this.timeout(Math.max(30_000, opts.timeoutMs * 3));
    const { timeoutMs } = opts;
    let manager: ElisaManager;
    before(function () { opts.before?.(this); });
    beforeEach(() => { manager = ElisaManager.create({ arenaPages: 256, backend: makeBackend() }); });
    afterEach(() => {
      const inUse = manager.allocator.stats().inUse;
      manager.dispose();
      expect(inUse, 'arena pages still in use after the test disposed its guests').to.equal(0);
    });

    const probe = (mode: number, arg = 0n): { guest: ElisaGuest; att: Attachment } => {
      const guest = ElisaGuest.create('probe');
      setGuestU64(guest, 'probe_mode', BigInt(mode));
      setGuestU64(guest, 'probe_arg', arg);
      return { guest, att: manager.attach(guest, { program: 'sub/probe' }) };
    };
    const expectSwitches = (att: Attachment, expected: Record<string, number>): void => {
      if (opts.observesSwitches) expect(att.stats.switchesTo).to.deep.equal(expected);
    };

    it('nop: the guest calls the gate, the sub context returns 1', () => {
      using guest = ElisaGuest.create('nop');
      const att = manager.attach(guest, { program: 'sub/nop' });
      expect(att.backend).to.equal(makeBackend().name);
      const run = guest.run({ timeoutMs });
      expect(run.result).to.equal(1n);
      expect(run.console).to.equal('nop returned 1\n');
      expect(run.exitCode).to.equal(0);
      expectSwitches(att, { default: 1, gate: 1, sub: 1 });
    });

    it('args: all six argument registers arrive, the result comes back, callee-saved registers survive', () => {
      // The guest itself checks RBX, RBP, R12–R15 around the call (a non-zero exit otherwise).
      using guest = ElisaGuest.create('args');
      manager.attach(guest, { program: 'sub/args' });
      const run = guest.run({ timeoutMs });
      expect(run.result).to.equal(argsWeighted());
      expect(run.exitCode).to.equal(0);
    });

    it('shm: two guest VMs increment one shared manager page N times each through their sub contexts: 2N', () => {
      using shared = manager.allocateShared(1);
      const n = 6n;
      using a = ElisaGuest.create('shm', { name: 'shm guest A' });
      using b = ElisaGuest.create('shm', { name: 'shm guest B' });
      const atts = [a, b].map((g) => {
        setGuestU64(g, 'shm_iterations', n);
        return manager.attach(g, { program: 'sub/shm', shared: [{ shared, gva: SHM_GVA }] });
      });
      expect(a.run({ timeoutMs }).result, 'A ran first: it saw 1..N').to.equal(n);
      expect(b.run({ timeoutMs }).result, 'B continued from N').to.equal(2n * n);
      const page = shared.bytes(0);
      expect(new DataView(page.buffer, page.byteOffset, 8).getBigUint64(0, true)).to.equal(2n * n);
      for (const att of atts) expectSwitches(att, { default: Number(n), gate: Number(n), sub: Number(n) });
      for (const att of atts) att.dispose(); // before `shared` is disposed (it refuses while mapped)
    });

    it('after a round trip slot 1 of the EPTP list is empty again and the guest is back in its default context', () => {
      const p = probe(1);
      using guest = p.guest;
      const att = p.att;
      expect(guest.run({ timeoutMs }).result).to.equal(21n); // 1+2+...+6
      expect(att.contexts.eptpList.get(1)).to.equal(0n);
      expect(att.currentContext).to.equal('default');
    });

    describe('invalid gate entries', () => {
      it('entering the gate with IF=1: the gate refuses, returns -1, slot 1 ends empty, no sub code runs', () => {
        const p = probe(3);
        using guest = p.guest;
        const att = p.att;
        expect(guest.run({ timeoutMs }).result).to.equal(MINUS_ONE);
        expect(att.contexts.eptpList.get(1)).to.equal(0n);
        expectSwitches(att, { default: 1, gate: 1, sub: 0 });
      });

      it('jumping into the middle of the gate code (past the slot-1 store) takes the invalid-attempt path: -1, slot 1 empty', () => {
        const p = probe(4);
        using guest = p.guest;
        const att = p.att;
        setGuestU64(guest, 'probe_arg', att.contexts.gva + BigInt(gateRecheckOffset(att)));
        expect(guest.run({ timeoutMs }).result).to.equal(MINUS_ONE);
        expect(att.contexts.eptpList.get(1)).to.equal(0n);
        expectSwitches(att, { default: 1, gate: 1, sub: 0 });
      });

      it('VMFUNC(0, 1) straight from the default context: slot 1 is empty, #UD at the VMFUNC, no sub code runs', () => {
        const p = probe(2);
        using guest = p.guest;
        const att = p.att;
        expect(att.contexts.eptpList.get(1), 'slot 1 before the run').to.equal(0n);
        const fault = runToFault(guest, timeoutMs);
        expect(fault.vector).to.equal(UD);
        // RIP at the VMFUNC itself, in the guest's own (default) context: nothing switched.
        expect(fault.rip).to.equal(guest.symbol('probe_vmfunc_site'));
        expectSwitches(att, { default: 0, gate: 0, sub: 0 });
      });
    });

    describe('teardown', () => {
      // probe mode 6 with ECX = 511, EAX = 0: the VMFUNC that enters the gate, executed by
      // the guest's own code (not the generated top page).
      for (const what of ['attachment', 'manager'] as const) {
        const outcome = opts.vmfuncAfterTeardown === 'ud' ? '#UD' : "#UD, or the host KVM's emulation failure";
        it(`${what} disposed while the guest is attached: the guest's next VMFUNC(0, 511) stops at that VMFUNC (${outcome})`, () => {
          const p = probe(6, 511n);
          using guest = p.guest;
          const att = p.att;
          if (what === 'attachment') att.dispose();
          else manager.dispose();
          const site = guest.symbol('probe_vmfunc_site');
          let end: unknown;
          try { guest.run({ timeoutMs }); } catch (err) { end = err; }
          if (opts.vmfuncAfterTeardown === 'ud-or-host-exit' && end instanceof GuestUnexpectedExit) {
            // The host's KVM could not execute it: the exit names VMFUNC's bytes at the site.
            expect(end.message).to.match(new RegExp(`EMULATION.*instruction bytes 0f01d4.* at RIP 0x${site.toString(16)}$`));
          } else {
            expect(end, 'how the run ended').to.be.instanceOf(GuestFault);
            expect((end as GuestFault).vector).to.equal(UD);
            expect((end as GuestFault).rip).to.equal(site);
          }
          if (what === 'manager') manager = ElisaManager.create({ arenaPages: 256, backend: makeBackend() }); // for afterEach
        });
      }
    });
  });
}
