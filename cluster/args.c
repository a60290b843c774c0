#include "args.h"

#include <getopt.h>
#include <string.h>
#include <uv.h>

#define ARGS_MAX 16

int args_parse(const char *cmd, int argc, char **argv, const struct arg_flag *flags,
	       struct tern_config *cfg, void (*usage)(FILE *f))
{
	struct option opts[ARGS_MAX + 3];
	size_t n = 0;
	char err[512];
	for (; flags[n].name && n < ARGS_MAX; n++)
		opts[n] = (struct option){flags[n].name, required_argument, NULL, (int)n + 1};
	opts[n] = (struct option){"config", required_argument, NULL, 'c'};
	opts[n + 1] = (struct option){"help", no_argument, NULL, 'h'};
	opts[n + 2] = (struct option){NULL, 0, NULL, 0};
	config_defaults(cfg);
	/* Two passes: the config file first, then every flag over it. */
	for (int pass = 0; pass < 2; pass++) {
		int c;
		optind = 1;
		opterr = 0; /* one line of our own, not getopt's */
		while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
			if (c == 'h') {
				usage(stdout);
				return -1;
			}
			if (c == '?' || c == ':') {
				fprintf(stderr, "tern: bad option '%s' for 'tern %s' (try 'tern help')\n",
					argv[optind - 1], cmd);
				return 2;
			}
			if (c == 'c') {
				if (pass == 0 && config_load_file(cfg, optarg, err, sizeof(err))) {
					fprintf(stderr, "tern: %s\n", err);
					return 2;
				}
				continue;
			}
			const char *key = flags[c - 1].key;
			if (pass == 1 && key && config_set(cfg, key, optarg, err, sizeof(err))) {
				fprintf(stderr, "tern: %s\n", err);
				return 2;
			}
		}
		if (optind < argc) {
			fprintf(stderr, "tern: unexpected argument '%s'\n", argv[optind]);
			return 2;
		}
	}
	return 0;
}

int args_loop_init(uv_loop_t *loop)
{
	int rc = uv_loop_init(loop);
	if (rc != 0)
		fprintf(stderr, "tern: cannot start the event loop: %s\n", uv_strerror(rc));
	return rc ? -1 : 0;
}
