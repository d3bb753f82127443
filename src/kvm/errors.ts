// Errors of the KVM layer. Native bindings construct KvmError/HostError directly
// (registered in native.ts), so a failing ioctl is always `instanceof KvmError`.
import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** The symbolic name of an errno value, e.g. errnoName(22) === 'EINVAL'. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

const errnoText: Record<string, string> = {
  EPERM: 'Operation not permitted', ENOENT: 'No such file or directory', EINTR: 'Interrupted system call',
  EIO: 'I/O error', ENXIO: 'No such device or address', E2BIG: 'Argument list too long',
  EBADF: 'Bad file descriptor', EAGAIN: 'Resource temporarily unavailable', ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied', EFAULT: 'Bad address', EBUSY: 'Device or resource busy', EEXIST: 'File exists',
  ENODEV: 'No such device', EINVAL: 'Invalid argument', ENFILE: 'Too many open files in system',
  EMFILE: 'Too many open files', ENOTTY: 'Inappropriate ioctl for device', ENOSPC: 'No space left on device',
  ERANGE: 'Numerical result out of range', ENOSYS: 'Function not implemented', EOPNOTSUPP: 'Operation not supported',
};

function describe(errno: number): string {
  const code = errnoName(errno);
  const text = errnoText[code];
  return text ? `${code} (${text})` : code;
}

/** A KVM ioctl failed. `ioctl` is the request as named in linux/kvm.h. */
export class KvmError extends Error {
  override name = 'KvmError';
  /** Symbolic errno, e.g. 'EINVAL'. */
  readonly code: string;
  /**
   * @param ioctl the failed request, e.g. 'KVM_SET_USER_MEMORY_REGION'
   * @param errno the errno the kernel returned
   */
  constructor(readonly ioctl: string, readonly errno: number, context?: string) {
    super(`${ioctl} failed: ${describe(errno)}${context ? ` (${context})` : ''}`);
    this.code = errnoName(errno);
  }
}

/** A host system call other than a KVM ioctl failed (open, mmap, mlock, memfd_create...). */
export class HostError extends Error {
  override name = 'HostError';
  /** Symbolic errno, e.g. 'ENOMEM'. */
  readonly code: string;
  /**
   * @param syscall the failed call, e.g. 'mmap'
   * @param errno the errno it returned
   * @param detail what was attempted, or a hint for the likely cause
   */
  constructor(readonly syscall: string, readonly errno: number, readonly detail = '') {
    super(`${syscall} failed: ${describe(errno)}${detail ? ` — ${detail}` : ''}`);
    this.code = errnoName(errno);
  }
}

/** A disposed resource (Kvm, Vm, Vcpu, GuestMemory) was used. */
export class DisposedError extends Error {
  override name = 'DisposedError';
  /** @param what the resource as users know it, e.g. 'Vcpu 0' */
  constructor(readonly what: string, action = 'is disposed') {
    super(`${what} ${action}`);
  }
}
