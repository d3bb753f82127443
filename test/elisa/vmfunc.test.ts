// The vmfunc backend on a host without VMX (this project's machines): what can be
// checked here for real — the stub machine code (against GNU as), the hypercall register
// encoding (against the numbers of kernel-patch/*/6.1.patch), the error decoding, the
// detection's reasons, the HPA-addressed arena's bookkeeping, the compat rendezvous lock,
// and that asking for vmfunc fails with the reason instead of hanging. The backend's
// behaviour on real EPTP switching is tested inside the emulated VT-x host
// (test/vmx/vmfunc-*.vmx.ts, `npm run test:vmx`).
import { expect } from 'chai';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackendUnavailableError } from '../../src/elisa/backends/backend';
import {
  BATCH_GPA_TO_HPA_STUB, detectVmfunc, ElisaCall, HostPhysicalArena, hypercallError, HypercallError, ManagerVm,
  SINGLE_CALL_STUB, STUB_DONE_PORT, VmfuncBackend,
} from '../../src/elisa/backends/vmfunc';
import { withRendezvousLock } from '../../src/elisa/backends/vmfunc/lock';
import { hypercallRegisters } from '../../src/elisa/backends/vmfunc/stub';
import { ElisaManager, selectBackend } from '../../src/elisa/host';
import { GuestMemory } from '../../src/kvm';
import { assemble } from '../support/assemble';
import { requireKvm } from '../support/kvm';

const hostHasVmx = /^flags\s*:.*\bvmx\b/m.test((() => { try { return require('node:fs').readFileSync('/proc/cpuinfo', 'utf8') as string; } catch { return ''; } })());

describe('vmfunc backend: stubs and hypercall encoding', function () {
  it('the single-call stub is `vmcall; out $0xe0, %al; hlt` as GNU as encodes it', function () {
    expect(Array.from(SINGLE_CALL_STUB)).to.deep.equal(Array.from(assemble(`vmcall\nout %al, $${STUB_DONE_PORT}\nhlt`)));
  });

  it('the batch GPA→HPA stub assembles to the same bytes as its source text', function () {
    const src = `.intel_syntax noprefix
loop: mov eax, 1000
 mov ebx, 3
 mov ecx, 1
 mov rdx, r8
 vmcall
 mov [r10], rax
 add r10, 8
 add r8, 0x1000
 dec r9
 jnz loop
 out ${STUB_DONE_PORT}, al
 hlt`;
    expect(Array.from(BATCH_GPA_TO_HPA_STUB)).to.deep.equal(Array.from(assemble(src)));
  });

  it('each ELISA call loads RAX/RBX/RCX/RDX/RSI with the numbers of the kernel patches', function () {
    // Numbers from kernel-patch/{compat,hardened}/6.1.patch (ELISA_HC_*, ELISA_NEG_*, ELISA_UTIL_*).
    const cases: [ReturnType<typeof hypercallRegisters>, bigint[]][] = [
      [hypercallRegisters(ElisaCall.vmcsRead(0x201an)), [1000n, 2n, 1n, 0x201an, 0n]],
      [hypercallRegisters(ElisaCall.vmcsWrite(0x6c16n, 7n)), [1000n, 2n, 2n, 0x6c16n, 7n]],
      [hypercallRegisters(ElisaCall.gpaToHpa(0x800000000n)), [1000n, 3n, 1n, 0x800000000n, 0n]],
      [hypercallRegisters(ElisaCall.setRendezvousVcpu(42n)), [1001n, 2n, 1n, 42n, 0n]],
      [hypercallRegisters(ElisaCall.setRendezvousList(0x1000n)), [1001n, 2n, 2n, 0x1000n, 0n]],
      [hypercallRegisters(ElisaCall.revoke(42n)), [1001n, 2n, 3n, 42n, 0n]],
      [hypercallRegisters(ElisaCall.vcpuId()), [1001n, 3n, 1n, 0n, 0n]],
      [hypercallRegisters(ElisaCall.activate()), [1001n, 3n, 2n, 0n, 0n]],
      [hypercallRegisters(ElisaCall.deactivate()), [1001n, 3n, 3n, 0n, 0n]],
    ];
    for (const [r, want] of cases) expect([r.rax, r.rbx, r.rcx, r.rdx, r.rsi]).to.deep.equal(want);
  });

  it('results in [-4095, -1] are errors named after KVM_E*; addresses and ids are not', function () {
    const neg = (n: number): bigint => BigInt.asUintN(64, BigInt(-n));
    expect(hypercallError(neg(1000))).to.equal('-KVM_ENOSYS (-1000)');
    expect(hypercallError(neg(1))).to.equal('-KVM_EPERM (-1)');
    expect(hypercallError(neg(22))).to.equal('-KVM_EINVAL (-22)');
    expect(hypercallError(neg(14))).to.equal('-KVM_EFAULT (-14)');
    expect(hypercallError(neg(95))).to.equal('-KVM_EOPNOTSUPP (-95)');
    expect(hypercallError(neg(7))).to.equal('error -7');
    expect(hypercallError(0n)).to.equal(undefined);
    expect(hypercallError(0x12345000n)).to.equal(undefined);
    expect(hypercallError(neg(4096))).to.equal(undefined); // a kernel-like address, not an error
    expect(hypercallError((1n << 62n) + 5n)).to.equal(undefined); // a token (bit 63 clear)
  });
});

