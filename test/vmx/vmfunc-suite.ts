// The vmfunc backend inside the emulated VT-x host, with real VMFUNC EPTP switching by
// the (Bochs) CPU through our patched kvm_intel. First the behaviour every backend shares
// (test/shared/elisa-behaviour.ts, the same suite npm test runs on the emulated backend:
// nop, args, shm, invalid entries, slot 1, teardown), then what only this backend has:
// detection, VM exits counted in the kernel (debugfs) around every round trip, hostile
// hypercalls. One function, run once per ELISA variant by vmfunc-1-compat.vmx.ts and
// vmfunc-2-hardened.vmx.ts (each swaps the modules in its `before`).
import { expect } from 'chai';
import {
  detectVmfunc, diffCounters, ElisaCall, hypercallOn, KvmHcError, ManagerVm, readExitCounters, VmcsField, VmfuncBackend,
  type ElisaVariant, type ExitCounters,
} from '../../src/elisa/backends/vmfunc';
import { ElisaManager, ElisaGuest } from '../../src/elisa/host';
import { readGuestU64s, setGuestU64 } from '../../src/elisa/host/apps';
import { GuestMemory } from '../../src/kvm';
import { GuestMachine as X86Machine } from '../../src/x86/machine';
import { describeElisaBehaviour } from '../shared/elisa-behaviour';
import { kernelProblems, loadKvmVariant, variantOnDisk } from './inhost';

/** Round trips of the exit-counting bench run (Node is ~70x slower in Bochs: keep it small). */
const BENCH_TRIPS = 300;

/** KVM's per-VM exit counters of the guest (debugfs). */
const counters = (guest: ElisaGuest): ExitCounters => readExitCounters(guest.vm);

