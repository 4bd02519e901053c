/* create.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_create(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'create' is not implemented yet");
}
