/* The smallest command that says "I am running": one byte to stdout and
   exit, linked statically so no dynamic loader runs before main. The time
   until the runner reads that byte bounds "sandbox creation to the job's
   first instruction" from above, as closely as a measurement from outside
   the job can. */
#include <unistd.h>

int main(void) {
    return write(1, "!", 1) == 1 ? 0 : 1;
}
