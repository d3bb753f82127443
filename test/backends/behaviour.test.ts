// The shared ELISA behaviour suite (test/shared/elisa-behaviour.ts) on the emulated
// backend, on this machine's real /dev/kvm. The vmfunc backend runs the same suite inside
// the emulated VT-x host (test/vmx/vmfunc-suite.ts). Emulated-only details (how VMFUNC is
// trapped, failure records, FPU moves) stay in nop/security/shm.test.ts.
import { requireKvm } from '../support/kvm';
import { EmulatedBackend } from '../../src/elisa/backends/emulated';
import { describeElisaBehaviour } from '../shared/elisa-behaviour';

describeElisaBehaviour('emulated', () => new EmulatedBackend(), {
  // Every VMFUNC is an exit the backend carries out: it counts the switches.
  observesSwitches: true,
  // Detached, the guest's VMFUNC is its host KVM's business: #UD on VMX hosts, an
  // emulation-failure exit on this project's AMD/PVM hosts (docs/backends.md, limits).
  vmfuncAfterTeardown: 'ud-or-host-exit',
  timeoutMs: 10_000,
  before: requireKvm,
});
