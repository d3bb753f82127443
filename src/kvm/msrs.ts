// KVM_GET_MSRS, shared by the system fd (feature MSRs) and vCPU fds.
import { native } from './native';

/** Reads MSRs with KVM_GET_MSRS on `fd`; throws naming the first MSR the kernel refused. */
export function readMsrs(fd: number, indices: readonly number[], what: string): bigint[] {
  const idx = Uint32Array.from(indices);
  const values = new BigUint64Array(idx.length);
  const n = native.getMsrs(fd, idx, values);
  if (n < idx.length) {
    throw new Error(`KVM_GET_MSRS on ${what}: MSR 0x${idx[n].toString(16)} cannot be read (the kernel stopped after ${n} of ${idx.length})`);
  }
  return Array.from(values);
}
