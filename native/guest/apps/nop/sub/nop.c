/* nop, sub side: the first example of the original prototype. */
long elisa_sub_entry(void) { return 1; }
