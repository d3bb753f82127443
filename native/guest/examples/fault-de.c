/* Divides by zero on purpose: #DE at the instruction labelled fault_site. */
#include <elisa/guest.h>

int main(void) {
    puts("dividing by zero");
    __asm__ volatile(
        "xorl %%edx, %%edx\n\t"
        "movl $1, %%eax\n\t"
        "xorl %%ecx, %%ecx\n\t"
        ".globl fault_site\n"
        "fault_site:\n\t"
        "divl %%ecx"
        : : : "rax", "rcx", "rdx");
    return 0;
}
