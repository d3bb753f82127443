// `elisa doctor`: what this host offers for ELISA, and why. Reads /proc and
// /sys, opens /dev/kvm, times a short guest loop, and derives which backends
// can work. Issues a hypercall only on Intel VMX hosts with VMFUNC whose kvm_intel
// does not name its ELISA variant (a VMCALL hangs inside KVM_RUN on some hosts), and
// bounds every guest run with a timeout.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import type { CliCommand } from '../command';
import { integerOption, parseCommandLine } from '../args';
import { Cap, ExitReason, GuestMemory, Kvm, SYNC_REGS_ALL } from '../../kvm/index';
import { detectVmfunc } from '../../elisa/backends/vmfunc/availability';

/** Everything doctor found out; printed as text or, with --json, as is. */
export interface DoctorReport {
  kvm: {
    device: string;
    available: boolean;
    error?: string;
    apiVersion?: number;
    modules: string[];
    modulesSource: string;
    /** Capabilities that matter to ELISA, by KVM_CAP_ name. */
    capabilities: Record<string, number>;
  };
  cpu: {
    vendor: 'Intel' | 'AMD' | 'other';
    vendorId: string;
    model: string;
    /** Running under a hypervisor (cpuinfo `hypervisor` flag). */
    hypervisor: boolean;
    vmx: boolean;
    svm: boolean;
    ept: boolean;
    npt: boolean;
    /** VMFUNC EPTP switching: true/false when known, null when it could not be read. */
    vmfuncEptpSwitching: boolean | null;
    vmfuncSource: string;
  };
  guest: {
    /** 'hardware' (native speed), 'emulated' (each instruction trapped), or 'unknown'. */
    instructionPath: 'hardware' | 'emulated' | 'unknown';
    iterations: number;
    nsPerIteration?: number;
    error?: string;
  };
  backends: {
    emulated: { available: boolean; reason: string };
    vmfunc: { available: boolean; reason: string };
  };
}

const LOOP_ITERATIONS = 100_000;
const RUN_TIMEOUT_MS = 10_000;
/** A dec/jnz iteration costs a few ns on hardware; trapping each instruction costs ~µs. */
const EMULATED_THRESHOLD_NS = 50;
/** MSRs read through /dev/cpu/0/msr on Intel hosts (Intel SDM vol. 3, appendix A). */
const IA32_VMX_PROCBASED_CTLS2 = 0x48b;
const IA32_VMX_VMFUNC = 0x491;
const PROCBASED2_ENABLE_VMFUNC_BIT = 45n; // allowed-1 half: bit 13 of the high dword

function read(path: string): string | undefined {
  try { return readFileSync(path, 'utf8'); } catch { return undefined; }
}

function cpuInfo(): DoctorReport['cpu'] {
  const text = read('/proc/cpuinfo') ?? '';
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  const flags = new Set(field('flags').split(/\s+/));
  const vmxFlags = new Set(field('vmx flags').split(/\s+/));
  const vendorId = field('vendor_id');
  const vendor = vendorId === 'GenuineIntel' ? 'Intel' : vendorId === 'AuthenticAMD' ? 'AMD' : 'other';
  const vmx = flags.has('vmx');
  const cpu: DoctorReport['cpu'] = {
    vendor, vendorId, model: field('model name'), hypervisor: flags.has('hypervisor'),
    vmx, svm: flags.has('svm'), ept: flags.has('ept') || vmxFlags.has('ept'), npt: flags.has('npt'),
    vmfuncEptpSwitching: vmx ? null : false,
    vmfuncSource: vmx ? '' : 'no VMX: VMFUNC is an Intel VMX feature',
  };
  if (vmx) {
    const msr = readMsr(IA32_VMX_PROCBASED_CTLS2);
    const vmfunc = readMsr(IA32_VMX_VMFUNC);
    if (msr === undefined || vmfunc === undefined) {
      cpu.vmfuncSource = 'unknown: cannot read /dev/cpu/0/msr (load the msr module and run as root)';
    } else {
      const allowed = ((msr >> PROCBASED2_ENABLE_VMFUNC_BIT) & 1n) === 1n;
      cpu.vmfuncEptpSwitching = allowed && (vmfunc & 1n) === 1n;
      cpu.vmfuncSource = `IA32_VMX_PROCBASED_CTLS2 "enable VM functions" allowed=${allowed}, IA32_VMX_VMFUNC=0x${vmfunc.toString(16)}`;
    }
  }
  return cpu;
}

