/* Hypernet configurations: config.json parsing, checks, the parameter counts of the two released
 * hypernetworks (from the config alone, allocating no weights), and the library's name table against the
 * test's own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hn_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/hypernet.h"

/* config.json of the released XLM-R hypernet (benjamin/zett-hypernetwork-xlm-roberta-base): the
 * downstream model's fields, then the hypernetwork's; hn_num_attention_heads is null (H / 64). */
static const char k_xlmr_json[] =
    "{\"architectures\": [\"ZettHypernet\"], \"model_type\": \"zett_hypernetwork\", \"hidden_size\": 768,"
    " \"num_attention_heads\": 12, \"intermediate_size\": 3072, \"max_position_embeddings\": 514,"
    " \"vocab_size\": 250002, \"layer_norm_eps\": 1e-05, \"pad_token_id\": 1, \"bos_token_id\": 0,"
    " \"hn_model_name_or_path\": \"roberta-base\", \"hn_model_type\": \"roberta\", \"hn_surface_maxlen\": 7,"
    " \"hn_n_layers\": 3, \"n_embd\": 768, \"hn_hidden_size\": 768, \"hn_intermediate_size\": 1536,"
    " \"hn_rescale_embeddings\": true, \"hn_embed_target_priors\": false,"
    " \"hn_add_inter_token_attention\": false, \"hn_inter_token_attention_bias_by_priors\": true,"
    " \"hn_inter_token_attention_bias_scaler\": 1.0, \"hn_n_inter_token_blocks\": 16,"
    " \"hn_embed_using_source_embeddings\": true, \"hn_concat_last_hidden_state\": false,"
    " \"hn_single_head\": false, \"hn_predict_bias\": true, \"hn_num_attention_heads\": null,"
    " \"hn_embed_lang_id\": true, \"n_langs\": 26, \"original_vocab_size\": 250002,"
    " \"hn_n_extra_tokens\": 161, \"separate_out_embeddings\": false,"
    " \"langs\": [\"ar\",\"bg\",\"de\",\"el\",\"en\",\"es\",\"et\",\"eu\",\"fi\",\"fr\",\"hi\",\"ht\",\"id\",\"it\","
    "\"ja\",\"ko\",\"pt\",\"qu\",\"ru\",\"sw\",\"ta\",\"te\",\"th\",\"tr\",\"ur\",\"zh\"]}";

/* config.json of the released Mistral-7B hypernet (benjamin/zett-hypernetwork-Mistral-7B-v0.1). */
static const char k_mistral_json[] =
    "{\"architectures\": [\"ZettHypernet\"], \"hidden_size\": 4096, \"intermediate_size\": 14336,"
    " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"max_position_embeddings\": 32768,"
    " \"vocab_size\": 32000, \"tie_word_embeddings\": false, \"pad_token_id\": 2,"
    " \"hn_model_name_or_path\": \"roberta-base\", \"hn_surface_maxlen\": 7, \"hn_n_layers\": 3,"
    " \"n_embd\": 4096, \"hn_hidden_size\": 4096, \"hn_intermediate_size\": 8192,"
    " \"hn_rescale_embeddings\": true, \"hn_embed_target_priors\": false, \"hn_add_inter_token_attention\": false,"
    " \"hn_embed_using_source_embeddings\": true, \"hn_concat_last_hidden_state\": false, \"hn_single_head\": false,"
    " \"hn_num_attention_heads\": 32, \"hn_embed_lang_id\": false, \"n_langs\": null,"
    " \"original_vocab_size\": 32000, \"hn_n_extra_tokens\": 522, \"separate_out_embeddings\": true}";

