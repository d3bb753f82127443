// The /dev/kvm system file descriptor (rust-vmm's `Kvm`): API version,
// capabilities, supported CPUID and MSRs, and VM creation.
import { Cap, capName, checkCapArgument } from './cap';
import { DisposedError } from './errors';
import { readMsrs } from './msrs';
import { native } from './native';
import { decodeCpuidEntries, type CpuidEntry } from './structs';
import { Sizeof } from './layout';
import { Vm, type VmOptions } from './vm';

/** The only stable KVM API version; KVM_GET_API_VERSION must return it. */
export const KVM_API_VERSION = 12;

const fdRegistry = new FinalizationRegistry<number>((fd) => { try { native.close(fd); } catch { /* gone */ } });

/** An open /dev/kvm. Dispose it to close the fd (and every VM created from it). */
export class Kvm implements Disposable {
  #fd: number;
  #vcpuMmapSize = 0;
  readonly #vms = new Set<Vm>();

  private constructor(fd: number) {
    this.#fd = fd;
    fdRegistry.register(this, fd, this);
  }

  /** Opens the KVM device and checks that it speaks API version 12. */
  static open(path = '/dev/kvm'): Kvm {
    const fd = native.openKvm(path);
    const version = native.getApiVersion(fd);
    if (version !== KVM_API_VERSION) {
      native.close(fd);
      throw new Error(`${path} speaks KVM API version ${version}; this package needs ${KVM_API_VERSION}`);
    }
    return new Kvm(fd);
  }

  /** The system fd. Owned by this object. */
  get fd(): number {
    if (this.#fd < 0) throw new DisposedError('Kvm');
    return this.#fd;
  }

  /** KVM_GET_API_VERSION (always 12 for an open Kvm). */
  get apiVersion(): number { return native.getApiVersion(this.fd); }

  /** KVM_CHECK_EXTENSION on the system fd: 0 if unsupported, else a cap-specific value. */
  checkExtension(cap: Cap): number {
    checkCapArgument(cap);
    return native.checkExtension(this.fd, cap);
  }

  /** Name and value of a capability, for messages. */
  describeCap(cap: Cap): string { return `${capName(cap)} = ${this.checkExtension(cap)}`; }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes of each vCPU's kvm_run mapping. */
  get vcpuMmapSize(): number {
    if (this.#vcpuMmapSize === 0) this.#vcpuMmapSize = native.getVcpuMmapSize(this.fd);
    return this.#vcpuMmapSize;
  }

  /** KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can expose to guests. */
  supportedCpuid(): CpuidEntry[] {
    const raw = native.getSupportedCpuid(this.fd);
    return decodeCpuidEntries(new DataView(raw), raw.byteLength / Sizeof.kvm_cpuid_entry2);
  }

  /** KVM_GET_MSR_INDEX_LIST: MSRs a vCPU's KVM_GET/SET_MSRS may access. */
  msrIndexList(): number[] { return Array.from(native.getMsrIndexList(this.fd)); }

  /** KVM_GET_MSR_FEATURE_INDEX_LIST: feature MSRs readable on the system fd. */
  msrFeatureIndexList(): number[] { return Array.from(native.getMsrFeatureIndexList(this.fd)); }

  /** KVM_GET_MSRS on the system fd: values of feature MSRs (e.g. IA32_ARCH_CAPABILITIES). */
  getFeatureMsrs(indices: readonly number[]): bigint[] { return readMsrs(this.fd, indices, 'the system fd'); }

  /** KVM_CREATE_VM. The VM is disposed with this Kvm unless disposed before. */
  createVm(options: VmOptions = {}): Vm {
    const vm = new Vm(this, native.createVm(this.fd, options.type ?? 0), () => this.#vms.delete(vm));
    this.#vms.add(vm);
    return vm;
  }

  /** True once dispose() ran. */
  get disposed(): boolean { return this.#fd < 0; }

  /** Disposes every VM created from this Kvm, then closes /dev/kvm. Idempotent. */
  dispose(): void {
    if (this.#fd < 0) return;
    for (const vm of [...this.#vms]) vm.dispose();
    fdRegistry.unregister(this);
    native.close(this.#fd);
    this.#fd = -1;
  }

  /** Same as dispose(), for `using`. */
  [Symbol.dispose](): void { this.dispose(); }
}