function readMsr(index: number): bigint | undefined {
  let fd: number | undefined;
  try {
    fd = openSync('/dev/cpu/0/msr', 'r');
    const b = Buffer.alloc(8);
    if (readSync(fd, b, 0, 8, index) !== 8) return undefined;
    return b.readBigUInt64LE(0);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function kvmModules(): { modules: string[]; source: string } {
  const procModules = read('/proc/modules');
  if (procModules !== undefined) {
    return { modules: procModules.split('\n').map((l) => l.split(' ')[0]).filter((m) => /^kvm/.test(m)), source: '/proc/modules' };
  }
  try {
    return { modules: readdirSync('/sys/module').filter((m) => /^kvm/.test(m)).sort(), source: '/sys/module (no /proc/modules)' };
  } catch {
    return { modules: [], source: 'unknown (no /proc/modules, no /sys/module)' };
  }
}

/** Real mode: `mov $N, %ecx; 1: dec %ecx; jnz 1b; hlt` (bytes from GNU as). */
function loopCode(iterations: number): Uint8Array {
  const code = new Uint8Array([0x66, 0xb9, 0, 0, 0, 0, 0x66, 0x49, 0x75, 0xfc, 0xf4]);
  new DataView(code.buffer).setUint32(2, iterations, true);
  return code;
}

/** Times the guest loop: ns per iteration, with the cost of entering the guest subtracted. */
function timeGuestLoop(kvm: Kvm, iterations: number): number {
  using memory = GuestMemory.anonymous('64K');
  using vm = kvm.createVm();
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  vcpu.setSregs({ ...s, cs: { ...s.cs, base: 0n, selector: 0 } });
  const once = (n: number): number => {
    memory.bytes(0x1000, 11).set(loopCode(n));
    vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 2n });
    const t0 = process.hrtime.bigint();
    const reason = vcpu.runRaw(RUN_TIMEOUT_MS);
    const ns = Number(process.hrtime.bigint() - t0);
    if (reason === ExitReason.INTR) throw new Error(`a ${n}-iteration guest loop did not finish within ${RUN_TIMEOUT_MS} ms`);
    if (reason !== ExitReason.HLT) throw new Error(`guest loop ended with exit ${ExitReason[reason] ?? reason}, expected HLT`);
    return ns;
  };
  once(1); // warm up
  const base = Math.min(once(1), once(1));
  const full = once(iterations);
  vm.deleteMemoryRegion(0);
  return Math.max(full - base, 0) / (iterations - 1);
}

/** Gathers the report. Never throws for host problems: they are reported. */
export function collectDoctorReport(options: { iterations?: number; device?: string } = {}): DoctorReport {
  const iterations = options.iterations ?? LOOP_ITERATIONS;
  const device = options.device ?? '/dev/kvm';
  const { modules, source } = kvmModules();
  const report: DoctorReport = {
    kvm: { device, available: false, modules, modulesSource: source, capabilities: {} },
    cpu: cpuInfo(),
    guest: { instructionPath: 'unknown', iterations },
    backends: { emulated: { available: false, reason: '' }, vmfunc: { available: false, reason: '' } },
  };
  let kvm: Kvm | undefined;
  try {
    if (!existsSync(device)) throw new Error(`${device} does not exist (KVM module not loaded, or no virtualization support)`);
    kvm = Kvm.open(device);
    report.kvm.available = true;
    report.kvm.apiVersion = kvm.apiVersion;
    for (const cap of [Cap.SYNC_REGS, Cap.EXIT_ON_EMULATION_FAILURE, Cap.READONLY_MEM, Cap.NR_MEMSLOTS, Cap.IMMEDIATE_EXIT, Cap.X86_ROBUST_SINGLESTEP]) {
      report.kvm.capabilities[Cap[cap]] = kvm.checkExtension(cap);
    }
    try {
      const ns = timeGuestLoop(kvm, iterations);
      report.guest.nsPerIteration = ns;
      report.guest.instructionPath = ns > EMULATED_THRESHOLD_NS ? 'emulated' : 'hardware';
    } catch (err) {
      report.guest.error = (err as Error).message;
    }
  } catch (err) {
    report.kvm.error = (err as Error).message;
  } finally {
    kvm?.dispose();
  }
  report.backends.emulated = emulatedBackend(report);
  report.backends.vmfunc = vmfuncBackend(report);
  return report;
}

function emulatedBackend(r: DoctorReport): { available: boolean; reason: string } {
  if (!r.kvm.available) return { available: false, reason: `KVM is not usable: ${r.kvm.error}` };
  if (r.guest.error) return { available: false, reason: `guests do not run correctly: ${r.guest.error}` };
  const sync = r.kvm.capabilities.SYNC_REGS ?? 0;
  const how = (sync & SYNC_REGS_ALL) === SYNC_REGS_ALL
    ? 'vCPU state moves between VMs through KVM_CAP_SYNC_REGS (regs|sregs|events), no extra ioctl'
    : 'vCPU state moves between VMs with GET/SET ioctls (KVM_CAP_SYNC_REGS incomplete)';
  return { available: true, reason: `KVM works and runs guests; ${how}` };
}

