// Security and failure behaviour of the emulated backend on real KVM (issue 6): what a
// hostile or buggy guest can do to the gate, what happens when the sub program fails,
// and which bad attach requests are refused. The probe guest (native/guest/apps/probe)
// does one thing per probe_mode.
import { readdirSync, readFileSync } from 'node:fs';
import { expect } from 'chai';
import { requireKvm } from '../support/kvm';
import {
  AttachError, CONTEXT_BASE_GPA, ElisaManager, ElisaGuest, PROGRAM_BASE_GPA, type Attachment,
} from '../../src/elisa/host';
import { ContextExitError, slotsFromEpt, VMFUNC_TRAP_BYTES } from '../../src/elisa/backends/emulated';
import { setGuestU64 } from '../../src/elisa/host/apps';
import { walk2d } from '../../src/elisa/walk';
import { GuestFault, GuestUnexpectedExit } from '../../src/x86/errors';
import { parseElf } from '../../src/x86/elf';
import { guestProgramPath } from '../../src/x86/programs';

const MINUS_ONE = (1n << 64n) - 1n;
/** Offset of XSTATE_BV (the XSAVE header's in-use bitmap) in a KVM_GET_XSAVE image. */
const XSAVE_XSTATE_BV = 512;
/** Offset of XMM0 in the legacy (FXSAVE) region of a KVM_GET_XSAVE image. */
const XSAVE_XMM0 = 160;

function probe(manager: ElisaManager, mode: number, arg = 0n, entry?: string): { guest: ElisaGuest; att: Attachment } {
  const guest = ElisaGuest.create('probe');
  setGuestU64(guest, 'probe_mode', BigInt(mode));
  setGuestU64(guest, 'probe_arg', arg);
  const att = manager.attach(guest, { program: 'sub/probe', ...(entry ? { entry } : {}) });
  return { guest, att };
}

function expectThrows<T extends Error>(fn: () => unknown, type: new (...a: never[]) => T): T {
  try { fn(); } catch (err) {
    expect(err).to.be.instanceOf(type);
    return err as T;
  }
  throw new Error(`expected a ${type.name}, nothing was thrown`);
}

