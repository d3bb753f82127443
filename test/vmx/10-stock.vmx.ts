// The emulated VT-x host with Debian's stock KVM modules: proves each link of the chain
// that the ELISA hardware backend stands on (CPU features, KVM, our addon).
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { Kvm } from '../../src/kvm/index';
import { native } from '../../src/kvm/native';
import { GuestMachine } from '../../src/x86/index';
import { bitSet, moduleLoaded, moduleParam, readMsr } from './inhost';
import { hypercall, KVM_ENOSYS, vmfunc } from './probes';

describe('emulated VT-x host, stock KVM', function () {
  it('is an Intel CPU with VMX (CPUID as seen by the kernel)', function () {
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    expect(cpuinfo).to.match(/^vendor_id\s*:\s*GenuineIntel$/m);
    expect(cpuinfo).to.match(/^flags\s*:.*\bvmx\b/m);
  });

  it('offers VMX with EPT, unrestricted guest and VM functions (MSR 0x482, 0x48B)', function () {
    // IA32_VMX_PROCBASED_CTLS: allowed-1 settings are the high dword; bit 31 of the
    // controls = "activate secondary controls".
    expect(bitSet(readMsr(0x482), 32 + 31), 'secondary controls allowed').to.equal(true);
    // IA32_VMX_PROCBASED_CTLS2 allowed-1: bit 1 EPT, bit 7 unrestricted guest,
    // bit 13 "enable VM functions" (SDM Vol. 3 A.3.3).
    const ctls2 = readMsr(0x48b);
    expect(bitSet(ctls2, 32 + 1), 'enable EPT allowed').to.equal(true);
    expect(bitSet(ctls2, 32 + 7), 'unrestricted guest allowed').to.equal(true);
    expect(bitSet(ctls2, 32 + 13), 'enable VM functions allowed (bit 45)').to.equal(true);
  });

  it('offers VMFUNC function 0, EPTP switching, with 4-level write-back EPTs (MSR 0x491, 0x48C)', function () {
    // IA32_VMX_VMFUNC exists only when VM functions can be enabled; bit 0 = EPTP switching.
    expect(bitSet(readMsr(0x491), 0), 'EPTP switching').to.equal(true);
    // IA32_VMX_EPT_VPID_CAP: bit 6 = page-walk length 4, bit 14 = WB memory type for EPT structures.
    const cap = readMsr(0x48c);
    expect(bitSet(cap, 6), '4-level EPT').to.equal(true);
    expect(bitSet(cap, 14), 'write-back EPT paging structures').to.equal(true);
  });

  it('has VMX switched on by the firmware/kernel (IA32_FEATURE_CONTROL 0x3A: locked, VMX outside SMX)', function () {
    const fc = readMsr(0x3a);
    expect(bitSet(fc, 0), 'lock bit').to.equal(true);
    expect(bitSet(fc, 2), 'VMX outside SMX').to.equal(true);
  });

  it('runs stock kvm_intel with EPT and unrestricted guest enabled', function () {
    expect(moduleLoaded('kvm_intel'), 'kvm_intel loaded').to.equal(true);
    expect(moduleParam('kvm_intel', 'ept')).to.equal('Y');
    expect(moduleParam('kvm_intel', 'unrestricted_guest')).to.equal('Y');
  });

  it('opens /dev/kvm through our addon: KVM_GET_API_VERSION = 12', function () {
    using kvm = Kvm.open();
    expect(native.getApiVersion(kvm.fd)).to.equal(12);
  });

  it('reports VM functions with EPTP switching through KVM\'s feature-MSR interface (nested VMX)', function () {
    // With nested=Y, KVM offers its guests the VMX capabilities the CPU has, VMFUNC
    // EPTP switching included; reading them through our addon cross-checks the MSRs.
    expect(moduleParam('kvm_intel', 'nested')).to.equal('Y');
    using kvm = Kvm.open();
    const list = kvm.msrFeatureIndexList();
    expect(list).to.include.members([0x48b, 0x491]);
    const [ctls2, vmfuncCtls] = kvm.getFeatureMsrs([0x48b, 0x491]);
    expect(bitSet(ctls2!, 32 + 13), 'enable VM functions (bit 45 of 0x48B)').to.equal(true);
    expect(bitSet(vmfuncCtls!, 0), 'EPTP switching (bit 0 of 0x491)').to.equal(true);
  });

  it('runs a long-mode KVM guest whose unknown hypercall 1001/3/1 returns -KVM_ENOSYS (-1000)', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    expect(await hypercall(m, { nr: 1001, rbx: 3, rcx: 1 })).to.equal(KVM_ENOSYS);
  });

  it('injects #UD for a guest VMFUNC (stock KVM does not enable VM functions for its guests)', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    expect(await vmfunc(m)).to.deep.equal({ kind: 'fault', mnemonic: '#UD', atVmfunc: true });
  });
});
