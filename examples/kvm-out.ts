import { GuestMemory, IoDirection, Kvm } from '../src/index';

// The KVM layer: a VM with 64 KiB of memory holding a 5-byte real-mode program, one vCPU.
using kvm = Kvm.open();
using mem = GuestMemory.anonymous('64K');                 // before the VM, so that it is disposed after it
mem.bytes(0x1000).set([0xb0, 0x2a, 0xe6, 0x10, 0xf4]);    // mov $42,%al; out %al,$0x10; hlt
using vm = kvm.createVm();
vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
const vcpu = vm.createVcpu();
const sregs = vcpu.getSregs();                            // real mode after reset: CS base 0, IP 0x1000
vcpu.setSregs({ ...sregs, cs: { ...sregs.cs, base: 0n, selector: 0 } });
vcpu.updateRegs({ rip: 0x1000n, rflags: 2n });

const exit = vcpu.run({ timeoutMs: 1000 });               // { kind: 'io', ... } | { kind: 'hlt' } | { kind: 'intr', timedOut } | ...
if (exit.kind !== 'io') throw new Error(`expected an io exit, got ${exit.kind}`);
console.log(exit.direction === IoDirection.OUT ? 'out' : 'in', `port 0x${exit.port.toString(16)}`, exit.size, exit.data[0]);
// out port 0x10 1 42
console.log(vcpu.run({ timeoutMs: 1000 }).kind);
// hlt