function vmfuncBackend(r: DoctorReport): { available: boolean; reason: string } {
  const c = r.cpu;
  if (!r.kvm.available) return { available: false, reason: `KVM is not usable: ${r.kvm.error}` };
  if (!c.vmx) {
    return { available: false, reason: `needs Intel VMX with VMFUNC EPTP switching; this CPU is ${c.vendor} (${c.model || c.vendorId}) without VMX` +
      `${c.hypervisor ? ', running under a hypervisor' : ''}${r.kvm.modules.length ? ` with KVM modules ${r.kvm.modules.join(', ')}` : ''}` };
  }
  if (!c.ept) return { available: false, reason: 'needs EPT, which this VMX CPU does not offer' };
  if (c.vmfuncEptpSwitching === false) return { available: false, reason: `the CPU does not offer VMFUNC EPTP switching (${c.vmfuncSource})` };
  if (c.vmfuncEptpSwitching === null) return { available: false, reason: `VMFUNC EPTP switching could not be checked: ${c.vmfuncSource}` };
  // The ELISA variant of kvm_intel: its elisa_variant parameter, else a probe hypercall
  // in a throw-away VM with a run timeout (only reached on Intel VMX hosts with VMFUNC).
  const d = detectVmfunc();
  return { available: d.available, reason: d.reason };
}

function yesNo(b: boolean | null): string { return b === null ? 'unknown' : b ? 'yes' : 'no'; }

/** The report as aligned text. */
export function formatDoctorReport(r: DoctorReport): string {
  const line = (k: string, v: string) => `  ${k.padEnd(Math.max(22, k.length + 2))}${v}`;
  const out = ['elisa doctor: what this host offers for ELISA', '', 'KVM'];
  out.push(line(r.kvm.device, r.kvm.available ? `ok, API version ${r.kvm.apiVersion}` : `not usable: ${r.kvm.error}`));
  out.push(line('modules', `${r.kvm.modules.join(', ') || 'none found'} (from ${r.kvm.modulesSource})`));
  for (const [name, value] of Object.entries(r.kvm.capabilities)) out.push(line(`KVM_CAP_${name}`, String(value)));
  out.push('', 'CPU');
  out.push(line('vendor', `${r.cpu.vendor} (${r.cpu.vendorId || 'unknown'})${r.cpu.model ? `, ${r.cpu.model}` : ''}`));
  out.push(line('under a hypervisor', yesNo(r.cpu.hypervisor)));
  out.push(line('VMX / SVM', `${yesNo(r.cpu.vmx)} / ${yesNo(r.cpu.svm)}`));
  out.push(line('EPT / NPT', `${yesNo(r.cpu.ept)} / ${yesNo(r.cpu.npt)}`));
  out.push(line('VMFUNC EPTP switching', `${yesNo(r.cpu.vmfuncEptpSwitching)}${r.cpu.vmfuncSource ? ` (${r.cpu.vmfuncSource})` : ''}`));
  out.push('', 'Guest execution');
  if (r.guest.nsPerIteration !== undefined) {
    const per = r.guest.nsPerIteration >= 1000 ? `${(r.guest.nsPerIteration / 1000).toFixed(2)} µs` : `${r.guest.nsPerIteration.toFixed(1)} ns`;
    out.push(line('instruction path', `${r.guest.instructionPath}: ${per} per dec/jnz iteration (${r.guest.iterations} iterations)`));
  } else {
    out.push(line('instruction path', `unknown${r.guest.error ? `: ${r.guest.error}` : ''}`));
  }
  out.push('', 'ELISA backends');
  for (const [name, b] of Object.entries(r.backends)) out.push(line(name, `${b.available ? 'available' : 'not available'}: ${b.reason}`));
  return out.join('\n');
}

/** The `elisa doctor` command. */
export const doctor: CliCommand = {
  name: 'doctor',
  summary: 'what this host offers for ELISA (KVM, CPU features, backends) and why',
  usage: [
    'usage: elisa doctor [--json] [--iterations N]',
    '',
    'Reports the KVM API version and modules, the CPU vendor and VMX/SVM/EPT/VMFUNC',
    'support, whether guest instructions run in hardware or are emulated (timed with a',
    'short guest loop), and which ELISA backends can work here, each with the reason.',
    '',
    '  --json          print the report as JSON',
    `  --iterations N  guest loop length (default ${LOOP_ITERATIONS})`,
  ].join('\n'),
  async run(argv, io) {
    const { values } = parseCommandLine(argv, { json: { type: 'boolean' }, iterations: { type: 'string' } });
    const json = values.json ?? false;
    const iterations = integerOption('iterations', values.iterations, 2, 0xffffffff, LOOP_ITERATIONS);
    const report = collectDoctorReport({ iterations });
    io.out(json ? JSON.stringify(report, null, 2) : formatDoctorReport(report));
    return 0;
  },
};
