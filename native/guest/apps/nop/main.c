/* nop: enters the sub context once and prints what it returned (the sub returns 1). */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

int main(void) {
    GUEST_ASSERT(elisa_attached(), "no sub context attached to this vCPU");
    long r = elisa_gate_entry(0, 0, 0, 0, 0, 0);
    printf("nop returned %ld\n", r);
    result((uint64_t)r);
    return 0;
}
