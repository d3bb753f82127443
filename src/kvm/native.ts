// Loads the compiled addon (build/Release/elisa_kvm.node) once for the whole
// package and describes its functions. Everything here is internal: the typed
// API is Kvm / Vm / Vcpu / GuestMemory. Structs cross as byte buffers of exactly
// sizeof(struct) (checked natively); src/kvm/structs.ts lays them out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import bindings = require('bindings');
import { HostError, KvmError } from './errors';

/** A vCPU runner: KVM_RUN on the caller's thread or on the vCPU's own thread. */
export interface NativeVcpuRunner {
  /** One KVM_RUN; timeoutMs < 0 means none. Returns kvm_run.exit_reason (INTR on EINTR). */
  runSync(timeoutMs: number): number;
  /** One KVM_RUN on the vCPU's dedicated thread. */
  runAsync(timeoutMs: number): Promise<number>;
  /** Interrupts a runAsync in flight; false if none was. */
  kick(): boolean;
  /** Why the last INTR exit happened (InterruptCause). */
  lastInterruptCause(): number;
  /** True while a runAsync is in flight. */
  isRunning(): boolean;
  /** n KVM_RUNs in C++ (benchmark baseline inside this process); returns how many gave `expected`. */
  runLoop(n: number, expected: number): number;
  /** Kicks and joins a run in flight, stops the thread, unmaps kvm_run. Idempotent. */
  close(): void;
}

/** The addon's exports (native/addon/*.cc). */
export interface NativeAddon {
  setErrorClasses(kvmError: typeof KvmError, hostError: typeof HostError): void;
  layout(): Record<string, number>;
  requests(): Record<string, number>;
  openKvm(path: string): number;
  close(fd: number): void;
  dup(fd: number): number;
  // system fd
  getApiVersion(fd: number): number;
  checkExtension(fd: number, cap: number): number;
  getVcpuMmapSize(fd: number): number;
  createVm(fd: number, type: number): number;
  getSupportedCpuid(fd: number): ArrayBuffer;
  getMsrIndexList(fd: number): Uint32Array;
  getMsrFeatureIndexList(fd: number): Uint32Array;
  getMsrs(fd: number, indices: Uint32Array, values: BigUint64Array): number;
  setMsrs(fd: number, indices: Uint32Array, values: BigUint64Array): number;
  // VM fd
  setUserMemoryRegion(fd: number, slot: number, flags: number, guestPhysAddr: bigint, size: bigint,
    memory: ArrayBuffer | null, offset: bigint): void;
  getDirtyLog(fd: number, slot: number, bitmap: Uint8Array): void;
  setTssAddr(fd: number, address: bigint): number;
  setIdentityMapAddr(fd: number, address: bigint): void;
  createVcpu(fd: number, id: number): number;
  enableCap(fd: number, cap: number, flags: number, args: BigUint64Array): void;
  // vCPU fd (struct buffers)
  getRegs(fd: number, buf: Uint8Array): void;
  setRegs(fd: number, buf: Uint8Array): void;
  getSregs(fd: number, buf: Uint8Array): void;
  setSregs(fd: number, buf: Uint8Array): void;
  getFpu(fd: number, buf: Uint8Array): void;
  setFpu(fd: number, buf: Uint8Array): void;
  getVcpuEvents(fd: number, buf: Uint8Array): void;
  setVcpuEvents(fd: number, buf: Uint8Array): void;
  translate(fd: number, buf: Uint8Array): void;
  setGuestDebug(fd: number, buf: Uint8Array): void;
  setCpuid2(fd: number, entries: Uint8Array): void;
  interrupt(fd: number, irq: number): void;
  nmi(fd: number): number;
  getXsave(fd: number, buf: Uint8Array): void;
  setXsave(fd: number, buf: Uint8Array): void;
  getXcrs(fd: number, buf: Uint8Array): void;
  setXcrs(fd: number, buf: Uint8Array): void;
  getDebugRegs(fd: number, buf: Uint8Array): void;
  setDebugRegs(fd: number, buf: Uint8Array): void;
  copyExtendedState(srcFd: number, dstFd: number): void;
  // memory
  pageSize(): number;
  memfdCreate(name: string, hugetlb: boolean): number;
  ftruncate(fd: number, size: bigint): void;
  mmap(fd: number, size: bigint, offset: bigint, flags: number): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
  addressOf(buffer: ArrayBuffer): bigint;
  // execution
  VcpuRunner: new (vcpuFd: number, run: ArrayBuffer) => NativeVcpuRunner;
  copySyncRegs(src: NativeVcpuRunner, dst: NativeVcpuRunner): number;
  kickSignal: number;
}

/** The addon, loaded once; its errors are KvmError / HostError instances. */
export const native: NativeAddon = bindings('elisa_kvm');
native.setErrorClasses(KvmError, HostError);
