/* qcow2: placeholder until the driver lands. */
#include "block/block-int.h"

static int qcow2_open(struct block_node *node, json_t *opts, struct error **errp)
{
    (void)node;
    (void)opts;
    error_setg(errp, "qcow2 is not supported yet");
    return -1;
}

const struct block_driver block_driver_qcow2 = {
        .name = "qcow2",
        .open = qcow2_open,
};
