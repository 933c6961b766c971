/* check.h - the test harness the C test programs share.

   A program registers its tests, each a `static void test_NAME(void)`, in
   one table, in the order they run:

       static const check_test tests[] = {CHECK_TEST(layernorm_grad), CHECK_TEST(merge_refusals)};
       int main(int argc, char **argv) { return check_main(tests, sizeof tests / sizeof tests[0], argc, argv); }

   and is run as `PROGRAM [--list] [NAME...]`: with no NAME every test runs;
   otherwise only the tests whose name contains one of the NAMEs as a
   substring (`bin/test_photon merge` runs merge_weighting_and_order and
   merge_refusals), still in the table's order. A NAME that matches no test
   is a usage error (exit status 2). --list prints the names (those selected
   by the NAMEs, if any) instead of running them; --help prints the usage.

   expect(ok, name, detail) prints "ok - NAME", or, when ok is false,
   "FAIL - NAME: DETAIL (FILE:LINE in test TEST)" with the place of the
   expect() and the registered test that was running (DETAIL may be NULL).
   An expect() spread over lines reports its first line under gcc and its
   last under clang; one inside a helper reports the helper's line, so the
   name and the test tell which call failed. After the tests,
   "N passed, N failed" closes the output (CI reads that line) and the exit
   status is 1 if any check failed.

   A program with work to do between reading the arguments and running the
   tests calls check_args (which returns -1 when the tests are to run, else
   the exit status) and then check_run, instead of check_main (test_cuda.cu:
   it skips when no GPU is present).

   tmp_path: scratch files go to PHOTON_TEST_DIR (default /tmp), named with
   the process id so that parallel runs do not collide. */
#ifndef PHOTON_CHECK_H
#define PHOTON_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    void (*run)(void);
} check_test;

#define CHECK_TEST(name) {#name, test_##name}

#define expect(ok, name, detail) check_expect((ok), (name), (detail), __FILE__, __LINE__)

static int check_passed, check_failed;
static const char *check_current;   /* the registered test running now, if any */
static int check_argc;              /* the arguments, kept by check_args */
static char **check_argv;

static inline void check_expect(int ok, const char *name, const char *detail, const char *file, int line) {
    if (ok) {
        check_passed++;
        printf("ok - %s\n", name);
        return;
    }
    check_failed++;
    printf("FAIL - %s%s%s (%s:%d%s%s)\n", name, detail ? ": " : "", detail ? detail : "", file, line,
           check_current ? " in test " : "", check_current ? check_current : "");
}

/* A path in the test directory; valid until 8 more calls. */
static inline const char *tmp_path(const char *name) {
    static char paths[8][512];
    static int next;
    const char *dir = getenv("PHOTON_TEST_DIR");
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/photon-test-%ld-%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
    return p;
}

/* Whether a test is selected: no NAME given, or its name contains one. */
static inline int check_selected(const char *name) {
    int names = 0;
    for (int i = 1; i < check_argc; i++) {
        if (check_argv[i][0] == '-') continue; /* --list */
        names++;
        if (strstr(name, check_argv[i])) return 1;
    }
    return names == 0;
}

static inline void check_usage(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s [--list] [NAME...]\n"
            "Runs the tests whose name contains one of the NAMEs (every test without a NAME)\n"
            "and prints \"ok - CHECK\" or \"FAIL - CHECK: DETAIL (FILE:LINE in test TEST)\" per check,\n"
            "then \"N passed, N failed\"; exits 1 if a check failed, 2 on a usage error.\n"
            "  --list   print the names of the (selected) tests instead of running them\n"
            "  --help   print this\n",
            prog);
}

/* Reads the arguments: -1 when the selected tests are to run, else the exit
   status (0 after --help or --list, 2 after a usage error). */
static inline int check_args(const check_test *tests, size_t n, int argc, char **argv) {
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL, *prog = slash ? slash + 1 : argc > 0 ? argv[0] : "test";
    int list = 0;
    check_argc = argc, check_argv = argv;
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            check_usage(stdout, prog);
            return 0;
        } else if (strcmp(argv[i], "--list") == 0) {
            list = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, argv[i]);
            check_usage(stderr, prog);
            return 2;
        } else {
            while (k < n && !strstr(tests[k].name, argv[i])) k++;
            if (k == n) {
                fprintf(stderr, "%s: no test matches '%s' (%s --list prints the names)\n", prog, argv[i], prog);
                return 2;
            }
        }
    }
    if (!list) return -1;
    for (size_t i = 0; i < n; i++)
        if (check_selected(tests[i].name)) printf("%s\n", tests[i].name);
    return 0;
}

/* Runs the tests check_args selected, in the table's order, and prints the
   closing line; the exit status. */
static inline int check_run(const check_test *tests, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!check_selected(tests[i].name)) continue;
        check_current = tests[i].name;
        tests[i].run();
        check_current = NULL;
    }
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

static inline int check_main(const check_test *tests, size_t n, int argc, char **argv) {
    int status = check_args(tests, n, argc, argv);
    return status >= 0 ? status : check_run(tests, n);
}

#endif
