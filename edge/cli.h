/* Command-line clients: `tern pub` (REST) and `tern sub` (WebSocket), built on
 * libwebsockets' client. Each returns the process exit code. */
#ifndef TERN_CLI_H
#define TERN_CLI_H

int tern_cli_pub(int argc, char **argv);
int tern_cli_sub(int argc, char **argv);

#endif
