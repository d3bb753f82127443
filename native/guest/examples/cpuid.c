/* Prints CPUID leaf 0 (vendor, highest leaf) and leaf 1 EAX as the guest sees them. */
#include <elisa/guest.h>

static void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

int main(void) {
    uint32_t a, b, c, d;
    cpuid(0, &a, &b, &c, &d);
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = '\0';
    printf("vendor %s max-leaf %u\n", vendor, a);
    cpuid(1, &a, &b, &c, &d);
    printf("signature %#x\n", a);      /* leaf 1 EAX: family, model, stepping */
    result(((uint64_t)c << 32) | d);   /* leaf 1 ECX:EDX feature bits */
    return 0;
}
