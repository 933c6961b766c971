/* check.h - the few helpers the C test programs share.

   expect() prints "ok - NAME" or "FAIL - NAME: DETAIL" and counts;
   check_summary() prints the closing "N passed, N failed" and gives the
   exit status. Scratch files go to PHOTON_TEST_DIR (default /tmp), named
   with the process id so that parallel runs do not collide. */
#ifndef PHOTON_CHECK_H
#define PHOTON_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;

static void expect(int ok, const char *name, const char *detail) {
    if (ok) {
        passed++;
        printf("ok - %s\n", name);
    } else {
        failed++;
        printf("FAIL - %s%s%s\n", name, detail ? ": " : "", detail ? detail : "");
    }
}

/* A path in the test directory; valid until 8 more calls. */
static const char *tmp_path(const char *name) {
    static char paths[8][512];
    static int next;
    const char *dir = getenv("PHOTON_TEST_DIR");
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/photon-test-%ld-%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
    return p;
}

static int check_summary(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
