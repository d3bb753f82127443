/* Prints a greeting, hands a 64-bit value to the host and returns 42. */
#include <elisa/guest.h>

int main(void) {
    printf("Hello from a KVM guest! %d + %d = %d\n", 2, 3, 2 + 3);
    result(0x1122334455667788ULL);
    return 42;
}
