/* Prints every case of printf-cases.h with the runtime's printf (one line each). */
#include <elisa/guest.h>

#define CASE(...) do { printf(__VA_ARGS__); putchar('\n'); } while (0)

int main(void) {
#include "printf-cases.h"
    return 0;
}
