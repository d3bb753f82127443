/* bench, sub side: returns 1, like nop. */
long elisa_sub_entry(void) { return 1; }
