/* probe, sub side: elisa_sub_entry returns the sum of its arguments; probe_fault
 * dereferences an address the sub context does not map (a #PF with no IDT mapped:
 * the sub context shuts down). */
typedef unsigned long u64;
u64 elisa_sub_entry(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) { return a0 + a1 + a2 + a3 + a4 + a5; }
/* An address the sub context does not map, read from memory so the compiler cannot see it. */
volatile u64 probe_unmapped = 0x8;
u64 probe_fault(void) { return *(volatile u64 *)probe_unmapped; }
/* Never returns: the run's timeout must catch the guest inside the sub context. */
u64 probe_spin(void) { for (;;) __asm__ volatile(""); }
/* Returns the low 64 bits of xmm0 as this context sees them (FPU/SSE state tests). Through
 * memory with MOVDQU, which KVM's emulator handles (MOVQ to a GPR it does not). */
u64 probe_xmm0(void) {
    u64 v[2];
    __asm__ volatile("movdqu %%xmm0, %0" : "=m"(v));
    return v[0];
}
/* Returns the x87 control word (low 16 bits) and status word (bits 16..31) as this
 * context sees them. FNSTCW m16 and FNSTSW m16 (no-wait forms) are among the few x87
 * instructions KVM's emulator handles (em_fnstcw, em_fnstsw), so this runs on hosts
 * that emulate every guest instruction, where probe_xmm0's MOVQ cannot. */
u64 probe_fpu_control(void) {
    unsigned short cw, sw;
    __asm__ volatile("fnstcw %0\n\tfnstsw %1" : "=m"(cw), "=m"(sw));
    return (u64)cw | ((u64)sw << 16);
}
/* Leaves through a VMFUNC(0, 0) of its own instead of returning: the default context
 * continues right after it, at a GVA the guest does not map. */
u64 probe_leave_early(void) {
    __asm__ volatile("xor %%eax, %%eax\n\txor %%ecx, %%ecx\n\t.globl probe_own_vmfunc\nprobe_own_vmfunc:\n\tvmfunc" ::: "rax", "rcx", "memory");
    return 0;
}
