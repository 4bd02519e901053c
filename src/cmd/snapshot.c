/* snapshot.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_snapshot(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'snapshot' is not implemented yet");
}
