// Runs the example guest programs (native/guest/examples) on real KVM and checks what
// Node sees: console, exit code, 64-bit result, and the reported exceptions.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ElfError } from '../../src/x86/elf';
import { buildElf } from '../x86/elf-builder';
import { GuestAssertionError, GuestFault, GuestShutdown, GuestTimeout, GuestUnexpectedExit } from '../../src/x86/errors';
import { GuestMachine, runGuestProgram } from '../../src/x86/machine';
import { IDT_GPA } from '../../src/x86/layout';
import { buildIdentityMap } from '../../src/x86/paging';
import { guestProgramPath, packageRoot } from '../../src/x86/programs';
import { requireKvm } from '../support/kvm';

/** Address of `symbol` according to nm (binutils), not our ELF reader. */
function nmAddress(program: string, symbol: string): bigint {
  const out = execFileSync('nm', [guestProgramPath(program)], { encoding: 'utf8' });
  const m = new RegExp(`^([0-9a-f]+) \\w ${symbol}$`, 'm').exec(out);
  if (!m) throw new Error(`nm: no ${symbol} in ${program}`);
  return BigInt(`0x${m[1]}`);
}

/** The instruction objdump disassembles at `address` in `program`. */
function objdumpAt(program: string, address: bigint): string {
  const a = Number(address);
  const out = execFileSync('objdump', ['-d', `--start-address=${a}`, `--stop-address=${a + 16}`, guestProgramPath(program)], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.trim().startsWith(`${a.toString(16)}:`));
  if (!line) throw new Error(`objdump shows no instruction at 0x${a.toString(16)}`);
  return line.split('\t').slice(2).join(' ').trim();
}

async function expectRejection<T extends Error>(p: Promise<unknown>, type: new (...a: never[]) => T): Promise<T> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(type);
    return err as T;
  }
  throw new Error(`expected a ${type.name}, but the run succeeded`);
}

