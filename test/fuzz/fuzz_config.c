/* fuzz_config.c — libFuzzer target for the config.json reader (plan/config.c).
 *
 * model_config_from_json must refuse any malformed or hostile config with a message and
 * never crash. When it accepts, the config it returns must pass model_config_check() (the
 * reader ends with it) and reading the same bytes again must give the same struct byte for
 * byte, since plans and weight images compare configs with memcmp-style equality.
 *
 * Run: make build/fuzz/fuzz_config && build/fuzz/fuzz_config -max_total_time=60 CORPUS
 * test/data/config */
#include "plan/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model_config a, b;
    char err[MODEL_ERR_LEN];
    memset(err, 0x55, sizeof err);
    if (model_config_from_json(&a, (const char *)data, size, err) == 0) {
        if (model_config_check(&a, err))
            abort();
        if (model_config_from_json(&b, (const char *)data, size, err) || memcmp(&a, &b, sizeof a))
            abort();
    } else if (!memchr(err, 0, sizeof err) || !err[0]) {
        abort(); /* a refusal must leave a terminated, non-empty message */
    }
    return 0;
}
