// Shared by every test that needs /dev/kvm. Without /dev/kvm a KVM test skips,
// unless ELISA_REQUIRE_KVM=1 (set by .ci/run whenever /dev/kvm exists): then the
// missing device is a failure, so CI can never count a skipped KVM test as passed.
import { existsSync } from 'node:fs';

export const kvmAvailable = existsSync('/dev/kvm');

/** Call at the top of a `describe` body (or in `before`) of a suite that needs KVM. */
export function requireKvm(ctx: Mocha.Context): void {
  if (kvmAvailable) return;
  if (process.env.ELISA_REQUIRE_KVM === '1') {
    throw new Error('ELISA_REQUIRE_KVM=1 but /dev/kvm does not exist: this KVM test cannot run');
  }
  ctx.skip();
}
