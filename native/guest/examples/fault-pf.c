/*
 * Writes to address 0x123 on purpose. The host leaves the first 4 KiB page of the
 * identity map not present (a null guard), so this is a #PF with CR2 = 0x123 and
 * error code 0x2 (write to a not-present page, supervisor) at fault_site.
 */
#include <elisa/guest.h>

int main(void) {
    puts("writing to 0x123");
    __asm__ volatile(
        "movl $0x123, %%eax\n\t"
        ".globl fault_site\n"
        "fault_site:\n\t"
        "movq %%rdx, (%%rax)"
        : : "d"(0x5a5aULL) : "rax", "memory");
    return 0;
}
