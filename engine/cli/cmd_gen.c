/* `kvweave bench [NAME [ARGS...]]`: the benchmarks of tests/bench, built beside kvweave
 * (<build>/tests/bench/bench_NAME). Without a name it lists those that are built. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const struct {
    const char *name, *what;
} known[] = {
    {"cpu", "CPU engine prefill / decode tokens per second beside the sgemm and memory "
            "bandwidth floors (args: [--model SPEC] [--quick] [--threads N])"},
    {"dequant", "GGUF dequantization throughput"},
    {"cuda_attn", "decode attention over views on the GPU beside the copy bandwidth "
                  "(CUDA builds; tests/bench/run_gpu.sh adds PyTorch SDPA side by side)"},
    {"cuda_gemv", "decode-shaped bf16 linear layers (1-8 rows, 8B shapes): the "
                  "weight-streaming kernel beside cuBLAS and the copy bandwidth (CUDA builds)"},
    {"cuda_prefill", "causal prefill attention alone on the GPU, table and span views and "
                     "cuDNN's fused attention, 4k..32k tokens, in TFLOP/s against a nominal "
                     "peak (CUDA builds; args: [MAX_CTX] [PEAK_TFLOPS] [MIN_CTX] [Q_TOKENS]; "
                     "tests/bench/run_gpu.sh adds PyTorch SDPA)"},
    {"model", "the CUDA engine on a whole model: prefill and decode tokens per second at "
              "batches and contexts beside the bandwidth and FLOP floors (CUDA builds; args: "
              "MODEL.gguf [--ctx ...] [--batch ...] [--kv bf16|int8]; "
              "tests/bench/run_gpu_model.sh adds PyTorch)"},
    {"methods", "KV methods on the CUDA engine at long context: decode speed and KV memory "
                "of each method against full attention, beside the bandwidth floor (CUDA "
                "builds; args: MODEL.gguf [--ctx 32768] [--batch 1,8] [--budget 2048] "
                "[--methods full,snapkv,...]; tests/bench/run_gpu_hooks.sh)"},
    {"cuda_select", "selection and page kernels (window scores, pooling, top-k, page bounds "
                    "and scores, compaction) at 8B shapes beside the copy bandwidth (CUDA "
                    "builds; tests/bench/run_gpu_select.sh)"},
};

/* <dir of the running kvweave>/tests/bench */
static int bench_dir(char *out, size_t n)
{
    char self[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
        return -1;
    self[k] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return snprintf(out, n, "%s/tests/bench", self) < (int)n ? 0 : -1;
}

int kw_cmd_bench(int argc, char **argv)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))
        argc = 1;
    if (bench_dir(dir, sizeof dir) < 0)
        return kw_cli_usage("bench", "cannot find the benchmarks beside this kvweave");
    if (argc < 2) {
        printf("usage: kvweave bench NAME [ARGS...]\n\nbenchmarks (%s):\n", dir);
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
            snprintf(path, sizeof path, "%s/bench_%s", dir, known[i].name);
            printf("  %-12s %s%s\n", known[i].name, known[i].what,
                   access(path, X_OK) ? " [not built]" : "");
        }
        return 0;
    }
    const char *name = argv[1];
    if (strchr(name, '/') || strlen(name) > 64)
        return kw_cli_usage("bench", "'%s' is not a benchmark name", name);
    snprintf(path, sizeof path, "%s/bench_%s", dir, name);
    if (access(path, X_OK) != 0)
        return kw_cli_usage("bench", "no benchmark '%s' is built here (%s); `kvweave bench` "
                            "lists them", name, path);
    argv[1] = path;
    execv(path, argv + 1);
    fprintf(stderr, "kvweave bench: cannot run %s: %s\n", path, strerror(errno));
    return 3;
}

/* `kvweave gen` lives in cmd_gen_data.c. */
