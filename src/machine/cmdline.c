/*
 * Command-line parsing (see cmdline.h).  Options take one argument each or
 * none; both "-opt" and "--opt" spellings are accepted, as QEMU does.  Every
 * error names the option and the offending value.
 */
#include "machine/cmdline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/keyval.h"
#include "util/size.h"

void vm_config_init(struct vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = VM_DEFAULT_RAM;
    cfg->smp = 1;
    cfg->blockdevs = json_array();
    cfg->devices = json_array();
    cfg->qmp = json_array();
}

void vm_config_free(struct vm_config *cfg)
{
    free(cfg->kernel);
    free(cfg->initrd);
    free(cfg->append);
    free(cfg->mem_path);
    free(cfg->name);
    free(cfg->pidfile);
    free(cfg->logfile);
    free(cfg->loadvm);
    free(cfg->serial);
    json_decref(cfg->blockdevs);
    json_decref(cfg->devices);
    json_decref(cfg->qmp);
    memset(cfg, 0, sizeof(*cfg));
}

const char *vm_config_usage(void)
{
    return "usage: snapvm [options]\n"
           "  -m SIZE             guest RAM (default 128M; a bare number is MiB)\n"
           "  -smp N              number of vCPUs (default 1)\n"
           "  -kernel FILE        Linux bzImage or PVH ELF kernel (default: the built-in guest)\n"
           "  -initrd FILE        initial ramdisk for -kernel\n"
           "  -append STRING      guest command line (built-in guest: tick_ms=N)\n"
           "  -mem-path FILE      back guest RAM with a shared mapping of FILE\n"
           "  -blockdev OPTS      block node: key=value,... or a JSON object\n"
           "  -device virtio-blk-pci,drive=NODE[,id=ID]\n"
           "  -serial SPEC        stdio | null | file:PATH | unix:PATH,server=on,wait=off\n"
           "  -qmp SPEC           QMP monitor: unix:PATH,server=on,wait=off | tcp:HOST:PORT,...\n"
           "  -S                  start paused (cont over QMP starts the guest)\n"
           "  -loadvm TAG         start from internal snapshot TAG\n"
           "  -name NAME          VM name\n"
           "  -pidfile FILE       write the process id to FILE\n"
           "  -daemonize          run in the background once set up (messages: syslog)\n"
           "  -D FILE             append snapvm's messages to FILE instead of stderr\n"
           "  -nographic, -display none, -monitor none, -enable-kvm   accepted\n";
}

static int set_string(char **dst, const char *val)
{
    free(*dst);
    *dst = strdup(val);
    return 0;
}

static int parse_mem(struct vm_config *cfg, const char *arg, struct error **errp)
{
    /* "-m 512", "-m 1G" or "-m size=1G" (QEMU's keyval form). */
    const char *val = arg;
    json_t *kv = NULL;
    if (strchr(arg, '=')) {
        kv = keyval_parse(arg, "size", errp);
        if (!kv) {
            error_prepend(errp, "-m");
            return -1;
        }
        const char *allowed[] = {"size", NULL};
        if (kv_check_keys(kv, allowed, "-m", errp) < 0 ||
            kv_get_string(kv, "size", "-m", &val, errp) < 0) {
            json_decref(kv);
            return -1;
        }
        if (!val) {
            error_setg(errp, "-m: missing size");
            json_decref(kv);
            return -1;
        }
    }
    uint64_t size;
    int rc = size_parse(val, 1ULL << 20, &size, errp);
    if (rc < 0) {
        error_prepend(errp, "-m");
    } else if (size < VM_MIN_RAM || size > VM_MAX_RAM) {
        error_setg(errp, "-m: '%s' is out of range (4M to 64G)", val);
        rc = -1;
    } else {
        cfg->ram_size = (size + 4095) & ~4095ULL;
    }
    json_decref(kv);
    return rc;
}

