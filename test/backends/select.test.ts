// Backend selection: auto prefers the hardware backend when one is registered and
// available, else the emulated one, and says why; forcing an unavailable backend fails
// with the reason.
import { expect } from 'chai';
import { selectBackend } from '../../src/elisa/host';
import { requireKvm } from '../support/kvm';
import {
  BackendUnavailableError, registerVmfuncBackend, vmfuncAvailability, type Backend,
} from '../../src/elisa/backends/backend';

const AMD_CPUINFO = 'vendor_id\t: AuthenticAMD\nflags\t\t: fpu vme de pse svm npt\n';
const INTEL_NO_VMFUNC = 'vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx ept\nvmx flags\t: vnmi preemption_timer ept_ad\n';
const INTEL_VMFUNC = 'vendor_id\t: GenuineIntel\nflags\t\t: fpu vmx ept\nvmx flags\t: vnmi ept_ad vmfunc\n';

describe('backend selection', () => {
  afterEach(() => registerVmfuncBackend(undefined));

  it('explains from /proc/cpuinfo why VMFUNC is missing', () => {
    expect(vmfuncAvailability(AMD_CPUINFO)).to.deep.include({ available: false });
    expect(vmfuncAvailability(AMD_CPUINFO).reason).to.match(/AuthenticAMD.*no VMX.*AMD SVM has no VMFUNC/);
    // With VMX in cpuinfo the decision moves on to kvm_intel, the VMX MSRs and the ELISA
    // variant (src/elisa/backends/vmfunc/availability.ts, tested in test/elisa/vmfunc.test.ts):
    // whatever this host answers there, it is no longer the missing-VMX reason.
    for (const intel of [INTEL_NO_VMFUNC, INTEL_VMFUNC]) {
      expect(vmfuncAvailability(intel).reason).to.not.match(/exposes no VMX/);
    }
  });

  it('auto falls back to emulated with the reason; vmfunc fails with it (on a VMFUNC host: auto takes vmfunc)', function () {
    requireKvm(this);
    const vmfunc = vmfuncAvailability();
    const s = selectBackend('auto');
    if (vmfunc.available) {
      // A host with VMFUNC and a vmfunc backend wired in: auto takes it, saying why.
      expect(s.backend.name).to.equal('vmfunc');
      expect(s.why).to.equal(`VMFUNC available: ${vmfunc.reason}`);
      expect(selectBackend('vmfunc').why).to.equal('requested with --backend vmfunc');
    } else {
      expect(s.backend.name).to.equal('emulated');
      expect(s.why).to.equal(`vmfunc unavailable: ${vmfunc.reason}`);
      expect(() => selectBackend('vmfunc')).to.throw(BackendUnavailableError, /the vmfunc backend cannot run here/);
    }
    expect(selectBackend('emulated').why).to.equal('requested with --backend emulated');
    expect(() => selectBackend('bogus' as never)).to.throw(BackendUnavailableError, /unknown backend 'bogus'/);
  });

  it('auto takes a registered, available vmfunc backend', function () {
    requireKvm(this);
    const fake = { name: 'vmfunc', attach: () => { throw new Error('not in this test'); } } as unknown as Backend;
    registerVmfuncBackend({ availability: () => ({ name: 'vmfunc', available: true, reason: 'test provider' }), create: () => fake });
    expect(selectBackend('auto').backend).to.equal(fake);
    expect(selectBackend('vmfunc').why).to.equal('requested with --backend vmfunc');
    registerVmfuncBackend({ availability: () => ({ name: 'vmfunc', available: false, reason: 'no patched kernel' }), create: () => fake });
    expect(selectBackend('auto').backend.name).to.equal('emulated');
    expect(() => selectBackend('vmfunc')).to.throw(/no patched kernel/);
  });
});
