// Minimal guests for the KVM-layer tests, set up by hand (the real x86 guest
// layer lives in src/x86): real mode at a flat CS, or 64-bit long mode with an
// identity map of the first 2 MiB built here. Code is assembled with GNU as.
import { GuestMemory, Kvm, type Sregs, type Vcpu, type Vm } from '../../src/kvm/index';
import { assemble } from '../support/assemble';

/** Where test code is loaded (guest-physical, and guest-virtual in long mode). */
export const CODE_ADDR = 0x1000;

/** A VM with one slot of `memory` at gpa 0 and one vCPU. Dispose it to release everything. */
export interface TestGuest extends Disposable {
  kvm: Kvm;
  vm: Vm;
  vcpu: Vcpu;
  memory: GuestMemory;
}

/** Options of realModeGuest / longModeGuest. */
export interface GuestOptions {
  /** Memory to use as slot 0 (default: 64 KiB anonymous, 2 MiB in long mode). */
  memory?: GuestMemory;
  /** Dispose the memory with the guest (default: only if created here). */
  ownMemory?: boolean;
  /** Skip loading code (memory already holds it). */
  noLoad?: boolean;
  kvm?: Kvm;
}

function makeGuest(code: Uint8Array, size: number, o: GuestOptions): TestGuest {
  const kvm = o.kvm ?? Kvm.open();
  const memory = o.memory ?? GuestMemory.anonymous(size);
  const ownMemory = o.ownMemory ?? o.memory === undefined;
  const vm = kvm.createVm();
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory });
  if (!o.noLoad) memory.bytes(CODE_ADDR, code.length).set(code);
  const vcpu = vm.createVcpu(0);
  return {
    kvm, vm, vcpu, memory,
    [Symbol.dispose]() {
      vm.dispose();
      if (ownMemory) memory.dispose();
      if (!o.kvm) kvm.dispose();
    },
  };
}

/** A real-mode guest executing `source` (16-bit) at CODE_ADDR with CS base 0. */
export function realModeGuest(source: string, o: GuestOptions = {}): TestGuest {
  const code = assemble(`.code16\n${source}`, CODE_ADDR);
  const g = makeGuest(code, 64 * 1024, o);
  const s = g.vcpu.getSregs();
  s.cs = { ...s.cs, base: 0n, selector: 0 };
  g.vcpu.setSregs(s);
  g.vcpu.setRegs({ ...g.vcpu.getRegs(), rip: BigInt(CODE_ADDR), rflags: 2n, rsp: 0x8000n });
  return g;
}

const PML4 = 0x10000, PDPT = 0x11000, PD = 0x12000;

/** Writes an identity map of [0, 2 MiB) with one 2 MiB page into `memory`. */
export function writeIdentityMap(memory: GuestMemory): void {
  const v = new DataView(memory.buffer);
  v.setBigUint64(PML4, BigInt(PDPT) | 3n, true);
  v.setBigUint64(PDPT, BigInt(PD) | 3n, true);
  v.setBigUint64(PD, 0x83n, true); // present, writable, 2 MiB page at 0
}

/** The sregs of flat 64-bit long mode with paging through the map of writeIdentityMap. */
export function longModeSregs(base: Sregs): Sregs {
  const code = { base: 0n, limit: 0xffffffff, selector: 0x8, type: 0xb, present: true, dpl: 0, db: false, s: true,
    l: true, g: true, avl: false, unusable: false };
  const data = { ...code, selector: 0x10, type: 0x3, l: false, db: true };
  return {
    ...base, cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
    tr: { ...base.tr, type: 0xb, present: true, unusable: false },
    cr0: 0x80050033n, // PG | AM | WP | NE | ET | MP | PE
    cr3: BigInt(PML4),
    cr4: 0x20n, // PAE
    efer: 0x500n, // LMA | LME
  };
}

/** A 64-bit guest executing `source` at CODE_ADDR (identity-mapped, stack at 0x8000). */
export function longModeGuest(source: string, o: GuestOptions = {}): TestGuest {
  const code = assemble(`.code64\n${source}`, CODE_ADDR);
  const g = makeGuest(code, 2 * 1024 * 1024, o);
  if (!o.noLoad) writeIdentityMap(g.memory);
  g.vcpu.setSregs(longModeSregs(g.vcpu.getSregs()));
  g.vcpu.setRegs({ ...g.vcpu.getRegs(), rip: BigInt(CODE_ADDR), rflags: 2n, rsp: 0x8000n });
  return g;
}
