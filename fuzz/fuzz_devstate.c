/*
 * libFuzzer target over every state loader a snapshot load feeds with bytes
 * from the image: the UART (serial0), the PCI host bridge (pci-host),
 * virtio-blk-pci with its virtio-pci transport, and the vCPU and VM-wide
 * KVM records.  The first input byte picks the loader, the rest is the
 * record's payload.  A loader must reject anything malformed with an error
 * and never read out of bounds (ASan) or hit undefined behaviour (UBSan).
 *
 * The devices are the real ones, created on a machine with no KVM behind it
 * (vm_fd and the vCPU fd are -1): the vCPU and VM loaders parse and check
 * the whole record first, so everything up to their first ioctl is fuzzed,
 * and the ioctl then fails harmlessly with EBADF instead of programming a
 * real vCPU with random state.  virtio-blk's disk is a 1 MiB raw memfd.
 * Build and run: see fuzz/meson.build.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"
#include "hw/pci.h"
#include "hw/serial.h"
#include "hw/virtio_blk.h"
#include "machine/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { T_SERIAL, T_PCI_HOST, T_VIRTIO_BLK, T_VCPU, T_VM, T_COUNT };

static struct machine *m;
static struct device *serial, *pci_host, *blk;

static void setup(void)
{
    m = calloc(1, sizeof(*m));
    if (!m) {
        abort();
    }
    m->kvm_fd = m->vm_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    m->nr_vcpus = 1;
    m->vcpus = calloc(1, sizeof(*m->vcpus));
    if (!m->vcpus) {
        abort();
    }
    m->vcpus[0].m = m;
    m->vcpus[0].fd = -1;
    m->xsave_size = 4096; /* what KVM_GET_XSAVE uses without KVM_CAP_XSAVE2 */
    struct error *err = NULL;
    serial = serial_create(m, NULL, &err);
    struct pci_bus *bus = pci_bus_create(m, &err);
    int fd = memfd_create("fuzz-disk", 0);
    if (!serial || !bus || fd < 0 || ftruncate(fd, 1 << 20) < 0) {
        fprintf(stderr, "fuzz_devstate: set-up failed: %s\n", err ? err->message : "memfd");
        abort();
    }
    pci_host = m->devices_tail;
    char opts[256];
    snprintf(opts, sizeof(opts),
             "{\"driver\": \"raw\", \"node-name\": \"d0\", \"file\": {\"driver\": \"file\", "
             "\"filename\": \"/proc/self/fd/%d\", \"locking\": \"off\"}}",
             fd);
    json_t *o = json_loads(opts, 0, NULL);
    struct block_graph *g = block_graph_new();
    struct block_node *node = block_graph_add(g, o, &err);
    json_decref(o);
    blk = node ? virtio_blk_create(m, bus, node, "virtio-blk:d0", &err) : NULL;
    if (!blk) {
        fprintf(stderr, "fuzz_devstate: set-up failed: %s\n", err ? err->message : "?");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!m) {
        setup();
    }
    if (size < 1) {
        return 0;
    }
    struct error *err = NULL;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    /* A copy of exactly n bytes: ASan then catches a loader reading one past the record. */
    uint8_t *rec = malloc(n ? n : 1);
    if (!rec) {
        abort();
    }
    memcpy(rec, p, n);
    switch (data[0] % T_COUNT) {
    case T_SERIAL:
        device_load(serial, rec, n, &err);
        break;
    case T_PCI_HOST:
        device_load(pci_host, rec, n, &err);
        break;
    case T_VIRTIO_BLK:
        device_load(blk, rec, n, &err);
        break;
    case T_VCPU:
        vcpu_state_load(m, 0, rec, n, &err);
        break;
    case T_VM:
        vm_state_load(m, rec, n, &err);
        break;
    }
    error_free(err);
    free(rec);
    /* Whatever was loaded, the devices must still save without trouble. */
    struct byte_buf out = {0};
    device_save(serial, &out);
    device_save(pci_host, &out);
    device_save(blk, &out);
    buf_free(&out);
    return 0;
}
