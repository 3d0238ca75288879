#include <stdio.h>
#include <string.h>

/* Greets whoever is named on the command line. */
int main(int argc, char **argv) {
    const char *who = argc > 1 ? argv[1] : "world";
    if (strlen(who) > 64) {
        fprintf(stderr, "name too long\n");
        return 2;
    }
    printf("hello, %s\n", who);
    return 0;
}