static int parse_smp(struct vm_config *cfg, const char *arg, struct error **errp)
{
    json_t *kv = keyval_parse(arg, "cpus", errp);
    if (!kv) {
        error_prepend(errp, "-smp");
        return -1;
    }
    const char *allowed[] = {"cpus", "maxcpus", "sockets", "cores", "threads", NULL};
    uint64_t cpus = 0;
    int rc = kv_check_keys(kv, allowed, "-smp", errp);
    if (rc == 0) {
        rc = kv_get_uint(kv, "cpus", "-smp", &cpus, errp);
    }
    json_decref(kv);
    if (rc < 0) {
        return -1;
    }
    if (cpus < 1 || cpus > VM_MAX_VCPUS) {
        error_setg(errp, "-smp: '%s': the number of vCPUs must be 1 to %d", arg, VM_MAX_VCPUS);
        return -1;
    }
    cfg->smp = (int)cpus;
    return 0;
}

static int check_file(const char *opt, const char *path, struct error **errp)
{
    if (access(path, R_OK) < 0) {
        error_setg_errno(errp, errno, "%s: '%s'", opt, path);
        return -1;
    }
    return 0;
}

static int parse_device(struct vm_config *cfg, const char *arg, struct error **errp)
{
    json_t *kv = keyval_parse(arg, "driver", errp);
    if (!kv) {
        error_prepend(errp, "-device");
        return -1;
    }
    const char *driver = NULL, *drive = NULL;
    const char *allowed[] = {"driver", "drive", "id", NULL};
    if (kv_get_string(kv, "driver", "-device", &driver, errp) < 0) {
        goto fail;
    }
    if (!driver || strcmp(driver, "virtio-blk-pci") != 0) {
        error_setg(errp, "-device: unsupported device '%s' (only virtio-blk-pci)",
                   driver ? driver : "");
        goto fail;
    }
    if (kv_check_keys(kv, allowed, "-device virtio-blk-pci", errp) < 0 ||
        kv_get_string(kv, "drive", "-device virtio-blk-pci", &drive, errp) < 0) {
        goto fail;
    }
    if (!drive || !*drive) {
        error_setg(errp, "-device virtio-blk-pci: missing drive=NODE");
        goto fail;
    }
    json_array_append_new(cfg->devices, kv);
    return 0;
fail:
    json_decref(kv);
    return -1;
}

static int parse_blockdev(struct vm_config *cfg, const char *arg, struct error **errp)
{
    json_t *obj = keyval_parse_any(arg, NULL, errp);
    if (!obj) {
        error_prepend(errp, "-blockdev");
        return -1;
    }
    if (!json_is_object(obj)) {
        error_setg(errp, "-blockdev: expected a JSON object or key=value list");
        json_decref(obj);
        return -1;
    }
    json_array_append_new(cfg->blockdevs, obj);
    return 0;
}

static int parse_serial(struct vm_config *cfg, const char *arg, struct error **errp)
{
    if (strcmp(arg, "stdio") && strcmp(arg, "null") && strcmp(arg, "none") &&
        strncmp(arg, "file:", 5) && strncmp(arg, "unix:", 5)) {
        error_setg(errp, "-serial: unsupported back end '%s' (stdio, null, file:PATH, unix:PATH)",
                   arg);
        return -1;
    }
    return set_string(&cfg->serial, arg);
}

enum opt_id {
    OPT_M,
    OPT_SMP,
    OPT_KERNEL,
    OPT_INITRD,
    OPT_APPEND,
    OPT_BLOCKDEV,
    OPT_DEVICE,
    OPT_QMP,
    OPT_SERIAL,
    OPT_S,
    OPT_LOADVM,
    OPT_MEM_PATH,
    OPT_NAME,
    OPT_PIDFILE,
    OPT_DAEMONIZE,
    OPT_LOGFILE,
    OPT_NOGRAPHIC,
    OPT_DISPLAY,
    OPT_MONITOR,
    OPT_ENABLE_KVM,
    OPT_HELP,
    OPT_VERSION,
};

struct opt_def {
    const char *name;
    enum opt_id id;
    bool has_arg;
};

static const struct opt_def opts[] = {
        {"m", OPT_M, true},
        {"smp", OPT_SMP, true},
        {"kernel", OPT_KERNEL, true},
        {"initrd", OPT_INITRD, true},
        {"append", OPT_APPEND, true},
        {"blockdev", OPT_BLOCKDEV, true},
        {"device", OPT_DEVICE, true},
        {"qmp", OPT_QMP, true},
        {"serial", OPT_SERIAL, true},
        {"S", OPT_S, false},
        {"loadvm", OPT_LOADVM, true},
        {"mem-path", OPT_MEM_PATH, true},
        {"name", OPT_NAME, true},
        {"pidfile", OPT_PIDFILE, true},
        {"daemonize", OPT_DAEMONIZE, false},
        {"D", OPT_LOGFILE, true},
        {"nographic", OPT_NOGRAPHIC, false},
        {"display", OPT_DISPLAY, true},
        {"monitor", OPT_MONITOR, true},
        {"enable-kvm", OPT_ENABLE_KVM, false},
        {"help", OPT_HELP, false},
        {"h", OPT_HELP, false},
        {"version", OPT_VERSION, false},
};