/* The spec's two parameter counts, from config.json alone. */
void test_hn_param_counts_released(void) {
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  int64_t n = -1;
  LMF_REQUIRE_OK(lmf_hypernet_config_from_json(&c, k_xlmr_json, strlen(k_xlmr_json)));
  LMF_CHECK_EQ_INT(c.hidden_size, 768);
  LMF_CHECK_EQ_INT(c.intermediate_size, 1536);
  LMF_CHECK_EQ_INT(c.num_heads, 0); /* null: resolved to H / 64 when used */
  LMF_CHECK_EQ_INT(c.pad_token_id, 1);
  LMF_CHECK_EQ_INT(c.original_vocab_size, 250002);
  LMF_CHECK_EQ_INT(c.n_extra_tokens, 161);
  LMF_CHECK_EQ_INT(c.embed_lang_id, 1);
  LMF_CHECK_EQ_INT(c.n_langs, 26);
  LMF_CHECK_EQ_INT(c.surface_maxlen, 7);
  LMF_CHECK_EQ_INT(c.max_position_embeddings, 514);
  LMF_CHECK_OK(lmf_hypernet_param_count(&c, &n));
  LMF_CHECK_EQ_INT(n, 20634625);

  lmf_hypernet_config_t m = LMF_HYPERNET_CONFIG_INIT;
  LMF_REQUIRE_OK(lmf_hypernet_config_from_json(&m, k_mistral_json, strlen(k_mistral_json)));
  LMF_CHECK_EQ_INT(m.hidden_size, 4096);
  LMF_CHECK_EQ_INT(m.num_heads, 32);
  LMF_CHECK_EQ_INT(m.separate_out_embeddings, 1);
  LMF_CHECK_EQ_INT(m.pad_token_id, 2);
  LMF_CHECK_EQ_INT(m.predict_bias, 1); /* absent: ZettHypernetConfig's default */
  LMF_CHECK_EQ_INT(m.embed_lang_id, 0);
  n = -1;
  LMF_CHECK_OK(lmf_hypernet_param_count(&m, &n));
  LMF_CHECK_EQ_INT(n, 677740545);

  /* The test's own table (no weights allocated) agrees. */
  hn_weights w;
  if (LMF_CHECK(hn_weights_table(&w, &m))) {
    LMF_CHECK_EQ_INT(hn_weights_numel(&w), 677740545);
    hn_weights_free(&w);
  }
  if (LMF_CHECK(hn_weights_table(&w, &c))) {
    LMF_CHECK_EQ_INT(hn_weights_numel(&w), 20634625);
    hn_weights_free(&w);
  }
}

/* The library's name table equals the test's (names, shapes, count) for several variants. */
void test_hn_name_table(void) {
  lmf_hypernet_config_t cs[5];
  cs[0] = hn_config_xlmr(1000);
  cs[1] = hn_config_mistral_small();
  cs[2] = hn_config_mistral_small();
  cs[2].single_head = 1;
  cs[3] = hn_config_mistral_small();
  cs[3].rescale_embeddings = 0;
  cs[3].predict_bias = 0;
  cs[3].n_extra_tokens = 0;
  cs[4] = hn_config_xlmr(1000);
  cs[4].embed_lang_id = 0;
  cs[4].num_layers = 1;
  for (int v = 0; v < 5; ++v) {
    hn_weights w;
    if (!LMF_CHECK(hn_weights_table(&w, &cs[v]))) continue;
    size_t n = 0;
    LMF_CHECK_OK(lmf_hypernet_tensor_count(&cs[v], &n));
    LMF_CHECK_EQ_INT(n, w.n);
    int64_t total = 0;
    LMF_CHECK_OK(lmf_hypernet_param_count(&cs[v], &total));
    LMF_CHECK_EQ_INT(total, hn_weights_numel(&w));
    for (size_t i = 0; i < n; ++i) {
      char name[128];
      int32_t ndim = 0, req = -1;
      int64_t shape[4];
      if (!LMF_CHECK_OK(lmf_hypernet_tensor_info(&cs[v], i, name, sizeof name, &ndim, shape, &req))) break;
      hn_tensor *t = hn_weights_find(&w, name);
      if (!LMF_CHECK_MSG(t != NULL, "variant %d: library tensor '%s' is not in the test's table", v, name)) continue;
      LMF_CHECK_EQ_INT(ndim, t->ndim);
      LMF_CHECK_EQ_INT(shape[0], t->shape[0]);
      if (ndim > 1) LMF_CHECK_EQ_INT(shape[1], t->shape[1]);
      LMF_CHECK_EQ_INT(req, strcmp(name, "model.embeddings.word_embeddings.weight") != 0);
    }
    LMF_CHECK_FAIL(lmf_hypernet_tensor_info(&cs[v], n, NULL, 0, NULL, NULL, NULL), LMF_ERR_INVALID_ARGUMENT, "index");
    hn_weights_free(&w);
  }
}

