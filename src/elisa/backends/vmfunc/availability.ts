// Whether the vmfunc backend can run on this host, and why (not). It needs:
//  1. an Intel CPU with VMX visible to this kernel;
//  2. VMFUNC EPTP switching: IA32_VMX_PROCBASED_CTLS2 (0x48B) allowed-1 bit 45 ("enable
//     VM functions") and IA32_VMX_VMFUNC (0x491) bit 0 ("EPTP switching"), read through
//     KVM's feature-MSR interface (KVM_GET_MSRS on /dev/kvm, what KVM offers nested
//     guests, which mirrors the CPU for these bits) or /dev/cpu/0/msr;
//  3. an ELISA-patched kvm_intel: the patches export the module parameter
//     `elisa_variant` (compat|hardened); a module without it (stock, or another build of
//     the original ABI) is asked with hypercall 1001/3/1 in a throw-away VM, run with a
//     timeout, and only on an Intel/VMX host (elsewhere a VMCALL may spin forever).
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { Kvm } from '../../../kvm';
import { GuestMachine as X86Machine } from '../../../x86/machine';
import { ElisaCall, hypercallError, KvmHcError, type ElisaVariant } from './abi';
import { HypercallError, hypercallOn } from './stub';

/** MSR indices (SDM vol. 3, appendix A). */
export const MSR_VMX_PROCBASED_CTLS2 = 0x48b;
export const MSR_VMX_EPT_VPID_CAP = 0x48c;
export const MSR_VMX_VMFUNC = 0x491;

/** What the detection found. */
export interface VmfuncDetection {
  available: boolean;
  /** One sentence: why it is (not) available. */
  reason: string;
  /** CPU vendor from /proc/cpuinfo. */
  vendor: string;
  /** VMX flag present. */
  vmx: boolean;
  /** VMFUNC EPTP switching (undefined: not checked or not readable). */
  eptpSwitching?: boolean;
  /** Where the MSRs were read. */
  msrSource?: 'kvm-feature-msrs' | '/dev/cpu/0/msr';
  /** IA32_VMX_EPT_VPID_CAP, when readable: execute-only (bit 0) and A/D (bit 21) support. */
  eptCaps?: { executeOnly: boolean; accessDirty: boolean };
  /** The ELISA patch in the loaded kvm_intel (undefined: none or not checked). */
  variant?: ElisaVariant;
  /** How the variant was learnt. */
  variantSource?: 'sysfs' | 'probe';
}

/** Inputs of detectVmfunc (defaults: this host). */
export interface DetectOptions {
  /** /proc/cpuinfo text. */
  cpuinfo?: string;
  /** Directory of kvm_intel's module parameters. */
  kvmIntelParameters?: string;
  /** Run the probe hypercall when the module has no elisa_variant parameter (default true). */
  probe?: boolean;
  /** Bound on the probe run in ms (default 2000). */
  probeTimeoutMs?: number;
}

function readText(path: string): string | undefined {
  try { return readFileSync(path, 'utf8'); } catch { return undefined; }
}

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;

/** Reads MSRs through /dev/cpu/0/msr (the msr module); undefined if impossible. */
function readCpuMsrs(indices: readonly number[]): bigint[] | undefined {
  if (!existsSync('/dev/cpu/0/msr')) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync('/dev/cpu/0/msr', 'r');
    const buf = Buffer.alloc(8);
    return indices.map((i) => {
      if (readSync(fd!, buf, 0, 8, i) !== 8) throw new Error('short read');
      return buf.readBigUInt64LE(0);
    });
  } catch { return undefined; } finally { if (fd !== undefined) closeSync(fd); }
}

/** Reads MSRs through KVM's feature-MSR interface; undefined if KVM does not offer them. */
function readKvmFeatureMsrs(indices: readonly number[]): bigint[] | undefined {
  if (!existsSync('/dev/kvm')) return undefined;
  try {
    using kvm = Kvm.open();
    const list = kvm.msrFeatureIndexList();
    if (!indices.every((i) => list.includes(i))) return undefined;
    return kvm.getFeatureMsrs(indices);
  } catch { return undefined; }
}

/**
 * Asks the loaded kvm_intel for 1001/3/1 in a throw-away VM. Returns 'compat' for a
 * module that answers (the original ABI; only our hardened patch differs, and it exports
 * elisa_variant), undefined for -KVM_ENOSYS, and throws HypercallError on a timeout.
 */
