// The KVM layer: a typed binding of /dev/kvm (one module per fd kind, as in
// rust-vmm kvm-ioctls), guest memory, decoded exits.
export { Cap, capName, checkCapArgument, isKnownCap } from './cap';
export * from './constants';
export { DisposedError, HostError, KvmError, errnoName } from './errors';
export * from './exit';
export { KvmRun, Sizeof } from './layout';
export { GuestMemory, parseSize, type GuestMemoryOptions, type HugePages, type Size } from './memory';
export * from './structs';
export { SyncRegsView } from './sync-regs';
export { Kvm, KVM_API_VERSION } from './system';
export { Vcpu, type GuestDebugOptions, type RunOptions } from './vcpu';
export { Vm, type MemoryRegion, type MemoryRegionInfo, type VmOptions } from './vm';
