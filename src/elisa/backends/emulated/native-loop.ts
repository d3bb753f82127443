// The binding of the native switch loop (native/addon/elisa_switch.cc), loaded from the
// package's addon next to the KVM layer's bindings.
import { native } from '../../../kvm/native';

/** Status of the native loop's run() meaning the deadline passed (elisa_switch.cc). */
export const NATIVE_TIMEOUT = 2;

/** The native hot loop (native/addon/elisa_switch.cc). */
export interface SwitchLoop {
  /** Runs from context `start` until an exit JS must see; returns (status << 8) | context. */
  run(start: number, timeoutMs: number): number;
  close(): void;
}
export const nativeSwitch = native as unknown as {
  SwitchLoop: new (fds: Int32Array, runs: ArrayBuffer[], list: Uint8Array, eptps: BigUint64Array,
    sites: BigUint64Array[], aptCr3: BigUint64Array, counters: Uint32Array) => SwitchLoop;
};
