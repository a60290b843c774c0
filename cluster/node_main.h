/* `tern node`: the process entry point. */
#ifndef TERN_NODE_MAIN_H
#define TERN_NODE_MAIN_H

/* Parses argv (argv[0] is "node"), runs the node until SIGTERM or SIGINT and a drain.
 * Returns the exit code: 0, 1 (cannot start: data dir, busy port) or 2 (bad arguments). */
int tern_node_main(int argc, char **argv);

#endif
