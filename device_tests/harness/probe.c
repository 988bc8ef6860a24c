/* Exercises the emulator harness: argv, console output, reading a host file, the exit code, a
 * counted region of known length, and (with argv[1] == "fault") a crash or (== "hang") a hang. */
#include <stdio.h>
#include <string.h>

#include "markers.h"

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "fault") == 0) {
        volatile unsigned *bad = (volatile unsigned *)0xF0000000u; /* unmapped: a bus fault */
        return (int)*bad;
    }
    if (argc > 1 && strcmp(argv[1], "hang") == 0) {
        for (volatile int forever = 1; forever;) {
        }
    }
    char first[16] = {0};
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (f) {
        if (!fgets(first, sizeof first, f)) {
            first[0] = '\0';
        }
        fclose(f);
    }
    volatile int sum = 0;
    ep_region_begin();
    for (int i = 0; i < 1000; ++i) {
        sum += i;
    }
    ep_region_end();
    printf("argc %d file '%s' sum %d\n", argc, first, sum);
    return 7;
}
