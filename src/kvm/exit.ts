// Decodes why KVM_RUN returned (kvm_run.exit_reason and its union member) into
// a discriminated union. Data fields are views INTO the vCPU's kvm_run mapping,
// not copies: they are valid until the next run of that vCPU, and writing them
// is how a PIO "in" or an MMIO read is completed (KVM copies the bytes into the
// guest when the vCPU runs again).
import { EMULATION_FLAG_INSTRUCTION_BYTES, ExitReason, InterruptCause, InternalErrorSuberror, IoDirection } from './constants';
import { KvmRun } from './layout';

/** Port I/O: `in`/`out`/`ins`/`outs` (count > 1 for `rep` string forms). */
export interface IoExit {
  kind: 'io'; reason: ExitReason.IO;
  direction: IoDirection;
  port: number;
  /** Access width in bytes: 1, 2 or 4. */
  size: number;
  /** Number of elements (rep count KVM batched into this exit). */
  count: number;
  /** size*count bytes in kvm_run: the data written (OUT), or to fill in (IN). */
  data: Uint8Array;
}

/** A guest access to guest-physical memory no slot backs (or a write to a read-only slot). */
export interface MmioExit {
  kind: 'mmio'; reason: ExitReason.MMIO;
  address: bigint;
  /** Access width in bytes (1..8). */
  length: number;
  isWrite: boolean;
  /** `length` bytes in kvm_run: the value written, or to fill in for a read. */
  data: Uint8Array;
}

/** The guest executed HLT. */
export interface HltExit { kind: 'hlt'; reason: ExitReason.HLT }
/** Triple fault (or another shutdown condition). */
export interface ShutdownExit { kind: 'shutdown'; reason: ExitReason.SHUTDOWN }

/** VM entry failed: the hardware rejected the guest state. */
export interface FailEntryExit {
  kind: 'failEntry'; reason: ExitReason.FAIL_ENTRY;
  /** hardware_entry_failure_reason (VMX exit reason / SVM exit code). */
  hardwareReason: bigint;
  cpu: number;
}

/** KVM hit something it cannot handle. */
export interface InternalErrorExit {
  kind: 'internalError'; reason: ExitReason.INTERNAL_ERROR;
  suberror: InternalErrorSuberror | number;
  /** internal.data[0..ndata) (for EMULATION with instruction bytes: flags, then bytes). */
  data: bigint[];
  /**
   * For suberror EMULATION when KVM_CAP_EXIT_ON_EMULATION_FAILURE supplied them:
   * the bytes of the instruction that failed (a view into kvm_run).
   */
  instructionBytes?: Uint8Array;
}

/** A guest debug event (single step, breakpoint) with KVM_SET_GUEST_DEBUG enabled. */
export interface DebugExit {
  kind: 'debug'; reason: ExitReason.DEBUG;
  exception: number; pc: bigint; dr6: bigint; dr7: bigint;
}

/**
 * KVM_RUN was interrupted by a signal before or during guest execution. This is
 * how a timeout is reported: `cause` TIMEOUT and `timedOut` true. The vCPU is
 * intact and can be run again.
 */
export interface IntrExit {
  kind: 'intr'; reason: ExitReason.INTR;
  cause: InterruptCause;
  /** Shorthand for cause === InterruptCause.TIMEOUT. */
  timedOut: boolean;
}

/** A system event (e.g. PSCI or a guest crash report). */
export interface SystemEventExit {
  kind: 'systemEvent'; reason: ExitReason.SYSTEM_EVENT;
  type: number;
  data: bigint[];
}

/** KVM_EXIT_HYPERCALL (only with KVM_CAP_EXIT_HYPERCALL enabled). */
export interface HypercallExit {
  kind: 'hypercall'; reason: ExitReason.HYPERCALL;
  nr: bigint;
  args: bigint[];
  /** Sets the value the guest sees in RAX when it resumes. */
  setResult(value: bigint): void;
}

/** Any other exit reason (KVM_EXIT_UNKNOWN carries a hardware exit reason). */
export interface UnknownExit {
  kind: 'unknown';
  reason: number;
  /** ExitReason name if the number is known to this package. */
  name: string;
  /** hw.hardware_exit_reason (meaningful for KVM_EXIT_UNKNOWN). */
  hardwareReason: bigint;
}

/** Why KVM_RUN returned. Switch on `kind`. */
export type Exit = IoExit | MmioExit | HltExit | ShutdownExit | FailEntryExit | InternalErrorExit | DebugExit
  | IntrExit | SystemEventExit | HypercallExit | UnknownExit;

function u64s(v: DataView, off: number, n: number): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < n; i++) out.push(v.getBigUint64(off + 8 * i, true));
  return out;
}

/**
 * Decodes the exit currently described by a vCPU's kvm_run.
 * @param run a DataView over the whole kvm_run mapping
 * @param cause why an INTR exit happened (ignored for other reasons)
 */
