/* repair.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_repair(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'repair' is not implemented yet");
}
