/* cli.h — helpers shared by the e2gan sub-commands, and the commands that
 * live outside e2gan.c. */
#ifndef E2G_CLI_H
#define E2G_CLI_H

#include <stddef.h>

/* Prints a usage text to stderr and returns 2 (the usage exit status). */
int e2g_cli_usage(const char *text);
/* Whole-string numbers within [lo, hi]; 0 on success, -1 otherwise. */
int e2g_cli_parse_long(const char *s, long lo, long hi, long *out);
int e2g_cli_parse_double(const char *s, double lo, double hi, double *out);
/* Monotonic seconds, for timings. */
double e2g_cli_seconds(void);
/* "CPU model, N threads" of this machine, for training budgets. */
void e2g_cli_machine(char *buf, size_t n);

int e2g_cmd_train(int argc, char **argv);
int e2g_cmd_finetune(int argc, char **argv);
int e2g_cmd_evaluate(int argc, char **argv);

#endif