export function decodeExit(run: DataView, cause: InterruptCause = InterruptCause.NONE): Exit {
  const reason = run.getUint32(KvmRun.exit_reason, true);
  switch (reason) {
    case ExitReason.IO: {
      const size = run.getUint8(KvmRun.io_size);
      const count = run.getUint32(KvmRun.io_count, true);
      const dataOffset = Number(run.getBigUint64(KvmRun.io_data_offset, true));
      if (dataOffset + size * count > run.byteLength) {
        throw new RangeError(`KVM_EXIT_IO data (offset ${dataOffset}, ${size}x${count} bytes) lies outside kvm_run (${run.byteLength} bytes)`);
      }
      return {
        kind: 'io', reason, direction: run.getUint8(KvmRun.io_direction), port: run.getUint16(KvmRun.io_port, true),
        size, count, data: new Uint8Array(run.buffer, run.byteOffset + dataOffset, size * count),
      };
    }
    case ExitReason.MMIO: {
      const length = Math.min(run.getUint32(KvmRun.mmio_len, true), 8);
      return {
        kind: 'mmio', reason, address: run.getBigUint64(KvmRun.mmio_phys_addr, true), length,
        isWrite: run.getUint8(KvmRun.mmio_is_write) !== 0,
        data: new Uint8Array(run.buffer, run.byteOffset + KvmRun.mmio_data, length),
      };
    }
    case ExitReason.HLT: return { kind: 'hlt', reason };
    case ExitReason.SHUTDOWN: return { kind: 'shutdown', reason };
    case ExitReason.FAIL_ENTRY:
      return { kind: 'failEntry', reason, hardwareReason: run.getBigUint64(KvmRun.fail_entry_reason, true),
        cpu: run.getUint32(KvmRun.fail_entry_cpu, true) };
    case ExitReason.INTERNAL_ERROR: {
      const suberror = run.getUint32(KvmRun.internal_suberror, true);
      const ndata = Math.min(run.getUint32(KvmRun.internal_ndata, true), 16);
      const exit: InternalErrorExit = { kind: 'internalError', reason, suberror, data: u64s(run, KvmRun.internal_data, ndata) };
      if (suberror === InternalErrorSuberror.EMULATION && ndata >= 1 &&
          (run.getBigUint64(KvmRun.emulation_failure_flags, true) & EMULATION_FLAG_INSTRUCTION_BYTES) !== 0n) {
        const size = Math.min(run.getUint8(KvmRun.emulation_failure_insn_size), 15);
        exit.instructionBytes = new Uint8Array(run.buffer, run.byteOffset + KvmRun.emulation_failure_insn_bytes, size);
      }
      return exit;
    }
    case ExitReason.DEBUG:
      return { kind: 'debug', reason, exception: run.getUint32(KvmRun.debug_exception, true),
        pc: run.getBigUint64(KvmRun.debug_pc, true), dr6: run.getBigUint64(KvmRun.debug_dr6, true),
        dr7: run.getBigUint64(KvmRun.debug_dr7, true) };
    case ExitReason.INTR:
      return { kind: 'intr', reason, cause, timedOut: cause === InterruptCause.TIMEOUT };
    case ExitReason.SYSTEM_EVENT: {
      const ndata = Math.min(run.getUint32(KvmRun.system_event_ndata, true), 16);
      return { kind: 'systemEvent', reason, type: run.getUint32(KvmRun.system_event_type, true),
        data: u64s(run, KvmRun.system_event_data, ndata) };
    }
    case ExitReason.HYPERCALL:
      return { kind: 'hypercall', reason, nr: run.getBigUint64(KvmRun.hypercall_nr, true),
        args: u64s(run, KvmRun.hypercall_args, 6),
        setResult: (value: bigint) => run.setBigUint64(KvmRun.hypercall_ret, BigInt.asUintN(64, value), true) };
    default:
      return { kind: 'unknown', reason, name: ExitReason[reason] ?? `exit reason ${reason}`,
        hardwareReason: run.getBigUint64(KvmRun.hw_exit_reason, true) };
  }
}

/** One line describing an exit, for logs and error messages. */
export function describeExit(e: Exit): string {
  switch (e.kind) {
    case 'io': return `io ${e.direction === IoDirection.OUT ? 'out' : 'in'} port 0x${e.port.toString(16)} size ${e.size} count ${e.count}`;
    case 'mmio': return `mmio ${e.isWrite ? 'write' : 'read'} 0x${e.address.toString(16)} length ${e.length}`;
    case 'failEntry': return `fail entry (hardware reason 0x${e.hardwareReason.toString(16)})`;
    case 'internalError': return `internal error suberror ${InternalErrorSuberror[e.suberror] ?? e.suberror}` +
      (e.instructionBytes ? ` instruction ${Buffer.from(e.instructionBytes).toString('hex')}` : '');
    case 'debug': return `debug exception ${e.exception} at 0x${e.pc.toString(16)}`;
    case 'intr': return `intr (${InterruptCause[e.cause].toLowerCase()})`;
    case 'systemEvent': return `system event ${e.type}`;
    case 'hypercall': return `hypercall ${e.nr}`;
    case 'unknown': return `${e.name} (hardware reason 0x${e.hardwareReason.toString(16)})`;
    default: return e.kind;
  }
}
