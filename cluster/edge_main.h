#ifndef TERN_EDGE_MAIN_H
#define TERN_EDGE_MAIN_H

#include <stdio.h>

struct fbuf;

int tern_edge_main(int argc, char **argv);

/* Appends what write(arg, FILE *) produced to b (for /metrics text written to a FILE*). */
void metrics_from_file(struct fbuf *b, void (*write)(void *arg, FILE *out), void *arg);

#endif