describe('vmfunc backend: availability', function () {
  it('a CPU without VMX: not available, and the reason names the vendor and SVM', function () {
    const d = detectVmfunc({ cpuinfo: 'vendor_id\t: AuthenticAMD\nflags\t\t: fpu svm npt\n' });
    expect(d.available).to.equal(false);
    expect(d.reason).to.match(/AuthenticAMD.*no VMX.*AMD SVM has no VMFUNC/);
  });

  it('a VMX CPU whose kernel has no kvm_intel loaded: not available, says so', function () {
    if (existsSync('/sys/module/kvm_intel')) this.skip();
    const d = detectVmfunc({ cpuinfo: 'vendor_id : GenuineIntel\nflags : vmx ept\nvmx flags : vnmi ept vpid\n' });
    expect(d.available).to.equal(false);
    expect(d.reason).to.equal('kvm_intel is not loaded');
  });

  it('on this host: the verdict matches the CPU, and vmfunc is refused with that reason', function () {
    const d = detectVmfunc();
    if (!hostHasVmx) {
      expect(d.available).to.equal(false);
      expect(d.reason).to.match(/exposes no VMX/);
    }
    if (d.available) this.skip();
    expect(() => new VmfuncBackend()).to.throw(BackendUnavailableError, d.reason);
    expect(() => selectBackend('vmfunc')).to.throw(BackendUnavailableError, d.reason);
    expect(selectBackend('auto').backend.name).to.equal('emulated');
    expect(selectBackend('auto').why).to.include(d.reason);
  });
});

describe('vmfunc backend: manager VM and HPA arena on a host that cannot serve VMCALL', function () {
  before(function () {
    requireKvm(this);
    if (hostHasVmx) this.skip(); // on a VMX host a VMCALL returns (-KVM_ENOSYS at worst): nothing to time out
  });

  it('ElisaManager.create with a vmfunc backend fails within the timeout, naming the VMCALL, and leaks no fd', function () {
    const fds = readdirSync('/proc/self/fd').length;
    const backend = new VmfuncBackend({ variant: 'compat', eptCaps: { executeOnly: true, accessDirty: true }, timeoutMs: 300 });
    const t0 = performance.now();
    let err: unknown;
    try { ElisaManager.create({ arenaPages: 16, backend }); } catch (e) { err = e; }
    expect(performance.now() - t0).to.be.below(5000);
    expect(err).to.be.instanceOf(HypercallError);
    expect((err as HypercallError).timedOut).to.equal(true);
    expect((err as Error).message).to.match(/GPA→HPA of 16 arena pages.*did not return within 300 ms/);
    expect(readdirSync('/proc/self/fd').length).to.equal(fds);
  });

  it('the HPA arena hands out pages by host-physical address and keeps its books', function () {
    using memory = GuestMemory.memfd(8 * 4096, { name: 'hpa-arena-test' });
    using vm = ManagerVm.create(memory, 1n << 35n, { variant: "compat", timeoutMs: 100 });
    // Scattered, descending "HPAs" as a real host returns them for a memfd.
    const hpas = [0x7f000n, 0x3000n, 0x12345000n, 0x9000n, 0x1000n, 0x55000n, 0x2000n, 0x100000n];
    const arena = new HostPhysicalArena(memory, 8, vm, hpas);
    const a = arena.allocate();
    const b = arena.allocate();
    expect([a.address, b.address]).to.deep.equal([0x7f000n, 0x3000n]);
    expect(arena.gpaOf(0x3000n)).to.equal((1n << 35n) + 0x1000n);
    b.bytes[5] = 0xab;
    expect(memory.bytes()[4096 + 5], 'page 1 of the memfd is the page at HPA 0x3000').to.equal(0xab);
    expect(arena.pageAt(0x3000n)?.[5]).to.equal(0xab);
    expect(arena.pageAt(0x4000n)).to.equal(undefined);
    expect(arena.isAllocated(0x7f000n)).to.equal(true);
    arena.free(a);
    expect(arena.isAllocated(0x7f000n)).to.equal(false);
    expect(() => arena.free(a)).to.throw(/freed twice/);
    expect(() => arena.free({ address: 0x4000n, bytes: new Uint8Array(4096) })).to.throw(/does not belong/);
    // Quarantined pages are counted as freed but never handed out again.
    arena.quarantine(0x3000n);
    arena.free(b);
    expect(arena.stats()).to.deep.equal({ allocated: 2, freed: 2, inUse: 0 });
    expect(arena.retiredPages).to.equal(1);
    const again = Array.from({ length: 7 }, () => arena.allocate().address);
    expect(again).to.not.include(0x3000n);
    expect(() => arena.allocate()).to.throw(/full/);
    expect(() => new HostPhysicalArena(memory, 8, vm, [...hpas.slice(0, 7), 0x1000n])).to.throw(/same host-physical address 0x1000/);
  });
});

describe('vmfunc backend: the compat rendezvous lock', function () {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'elisa-lock-')); });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  it('runs the function holding the lock and removes it afterwards, also on a throw', function () {
    const path = join(dir, 'l');
    expect(withRendezvousLock(() => readdirSync(dir), 100, path)).to.deep.equal(['l']);
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(() => withRendezvousLock(() => { throw new Error('boom'); }, 100, path)).to.throw('boom');
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it('takes over a lock whose owner is gone, and times out on a live owner', function () {
    const path = join(dir, 'l');
    writeFileSync(path, '2147483646\n'); // no such process
    expect(withRendezvousLock(() => 7, 100, path)).to.equal(7);
    writeFileSync(path, `${process.pid}\n`); // alive (this process, as another holder)
    expect(() => withRendezvousLock(() => 7, 100, path)).to.throw(/held by another process/);
  });
});
