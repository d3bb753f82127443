/* Spins forever after one line of output: only the host's timeout ends this run. */
#include <elisa/guest.h>

int main(void) {
    puts("spinning");
    for (;;) __asm__ volatile("pause");
}
