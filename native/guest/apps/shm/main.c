/* shm: increments a counter in a manager page shared by the sub contexts of two guests.
 * The guest has no mapping of that page: only its sub context can reach it. */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

/* Set by the host before the run. */
volatile uint64_t shm_iterations = 1;

int main(void) {
    GUEST_ASSERT(elisa_attached(), "no sub context attached to this vCPU");
    long last = 0;
    for (uint64_t i = 0; i < shm_iterations; i++) {
        long v = elisa_gate_entry(0, 0, 0, 0, 0, 0);
        GUEST_ASSERT(v > last, "counter went from %ld to %ld", last, v);
        last = v;
    }
    printf("shm: %llu increments, counter now %ld\n", (unsigned long long)shm_iterations, last);
    result((uint64_t)last);
    return 0;
}
