// Named constants of the KVM ABI (linux/kvm.h, asm/kvm.h), so callers never
// write a magic number. Values are the kernel's.

/** kvm_run.exit_reason (KVM_EXIT_*). */
export enum ExitReason {
  UNKNOWN = 0, EXCEPTION = 1, IO = 2, HYPERCALL = 3, DEBUG = 4, HLT = 5, MMIO = 6,
  IRQ_WINDOW_OPEN = 7, SHUTDOWN = 8, FAIL_ENTRY = 9, INTR = 10, SET_TPR = 11, TPR_ACCESS = 12,
  S390_SIEIC = 13, S390_RESET = 14, DCR = 15, NMI = 16, INTERNAL_ERROR = 17, OSI = 18,
  PAPR_HCALL = 19, S390_UCONTROL = 20, WATCHDOG = 21, S390_TSCH = 22, EPR = 23, SYSTEM_EVENT = 24,
  S390_STSI = 25, IOAPIC_EOI = 26, HYPERV = 27, ARM_NISV = 28, X86_RDMSR = 29, X86_WRMSR = 30,
  DIRTY_RING_FULL = 31, AP_RESET_HOLD = 32, X86_BUS_LOCK = 33, XEN = 34, RISCV_SBI = 35,
  RISCV_CSR = 36, NOTIFY = 37,
}

/** kvm_run.io.direction (KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT). */
export enum IoDirection { IN = 0, OUT = 1 }

/** kvm_run.internal.suberror (KVM_INTERNAL_ERROR_*). */
export enum InternalErrorSuberror {
  /** The in-kernel emulator could not emulate an instruction. */
  EMULATION = 1,
  /** An exception was raised while delivering another (e.g. a fault in the handler). */
  SIMUL_EX = 2,
  /** An event could not be delivered (e.g. an EPT violation while vectoring). */
  DELIVERY_EV = 3,
  /** A VM exit KVM does not handle. */
  UNEXPECTED_EXIT_REASON = 4,
}

/** kvm_run.emulation_failure.flags. */
export const EMULATION_FLAG_INSTRUCTION_BYTES = 1n;

/** kvm_run.system_event.type (KVM_SYSTEM_EVENT_*). */
export enum SystemEventType { SHUTDOWN = 1, RESET = 2, CRASH = 3, WAKEUP = 4, SUSPEND = 5, SEV_TERM = 6 }

/** kvm_userspace_memory_region.flags (KVM_MEM_*). */
export enum MemoryRegionFlag { LOG_DIRTY_PAGES = 1 << 0, READONLY = 1 << 1 }

/** kvm_run.kvm_valid_regs / kvm_dirty_regs bits (KVM_SYNC_X86_*). */
export enum SyncRegs { REGS = 1 << 0, SREGS = 1 << 1, EVENTS = 1 << 2 }
/** Every KVM_SYNC_X86_* bit. */
export const SYNC_REGS_ALL = SyncRegs.REGS | SyncRegs.SREGS | SyncRegs.EVENTS;

/** kvm_guest_debug.control bits (KVM_GUESTDBG_*). */
export enum GuestDebugFlag {
  ENABLE = 0x1, SINGLESTEP = 0x2, USE_SW_BP = 0x10000, USE_HW_BP = 0x20000,
  INJECT_DB = 0x40000, INJECT_BP = 0x80000, BLOCKIRQ = 0x100000,
}

/** kvm_vcpu_events.flags (KVM_VCPUEVENT_VALID_*). */
export enum VcpuEventsFlag {
  VALID_NMI_PENDING = 0x1, VALID_SIPI_VECTOR = 0x2, VALID_SHADOW = 0x4, VALID_SMM = 0x8,
  VALID_PAYLOAD = 0x10, VALID_TRIPLE_FAULT = 0x20,
}

/** Why KVM_RUN ended with exit INTR (our own classification, not a kernel value). */
export enum InterruptCause {
  /** Not an INTR exit. */
  NONE = 0,
  /** The run's timeoutMs elapsed. */
  TIMEOUT = 1,
  /** Vcpu.kick() (or dispose while running). */
  KICK = 2,
  /** Some other signal reached the running thread. */
  SIGNAL = 3,
}

/** Page size of x86 guest memory slots and of host mappings. */
export const PAGE_SIZE = 4096;
