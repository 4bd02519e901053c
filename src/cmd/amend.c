/* amend.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_amend(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'amend' is not implemented yet");
}