describe('emulated backend: apps, security and failures', function () {
  this.timeout(60_000);
  let manager: ElisaManager;
  let fds = 0;
  before(function () { requireKvm(this); });
  beforeEach(() => {
    fds = readdirSync('/proc/self/fd').length;
    manager = ElisaManager.create({ arenaPages: 1024 });
  });
  afterEach(() => {
    // Every test disposes what it attached, whatever happened to the guest: the arena
    // must be back to empty and every VM, vCPU and memfd closed.
    const inUse = manager.allocator.stats().inUse;
    manager.dispose();
    expect(inUse, 'arena pages still in use after the test').to.equal(0);
    // At most as many as before (a worker thread of an earlier suite may still be closing its own).
    expect(readdirSync('/proc/self/fd').length, 'file descriptors left open by the test').to.be.at.most(fds);
  });

  // args, IF=1 and jump-into-the-gate entries, VMFUNC(0,1) from the default context and
  // slot 1 after a round trip: test/shared/elisa-behaviour.ts (run for every backend).

  it('the generated VMFUNCs are rewritten to port-I/O traps in the guest and context pages', () => {
    const { guest, att } = probe(manager, 1);
    try {
      const mem = guest.memory.bytes();
      const top = att.contexts.vmfuncSites.filter((s) => s.page === 'top');
      expect(top).to.have.length(1);
      expect(Array.from(mem.subarray(Number(top[0]!.gva), Number(top[0]!.gva) + 3))).to.deep.equal([...VMFUNC_TRAP_BYTES]);
      for (const s of att.contexts.vmfuncSites.filter((x) => x.page === 'gate')) {
        expect(Array.from(att.contexts.dataPages.gateCode.bytes.subarray(s.offset, s.offset + 3))).to.deep.equal([...VMFUNC_TRAP_BYTES]);
      }
      expect(guest.run().result).to.equal(21n); // 1+2+...+6
    } finally { guest.dispose(); }
  });

  it('VMFUNC(0,1) straight from the default context is recorded as a refused foreign VMFUNC with its reason', () => {
    const { guest, att } = probe(manager, 2);
    try {
      expectThrows(() => guest.run(), GuestFault);
      expect(att.stats.failures).to.have.length(1);
      expect(att.stats.failures[0]).to.include({ from: 'default', trap: 'foreign' });
      expect(att.stats.failures[0]!.failure).to.match(/entry 1 is empty/);
    } finally { guest.dispose(); }
  });

  for (const [what, arg, why] of [
    ['EAX = 1 (no VM function 1)', (1n << 32n) | 0n, /EAX = 0x1/],
    ['ECX = 512 (past the list)', 512n, /ECX = 0x200/],
    ['ECX = 7 (an empty slot)', 7n, /entry 7 is empty/],
  ] as const) {
    it(`VMFUNC with ${what} fails with #UD in the default context`, () => {
      const { guest, att } = probe(manager, 6, arg);
      try {
        const err = expectThrows(() => guest.run(), GuestFault);
        expect(err.vector).to.equal(6);
        expect(err.rip).to.equal(guest.symbol('probe_vmfunc_site'));
        expect(att.stats.failures[0]!.failure).to.match(why);
      } finally { guest.dispose(); }
    });
  }

  it('a foreign VMFUNC(0,511) switches to the gate context, where its RIP is unmapped: reported with context and RIP', () => {
    const { guest, att } = probe(manager, 6, 511n);
    try {
      const err = expectThrows(() => guest.run(), ContextExitError);
      expect(err.context).to.equal('gate');
      expect(err.vcpu).to.equal(0);
      expect(err.rip).to.equal(guest.symbol('probe_vmfunc_site') + 3n);
      expect(err.message).to.match(/shutdown/);
      expect(att.stats.switchesTo.gate).to.equal(1);
      // Terminated cleanly: the next run says so instead of running on.
      expect(() => guest.run()).to.throw(/terminated earlier/);
    } finally { guest.dispose(); }
  });

  it('after a round trip the sub memory is not mapped in the default context', () => {
    const { guest, att } = probe(manager, 1);
    try {
      expect(guest.run().result).to.equal(21n);
      // Oracle: the software 2-D walk of the sub entry GVA in the sub context finds the
      // arena page the backend's slot for that GPA is backed by.
      const sub = att.contexts.sub;
      const walk = walk2d({ mem: manager.allocator, eptp: sub.eptp, cr3: sub.ptRootGpa, levels: 4 }, att.subEntry, { fetch: true });
      expect(walk.kind).to.equal('ok');
      if (walk.kind !== 'ok') return;
      const slots = slotsFromEpt(att.contexts, 'sub', manager);
      const slot = slots.find((s) => walk.gpa >= s.gpa && walk.gpa < s.gpa + BigInt(s.size))!;
      expect(BigInt(slot.offset) + (walk.gpa - slot.gpa) + manager.allocator.base).to.equal(walk.hpa);
      // None of the sub context's GPAs is backed in the guest's own VM.
      for (const r of guest.vm.memoryRegions) {
        for (const s of slots) expect(s.gpa >= r.guestPhysAddr + BigInt(r.size) || s.gpa + BigInt(s.size) <= r.guestPhysAddr).to.equal(true);
      }
    } finally { guest.dispose(); }
    // And the guest itself cannot reach them: reading the sub program's GPA is an MMIO exit.
    for (const gpa of [PROGRAM_BASE_GPA, CONTEXT_BASE_GPA, manager.allocator.base]) {
      const p = probe(manager, 5, gpa);
      try {
        const err = expectThrows(() => p.guest.run(), GuestUnexpectedExit);
        expect(err.reason).to.equal('mmio');
        expect(err.message).to.contain(`0x${gpa.toString(16)}`);
      } finally { p.guest.dispose(); }
    }
  });

  it('a VMFUNC(0,0) of the sub program itself switches to the default context at the next GVA, which the guest does not map: #PF reported', () => {
    const { guest, att } = probe(manager, 1, 0n, 'probe_leave_early');
    const sub = parseElf(readFileSync(guestProgramPath('sub/probe')), 'sub/probe');
    const site = BigInt(sub.symbols.get('probe_own_vmfunc')!.value);
    try {
      const err = expectThrows(() => guest.run(), GuestFault);
      expect(err.vector).to.equal(14);
      expect(err.rip).to.equal(site + 3n);
      expect(err.cr2).to.equal(site + 3n);
      expect(att.stats.switchesTo).to.deep.equal({ default: 1, gate: 1, sub: 1 });
      expect(att.currentContext).to.equal('default');
      // The sub code's first instruction emptied slot 1, whatever the program did next.
      expect(att.contexts.eptpList.get(1)).to.equal(0n);
    } finally { guest.dispose(); }
  });

  it('the APT follows the CR3 in force: after the guest switches page tables the gate still works', () => {
    const { guest, att } = probe(manager, 8);
    try {
      expect(guest.run().result).to.equal(21n + 210n);
      expect(att.stats.aptMoves).to.equal(1);
      expect(att.stats.switchesTo.sub).to.equal(2);
    } finally { guest.dispose(); }
  });

  it('a fault in the sub program is reported with context, vCPU and RIP; the guest is terminated, not wedged', () => {
    const { guest } = probe(manager, 1, 0n, 'probe_fault');
    const sub = parseElf(readFileSync(guestProgramPath('sub/probe')), 'sub/probe');
    const fault = sub.symbols.get('probe_fault')!;
    try {
      const err = expectThrows(() => guest.run(), ContextExitError);
      expect(err.context).to.equal('sub');
      expect(err.vcpu).to.equal(0);
      expect(Number(err.rip)).to.be.within(fault.value, fault.value + fault.size - 1);
      expect(err.message).to.match(/sub context of guest vCPU 0 stopped: shutdown/);
      expect(() => guest.run()).to.throw(/terminated earlier/);
      // Detaching does not make the half-run guest runnable again.
      manager.dispose();
      expect(() => guest.run()).to.throw(/terminated earlier: the sub context of vCPU 0 stopped/);
      manager = ElisaManager.create({ arenaPages: 1024 });
    } finally { guest.dispose(); }
  });

  it('a run that times out inside the sub context is reported as such', () => {
    const { guest, att } = probe(manager, 1, 0n, 'probe_spin');
    try {
      const err = expectThrows(() => guest.run({ timeoutMs: 300 }), ContextExitError);
      expect(err.context).to.equal('sub');
      expect(err.message).to.match(/timed out while the guest was inside this context/);
      expect(att.currentContext).to.equal('sub');
    } finally { guest.dispose(); }
  });

  describe('on a host whose CPU raises #UD for VMFUNC (simulated: the #UD is injected instead of handled)', () => {
    it('a foreign VMFUNC(0,511) is recognised by its #UD report and carried out: jump-into-gate still ends in -1', () => {
      const guest = ElisaGuest.create('probe');
      const att = manager.attach(guest, { program: 'sub/probe', simulateUdHost: true });
      const gate = att.contexts.dataPages.gateCode.bytes;
      let recheck = -1;
      for (let i = 1; i + 1 < gate.length; i++) if (gate[i] === 0x48 && gate[i + 1] === 0xb8) { recheck = i; break; }
      setGuestU64(guest, 'probe_mode', 4n);
      setGuestU64(guest, 'probe_arg', att.contexts.gva + BigInt(recheck));
      try {
        expect(guest.run().result).to.equal(MINUS_ONE);
        expect(att.stats.switchesTo).to.deep.equal({ default: 1, gate: 1, sub: 0 });
        expect(att.contexts.eptpList.get(1)).to.equal(0n);
      } finally { guest.dispose(); }
    });

    it('a VMFUNC that must fail leaves the guest its #UD, recorded as such', () => {
      const guest = ElisaGuest.create('probe');
      const att = manager.attach(guest, { program: 'sub/probe', simulateUdHost: true });
      setGuestU64(guest, 'probe_mode', 2n);
      try {
        const err = expectThrows(() => guest.run(), GuestFault);
        expect(err.vector).to.equal(6);
        expect(err.rip).to.equal(guest.symbol('probe_vmfunc_site'));
        expect(att.stats.failures).to.have.length(1);
        expect(att.stats.failures[0]).to.include({ from: 'default', trap: 'ud' });
      } finally { guest.dispose(); }
    });
  });

  it('FPU state stays per context by default and moves with every switch under moveFpu (x87 control and status words)', () => {
    // The host gives the guest's vCPU an x87 state FNINIT would never produce (round toward
    // zero, single precision, TOP = 7, PE set) before attaching: the gate and sub VMs get a
    // copy of it. The guest then executes FNINIT (0x037f, status 0) and enters the sub
    // context, which reads both words with FNSTCW/FNSTSW. x87 rather than SSE because the
    // KVM emulator (this project's hosts emulate every guest instruction) handles FNINIT,
    // FNSTCW and FNSTSW but no SSE register move; the backend copies the whole XSAVE image
    // (x87 and SSE alike). The state is set and read as an XSAVE image because KVM_SET_FPU
    // does not mark x87 in use (the guest would still see 0x037f) and KVM_GET_FPU goes stale
    // after FNINIT.
    const HOST_FCW = 0x0c7f;
    const HOST_FSW = 0x3820;
    const FNINIT_FCW = 0x037f;
    const x87Words = (area: Uint8Array) => {
      const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
      // XSTATE_BV bit 0 clear: x87 is in its initial state, whatever the legacy region says
      const inUse = (v.getBigUint64(XSAVE_XSTATE_BV, true) & 1n) !== 0n;
      return inUse ? { fcw: v.getUint16(0, true), fsw: v.getUint16(2, true) } : { fcw: FNINIT_FCW, fsw: 0 };
    };
    for (const moveFpu of [false, true]) {
      using guest = ElisaGuest.create('probe');
      setGuestU64(guest, 'probe_mode', 9n);
      const area = guest.vcpu.getXsave();
      const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
      v.setUint16(0, HOST_FCW, true);
      v.setUint16(2, HOST_FSW, true);
      v.setBigUint64(XSAVE_XSTATE_BV, v.getBigUint64(XSAVE_XSTATE_BV, true) | 1n, true);
      guest.vcpu.setXsave(area);
      expect(x87Words(guest.vcpu.getXsave())).to.deep.equal({ fcw: HOST_FCW, fsw: HOST_FSW });
      manager.attach(guest, { program: 'sub/probe', entry: 'probe_fpu_control', moveFpu });
      const seen = guest.run().result!;
      const words = { fcw: Number(seen & 0xffffn), fsw: Number((seen >> 16n) & 0xffffn) };
      // Without moveFpu the sub context sees the state copied at attach, not the caller's.
      expect(words, `moveFpu ${moveFpu}`).to.deep.equal(moveFpu ? { fcw: FNINIT_FCW, fsw: 0 } : { fcw: HOST_FCW, fsw: HOST_FSW });
      // The guest's own state is the one its FNINIT made, in both cases.
      expect(x87Words(guest.vcpu.getXsave()), `guest after the run, moveFpu ${moveFpu}`).to.deep.equal({ fcw: FNINIT_FCW, fsw: 0 });
    }
  });

  it('SSE state stays per context by default and moves with every switch under moveFpu (xmm0)', () => {
    // As above with xmm0: the host puts HOST_XMM0 into the guest's xmm0 before attaching
    // (as an XSAVE image, SSE marked in use), the guest loads probe_arg into xmm0 (MOVDQU,
    // which KVM's emulator handles) and calls the sub entry probe_xmm0 (MOVDQU to memory).
    const HOST_XMM0 = 0x0123_4567_89ab_cdefn;
    const value = 0x1234_5678_9abc_def0n;
    for (const moveFpu of [false, true]) {
      using guest = ElisaGuest.create('probe');
      setGuestU64(guest, 'probe_mode', 7n);
      setGuestU64(guest, 'probe_arg', value);
      const area = guest.vcpu.getXsave();
      const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
      v.setBigUint64(XSAVE_XMM0, HOST_XMM0, true);
      v.setBigUint64(XSAVE_XSTATE_BV, v.getBigUint64(XSAVE_XSTATE_BV, true) | 2n, true);
      guest.vcpu.setXsave(area);
      manager.attach(guest, { program: 'sub/probe', entry: 'probe_xmm0', moveFpu });
      // Without moveFpu the sub context sees the xmm0 copied at attach, not the caller's.
      expect(guest.run().result, `moveFpu ${moveFpu}`).to.equal(moveFpu ? value : HOST_XMM0);
      const after = guest.vcpu.getXsave();
      expect(new DataView(after.buffer, after.byteOffset).getBigUint64(XSAVE_XMM0, true), "the guest's own xmm0 after the run").to.equal(value);
    }
  });

  describe('bad attach requests', () => {
    it('refuses a gate region that is not page aligned', () => {
      using guest = ElisaGuest.create('probe');
      expect(() => manager.attach(guest, { program: 'sub/probe', gateRegion: guest.symbol('elisa_gate_region') + 0x10n }))
        .to.throw(AttachError, /not 4 KiB aligned/);
    });
    it("refuses a gate region overlapping the guest's own mappings", () => {
      using guest = ElisaGuest.create('probe');
      expect(() => manager.attach(guest, { program: 'sub/probe', gateRegion: 0x100000n }))
        .to.throw(AttachError, /overlaps the guest's own mappings \(program segment \[0x100000/);
      expect(() => manager.attach(guest, { program: 'sub/probe', gateRegion: 0x4000n }))
        .to.throw(AttachError, /host-reserved first MiB/);
    });
    it('refuses a program without the entry symbol', () => {
      using guest = ElisaGuest.create('probe');
      expect(() => manager.attach(guest, { program: 'sub/probe', entry: 'no_such_function' }))
        .to.throw(AttachError, /has no symbol 'no_such_function'/);
      expect(() => manager.attach(guest, { program: new Uint8Array(64) })).to.throw(AttachError, /sub program/);
    });
    it('refuses a second attachment on the same vCPU', () => {
      using guest = ElisaGuest.create('probe');
      manager.attach(guest, { program: 'sub/probe' });
      expect(() => manager.attach(guest, { program: 'sub/probe' })).to.throw(AttachError, /already has a sub context attached/);
    });
    it('refuses a guest program that reserves no gate region', () => {
      using guest = ElisaGuest.create('hello');
      expect(() => manager.attach(guest, { program: 'sub/probe' })).to.throw(AttachError, /elisa_gate_entry_gva/);
    });
  });
});
