/* Process entry points of the `tern` binary. Each returns the exit code. */
#ifndef TERN_DEV_H
#define TERN_DEV_H

int tern_dev_main(int argc, char **argv);

#endif
