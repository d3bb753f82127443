// The KVM layer: a typed binding of /dev/kvm (one module per fd kind, as in
// rust-vmm kvm-ioctls), guest memory, decoded exits.
//
//   using kvm = Kvm.open();                          // system fd (system.ts)
//   using mem = GuestMemory.anonymous('64K');        // host pages (memory.ts)
//   mem.bytes(0x1000).set([0xe6, 0x10, 0xf4]);       // out %al,$0x10; hlt
//   using vm = kvm.createVm();                       // VM fd (vm.ts)
//   vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
//   const vcpu = vm.createVcpu();                    // vCPU fd + kvm_run (vcpu.ts)
//   vcpu.setSregs({ ...vcpu.getSregs(), cs: { ...vcpu.getSregs().cs, base: 0n, selector: 0 } });
//   vcpu.updateRegs({ rip: 0x1000n, rflags: 2n });
//   const exit = vcpu.run({ timeoutMs: 1000 });      // { kind: 'io', port: 0x10, ... } (exit.ts)
//
// Errors: KvmError (ioctl, errno, code), HostError (other syscalls),
// DisposedError (use after dispose), RangeError/TypeError (bad arguments).
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
