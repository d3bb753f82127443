/* args: the sub context computes from all six argument registers; the guest checks the
 * result and that the callee-saved registers survived the trip (System V). */
#include <elisa/guest.h>
#include <elisa/gate.h>

ELISA_GATE_DEFINE();

/* regs.S: calls `fn` with six arguments after loading RBX, RBP, R12-R15 with known
 * values; returns a bit mask of the callee-saved registers that changed (0 = none). */
uint64_t args_call_checked(uint64_t fn, const uint64_t *args, uint64_t *result);

static uint64_t weigh(const uint64_t *a) {
    /* Distinct odd weights: any swapped, dropped or truncated argument changes the sum. */
    return a[0] * 3 + a[1] * 5 + a[2] * 7 + a[3] * 11 + a[4] * 13 + a[5] * 17;
}

int main(void) {
    GUEST_ASSERT(elisa_attached(), "no sub context attached to this vCPU");
    static const uint64_t a[6] = {
        0x1000000000000001ULL, 0x0200000000000020ULL, 0x0030000000000300ULL,
        0x0004000000004000ULL, 0x0000500000050000ULL, 0x0000060000600000ULL,
    };
    uint64_t r = 0;
    uint64_t changed = args_call_checked(elisa_gate_entry_gva, a, &r);
    GUEST_ASSERT_EQ(changed, 0);
    GUEST_ASSERT_EQ(r, weigh(a));
    printf("args returned %#llx (expected %#llx)\n", (unsigned long long)r, (unsigned long long)weigh(a));
    result(r);
    return 0;
}
