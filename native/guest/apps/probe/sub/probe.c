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
/* Returns the low 64 bits of xmm0 as this context sees them (FPU/SSE state tests). */
u64 probe_xmm0(void) { u64 v; __asm__ volatile("movq %%xmm0, %0" : "=r"(v)); return v; }
