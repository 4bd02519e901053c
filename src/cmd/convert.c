/* convert.c - TEMPORARY placeholder until its issue lands; replaced wholesale. */
#include "cmd.h"

int cmd_convert(int argc, const char **argv)
{
    (void)argc;
    (void)argv;
    return error("'convert' is not implemented yet");
}
