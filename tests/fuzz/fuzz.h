/* fuzz.h - what every libFuzzer target here shares. */
#ifndef OCIFS_FUZZ_H
#define OCIFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise of the code under test is a crash libFuzzer keeps. */
#define FUZZ_ASSERT(expr)                                                        \
	do {                                                                     \
		if (!(expr)) {                                                   \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
				__LINE__, #expr);                                \
			abort();                                                 \
		}                                                                \
	} while (0)

#endif
