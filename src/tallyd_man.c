/* tallyd_man.c -- the build's writer of the manual page: tallyd-man OUT DATE writes tallyd(8),
 * dated DATE, to the file OUT (tally_config_man(), from the table --help comes from). */
#include <stdio.h>

#include "tally/config.h"

int main(int argc, char **argv)
{
    FILE *out;

    if (argc != 3) {
        fprintf(stderr, "usage: tallyd-man OUT DATE\n");
        return 2;
    }
    out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 1;
    }
    tally_config_man(out, argv[2]);
    if (ferror(out) | fclose(out)) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
