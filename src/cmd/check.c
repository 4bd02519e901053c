/* check.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_check(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'check' is not implemented yet");
}
