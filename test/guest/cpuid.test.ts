// The machine hands the vCPU the CPUID KVM supports (KVM_GET_SUPPORTED_CPUID → KVM_SET_CPUID2).
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { Kvm } from '../../src/kvm/index';
import { runGuestProgram } from '../../src/x86/machine';
import { requireKvm } from '../support/kvm';

describe('guest CPUID', function () {
  before(function () { requireKvm(this); });

  it('the guest sees the host vendor and the leaves KVM_GET_SUPPORTED_CPUID reports', async function () {
    const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))![1];
    using kvm = Kvm.open();
    const leaves = kvm.supportedCpuid();
    const leaf0 = leaves.find((e) => e.function === 0)!;
    const leaf1 = leaves.find((e) => e.function === 1)!;
    const r = await runGuestProgram('cpuid');
    expect(r.console).to.equal(`vendor ${vendor} max-leaf ${leaf0.eax}\nsignature 0x${(leaf1.eax >>> 0).toString(16)}\n`);
    // Leaf 1's feature bits are not compared: KVM adjusts some at run time (OSXSAVE,
    // APIC), and the PVM flavour on our machines reports the host's own bits there.
  });
});