describe('guest programs on KVM', function () {
  before(function () { requireKvm(this); });

  it('hello: prints through the console, returns 42 and a 64-bit result, all seen in Node', async function () {
    // printf writes whole buffers (GuestPort.consoleBuf): a handful of exits, not one per byte
    using m = GuestMachine.create({ memory: '64M' });
    const g = m.loadElf(guestProgramPath('hello'));
    const r = await g.run({ timeoutMs: 5000 });
    expect(r.console).to.equal('Hello from a KVM guest! 2 + 3 = 5\n');
    expect(r.exitCode).to.equal(42);
    expect(r.result).to.equal(0x1122334455667788n);
    expect(r.exits).to.equal(4); // console, result low, result high, exit
    expect(g.entry).to.equal(Number(nmAddress('hello', '_start')));
  });

  it('compute: fib(90) and an FNV-1a checksum, checked against the same computation in JS', async function () {
    let a = 0n; let b = 1n;
    for (let i = 0; i < 90; i++) [a, b] = [b, a + b];
    let h = 0xcbf29ce484222325n;
    for (let i = 0; i < 1024; i++) h = ((h ^ BigInt((i * 7 + 3) & 0xff)) * 0x100000001b3n) & 0xffffffffffffffffn;
    const r = await runGuestProgram('compute', { timeoutMs: 10000 });
    expect(r.console).to.equal(`fib(90) = ${a}\n`);
    expect(r.result).to.equal(h);
    expect(r.exitCode).to.equal(0);
  });

  it('blocking mode (KVM_RUN on the calling thread) gives the same run', async function () {
    const r = await runGuestProgram('hello', { blocking: true });
    expect([r.console, r.exitCode, r.result]).to.deep.equal(['Hello from a KVM guest! 2 + 3 = 5\n', 42, 0x1122334455667788n]);
    const t = await runGuestProgram('spin', { blocking: true, timeoutMs: 200 }).then(() => undefined, (e: unknown) => e);
    expect(t).to.be.instanceOf(GuestTimeout);
  });

  it('streams console text to onConsole as it arrives', async function () {
    const pieces: string[] = [];
    const r = await runGuestProgram('hello', { onConsole: (t) => pieces.push(t) });
    expect(pieces.join('')).to.equal(r.console);
  });

  describe('exceptions, located with nm and objdump', function () {
    const cases = [
      { program: 'fault-de', vector: 0, mnemonic: '#DE', errorCode: undefined, insn: /^div\s+%ecx/ },
      { program: 'fault-ud', vector: 6, mnemonic: '#UD', errorCode: undefined, insn: /^ud2/ },
      { program: 'fault-pf', vector: 14, mnemonic: '#PF', errorCode: 0x2, insn: /^mov\s+%rdx,\(%rax\)/ },
    ];
    for (const c of cases) {
      it(`${c.program}: ${c.mnemonic} with vector ${c.vector}, error code and the RIP of the faulting instruction`, async function () {
        const site = nmAddress(c.program, 'fault_site');
        expect(objdumpAt(c.program, site)).to.match(c.insn);
        using m = GuestMachine.create({ memory: '16M' });
        const f = await expectRejection(m.loadElf(guestProgramPath(c.program)).run({ timeoutMs: 5000 }), GuestFault);
        expect(f.vector).to.equal(c.vector);
        expect(f.mnemonic).to.equal(c.mnemonic);
        expect(f.errorCode).to.equal(c.errorCode);
        expect(f.rip).to.equal(site);
        expect(f.symbol).to.equal('fault_site');
        expect(f.report.cs).to.equal(0x08);
        expect(f.console).to.match(/\n$/); // what the program printed before faulting
      });
    }

    it('fault-pf: CR2 is the address written (0x123), the registers are the program\'s', async function () {
      using m = GuestMachine.create({ memory: '16M' });
      const f = await expectRejection(m.loadElf(guestProgramPath('fault-pf')).run(), GuestFault);
      expect(f.cr2).to.equal(0x123n);
      expect(f.report.registers.rax).to.equal(0x123n);  // movl $0x123, %eax in fault-pf.c
      expect(f.report.registers.rdx).to.equal(0x5a5an); // the value being stored
      expect(f.report.cr3).to.equal(m.cr3);
      expect(f.message).to.match(/#PF .*error code 0x2 \[not present, write, supervisor\] at address 0x123 at RIP 0x[0-9a-f]+ \(fault_site\)/);
    });

    it('triple fault (IDT limit 0, then ud2): SHUTDOWN surfaces as GuestShutdown with registers', async function () {
      using m = GuestMachine.create({ memory: '16M' });
      const s = await expectRejection(m.loadElf(guestProgramPath('triple-fault')).run({ timeoutMs: 5000 }), GuestShutdown);
      expect(s.registers.rip).to.equal(nmAddress('triple-fault', 'fault_site'));
      expect(objdumpAt('triple-fault', s.registers.rip)).to.match(/^ud2/);
      expect(s.message).to.match(/triple fault/);
      expect(s.console).to.equal('loading an empty IDT, then ud2\n');
    });
  });

  it('a double fault is reported through its own IST stack (#UD and #NP gates made not present)', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    // Clearing P in gates 6 and 11: #UD cannot be delivered → #NP; delivering that #NP
    // hits the not-present gate 11 → a second contributory fault → #DF (SDM table 6-5).
    for (const v of [6, 11]) m.bytes[IDT_GPA + 16 * v + 5]! &= 0x7f;
    m.bytes.set([0x0f, 0x0b], 0x200000); // ud2
    m.setEntry(0x200000);
    const f = await expectRejection(m.run(), GuestFault);
    expect(f.mnemonic).to.equal('#DF');
    expect(f.vector).to.equal(8);
    expect(f.errorCode).to.equal(0);
  });

  it('a machine is reusable after a fault, a shutdown and a clobbered IDT: loadElf starts afresh', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    await expectRejection(m.loadElf(guestProgramPath('triple-fault')).run(), GuestShutdown);
    await expectRejection(m.loadElf(guestProgramPath('fault-ud')).run(), GuestFault);
    m.bytes.fill(0, IDT_GPA, IDT_GPA + 4096);
    const r = await m.loadElf(guestProgramPath('hello')).run();
    expect([r.console, r.exitCode]).to.deep.equal(['Hello from a KVM guest! 2 + 3 = 5\n', 42]);
    await expectRejection(m.loadElf(guestProgramPath('fault-pf')).run(), GuestFault).then((f) => expect(f.cr2).to.equal(0x123n));
  });

  it('a failed GUEST_ASSERT reaches Node with file, line and message', async function () {
    const source = readFileSync(join(packageRoot(), 'native/guest/examples/assert-fail.c'), 'utf8');
    const line = source.split('\n').findIndex((l) => l.includes('GUEST_ASSERT(')) + 1;
    const e = await expectRejection(runGuestProgram('assert-fail'), GuestAssertionError);
    expect(e.file).to.equal('examples/assert-fail.c');
    expect(e.line).to.equal(line);
    expect(e.guestMessage).to.equal(`examples/assert-fail.c:${line}: assertion \`answer == 42\` failed: answer was 41`);
    expect(e.console).to.equal('checking the answer\n');
  });

  it('a spinning guest is stopped by the timeout, inside main, and can be resumed', async function () {
    using m = GuestMachine.create({ memory: '16M' });
    const g = m.loadElf(guestProgramPath('spin'));
    const t0 = performance.now();
    const e = await expectRejection(g.run({ timeoutMs: 300 }), GuestTimeout);
    expect(performance.now() - t0).to.be.at.least(295);
    const main = g.symbols.get('main')!;
    expect(Number(e.registers!.rip)).to.be.within(main.value, main.value + main.size - 1);
    expect(e.console).to.equal('spinning\n');
    await expectRejection(g.run({ timeoutMs: 100 }), GuestTimeout); // still spinning where it was
  });

  it('uses caller-provided page tables: with page 0 mapped, fault-pf\'s write succeeds', async function () {
    using m = GuestMachine.create({ memory: '16M', pageTables: { cr3: 0x80000 } });
    buildIdentityMap(m.bytes, { bytes: 16 << 20, tablesGpa: 0x80000, tablesEnd: 0x100000, nullGuard: false });
    const r = await m.loadElf(guestProgramPath('fault-pf')).run();
    expect(r.exitCode).to.equal(0);
    expect(r.console).to.equal('writing to 0x123\n'); // buffered console read through KVM_TRANSLATE
    expect(new DataView(m.bytes.buffer).getBigUint64(0x123, true)).to.equal(0x5a5an);
  });

  it('raw code via setEntry: a write to an unknown port and a HLT are named in GuestUnexpectedExit', async function () {
    using m = GuestMachine.create({ memory: '4M' });
    m.bytes.set([0x66, 0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee], 0x200000); // mov $0x3f8,%dx; mov $0x41,%al; out %al,(%dx)
    m.setEntry(0x200000);
    const e = await expectRejection(m.run(), GuestUnexpectedExit);
    expect(e.message).to.match(/1 × 1 byte\(s\) to port 0x3f8, which the runtime does not use/);
    m.bytes.set([0x90, 0xf4], 0x201000); // nop; hlt
    m.setEntry(0x201000);
    const h = await expectRejection(m.run(), GuestUnexpectedExit);
    expect(h.reason).to.equal('hlt');
    expect(h.message).to.match(/HLT at RIP 0x201002/);
  });

  it('refuses to run before loading, to rerun an ended guest, and programs that do not fit', async function () {
    using m = GuestMachine.create({ memory: '2M' });
    await expectRejection(m.run(), Error).then((e) => expect(e.message).to.match(/nothing to run: load a program/));
    const g = m.loadElf(readFileSync(guestProgramPath('hello')));
    expect((await g.run()).exitCode).to.equal(42);
    await expectRejection(g.run(), Error).then((e) => expect(e.message).to.match(/already ended \(exit code 42\)/));
    const tooHigh = buildElf({ segments: [{ paddr: 0x1ff000, data: new Uint8Array(16), memsz: 0x2000 }] });
    expect(() => m.loadElf(tooHigh)).to.throw(ElfError, /\[0x1ff000, 0x201000\) lies outside guest memory \[0, 0x200000\)/);
    const tooLow = buildElf({ segments: [{ paddr: 0x8000, data: new Uint8Array(16), memsz: 16 }] });
    expect(() => m.loadElf(tooLow)).to.throw(ElfError, /overlaps the host structures/);
    expect(() => m.loadElf('/nonexistent.elf')).to.throw(ElfError, /cannot read \/nonexistent.elf/);
  });
});

describe('GuestMachine lifecycle', function () {
  before(function () { requireKvm(this); });

  it('refuses memory too small for the host structures plus a program', function () {
    expect(() => GuestMachine.create({ memory: '1M' })).to.throw(RangeError, /too small.*at least 2M/);
  });

  it('dispose is idempotent and the machine is unusable afterwards, with a clear error', async function () {
    const m = GuestMachine.create({ memory: '4M' });
    m.dispose();
    m.dispose();
    expect(m.disposed).to.equal(true);
    expect(() => m.loadElf(guestProgramPath('hello'))).to.throw(/cannot load a program into a disposed GuestMachine/);
    await expectRejection(m.run(), Error).then((e) => expect(e.message).to.match(/cannot run a disposed GuestMachine/));
  });

  it('releases every file descriptor: 50 create/run/dispose cycles', async function () {
    const fds = () => readdirSync('/proc/self/fd').length;
    await runGuestProgram('hello'); // warm up lazily opened descriptors
    const before = fds();
    for (let i = 0; i < 50; i++) {
      using m = GuestMachine.create({ memory: '4M' });
      if (i % 10 === 0) await m.loadElf(guestProgramPath('hello')).run();
    }
    expect(fds()).to.equal(before);
  });
});
