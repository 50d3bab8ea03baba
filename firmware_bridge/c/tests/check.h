/* A minimal assertion helper for the stepwise C unit tests. */
#ifndef STEPWISE_CHECK_H
#define STEPWISE_CHECK_H

#include <stdio.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                               \
    do {                                                                          \
        ++check_count;                                                            \
        if (!(cond)) {                                                            \
            ++check_failures;                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define CHECK_EQ(a, b)                                                            \
    do {                                                                          \
        long check_a_ = (long)(a), check_b_ = (long)(b);                          \
        ++check_count;                                                            \
        if (check_a_ != check_b_) {                                               \
            ++check_failures;                                                     \
            fprintf(stderr, "%s:%d: %s == %ld, expected %s == %ld\n", __FILE__,   \
                    __LINE__, #a, check_a_, #b, check_b_);                        \
        }                                                                         \
    } while (0)

/* Prints the summary; returns the process exit status. */
static int check_report(const char *suite)
{
    printf("%s: %d checks, %d failed\n", suite, check_count, check_failures);
    return check_failures == 0 ? 0 : 1;
}

#endif
