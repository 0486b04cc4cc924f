/* Hugging Face model directories: config.json, generation_config.json,
 * tokenizer_config.json, and tensor names (internal to engine/model).
 *
 *   kw_model_config cfg; char *tmpl = NULL; kw_error err = {0};
 *   if (kw_hfconfig_load("path/to/model", &cfg, &tmpl, &err) < 0) ...
 *
 * config.json fields read (Llama, Mistral, Qwen2): model_type / architectures,
 * hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size
 * (required); num_key_value_heads, head_dim, rms_norm_eps, rope_theta,
 * max_position_embeddings, tie_word_embeddings, attention_bias, bos_token_id,
 * eos_token_id (int or list), rope_scaling {type | rope_type: linear | llama3 | default,
 * factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}.
 * generation_config.json's eos_token_id (int or list) is added to the EOS ids.
 */
#ifndef KW_MODEL_HFCONFIG_H
#define KW_MODEL_HFCONFIG_H

#include <stddef.h>

#include "kvweave/model.h"

/* Fills cfg from the text of a config.json; label names the file in messages. */
int kw_hfconfig_parse(const char *json, size_t n, const char *label, kw_model_config *cfg,
                      kw_error *err);
/* Merges a generation_config.json text: its eos_token_id (int or list) and bos_token_id. */
int kw_hfconfig_merge_generation(const char *json, size_t n, const char *label,
                                 kw_model_config *cfg, kw_error *err);
/* Reads dir's config.json, generation_config.json and tokenizer_config.json (the last two
 * optional). chat_template (nullable out, transfer full) gets the template string from
 * tokenizer_config.json or chat_template.jinja, or NULL. */
int kw_hfconfig_load(const char *dir, kw_model_config *cfg, char **chat_template,
                     kw_error *err);

/* Maps a Hugging Face tensor name to kvweave's (GGUF) name. Returns 1 and writes out
 * when mapped, 0 for a tensor to ignore (rotary inv_freq buffers), KW_ENOTFOUND for a
 * name it does not know. */
int kw_hf_tensor_name(const char *hf, char *out, size_t cap);

#endif
