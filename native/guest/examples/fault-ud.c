/* Executes ud2 on purpose: #UD at the instruction labelled fault_site. */
#include <elisa/guest.h>

int main(void) {
    puts("executing ud2");
    __asm__ volatile(".globl fault_site\nfault_site:\n\tud2");
    return 0;
}
