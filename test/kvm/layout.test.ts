// The TypeScript struct layouts and the addon's ioctl request numbers against
// what gcc computes from the installed linux/kvm.h (C, the kernel's ABI).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvmRun, Sizeof } from '../../src/kvm/layout';
import { native } from '../../src/kvm/native';

/** Compiles and runs a C program printing `name value` lines; returns them as a map. */
function cValues(body: string): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'elisa-c-'));
  try {
    writeFileSync(join(dir, 'p.c'), `#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n` +
      `#define P(n, v) printf("%s %lu\\n", n, (unsigned long)(v))\nint main(void) {\n${body}\nreturn 0; }\n`);
    execFileSync('gcc', ['-o', join(dir, 'p'), join(dir, 'p.c')]);
    const out = execFileSync(join(dir, 'p')).toString();
    return new Map(out.trim().split('\n').map((l) => { const [n, v] = l.split(' '); return [n, Number(v)] as const; }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('struct layouts and ioctl numbers', function () {
  it('every request number the addon issues equals the C value from linux/kvm.h', function () {
    const used = native.requests();
    const c = cValues(Object.keys(used).map((n) => `P("${n}", ${n});`).join('\n'));
    expect(Object.keys(used)).to.have.length.greaterThan(25);
    for (const [name, value] of Object.entries(used)) expect(value, name).to.equal(c.get(name));
  });

  it('kvm_run offsets in layout.ts match offsetof() in C', function () {
    const fields: Record<keyof typeof KvmRun, string> = {
      request_interrupt_window: 'request_interrupt_window', immediate_exit: 'immediate_exit', exit_reason: 'exit_reason', ready_for_interrupt_injection: 'ready_for_interrupt_injection',
      if_flag: 'if_flag', flags: 'flags', cr8: 'cr8', apic_base: 'apic_base',
      io_direction: 'io.direction', io_size: 'io.size', io_port: 'io.port', io_count: 'io.count', io_data_offset: 'io.data_offset',
      mmio_phys_addr: 'mmio.phys_addr', mmio_data: 'mmio.data', mmio_len: 'mmio.len', mmio_is_write: 'mmio.is_write',
      hw_exit_reason: 'hw.hardware_exit_reason',
      fail_entry_reason: 'fail_entry.hardware_entry_failure_reason', fail_entry_cpu: 'fail_entry.cpu',
      internal_suberror: 'internal.suberror', internal_ndata: 'internal.ndata', internal_data: 'internal.data',
      emulation_failure_flags: 'emulation_failure.flags', emulation_failure_insn_size: 'emulation_failure.insn_size',
      emulation_failure_insn_bytes: 'emulation_failure.insn_bytes',
      debug_exception: 'debug.arch.exception', debug_pc: 'debug.arch.pc', debug_dr6: 'debug.arch.dr6', debug_dr7: 'debug.arch.dr7',
      system_event_type: 'system_event.type', system_event_ndata: 'system_event.ndata', system_event_data: 'system_event.data',
      hypercall_nr: 'hypercall.nr', hypercall_args: 'hypercall.args', hypercall_ret: 'hypercall.ret',
      kvm_valid_regs: 'kvm_valid_regs', kvm_dirty_regs: 'kvm_dirty_regs',
      sync_regs: 's.regs.regs', sync_sregs: 's.regs.sregs', sync_events: 's.regs.events',
    };
    const c = cValues(Object.entries(fields).map(([k, f]) => `P("${k}", offsetof(struct kvm_run, ${f}));`).join('\n'));
    for (const [k, v] of Object.entries(KvmRun)) expect(v, k).to.equal(c.get(k));
  });

  it('struct sizes and inner offsets used by the codecs match C', function () {
    const c = cValues([
      ...Object.keys(Sizeof).map((s) => `P("${s}", sizeof(struct ${s}));`),
      'P("sregs_gdt", offsetof(struct kvm_sregs, gdt));', 'P("sregs_idt", offsetof(struct kvm_sregs, idt));',
      'P("sregs_cr0", offsetof(struct kvm_sregs, cr0));', 'P("sregs_apic_base", offsetof(struct kvm_sregs, apic_base));',
      'P("sregs_interrupt_bitmap", offsetof(struct kvm_sregs, interrupt_bitmap));',
      'P("segment_selector", offsetof(struct kvm_segment, selector));', 'P("segment_unusable", offsetof(struct kvm_segment, unusable));',
      'P("fpu_fcw", offsetof(struct kvm_fpu, fcw));', 'P("fpu_last_ip", offsetof(struct kvm_fpu, last_ip));',
      'P("fpu_xmm", offsetof(struct kvm_fpu, xmm));', 'P("fpu_mxcsr", offsetof(struct kvm_fpu, mxcsr));',
      'P("events_interrupt", offsetof(struct kvm_vcpu_events, interrupt));', 'P("events_nmi", offsetof(struct kvm_vcpu_events, nmi));',
      'P("events_sipi_vector", offsetof(struct kvm_vcpu_events, sipi_vector));', 'P("events_flags", offsetof(struct kvm_vcpu_events, flags));',
      'P("events_smi", offsetof(struct kvm_vcpu_events, smi));', 'P("events_triple_fault", offsetof(struct kvm_vcpu_events, triple_fault));',
      'P("events_exception_has_payload", offsetof(struct kvm_vcpu_events, exception_has_payload));',
      'P("events_exception_payload", offsetof(struct kvm_vcpu_events, exception_payload));',
      'P("translation_valid", offsetof(struct kvm_translation, valid));', 'P("guest_debug_arch", offsetof(struct kvm_guest_debug, arch));',
    ].join('\n'));
    for (const [k, v] of Object.entries(Sizeof)) expect(v, k).to.equal(c.get(k));
    // The literal offsets structs.ts uses:
    const expected: Record<string, number> = {
      sregs_gdt: 192, sregs_idt: 208, sregs_cr0: 224, sregs_apic_base: 272, sregs_interrupt_bitmap: 280,
      segment_selector: 12, segment_unusable: 22, fpu_fcw: 128, fpu_last_ip: 136, fpu_xmm: 152, fpu_mxcsr: 408,
      events_interrupt: 8, events_nmi: 12, events_sipi_vector: 16, events_flags: 20, events_smi: 24, events_triple_fault: 28,
      events_exception_has_payload: 55, events_exception_payload: 56, translation_valid: 16, guest_debug_arch: 8,
    };
    for (const [k, v] of Object.entries(expected)) expect(v, k).to.equal(c.get(k));
    // And the addon (C++) agrees with C for the fixed-size structs it passes through.
    const cxx = native.layout();
    for (const k of Object.keys(Sizeof)) expect(cxx[`sizeof_${k}`], `C++ sizeof ${k}`).to.equal(c.get(k));
  });
});
