/* shm, sub side: the shared page is mapped at SHM_GVA in this sub context only. */
#define SHM_GVA 0x50000000UL
long elisa_sub_entry(void) {
    volatile long *counter = (volatile long *)SHM_GVA;
    return ++*counter;
}