static const struct opt_def *find_opt(const char *arg)
{
    if (arg[0] != '-') {
        return NULL;
    }
    arg += arg[1] == '-' ? 2 : 1;
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (strcmp(opts[i].name, arg) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static int apply_opt(struct vm_config *cfg, const struct opt_def *o, const char *arg,
                     struct error **errp)
{
    switch (o->id) {
    case OPT_M:
        return parse_mem(cfg, arg, errp);
    case OPT_SMP:
        return parse_smp(cfg, arg, errp);
    case OPT_KERNEL:
        return check_file("-kernel", arg, errp) < 0 ? -1 : set_string(&cfg->kernel, arg);
    case OPT_INITRD:
        return check_file("-initrd", arg, errp) < 0 ? -1 : set_string(&cfg->initrd, arg);
    case OPT_APPEND:
        return set_string(&cfg->append, arg);
    case OPT_BLOCKDEV:
        return parse_blockdev(cfg, arg, errp);
    case OPT_DEVICE:
        return parse_device(cfg, arg, errp);
    case OPT_QMP:
        json_array_append_new(cfg->qmp, json_string(arg));
        return 0;
    case OPT_SERIAL:
        return parse_serial(cfg, arg, errp);
    case OPT_S:
        cfg->start_paused = true;
        return 0;
    case OPT_LOADVM:
        return set_string(&cfg->loadvm, arg);
    case OPT_MEM_PATH:
        return set_string(&cfg->mem_path, arg);
    case OPT_NAME:
        return set_string(&cfg->name, arg);
    case OPT_PIDFILE:
        return set_string(&cfg->pidfile, arg);
    case OPT_DAEMONIZE:
        cfg->daemonize = true;
        return 0;
    case OPT_LOGFILE:
        return set_string(&cfg->logfile, arg);
    case OPT_NOGRAPHIC:
    case OPT_ENABLE_KVM:
        return 0;
    case OPT_DISPLAY:
        if (strcmp(arg, "none") != 0) {
            error_setg(errp, "-display: unsupported display '%s' (only 'none')", arg);
            return -1;
        }
        return 0;
    case OPT_MONITOR:
        if (strcmp(arg, "none") != 0) {
            error_setg(errp, "-monitor: unsupported monitor '%s' (only 'none'; use -qmp)", arg);
            return -1;
        }
        return 0;
    case OPT_HELP:
        cfg->help = true;
        return 0;
    case OPT_VERSION:
        cfg->version = true;
        return 0;
    }
    return 0;
}

int vm_config_parse(struct vm_config *cfg, int argc, char **argv, struct error **errp)
{
    for (int i = 1; i < argc; i++) {
        const struct opt_def *o = find_opt(argv[i]);
        if (!o) {
            if (argv[i][0] == '-') {
                error_setg(errp, "unknown option '%s' (try -help)", argv[i]);
            } else {
                error_setg(errp, "unexpected argument '%s' (options start with '-')", argv[i]);
            }
            return -1;
        }
        const char *arg = NULL;
        if (o->has_arg) {
            if (i + 1 >= argc) {
                error_setg(errp, "option '%s' needs an argument", argv[i]);
                return -1;
            }
            arg = argv[++i];
        }
        if (apply_opt(cfg, o, arg, errp) < 0) {
            return -1;
        }
    }
    if (cfg->initrd && !cfg->kernel) {
        error_setg(errp, "-initrd: needs -kernel (the built-in guest takes no initrd)");
        return -1;
    }
    if (!cfg->serial) {
        cfg->serial = strdup(cfg->daemonize ? "null" : "stdio");
    } else if (cfg->daemonize && strcmp(cfg->serial, "stdio") == 0) {
        error_setg(errp, "-serial stdio cannot be used with -daemonize");
        return -1;
    }
    return 0;
}
