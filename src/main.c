/* Placeholder until the machine lands: prints usage. */
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "snapvm: not yet functional\n");
    return 1;
}
