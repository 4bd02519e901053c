/*
 * fuzz_main.h - the replay main() of every fuzz target, built when the
 * target is compiled as a plain program (-DFUZZ_REPLAY, `make units`, as
 * tests/fuzz.bats does) instead of with -fsanitize=fuzzer: run the target
 * once on each file named, so saved findings stay regression tests without
 * libFuzzer. Included at the end of each tests/fuzz/fuzz_*.c.
 */
#ifdef FUZZ_REPLAY
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        uint8_t *data = NULL;
        size_t len = 0, cap = 0, n;

        if (!f) {
            perror(argv[i]);
            return 1;
        }
        do {
            if (len == cap) {
                cap = cap ? cap * 2 : 65536;
                data = realloc(data, cap);
                if (!data)
                    return 1;
            }
            n = fread(data + len, 1, cap - len, f);
            len += n;
        } while (n);
        fclose(f);
        LLVMFuzzerTestOneInput(data, len);
        free(data);
    }
    return 0;
}
#endif
