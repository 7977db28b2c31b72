/* A stand-in for libnvidia-ml.so.1 on machines without an NVIDIA GPU, so that the worker's
 * NVML path (nvidia-ml-py, ctypes, our budget code) runs for real up to the driver.
 * Only the calls `workers.admission.budget` makes are here. Behaviour from the environment:
 *   FAKE_NVML_TOTALS      comma-separated memory of each GPU in bytes ("" = no GPU)
 *   FAKE_NVML_INIT_ERROR  an NVML return code for nvmlInit (9 = driver not loaded)
 * Built by tests/integration/test_admission_nvml.py: cc -shared -fPIC -o libnvidia-ml.so.1 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef void *nvmlDevice_t;

#define MAX_GPUS 16

static unsigned int read_totals(unsigned long long *totals) {
    const char *text = getenv("FAKE_NVML_TOTALS");
    unsigned int count = 0;
    char *end;
    while (text != NULL && *text != '\0' && count < MAX_GPUS) {
        unsigned long long value = strtoull(text, &end, 10);
        if (end == text) break; /* not a number */
        totals[count++] = value;
        text = (*end == ',') ? end + 1 : end;
    }
    return count;
}

static int init_error(void) {
    const char *code = getenv("FAKE_NVML_INIT_ERROR");
    return code ? atoi(code) : 0;
}

int nvmlInitWithFlags(unsigned int flags) { (void)flags; return init_error(); }
int nvmlInit_v2(void) { return init_error(); }
int nvmlShutdown(void) { return 0; }

const char *nvmlErrorString(int result) {
    switch (result) {
    case 0: return "Success";
    case 9: return "Driver Not Loaded";
    case 12: return "NVML Shared Library Not Found";
    default: return "Unknown Error";
    }
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    unsigned long long totals[MAX_GPUS];
    *count = read_totals(totals);
    return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    unsigned long long totals[MAX_GPUS];
    if (index >= read_totals(totals)) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *device = (nvmlDevice_t)(uintptr_t)(index + 1);
    return 0;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    unsigned long long totals[MAX_GPUS];
    unsigned int index = (unsigned int)(uintptr_t)device - 1;
    if (index >= read_totals(totals)) return 2;
    memory->total = memory->free = totals[index];
    memory->used = 0;
    return 0;
}

int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    snprintf(name, length, "Fake GPU %u", (unsigned int)(uintptr_t)device - 1);
    return 0;
}