/** Registers the whole suite for one variant. */
export function vmfuncSuite(variant: ElisaVariant): void {
  describe(`vmfunc backend on the ${variant} ELISA modules (real EPTP switching)`, function () {
    let backend: VmfuncBackend;
    before(function () {
      if (!variantOnDisk(variant)) this.skip();
      loadKvmVariant(variant);
      backend = new VmfuncBackend({ timeoutMs: 60_000 });
    });

    describeElisaBehaviour(`vmfunc (${variant})`, () => backend, {
      // Switches happen in the CPU without exits: the backend cannot count them.
      observesSwitches: false,
      // The attachment's end empties the EPTP list (hardened also revokes): KVM injects #UD.
      vmfuncAfterTeardown: 'ud',
      timeoutMs: 60_000,
    });

    describe('vmfunc only: detection, zero exits, hostile hypercalls', function () {
      it(`detection: Intel VMX + VMFUNC EPTP switching + kvm_intel elisa_variant = ${variant} → available`, function () {
        const d = detectVmfunc();
        console.log(`ELISA-VMX: NOTE vmfunc detection: ${JSON.stringify(d)}`);
        expect(d.available, d.reason).to.equal(true);
        expect(d.variant).to.equal(variant);
        expect(d.eptpSwitching).to.equal(true);
        expect(backend.variant).to.equal(variant);
      });

      it(`bench: ${BENCH_TRIPS} round trips with no VM exit of their own (KVM's counters around each trip)`, function () {
        using manager = ElisaManager.create({ arenaPages: 256, backend });
        using guest = ElisaGuest.create('bench');
        setGuestU64(guest, 'bench_iterations', BigInt(BENCH_TRIPS));
        const att = manager.attach(guest, { program: 'sub/bench' });
        expect(att.backend).to.equal('vmfunc');
        // The PIO exit that follows each trip is the one place the host sees the guest
        // between trips: read KVM's counters there; between two PIO exits lie exactly one
        // round trip and one PIO exit.
        const samples: ExitCounters[] = [];
        let progressInLoop = 0; // the guest reports progress (port 0x5f2) every 256 trips: one more I/O exit
        const ports = new Map<number, (d: Uint8Array) => void>([
          [0x5f0, () => { samples.push(counters(guest)); }], [0x5f1, () => undefined],
          [0x5f2, () => { if (samples.length >= 1 && samples.length < BENCH_TRIPS) progressInLoop++; }],
        ]);
        const run = guest.run({ timeoutMs: 300_000, ports });
        expect(run.result).to.equal(BigInt(BENCH_TRIPS));
        expect(samples).to.have.length(BENCH_TRIPS);
        let exits = 0n, irq = 0n, pf = 0n, io = 0n, hc = 0n, clean = 0;
        for (let i = 1; i < samples.length; i++) {
          const d = diffCounters(samples[i - 1]!, samples[i]!);
          exits += d.exits; irq += d.irqExits; pf += d.pfTaken; io += d.ioExits; hc += d.hypercalls;
          if (d.exits === 1n) clean++;
        }
        const trips = readGuestU64s(guest, 'bench_trip_cycles', BENCH_TRIPS).map(Number).sort((a, b) => a - b);
        const pios = readGuestU64s(guest, 'bench_pio_cycles', BENCH_TRIPS).map(Number).sort((a, b) => a - b);
        const med = (xs: number[]): number => xs[xs.length >> 1]!;
        const unexplained = exits - io - irq - pf;
        console.log(`ELISA-VMX: NOTE vmfunc ${variant} bench: ${samples.length - 1} trip+PIO intervals: exits=${exits} io=${io} ` +
          `irq=${irq} pf_taken=${pf} hypercalls=${hc} unexplained=${unexplained}; intervals with exactly 1 exit (the PIO): ${clean}; ` +
          `median trip ${med(trips)} TSC cycles, median PIO exit ${med(pios)} cycles, ratio ${(med(trips) / med(pios)).toExponential(2)} ` +
          '(Bochs cycles: shows that no exit happens, says nothing about hardware speed)');
        // Each interval holds one PIO exit; everything else must be host interrupts or
        // first-touch EPT faults of guest RAM (bench arrays), never the round trip itself.
        expect(io, 'port-I/O exits: one PIO per interval, plus the progress reports').to.equal(BigInt(samples.length - 1 + progressInLoop));
        expect(hc, 'hypercalls during the loop').to.equal(0n);
        expect(unexplained, 'exits that are neither the PIO, a host interrupt nor an EPT fault').to.equal(0n);
        expect(clean, 'intervals with no exit besides the PIO').to.be.greaterThan((samples.length - 1) * 0.8);
      });

      it('hostile manager input: an EPTP list outside the manager\'s memory is refused; activation without an offer (compat: the stale global rendezvous)', function () {
        using arena = GuestMemory.memfd(16 * 4096, { name: 'hostile-arena' });
        using mgr = ManagerVm.create(arena, 1n << 35n, { variant, timeoutMs: 60_000 });
        using g = X86Machine.create({ memory: '2M' });
        const guestCall = (c: Parameters<typeof hypercallOn>[3]): bigint => BigInt.asIntN(64, hypercallOn(g.vcpu, g.bytes, 0x100000, c, 60_000));
        const token = guestCall(ElisaCall.vcpuId());
        expect(mgr.call(ElisaCall.setRendezvousVcpu(token))).to.equal(0n);
        // compat names the list by HPA and accepts only pages GPA→HPA handed out; hardened
        // names it by GPA and needs memory there. 0x1000 is neither for a 2 MiB guest's manager.
        const outside = variant === 'compat' ? 0x1000n : 0x7f0000000n;
        const setList = BigInt.asIntN(64, mgr.call(ElisaCall.setRendezvousList(outside)));
        const activate = guestCall(ElisaCall.activate());
        console.log(`ELISA-VMX: NOTE vmfunc ${variant} hostile manager: setList(0x${outside.toString(16)})=${setList} activate-without-offer=${activate}`);
        expect(setList).to.equal(variant === 'compat' ? -BigInt(KvmHcError.EINVAL) : -BigInt(KvmHcError.EFAULT));
        if (variant === 'compat') {
          // The compat hole: the one host-wide rendezvous still names the list of the previous
          // negotiation (an earlier test's, now quarantined): a vCPU whose id matches activates
          // on a list nobody offered it. The hardened variant keys offers by token per manager.
          expect(activate).to.equal(0n);
        } else {
          expect(activate).to.equal(-BigInt(KvmHcError.EPERM));
        }
      });

      it('hijacked rendezvous: a second manager VM offers its own EPTP list to the same guest vCPU after the first (compat: the guest activates on the hijacker\'s list; hardened: offers are per manager, the first one\'s is taken)', function () {
        // The worst case for hardened: the hijacker knows the guest's token (a random 63-bit
        // value it could not guess) and is itself a designated manager. Each manager's list
        // is page 0 of its own arena; slot 0 of a list is where activation writes the
        // guest's EPT pointer, so it says whose list the guest took.
        using arenaA = GuestMemory.memfd(4 * 4096, { name: 'rendezvous-first' });
        using arenaB = GuestMemory.memfd(4 * 4096, { name: 'rendezvous-hijacker' });
        using first = ManagerVm.create(arenaA, 1n << 35n, { variant, timeoutMs: 60_000 });
        using hijacker = ManagerVm.create(arenaB, 1n << 35n, { variant, timeoutMs: 60_000 });
        using g = X86Machine.create({ memory: '2M' });
        const guestCall = (c: Parameters<typeof hypercallOn>[3]): bigint => BigInt.asIntN(64, hypercallOn(g.vcpu, g.bytes, 0x100000, c, 60_000));
        // compat names a list by the HPA GPA→HPA returned; hardened by the manager's own GPA.
        const listOf = (m: ManagerVm): bigint => (variant === 'compat' ? BigInt.asIntN(64, m.call(ElisaCall.gpaToHpa(m.arenaGpa))) : m.arenaGpa);
        const slot0 = (arena: GuestMemory): bigint => { const b = arena.bytes(); return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true); };
        const token = guestCall(ElisaCall.vcpuId());
        const listA = listOf(first), listB = listOf(hijacker);
        // compat: two host pages, two HPAs. hardened: both managers name page 0 of their own
        // arena by the same GPA (1 << 35): only the manager tells the two offers apart.
        expect(listA > 0n && listB > 0n, `list addresses 0x${listA.toString(16)}, 0x${listB.toString(16)}`).to.equal(true);
        if (variant === 'compat') expect(listA, 'the two list HPAs').to.not.equal(listB);
        else expect(listA, 'the two list GPAs').to.equal(listB);
        const offers = [
          first.call(ElisaCall.setRendezvousVcpu(token)), first.call(ElisaCall.setRendezvousList(listA)),
          hijacker.call(ElisaCall.setRendezvousVcpu(token)), hijacker.call(ElisaCall.setRendezvousList(listB)),
        ].map((r) => BigInt.asIntN(64, r));
        const activate = guestCall(ElisaCall.activate());
        const a0 = slot0(arenaA), b0 = slot0(arenaB);
        console.log(`ELISA-VMX: NOTE vmfunc ${variant} hijack: offers=${offers.join(',')} activate=${activate} ` +
          `slot0(first)=0x${a0.toString(16)} slot0(hijacker)=0x${b0.toString(16)}`);
        expect(offers, 'both managers\' set-vCPU and set-list calls are accepted').to.deep.equal([0n, 0n, 0n, 0n]);
        expect(activate).to.equal(0n);
        const isEptp = (e: bigint): boolean => e > 0n && (e & 7n) === 6n; // write-back EPT paging structures
        if (variant === 'compat') {
          // The documented hole: one host-wide rendezvous, the last writer wins.
          expect(isEptp(b0), "the guest's EPT pointer landed in the hijacker's list").to.equal(true);
          expect(a0, "the first manager's list").to.equal(0n);
        } else {
          expect(isEptp(a0), "the guest's EPT pointer landed in the first manager's list").to.equal(true);
          expect(b0, "the hijacker's list").to.equal(0n);
        }
      });

      it('hostile guest: what a non-manager VM gets from GPA→HPA, manager calls and VMCS access', function () {
        using m = X86Machine.create({ memory: '2M' });
        const call = (c: Parameters<typeof hypercallOn>[3]): bigint => BigInt.asIntN(64, hypercallOn(m.vcpu, m.bytes, 0x100000, c, 60_000));
        const gpaToHpa = call(ElisaCall.gpaToHpa(0x100000n));
        const setVcpu = call(ElisaCall.setRendezvousVcpu(12345n));
        const readEptp = call(ElisaCall.vmcsRead(VmcsField.EPT_POINTER));
        const writeEptp = call(ElisaCall.vmcsWrite(VmcsField.EPT_POINTER, 0n));
        const writeHostRip = call(ElisaCall.vmcsWrite(VmcsField.HOST_RIP, 0n));
        console.log(`ELISA-VMX: NOTE vmfunc ${variant} hostile: gpa→hpa=${gpaToHpa} setVcpu=${setVcpu} readEPTP=0x${BigInt.asUintN(64, readEptp).toString(16)} writeEPTP=${writeEptp} writeHOST_RIP=${writeHostRip}`);
        const EPERM = -BigInt(KvmHcError.EPERM), EINVAL = -BigInt(KvmHcError.EINVAL);
        if (variant === 'compat') {
          // The holes the compat variant keeps (documented): any VM learns HPAs, acts as a
          // manager and reads its EPT pointer; control/host-state VMCS writes are refused.
          expect(gpaToHpa > 0n && (gpaToHpa & 0xfffn) === 0n, 'GPA→HPA answered with an HPA').to.equal(true);
          expect(setVcpu).to.equal(0n);
          expect((readEptp & 7n) === 6n && readEptp > 0n, 'EPT pointer disclosed').to.equal(true);
          expect(writeEptp).to.equal(EINVAL);
          expect(writeHostRip).to.equal(EINVAL);
        } else {
          for (const [what, r] of [['GPA→HPA', gpaToHpa], ['set rendezvous vCPU', setVcpu], ['read EPT_POINTER', readEptp],
            ['write EPT_POINTER', writeEptp], ['write HOST_RIP', writeHostRip]] as const) {
            expect(r, what).to.equal(EPERM);
          }
        }
      });

      it('the kernel log has no WARNING/BUG/oops after these tests', function () {
        expect(kernelProblems()).to.deep.equal([]);
      });
    });
  });
}
