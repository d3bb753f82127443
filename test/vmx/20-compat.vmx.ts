// The compat ELISA patch (the original prototype's ABI on Debian's 6.1 kvm_intel),
// swapped in during the same boot: the whole hardware chain, a guest's handshake and
// then real EPTP switching by the (emulated) CPU with no VM exit.
import { expect } from 'chai';
import { GuestMachine } from '../../src/x86/index';
import { elisaVariant, loadKvmVariant, variantOnDisk } from './inhost';
import { Elisa, eptpListSlot, hypercall, KVM_ENOSYS, VmcsField, vmExits, vmfunc } from './probes';

/** Guest-physical page used as the EPTP list (above the probe programs at 1 MiB). */
const LIST_GPA = 0x200000;
/** VMFUNCs in a row in the no-exit check: far more than the exits a run takes anyway. */
const SWITCHES = 2000;

/** True if `eptp` is a 4-level, write-back EPT pointer (SDM 25.6.11) with a root set. */
function isWriteBackEptp4(eptp: bigint): boolean {
  return (eptp & 7n) === 6n && ((eptp >> 3n) & 7n) === 3n && (eptp >> 12n) !== 0n;
}

describe('compat ELISA modules (original ABI), swapped in', function () {
  before(function () {
    // Left out on purpose (ELISA_VMX_VARIANTS); a failed build stops the e2e script instead.
    if (!variantOnDisk('compat')) this.skip();
    loadKvmVariant('compat');
  });

  it('load, and kvm_intel reports elisa_variant = compat', function () {
    expect(elisaVariant()).to.equal('compat');
  });

  it('answer 1001/3/1 with a vCPU identifier (a host kernel address), not -KVM_ENOSYS', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    const id = await hypercall(m, Elisa.vcpuId());
    expect(id).to.not.equal(KVM_ENOSYS);
    expect(BigInt.asUintN(64, id) >= 0xffff800000000000n, `0x${BigInt.asUintN(64, id).toString(16)} is a kernel address`).to.equal(true);
  });

  it('let any guest read its VMCS EPT pointer with 1000/2/1 (a hole the hardened variant closes)', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    const eptp = BigInt.asUintN(64, await hypercall(m, Elisa.vmcsRead(VmcsField.EPT_POINTER)));
    expect(isWriteBackEptp4(eptp), `EPTP 0x${eptp.toString(16)}`).to.equal(true);
  });

  describe('after the guest-side handshake (set id, set list, activate)', function () {
    let m: GuestMachine;
    let eptp: bigint;

    before(async function () {
      m = GuestMachine.create({ memory: '4M' });
      // Order matters (shared/docs/VTX-HOST.md): id, list, then activate, on the vCPU
      // that will switch, while it is on its own EPT. The compat patch leaves RAX
      // untouched for 1001/2/x and 1001/3/2, so their "result" is meaningless.
      const id = await hypercall(m, Elisa.vcpuId());
      await hypercall(m, Elisa.setRendezvousVcpu(id));
      const listHpa = await hypercall(m, Elisa.gpaToHpa(LIST_GPA));
      expect(listHpa > 0n && (listHpa & 0xfffn) === 0n, `list HPA 0x${listHpa.toString(16)}`).to.equal(true);
      await hypercall(m, Elisa.setRendezvousList(listHpa));
      await hypercall(m, Elisa.activate());
      eptp = BigInt.asUintN(64, await hypercall(m, Elisa.vmcsRead(VmcsField.EPT_POINTER)));
    });
    after(function () { m?.dispose(); });

    it('the host wrote the vCPU\'s own EPT pointer into slot 0 of the list, and nothing else', function () {
      expect(isWriteBackEptp4(eptp), `VMCS EPTP 0x${eptp.toString(16)}`).to.equal(true);
      expect(eptpListSlot(m, LIST_GPA, 0)).to.equal(eptp);
      for (const i of [1, 2, 510, 511]) expect(eptpListSlot(m, LIST_GPA, i), `slot ${i}`).to.equal(0n);
    });

    it(`VMFUNC(0, 0) ${SWITCHES} times in a row completes with no VM exit per VMFUNC`, async function () {
      const before = vmExits(m.vm);
      expect(await vmfunc(m, 0, SWITCHES)).to.deep.equal({ kind: 'completed' });
      const exits = vmExits(m.vm) - before;
      // A run takes a handful of exits (the exit port, maybe a timer interrupt); a
      // VMFUNC that exited would add one per iteration.
      expect(Number(exits), `KVM counted ${exits} exits for ${SWITCHES} VMFUNCs`).to.be.below(50);
    });

    it('VMFUNC(0, 1) to an empty slot ends in #UD (VMFUNC exit, reflected by KVM)', async function () {
      expect(await vmfunc(m, 1)).to.deep.equal({ kind: 'fault', mnemonic: '#UD', atVmfunc: true });
    });
  });
});
