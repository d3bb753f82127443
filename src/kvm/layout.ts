// Byte offsets and sizes of the kernel structs this package reads and writes
// (x86-64, linux/kvm.h). test/kvm/layout.test.ts checks every value against
// offsetof()/sizeof() as the C compiler sees the installed headers.

/** struct kvm_run field offsets. The exit union starts at 32. */
export const KvmRun = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  io_direction: 32, io_size: 33, io_port: 34, io_count: 36, io_data_offset: 40,
  mmio_phys_addr: 32, mmio_data: 40, mmio_len: 48, mmio_is_write: 52,
  hw_exit_reason: 32,
  fail_entry_reason: 32, fail_entry_cpu: 40,
  internal_suberror: 32, internal_ndata: 36, internal_data: 40,
  emulation_failure_flags: 40, emulation_failure_insn_size: 48, emulation_failure_insn_bytes: 49,
  debug_exception: 32, debug_pc: 40, debug_dr6: 48, debug_dr7: 56,
  system_event_type: 32, system_event_ndata: 36, system_event_data: 40,
  hypercall_nr: 32, hypercall_args: 40, hypercall_ret: 88,
  kvm_valid_regs: 288,
  kvm_dirty_regs: 296,
  sync_regs: 304,
  sync_sregs: 304 + 144,
  sync_events: 304 + 144 + 312,
} as const;

/** sizeof() of the structs exchanged with ioctls. */
export const Sizeof = {
  kvm_regs: 144,
  kvm_segment: 24,
  kvm_sregs: 312,
  kvm_fpu: 416,
  kvm_vcpu_events: 64,
  kvm_translation: 24,
  kvm_guest_debug: 72,
  kvm_cpuid_entry2: 40,
  kvm_xsave: 4096,
  kvm_xcrs: 392,
  kvm_debugregs: 128,
} as const;
