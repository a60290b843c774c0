/* The `tern` command: dispatches to the process or client it names. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dev.h"
#include "edge_main.h"
#include "node_main.h"

static void help(FILE *f)
{
	fprintf(f,
		"tern %s: a pub/sub messaging broker\n\n"
		"usage:\n"
		"  tern dev [--listen HOST:PORT] [--data DIR] [--config FILE]\n"
		"        run a broker and an edge in one process (default 127.0.0.1:8080, ./tern-data)\n"
		"  tern pub [--url URL] [--name EVENT] CHANNEL DATA\n"
		"        publish DATA (JSON, or a plain string) and print the seq and id\n"
		"  tern sub [--url URL] [--rewind N | --from-seq N] CHANNEL\n"
		"        print every message of CHANNEL as one JSON line; after a lost\n"
		"        connection it reconnects and resumes where it was (from_seq)\n"
		"  tern node --id ID [--region R] --listen HOST:PORT [--data DIR] [--config FILE]\n"
		"        run a cluster node: links from edges and /healthz, /metrics on one port\n"
		"  tern edge [--region R] --listen HOST:PORT --nodes HOST:PORT,... [--links K] [--workers W]\n"
		"            [--id ID] [--config FILE]\n"
		"        run an edge: clients on --listen, 1 control + K data links to each node\n"
		"  tern --version | tern help\n\n"
		"URL defaults to http://127.0.0.1:8080. Docs: README.md and docs/ in the source.\n",
		TERN_VERSION);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		help(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
		printf("tern %s\n", TERN_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		help(stdout);
		return 0;
	}
	if (strcmp(cmd, "dev") == 0)
		return tern_dev_main(argc - 1, argv + 1);
	if (strcmp(cmd, "pub") == 0)
		return tern_cli_pub(argc - 1, argv + 1);
	if (strcmp(cmd, "sub") == 0)
		return tern_cli_sub(argc - 1, argv + 1);
	if (strcmp(cmd, "edge") == 0)
		return tern_edge_main(argc - 1, argv + 1);
	if (strcmp(cmd, "node") == 0)
		return tern_node_main(argc - 1, argv + 1);
	fprintf(stderr, "tern: unknown command '%s' (try 'tern help')\n", cmd);
	return 2;
}
