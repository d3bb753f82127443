// PIO-exit round trip: a real-mode guest loops on `out; jmp back`, so every
// KVM_RUN returns with KVM_EXIT_IO. Driven from Node (Vcpu.runRaw(), the
// allocation-free synchronous path) and from C with raw ioctls (bench/c/exit.c,
// compiled here with gcc), interleaved in rounds in the same run so both see
// the same machine load. Prints median and min µs/exit and Node/C ratios.
//
//   npm run bench:exit [-- --rounds 5 --batches 10 --exits 2000]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitReason, GuestMemory, Kvm } from '../src/kvm/index';

/** `out %al, $0x10; jmp -4`, the same bytes as bench/c/exit.c. */
const LOOP = [0xe6, 0x10, 0xeb, 0xfc];

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a positive integer`);
  return v;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs `batches` batches of `exits` exits from Node; µs/exit per batch. */
function nodeBatches(batches: number, exits: number, decoded: boolean): number[] {
  using kvm = Kvm.open();
  using memory = GuestMemory.anonymous('64K');
  memory.bytes(0x1000, LOOP.length).set(LOOP);
  using vm = kvm.createVm();
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  vcpu.setSregs({ ...s, cs: { ...s.cs, base: 0n, selector: 0 } });
  vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 2n });
  for (let i = 0; i < 100; i++) vcpu.runRaw();
  const out: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = process.hrtime.bigint();
    if (decoded) {
      for (let i = 0; i < exits; i++) {
        if (vcpu.run().kind !== 'io') throw new Error(`unexpected exit: ${JSON.stringify(vcpu.lastExit())}`);
      }
    } else {
      for (let i = 0; i < exits; i++) {
        if (vcpu.runRaw() !== ExitReason.IO) throw new Error(`unexpected exit: ${JSON.stringify(vcpu.lastExit())}`);
      }
    }
    out.push(Number(process.hrtime.bigint() - t0) / 1e3 / exits);
  }
  vm.deleteMemoryRegion(0);
  return out;
}

function hostLine(): string {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1] ?? '';
  const hw = /\bvmx\b/.test(flags) ? 'VMX' : /\bsvm\b/.test(flags) ? 'SVM' : 'no VMX/SVM (nested/PVM KVM)';
  return `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} CPUs, Linux ${release()}, ${hw}`;
}

function main(): void {
  const rounds = arg('rounds', 5);
  const batches = arg('batches', 10);
  const exits = arg('exits', 2000);
  const dir = mkdtempSync(join(tmpdir(), 'elisa-bench-'));
  try {
    const exe = join(dir, 'exit');
    const src = join(__dirname, '..', '..', 'bench', 'c', 'exit.c');
    execFileSync('gcc', ['-O2', '-o', exe, src], { stdio: 'inherit' });
    const c: number[] = [];
    const node: number[] = [];
    const decoded: number[] = [];
    for (let r = 0; r < rounds; r++) {
      c.push(...(JSON.parse(execFileSync(exe, [String(batches), String(exits)]).toString()) as number[]));
      node.push(...nodeBatches(batches, exits, false));
      decoded.push(...nodeBatches(batches, exits, true));
    }
    const row = (name: string, xs: number[]) => `${name.padEnd(22)} ${median(xs).toFixed(3).padStart(9)} ${Math.min(...xs).toFixed(3).padStart(9)}`;
    console.log(`PIO exit round trip — backend: KVM (/dev/kvm), host: ${hostLine()}`);
    console.log(`${rounds} rounds x ${batches} batches x ${exits} exits each, interleaved C / Node runRaw / Node run`);
    console.log(`${''.padEnd(22)} ${'median'.padStart(9)} ${'min'.padStart(9)}   (µs/exit)`);
    console.log(row('C (raw ioctl)', c));
    console.log(row('Node Vcpu.runRaw()', node));
    console.log(row('Node Vcpu.run() decoded', decoded));
    console.log(`Node/C ratio: median ${(median(node) / median(c)).toFixed(3)}, min ${(Math.min(...node) / Math.min(...c)).toFixed(3)}  (target <= 1.10; runRaw vs C)`);
    console.log(`Node run()/C ratio: median ${(median(decoded) / median(c)).toFixed(3)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
