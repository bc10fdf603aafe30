/*
 * libFuzzer target over what a load reads from a snapshot before it touches
 * the VM: the vmstate header, the device-state records and the description
 * record (describe.h), and the pack map (pack.h).  The input is the first
 * bytes of a vmstate; the rest of the input doubles as a device section, a
 * description and a pack map.  Neither may crash or read out of
 * bounds, whatever the bytes. Build: see fuzz/meson.build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/describe.h"
#include "snapshot/pack.h"
#include "snapshot/vmstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vmstate_header h;
    struct error *err = NULL;
    /* vm_state_size from the input too, so the layout checks see any value. */
    uint64_t vm_state_size = 0;
    if (size >= 8) {
        memcpy(&vm_state_size, data + size - 8, 8);
    }
    if (vmstate_header_decode(data, size, vm_state_size, &h, "fuzz", &err) == 0) {
        (void)vmstate_total_size(&h);
        /* A map as long as the header says, if the input holds one (it must pass its CRC). */
        struct ram_packs *p = NULL;
        if (h.map_size && h.map_size <= size &&
            ram_packs_decode(data + size - h.map_size, &h, "fuzz", &p, &err) == 0) {
            for (uint64_t c = 0, slot; c < p->nclusters; c++) {
                (void)ram_packs_cluster(p, c, &slot);
            }
            ram_packs_free(p);
        }
    }
    error_free(err);
    err = NULL;
    struct vmstate_record *records = NULL;
    size_t count = 0;
    if (vmstate_records_parse(data, size, &records, &count, "fuzz", &err) == 0) {
        for (size_t i = 0; i < count; i++) {
            /* Touch every payload byte: a bad length would be caught by ASan here. */
            uint8_t sum = 0;
            for (uint32_t j = 0; j < records[i].len; j++) {
                sum ^= records[i].data[j];
            }
            __asm__ volatile("" : : "r"(sum));
            (void)vmstate_record_find(records, count, records[i].id);
        }
        free(records);
    }
    error_free(err);
    err = NULL;
    struct description *d = NULL;
    if (describe_parse((const char *)data, size, &d, "fuzz", &err) == 0) {
        /* Every accessor a query or a load uses on a parsed record. */
        json_decref(describe_node_names(d));
        json_decref(describe_excluded_names(d));
        (void)json_array_size(describe_ancestors(d));
        (void)(strlen(describe_uuid(d)) + strlen(describe_vmstate(d)));
        (void)describe_machine(d);
        describe_free(d);
    }
    error_free(err);
    return 0;
}
