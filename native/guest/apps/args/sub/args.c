/* args, sub side: a weighted sum of all six arguments (the guest computes the same). */
typedef unsigned long u64;
u64 elisa_sub_entry(u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    return a0 * 3 + a1 * 5 + a2 * 7 + a3 * 11 + a4 * 13 + a5 * 17;
}
