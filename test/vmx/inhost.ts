// Helpers for the in-host suite (runs only inside the emulated VT-x host): model-
// specific registers through the msr driver, and KVM module (un)loading.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

/** Root of the test disk's ELISA files (modules, guest blobs), set by suite.sh. */
export const vmxRoot = process.env.ELISA_VMX_ROOT ?? '/elisa';

/**
 * Reads MSR `index` of CPU `cpu` through /dev/cpu/N/msr (the `msr` module, loaded by
 * suite.sh): the driver maps the file offset to the MSR index and returns 8 bytes.
 * A non-existent MSR makes the read fail with EIO, which surfaces as an error naming it.
 */
export function readMsr(index: number, cpu = 0): bigint {
  const fd = openSync(`/dev/cpu/${cpu}/msr`, 'r');
  try {
    const buf = Buffer.alloc(8);
    const n = readSync(fd, buf, 0, 8, index);
    if (n !== 8) throw new Error(`MSR 0x${index.toString(16)}: read ${n} bytes, expected 8`);
    return buf.readBigUInt64LE(0);
  } catch (e) {
    throw new Error(`cannot read MSR 0x${index.toString(16)} on CPU ${cpu}: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

/** Bit `bit` (0..63) of a 64-bit value, as a boolean. */
export function bitSet(value: bigint, bit: number): boolean {
  return ((value >> BigInt(bit)) & 1n) === 1n;
}

/** Whether a kernel module is loaded (its /sys/module entry exists with a refcount). */
export function moduleLoaded(name: string): boolean {
  return existsSync(`/sys/module/${name}/refcnt`);
}

/** A module parameter's value as the kernel prints it (e.g. "Y"), trimmed. */
export function moduleParam(module: string, param: string): string {
  return readFileSync(`/sys/module/${module}/parameters/${param}`, 'utf8').trim();
}

/** Kernel log lines that signal a kernel bug or warning (empty when the log is clean). */
export function kernelProblems(): string[] {
  const log = execFileSync('dmesg', { encoding: 'utf8' });
  return log.split('\n').filter((l) => /WARNING:|BUG:|Oops|general protection|Call Trace|kernel panic/i.test(l));
}

/** Runs a program of the emulated host; a failure carries its stderr. */
function sh(file: string, args: string[]): void {
  try {
    execFileSync(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** KVM module sets on the test disk: Debian's, and the two ELISA patch variants. */
export type KvmVariant = 'stock' | 'compat' | 'hardened';

/** Whether the e2e script put the `variant` modules on the test disk (ELISA_VMX_VARIANTS). */
export function variantOnDisk(variant: KvmVariant): boolean {
  return existsSync(join(vmxRoot, 'modules', variant, 'kvm-intel.ko'));
}

/**
 * Replaces the loaded kvm + kvm_intel with the `variant` build from the test disk
 * (irqbypass stays). Every VM must be closed first, or rmmod fails (module in use).
 */
export function loadKvmVariant(variant: KvmVariant): void {
  const dir = join(vmxRoot, 'modules', variant);
  if (!existsSync(join(dir, 'kvm-intel.ko'))) {
    throw new Error(`no ${variant} KVM modules on the test disk (${dir}): scripts/vmx-e2e.sh did not build or copy them`);
  }
  for (const m of ['kvm_intel', 'kvm']) if (moduleLoaded(m)) sh('rmmod', [m]);
  sh('insmod', [join(dir, 'kvm.ko')]);
  sh('insmod', [join(dir, 'kvm-intel.ko')]);
}

/** The ELISA variant the loaded kvm_intel reports, or null for a module without ELISA. */
export function elisaVariant(): string | null {
  const file = '/sys/module/kvm_intel/parameters/elisa_variant';
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : null;
}
