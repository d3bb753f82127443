/*
 * Loads an IDT with limit 0, then executes ud2: #UD cannot be delivered (no gate),
 * neither can the #GP nor the #DF that follow, so the CPU shuts down (triple fault)
 * and KVM reports KVM_EXIT_SHUTDOWN.
 */
#include <elisa/guest.h>

int main(void) {
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idtr = { 0, 0 };
    puts("loading an empty IDT, then ud2");
    __asm__ volatile("lidt %0\n\t"
                     ".globl fault_site\n"
                     "fault_site:\n\t"
                     "ud2" : : "m"(idtr));
    return 0;
}