export function probeVariant(timeoutMs = 2000): ElisaVariant | undefined {
  using m = X86Machine.create({ memory: '2M' });
  const r = hypercallOn(m.vcpu, m.bytes, 0x100000, ElisaCall.vcpuId(), timeoutMs);
  if (BigInt.asIntN(64, r) === -BigInt(KvmHcError.ENOSYS)) return undefined;
  if (hypercallError(r) !== undefined) return undefined;
  return 'compat';
}

/** Detects everything the vmfunc backend needs; never hangs (the probe has a timeout). */
export function detectVmfunc(options: DetectOptions = {}): VmfuncDetection {
  const cpuinfo = options.cpuinfo ?? readText('/proc/cpuinfo') ?? '';
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.trim().split(/\s+/) ?? [];
  const vendor = /^vendor_id\s*:\s*(\S+)/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const vmx = flags.includes('vmx');
  const base = { vendor, vmx };
  if (!vmx) {
    return { ...base, available: false,
      reason: `the CPU (${vendor}) exposes no VMX to this kernel, so VMFUNC EPTP switching does not exist here` +
        (flags.includes('svm') ? ' (AMD SVM has no VMFUNC)' : '') };
  }
  // No test of /proc/cpuinfo's "vmx flags": Linux lists neither VM functions nor EPTP
  // switching there (their names are hidden), so only the MSRs can tell.
  const paramsDir = options.kvmIntelParameters ?? '/sys/module/kvm_intel/parameters';
  if (options.kvmIntelParameters === undefined && !existsSync('/sys/module/kvm_intel')) {
    return { ...base, available: false, reason: 'kvm_intel is not loaded' };
  }
  if (options.cpuinfo === undefined && !existsSync('/dev/kvm')) return { ...base, available: false, reason: '/dev/kvm does not exist' };

  const wanted = [MSR_VMX_PROCBASED_CTLS2, MSR_VMX_VMFUNC, MSR_VMX_EPT_VPID_CAP];
  let msrs = readKvmFeatureMsrs(wanted);
  let msrSource: VmfuncDetection['msrSource'] = 'kvm-feature-msrs';
  if (!msrs) { msrs = readCpuMsrs(wanted); msrSource = '/dev/cpu/0/msr'; }
  if (!msrs) {
    return { ...base, available: false,
      reason: 'cannot read the VMX capability MSRs 0x48B/0x491: KVM does not offer them as feature MSRs (kvm_intel nested=0?) and /dev/cpu/0/msr is missing (modprobe msr)' };
  }
  const [ctls2, vmfunc, eptCap] = msrs as [bigint, bigint, bigint];
  const eptpSwitching = bit(ctls2, 32 + 13) && bit(vmfunc, 0);
  const eptCaps = { executeOnly: bit(eptCap, 0), accessDirty: bit(eptCap, 21) };
  const withMsrs = { ...base, msrSource, eptpSwitching, eptCaps };
  if (!eptpSwitching) {
    return { ...withMsrs, available: false,
      reason: `the CPU has VMX but no VMFUNC EPTP switching (MSR 0x48B bit 45 = ${bit(ctls2, 45) ? 1 : 0}, MSR 0x491 bit 0 = ${bit(vmfunc, 0) ? 1 : 0})` };
  }

  const param = readText(`${paramsDir}/elisa_variant`)?.trim();
  if (param === 'compat' || param === 'hardened') {
    return { ...withMsrs, available: true, variant: param, variantSource: 'sysfs',
      reason: `Intel VMX with VMFUNC EPTP switching and the ELISA-patched kvm_intel (${param} variant)` };
  }
  if (param !== undefined) {
    return { ...withMsrs, available: false, reason: `kvm_intel reports an ELISA variant this package does not know: '${param}'` };
  }
  if (options.probe === false) {
    return { ...withMsrs, available: false, reason: 'kvm_intel has no elisa_variant parameter (stock module?) and the probe hypercall was not run' };
  }
  try {
    const variant = probeVariant(options.probeTimeoutMs);
    if (!variant) {
      return { ...withMsrs, available: false,
        reason: 'kvm_intel is not ELISA-patched: hypercall 1001/3/1 returned -KVM_ENOSYS (build and load kernel-patch/ with scripts/kvm-module.sh)' };
    }
    return { ...withMsrs, available: true, variant, variantSource: 'probe',
      reason: 'Intel VMX with VMFUNC EPTP switching; kvm_intel answers the ELISA hypercalls (original ABI, used as the compat variant)' };
  } catch (err) {
    const why = err instanceof HypercallError ? err.message : `the probe VM failed: ${err instanceof Error ? err.message : String(err)}`;
    return { ...withMsrs, available: false, reason: `probe hypercall 1001/3/1: ${why}` };
  }
}
