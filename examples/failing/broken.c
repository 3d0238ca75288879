/* This file does not compile: the failing example shows what a broken
   build looks like in Airlock. */
int main(void) {
    return undeclared_variable;
}
