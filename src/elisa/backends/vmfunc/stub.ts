// Tiny machine-code stubs through which the host makes a vCPU execute ELISA hypercalls:
// the host loads the registers, points RIP at a stub, runs the vCPU (always with a
// timeout: on a host without the patch or without VMX a VMCALL may never return), and
// reads RAX when the stub reports completion with `out STUB_DONE_PORT, al`.
//
//   single:  vmcall ; out 0xe0, al ; hlt
//   batch:   loop: mov eax, 1000 ; mov ebx, 3 ; mov ecx, 1 ; mov rdx, r8 ; vmcall
//                  mov [r10], rax ; add r10, 8 ; add r8, 0x1000 ; dec r9 ; jnz loop
//                  out 0xe0, al ; hlt
// (GPA→HPA of R9 consecutive pages from GPA R8, results to the table at GVA R10: one
// KVM_RUN for a whole arena instead of one per page.) test/elisa/vmfunc-stub.test.ts
// checks these bytes against GNU as.
import { IoDirection, type Regs, type Vcpu } from '../../../kvm';
import { describeGuestExit } from '../../host/machine';
import { describeHypercall, type Hypercall } from './abi';

/** The port a stub writes to when its VMCALL(s) returned. */
export const STUB_DONE_PORT = 0xe0;

/** vmcall ; out 0xe0, al ; hlt */
export const SINGLE_CALL_STUB = Uint8Array.of(0x0f, 0x01, 0xc1, 0xe6, STUB_DONE_PORT, 0xf4);

/** The GPA→HPA loop (see the header). */
export const BATCH_GPA_TO_HPA_STUB = Uint8Array.of(
  0xb8, 0xe8, 0x03, 0x00, 0x00, // mov eax, 1000
  0xbb, 0x03, 0x00, 0x00, 0x00, // mov ebx, 3
  0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1
  0x4c, 0x89, 0xc2, // mov rdx, r8
  0x0f, 0x01, 0xc1, // vmcall
  0x49, 0x89, 0x02, // mov [r10], rax
  0x49, 0x83, 0xc2, 0x08, // add r10, 8
  0x49, 0x81, 0xc0, 0x00, 0x10, 0x00, 0x00, // add r8, 0x1000
  0x49, 0xff, 0xc9, // dec r9
  0x75, 0xd8, // jnz loop (-40)
  0xe6, STUB_DONE_PORT, // out 0xe0, al
  0xf4, // hlt
);

/** Thrown when a stub run did not end at its completion port (timeout, fault, other exit). */
export class HypercallError extends Error {
  override name = 'HypercallError';
  /** True when the vCPU did not come back within the timeout (VMCALL not served). */
  readonly timedOut: boolean;
  constructor(message: string, timedOut = false) {
    super(message);
    this.timedOut = timedOut;
  }
}

/** The registers a hypercall loads: RAX, RBX, RCX, RDX, RSI. */
export function hypercallRegisters(call: Hypercall): Pick<Regs, 'rax' | 'rbx' | 'rcx' | 'rdx' | 'rsi'> {
  return { rax: call.nr, rbx: call.group, rcx: call.op, rdx: call.a0 ?? 0n, rsi: call.a1 ?? 0n };
}

/**
 * Runs `stub` on `vcpu` at guest-virtual (= guest-physical, identity mapped) address
 * `at` of `memory` with `regs` loaded; returns the registers when the stub reached its
 * completion port. The caller chooses whether to restore state afterwards.
 */
export function runStub(vcpu: Vcpu, memory: Uint8Array, at: number, stub: Uint8Array, regs: Partial<Regs>,
  timeoutMs: number, what: string): Regs {
  if (at < 0 || at + stub.length > memory.length) throw new RangeError(`stub at 0x${at.toString(16)} (+${stub.length}) is outside guest memory`);
  // Safe: the range was checked against the guest memory just above.
  memory.set(stub, at);
  vcpu.updateRegs({ ...regs, rip: BigInt(at), rflags: 2n });
  vcpu.runRaw(timeoutMs);
  const exit = vcpu.lastExit();
  const after = vcpu.getRegs();
  // KVM (VMX) reports a port-I/O exit with RIP still at the OUT and skips it on the next
  // KVM_RUN only if RIP was left there (complete_fast_pio_out); other flavours may report
  // RIP past it. Either way the stub ran to its end. The next run sets RIP afresh.
  const outRip = BigInt(at + stub.length - 3);
  const atOut = after.rip === outRip || after.rip === outRip + 2n;
  if (exit.kind === 'io' && exit.direction === IoDirection.OUT && exit.port === STUB_DONE_PORT && atOut) return after;
  if (exit.kind === 'intr' && exit.timedOut) {
    throw new HypercallError(`${what}: the VMCALL did not return within ${timeoutMs} ms (this kvm_intel does not serve it: ` +
      'no VMX, or a KVM flavour whose VMCALL spins)', true);
  }
  throw new HypercallError(`${what}: the stub ended with ${describeGuestExit(exit, after.rip)} instead of its completion write`);
}

/** Executes one hypercall on `vcpu` (stub at `at`); returns RAX. */
export function hypercallOn(vcpu: Vcpu, memory: Uint8Array, at: number, call: Hypercall, timeoutMs: number): bigint {
  return runStub(vcpu, memory, at, SINGLE_CALL_STUB, hypercallRegisters(call), timeoutMs, `hypercall ${describeHypercall(call)}`).rax;
}