static lmf_status_t parse(lmf_hypernet_config_t *c, const char *json) {
  return lmf_hypernet_config_from_json(c, json, strlen(json));
}

/* Field defaults, refused variants, wrong types, malformed JSON, and the config checks. */
void test_hn_config_json(void) {
  const char *base = "\"hn_embed_using_source_embeddings\": true, \"hn_hidden_size\": 64, "
                     "\"hn_intermediate_size\": 128, \"original_vocab_size\": 100, \"pad_token_id\": 1";
  char buf[1024];
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  snprintf(buf, sizeof buf, "{%s}", base);
  LMF_REQUIRE_OK(parse(&c, buf));
  LMF_CHECK_EQ_INT(c.num_layers, 3);
  LMF_CHECK_EQ_INT(c.n_embd, 768);
  LMF_CHECK_EQ_INT(c.surface_maxlen, 16);
  LMF_CHECK_EQ_INT(c.predict_bias, 1);
  LMF_CHECK_EQ_INT(c.separate_out_embeddings, 0);
  LMF_CHECK_EQ_INT(c.n_extra_tokens, 0);

  /* Each case: extra JSON (appended to base), the status, a word the message must contain. */
  struct { const char *extra; lmf_status_t st; const char *needle; } cases[] = {
      {", \"hn_embed_using_source_embeddings\": false", LMF_ERR_INVALID_ARGUMENT, "hn_embed_using_source_embeddings"},
      {", \"hn_concat_last_hidden_state\": true", LMF_ERR_INVALID_ARGUMENT, "hn_concat_last_hidden_state"},
      {", \"hn_embed_target_priors\": true", LMF_ERR_INVALID_ARGUMENT, "hn_embed_target_priors"},
      {", \"hn_add_inter_token_attention\": true", LMF_ERR_INVALID_ARGUMENT, "hn_add_inter_token_attention"},
      {", \"hn_model_type\": \"t5\"", LMF_ERR_INVALID_ARGUMENT, "hn_model_type"},
      {", \"hn_model_type\": 5", LMF_ERR_PARSE, "hn_model_type"},
      {", \"hn_hidden_size\": -64", LMF_ERR_INVALID_SIZE, "hidden_size"},
      {", \"hn_intermediate_size\": 0", LMF_ERR_INVALID_SIZE, "intermediate_size"},
      {", \"hn_n_layers\": -1", LMF_ERR_INVALID_SIZE, "num_layers"},
      {", \"n_embd\": -5", LMF_ERR_INVALID_SIZE, "n_embd"},
      {", \"hn_n_extra_tokens\": -3", LMF_ERR_INVALID_SIZE, "n_extra_tokens"},
      {", \"hn_num_attention_heads\": 5", LMF_ERR_INVALID_ARGUMENT, "num_heads"},
      {", \"hn_num_attention_heads\": -2", LMF_ERR_INVALID_SIZE, "num_heads"},
      {", \"hn_hidden_size\": 32", LMF_ERR_INVALID_ARGUMENT, "num_heads"}, /* 32 / 64 = 0 heads */
      {", \"pad_token_id\": 100", LMF_ERR_INVALID_ARGUMENT, "pad_token_id"},
      {", \"pad_token_id\": -1", LMF_ERR_INVALID_ARGUMENT, "pad_token_id"},
      {", \"original_vocab_size\": 0", LMF_ERR_INVALID_SIZE, "original_vocab_size"},
      {", \"hn_embed_lang_id\": true", LMF_ERR_INVALID_ARGUMENT, "n_langs"},
      {", \"hn_hidden_size\": 64.5", LMF_ERR_PARSE, "hn_hidden_size"},
      {", \"hn_hidden_size\": \"64\"", LMF_ERR_PARSE, "hn_hidden_size"},
      {", \"hn_hidden_size\": 1e12", LMF_ERR_PARSE, "hn_hidden_size"},
      {", \"hn_rescale_embeddings\": \"yes\"", LMF_ERR_PARSE, "hn_rescale_embeddings"},
      {", \"hn_predict_bias\": 2", LMF_ERR_PARSE, "hn_predict_bias"},
      {", \"langs\": [\"en\", 3]", LMF_ERR_PARSE, "langs"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    lmf_hypernet_config_t d = LMF_HYPERNET_CONFIG_INIT;
    d.hidden_size = 12345; /* a failed parse leaves the struct alone */
    /* The case's fields come first: cJSON reads the first of duplicate keys. */
    snprintf(buf, sizeof buf, "{%s, %s}", cases[i].extra + 2, base);
    if (!LMF_CHECK_FAIL(parse(&d, buf), cases[i].st, cases[i].needle))
      lmf_t_note("case %zu: %s", i, cases[i].extra);
    LMF_CHECK_EQ_INT(d.hidden_size, 12345);
  }
  /* Malformed JSON, not an object, trailing garbage. */
  LMF_CHECK_FAIL(parse(&c, "{\"hn_hidden_size\": 64,"), LMF_ERR_PARSE, "JSON");
  LMF_CHECK_FAIL(parse(&c, "[1, 2]"), LMF_ERR_PARSE, "object");
  snprintf(buf, sizeof buf, "{%s} x", base);
  LMF_CHECK_FAIL(parse(&c, buf), LMF_ERR_PARSE, "after");
  LMF_CHECK_FAIL(lmf_hypernet_config_from_json(&c, "{}", 0), LMF_ERR_PARSE, NULL);
  /* NULL pointers and bad struct sizes. */
  LMF_CHECK_FAIL(lmf_hypernet_config_from_json(&c, NULL, 3), LMF_ERR_NULL_POINTER, "json");
  LMF_CHECK_FAIL(lmf_hypernet_config_from_json(NULL, "{}", 2), LMF_ERR_NULL_POINTER, "config");
  lmf_hypernet_config_t bad = c;
  bad.struct_size = 8;
  LMF_CHECK_FAIL(parse(&bad, buf), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_hypernet_config_from_file(&c, NULL), LMF_ERR_NULL_POINTER, "path");
  LMF_CHECK_FAIL(lmf_hypernet_config_from_file(&c, "/nonexistent/lmf/config.json"), LMF_ERR_IO, "config.json");
  int64_t cnt;
  LMF_CHECK_FAIL(lmf_hypernet_param_count(NULL, &cnt), LMF_ERR_NULL_POINTER, "config");
  LMF_CHECK_FAIL(lmf_hypernet_param_count(&c, NULL), LMF_ERR_NULL_POINTER, "count");
  LMF_CHECK_FAIL(lmf_hypernet_config_init(NULL, sizeof c), LMF_ERR_NULL_POINTER, NULL);
  LMF_CHECK_FAIL(lmf_hypernet_config_init(&c, 4), LMF_ERR_STRUCT_SIZE, NULL);

  /* Direct struct checks: a flag that is not 0/1, n_langs < 0, positions too few for the language slot. */
  lmf_hypernet_config_t e = hn_config_mistral_small();
  e.separate_out_embeddings = 2;
  LMF_CHECK_FAIL(lmf_hypernet_config_check(&e), LMF_ERR_INVALID_ARGUMENT, "separate_out_embeddings");
  e = hn_config_xlmr(100);
  e.max_position_embeddings = 1;
  LMF_CHECK_FAIL(lmf_hypernet_config_check(&e), LMF_ERR_INVALID_SIZE, "max_position_embeddings");
  e = hn_config_xlmr(100);
  e.n_langs = -1;
  LMF_CHECK_FAIL(lmf_hypernet_config_check(&e), LMF_ERR_INVALID_SIZE, "n_langs");
  e = hn_config_xlmr(100);
  e.version = 9;
  LMF_CHECK_FAIL(lmf_hypernet_config_check(&e), LMF_ERR_STRUCT_SIZE, "version");
  e = hn_config_xlmr(100);
  LMF_CHECK_OK(lmf_hypernet_config_check(&e));

  /* config_from_file on a written config.json round-trips the struct. */
  char dir[512], p[1024];
  if (hn_tmpdir(dir, sizeof dir)) {
    lmf_hypernet_config_t src = hn_config_mistral_small(), got = LMF_HYPERNET_CONFIG_INIT;
    if (hn_write_config(hn_path(p, sizeof p, dir, "config.json"), &src, NULL) &&
        LMF_CHECK_OK(lmf_hypernet_config_from_file(&got, p)))
      hn_config_eq(&got, &src);
    hn_rmdir(dir);
  }
}
