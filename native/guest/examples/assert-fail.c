/* A guest assertion that fails: the host must surface file, line and message. */
#include <elisa/guest.h>

int main(void) {
    int answer = 41;
    puts("checking the answer");
    GUEST_ASSERT(answer == 42, "answer was %d", answer);
    return 0;
}
