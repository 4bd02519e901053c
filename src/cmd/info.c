/* info.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_info(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'info' is not implemented yet");
}
