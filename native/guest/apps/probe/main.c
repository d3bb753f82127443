/* probe: the security and failure tests' guest. The host sets probe_mode (and
 * probe_arg) before the run; each mode does one thing a hostile or buggy guest might. */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

volatile uint64_t probe_mode;
volatile uint64_t probe_arg;

/* probe.S */
long probe_vmfunc(uint64_t eax, uint64_t ecx);
long probe_jump_into_gate(uint64_t target_gva);

static uint64_t probe_pd[512] __attribute__((aligned(4096)));
static uint64_t probe_pml4[512] __attribute__((aligned(4096)));

/* Switches to a copy of the current PML4 (same translations, new CR3 value). */
static void move_cr3(void) {
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    const uint64_t *old = (const uint64_t *)(cr3 & 0x000ffffffffff000ULL);
    for (int i = 0; i < 512; i++) probe_pml4[i] = old[i];
    __asm__ volatile("mov %0, %%cr3" :: "r"((uint64_t)probe_pml4) : "memory");
}

/* Maps guest-physical `gpa` (2 MiB page) at GVA 500 GiB in the guest's own tables and reads it. */
static uint64_t read_guest_physical(uint64_t gpa) {
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *pml4 = (uint64_t *)(cr3 & 0x000ffffffffff000ULL);
    uint64_t *pdpt = (uint64_t *)(pml4[0] & 0x000ffffffffff000ULL);
    probe_pd[0] = (gpa & ~0x1fffffULL) | 0x83; /* present, writable, 2 MiB */
    pdpt[500] = (uint64_t)probe_pd | 3;
    uint64_t va = (500ULL << 30) | (gpa & 0x1fffffULL);
    __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory");
    return *(volatile uint64_t *)va;
}

int main(void) {
    long r;
    switch (probe_mode) {
    case 1: /* a plain call */
        r = elisa_gate_entry(1, 2, 3, 4, 5, 6);
        break;
    case 2: /* VMFUNC(0, 1) straight from the default context */
        r = probe_vmfunc(0, 1);
        break;
    case 3: /* enter the gate with interrupts enabled */
        elisa_sti();
        r = elisa_gate_entry(1, 2, 3, 4, 5, 6);
        elisa_cli();
        break;
    case 4: /* jump into the middle of the gate code */
        r = probe_jump_into_gate(probe_arg);
        break;
    case 5: /* read a guest-physical address from the default context */
        r = (long)read_guest_physical(probe_arg);
        break;
    case 6: /* VMFUNC with a bad function number or index */
        r = probe_vmfunc(probe_arg >> 32, probe_arg & 0xffffffffULL);
        break;
    case 8: /* a call, a CR3 change, a second call */
        r = elisa_gate_entry(1, 2, 3, 4, 5, 6);
        move_cr3();
        r += elisa_gate_entry(10, 20, 30, 40, 50, 60);
        break;
    case 7: /* xmm0 = probe_arg, then a plain call (the sub entry may read xmm0) */
        __asm__ volatile("movq %0, %%xmm0" :: "r"((uint64_t)probe_arg)); /* no clobber: -mgeneral-regs-only code never uses xmm0 */
        r = elisa_gate_entry(0, 0, 0, 0, 0, 0);
        break;
    default:
        GUEST_ASSERT(0, "unknown probe_mode %llu", (unsigned long long)probe_mode);
    }
    printf("probe %llu returned %ld\n", (unsigned long long)probe_mode, r);
    result((uint64_t)r);
    return 0;
}
