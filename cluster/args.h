/* Command-line flags of the server commands (dev, node, edge): each flag sets one config key;
 * the config file (--config) is read first and flags override it. */
#ifndef TERN_ARGS_H
#define TERN_ARGS_H

#include <stdio.h>

#include "config.h"

struct arg_flag {
	const char *name; /* "listen" for --listen */
	const char *key;  /* the config key it sets; NULL for a flag taken and ignored */
};

/* flags ends with {NULL, NULL}; --config and --help are always accepted. Returns 0, -1 after
 * printing usage for --help (exit 0), or 2 after one line on stderr (bad flag or value). */
int args_parse(const char *cmd, int argc, char **argv, const struct arg_flag *flags,
	       struct tern_config *cfg, void (*usage)(FILE *f));

struct uv_loop_s;

/* uv_loop_init for a server command: 0, or -1 after one line on stderr (out
 * of descriptors, say; there is nothing to close then). */
int args_loop_init(struct uv_loop_s *loop);

#endif
