// The hardened ELISA patch, swapped in during the same boot: manager operations only
// for designated manager VMs, no VMCS access beyond RFLAGS, and the manager/guest
// handshake across two VMs ending in real EPTP switching with no VM exit.
import { expect } from 'chai';
import { existsSync, writeFileSync } from 'node:fs';
import { GuestMachine } from '../../src/x86/index';
import { elisaVariant, loadKvmVariant, variantOnDisk } from './inhost';
import { Elisa, eptpListSlot, hypercall, KVM_ENOSYS, KVM_EPERM, VmcsField, vmExits, vmfunc } from './probes';

const MANAGER_PIDS = '/sys/module/kvm_intel/parameters/elisa_manager_pids';
/** Guest-physical page of the manager VM used as the EPTP list. */
const LIST_GPA = 0x200000;
const SWITCHES = 2000;

describe('hardened ELISA modules, swapped in', function () {
  before(function () {
    // Left out on purpose (ELISA_VMX_VARIANTS); a failed build stops the e2e script instead.
    if (!variantOnDisk('hardened')) this.skip();
    loadKvmVariant('hardened');
  });
  after(function () { if (existsSync(MANAGER_PIDS)) writeFileSync(MANAGER_PIDS, '0'); });

  it('load, and kvm_intel reports elisa_variant = hardened', function () {
    expect(elisaVariant()).to.equal('hardened');
  });

  it('refuse manager hypercalls from a VM that is no manager: -KVM_EPERM', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    expect(await hypercall(m, Elisa.gpaToHpa(LIST_GPA)), 'GPA→HPA').to.equal(KVM_EPERM);
    expect(await hypercall(m, Elisa.setRendezvousVcpu(1n)), 'set rendezvous vCPU').to.equal(KVM_EPERM);
    expect(await hypercall(m, Elisa.setRendezvousList(LIST_GPA)), 'set rendezvous list').to.equal(KVM_EPERM);
  });

  it('refuse guest VMCS access other than RFLAGS (EPT pointer, host RIP): -KVM_EPERM', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    expect(await hypercall(m, Elisa.vmcsRead(VmcsField.EPT_POINTER)), 'read EPTP').to.equal(KVM_EPERM);
    expect(await hypercall(m, Elisa.vmcsWrite(VmcsField.EPT_POINTER, 0n)), 'write EPTP').to.equal(KVM_EPERM);
    expect(await hypercall(m, Elisa.vmcsWrite(VmcsField.HOST_RIP, 0n)), 'write HOST_RIP').to.equal(KVM_EPERM);
  });

  it('give a guest vCPU a stable token (1001/3/1) instead of a host address', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    const a = await hypercall(m, Elisa.vcpuId());
    const b = await hypercall(m, Elisa.vcpuId());
    expect(a).to.not.equal(KVM_ENOSYS);
    expect(a > 0n, `token ${a} is positive (no error, no kernel address)`).to.equal(true);
    expect(b).to.equal(a);
  });

  it(`let a designated manager VM offer an EPTP list that a guest VM activates; VMFUNC(0, 0) × ${SWITCHES} without exits`, async function () {
    // Designate this process: VMs it creates from now on are managers (the guest VM too,
    // which does not matter here: it only uses guest operations).
    writeFileSync(MANAGER_PIDS, String(process.pid));
    using manager = GuestMachine.create({ memory: '4M' });
    using guest = GuestMachine.create({ memory: '4M' });
    const token = await hypercall(guest, Elisa.vcpuId());
    expect(await hypercall(manager, Elisa.setRendezvousVcpu(token)), 'manager: set vCPU token').to.equal(0n);
    expect(await hypercall(manager, Elisa.setRendezvousList(LIST_GPA)), 'manager: offer list (GPA)').to.equal(0n);
    expect(await hypercall(guest, Elisa.activate()), 'guest: activate').to.equal(0n);
    const slot0 = eptpListSlot(manager, LIST_GPA, 0);
    expect((slot0 & 7n) === 6n && (slot0 >> 12n) !== 0n, `slot 0 = 0x${slot0.toString(16)} is a WB EPT pointer`).to.equal(true);
    const before = vmExits(guest.vm);
    expect(await vmfunc(guest, 0, SWITCHES)).to.deep.equal({ kind: 'completed' });
    const exits = vmExits(guest.vm) - before;
    expect(Number(exits), `KVM counted ${exits} exits for ${SWITCHES} VMFUNCs`).to.be.below(50);
    expect(await vmfunc(guest, 1), 'VMFUNC(0, 1), empty slot').to.deep.equal({ kind: 'fault', mnemonic: '#UD', atVmfunc: true });
  });
});
