/* Pins the ABI: enum values, constants, and the size and field offsets of every public struct on
 * x86-64 Linux, as literal numbers. A change here breaks every compiled caller and every ctypes
 * binding: it needs a new SONAME, not a test update. Also checks that only public symbols are exported. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#include "lmf_check.h"
#include "lmfuse/lmfuse.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/hypernet.h"
#include "lmfuse/logits.h"
#include "lmfuse/mezo.h"
#include "lmfuse/vocab.h"

#define PIN(expr, value) LMF_CHECK_EQ_INT((expr), (value))

void test_abi_enums(void) {
  PIN(LMF_OK, 0);
  PIN(LMF_ERR_INVALID_ARGUMENT, 1);
  PIN(LMF_ERR_NULL_POINTER, 2);
  PIN(LMF_ERR_UNSUPPORTED_DTYPE, 3);
  PIN(LMF_ERR_INVALID_SIZE, 4);
  PIN(LMF_ERR_STRUCT_SIZE, 5);
  PIN(LMF_ERR_OVERLAP, 6);
  PIN(LMF_ERR_OUT_OF_MEMORY, 7);
  PIN(LMF_ERR_NO_DEVICE, 8);
  PIN(LMF_ERR_NOT_COMPILED, 9);
  PIN(LMF_ERR_CUDA, 10);
  PIN(LMF_ERR_INVALID_STATE, 11);
  PIN(LMF_ERR_CALLBACK, 12);
  PIN(LMF_ERR_NONFINITE, 13);
  PIN(LMF_ERR_IO, 14);
  PIN(LMF_ERR_PARSE, 15);
  PIN(LMF_ERR_INTERNAL, 16);

  PIN(LMF_BACKEND_AUTO, 0);
  PIN(LMF_BACKEND_CPU, 1);
  PIN(LMF_BACKEND_CUDA, 2);

  PIN(LMF_DTYPE_F32, 0);
  PIN(LMF_DTYPE_F16, 1);
  PIN(LMF_DTYPE_BF16, 2);
  PIN(LMF_DTYPE_I32, 3);
  PIN(LMF_DTYPE_I64, 4);
  PIN(LMF_DTYPE_U8, 5);

  PIN(LMF_MEZO_GAUSSIAN, 0);
  PIN(LMF_MEZO_RADEMACHER, 1);
  PIN(LMF_ROUND_NEAREST, 0);
  PIN(LMF_ROUND_STOCHASTIC, 1);

  PIN(LMF_MEZO_MAX_SEEDS, 64);
  PIN(LMF_CONTEXT_CONFIG_VERSION, 1);
  PIN(LMF_MEZO_CONFIG_VERSION, 1);
  PIN(LMF_MEZO_STEP_ARGS_VERSION, 1);
  PIN(LMF_MEZO_MULTI_ARGS_VERSION, 1);
  PIN(LMF_MEZO_DRIVER_ARGS_VERSION, 1);

  PIN(LMF_ROW_OK, 0);
  PIN(LMF_ROW_ALL_MASKED, 1);
  PIN(LMF_ROW_NONFINITE, 2);
  PIN(LMF_ROW_BAD_INDEX, 3);
  PIN(LMF_LOGITS_MAX_MODELS, 16);
  PIN(LMF_LOGITS_PARAMS_VERSION, 1);
  PIN(LMF_LOGITS_OUTPUTS_VERSION, 1);

  PIN(LMF_VOCAB_FORMAT_RAW, 0);
  PIN(LMF_VOCAB_FORMAT_BYTE_LEVEL, 1);
  PIN(LMF_VOCAB_FORMAT_METASPACE, 2);
  PIN(LMF_TOKEN_SPECIAL, 1);
  PIN(LMF_TOKEN_BYTE_FALLBACK, 2);
  PIN(LMF_TOKEN_UNUSED, 4);
  PIN(LMF_VOCAB_ARRAYS_VERSION, 1);
  PIN(LMF_DYNTOK_PRETOKENS, 0);
  PIN(LMF_DYNTOK_WORDS, 1);
  PIN(LMF_DYNTOK_WHITESPACE, 2);
  PIN(LMF_DYNTOK_CONFIG_VERSION, 1);
  PIN(LMF_DYNTOK_BATCH_VERSION, 1);
  PIN(LMF_DYNTOK_FIELD_OFFSETS, 0);
  PIN(LMF_DYNTOK_FIELD_IDS, 1);
  PIN(LMF_DYNTOK_FIELD_SPAN_START, 2);
  PIN(LMF_DYNTOK_FIELD_SPAN_LEN, 3);
  PIN(LMF_DYNTOK_FIELD_MERGE_PAIRS, 4);
  PIN(LMF_DYNTOK_FIELD_MERGE_RESULTS, 5);
  PIN(LMF_DYNTOK_FIELD_MERGE_COUNTS, 6);
  PIN(LMF_DYNTOK_FIELD_NEW_OFFSETS, 7);
  PIN(LMF_DYNTOK_FIELD_NEW_BYTES, 8);
  PIN(LMF_DYNTOK_FIELD_DECOMP_OFFSETS, 9);
  PIN(LMF_DYNTOK_FIELD_DECOMP, 10);

  /* Enums are passed as int32_t fields: they must be int-sized. */
  PIN(sizeof(lmf_status_t), 4);
  PIN(sizeof(lmf_backend_t), 4);
  PIN(sizeof(lmf_dtype_t), 4);
  PIN(sizeof(lmf_mezo_dist_t), 4);
  PIN(sizeof(lmf_rounding_t), 4);
  PIN(sizeof(lmf_stream_t), sizeof(void *));
  PIN(sizeof(lmf_row_status_t), 4);
  PIN(sizeof(lmf_vocab_format_t), 4);
  PIN(sizeof(lmf_token_flag_t), 4);
  PIN(sizeof(lmf_dyntok_boundary_t), 4);
  PIN(sizeof(lmf_dyntok_field_t), 4);

  PIN(LMF_DYNTOK_EMBED_HYPERNET, 0);
  PIN(LMF_DYNTOK_EMBED_FVT, 1);
  PIN(LMF_DYNTOK_PAD_RIGHT, 0);
  PIN(LMF_DYNTOK_PAD_LEFT, 1);
  PIN(LMF_DYNTOK_EMBED_ARGS_VERSION, 1);
  PIN(LMF_HYPERNET_SURFACE_ARGS_VERSION, 1);
  PIN(LMF_EMBED_CACHE_CONFIG_VERSION, 1);
  PIN(LMF_EMBED_CACHE_MAX_ROWS, 1073741824);
  PIN(sizeof(lmf_dyntok_embed_method_t), 4);
  PIN(sizeof(lmf_dyntok_pad_side_t), 4);
}

void test_abi_structs(void) {
#if !(defined(__x86_64__) && defined(__linux__))
  LMF_SKIP("the pinned layout is x86-64 Linux's");
#else
  PIN(sizeof(lmf_context_config_t), 24);
  PIN(offsetof(lmf_context_config_t, struct_size), 0);
  PIN(offsetof(lmf_context_config_t, version), 8);
  PIN(offsetof(lmf_context_config_t, backend), 12);
  PIN(offsetof(lmf_context_config_t, device), 16);
  PIN(offsetof(lmf_context_config_t, cpu_threads), 20);

  PIN(sizeof(lmf_mezo_tensor_t), 48);
  PIN(offsetof(lmf_mezo_tensor_t, data), 0);
  PIN(offsetof(lmf_mezo_tensor_t, master), 8);
  PIN(offsetof(lmf_mezo_tensor_t, numel), 16);
  PIN(offsetof(lmf_mezo_tensor_t, global_offset), 24);
  PIN(offsetof(lmf_mezo_tensor_t, uid), 32);
  PIN(offsetof(lmf_mezo_tensor_t, dtype), 36);
  PIN(offsetof(lmf_mezo_tensor_t, weight_decay), 40);
  PIN(offsetof(lmf_mezo_tensor_t, reserved), 44);

  PIN(sizeof(lmf_mezo_config_t), 24);
  PIN(offsetof(lmf_mezo_config_t, struct_size), 0);
  PIN(offsetof(lmf_mezo_config_t, version), 8);
  PIN(offsetof(lmf_mezo_config_t, dist), 12);
  PIN(offsetof(lmf_mezo_config_t, rounding), 16);

  PIN(sizeof(lmf_mezo_step_args_t), 72);
  PIN(offsetof(lmf_mezo_step_args_t, struct_size), 0);
  PIN(offsetof(lmf_mezo_step_args_t, version), 8);
  PIN(offsetof(lmf_mezo_step_args_t, seed), 16);
  PIN(offsetof(lmf_mezo_step_args_t, grad), 24);
  PIN(offsetof(lmf_mezo_step_args_t, lr), 28);
  PIN(offsetof(lmf_mezo_step_args_t, weight_decay), 32);
  PIN(offsetof(lmf_mezo_step_args_t, perturb_next), 36);
  PIN(offsetof(lmf_mezo_step_args_t, next_seed), 40);
  PIN(offsetof(lmf_mezo_step_args_t, next_scale), 48);
  PIN(offsetof(lmf_mezo_step_args_t, grad_ptr), 56);
  PIN(offsetof(lmf_mezo_step_args_t, skipped_ptr), 64);

  PIN(sizeof(lmf_mezo_multi_args_t), 64);
  PIN(offsetof(lmf_mezo_multi_args_t, struct_size), 0);
  PIN(offsetof(lmf_mezo_multi_args_t, version), 8);
  PIN(offsetof(lmf_mezo_multi_args_t, num_seeds), 16);
  PIN(offsetof(lmf_mezo_multi_args_t, seeds), 24);
  PIN(offsetof(lmf_mezo_multi_args_t, coeffs), 32);
  PIN(offsetof(lmf_mezo_multi_args_t, coeffs_ptr), 40);
  PIN(offsetof(lmf_mezo_multi_args_t, lr), 48);
  PIN(offsetof(lmf_mezo_multi_args_t, weight_decay), 52);
  PIN(offsetof(lmf_mezo_multi_args_t, skipped_ptr), 56);

  PIN(sizeof(lmf_mezo_driver_args_t), 48);
  PIN(offsetof(lmf_mezo_driver_args_t, struct_size), 0);
  PIN(offsetof(lmf_mezo_driver_args_t, version), 8);
  PIN(offsetof(lmf_mezo_driver_args_t, seed), 16);
  PIN(offsetof(lmf_mezo_driver_args_t, eps), 24);
  PIN(offsetof(lmf_mezo_driver_args_t, lr), 28);
  PIN(offsetof(lmf_mezo_driver_args_t, weight_decay), 32);
  PIN(offsetof(lmf_mezo_driver_args_t, perturb_next), 36);
  PIN(offsetof(lmf_mezo_driver_args_t, next_seed), 40);

  PIN(sizeof(lmf_mezo_step_result_t), 16);
  PIN(offsetof(lmf_mezo_step_result_t, loss_plus), 0);
  PIN(offsetof(lmf_mezo_step_result_t, loss_minus), 4);
  PIN(offsetof(lmf_mezo_step_result_t, grad), 8);
  PIN(offsetof(lmf_mezo_step_result_t, skipped), 12);

  PIN(sizeof(lmf_logits_model_t), 72);
  PIN(offsetof(lmf_logits_model_t, logits), 0);
  PIN(offsetof(lmf_logits_model_t, row_index), 8);
  PIN(offsetof(lmf_logits_model_t, coeff_rows), 16);
  PIN(offsetof(lmf_logits_model_t, sparse_index), 24);
  PIN(offsetof(lmf_logits_model_t, row_stride), 32);
  PIN(offsetof(lmf_logits_model_t, dtype), 40);
  PIN(offsetof(lmf_logits_model_t, vocab), 44);
  PIN(offsetof(lmf_logits_model_t, coeff), 48);
  PIN(offsetof(lmf_logits_model_t, temperature), 52);
  PIN(offsetof(lmf_logits_model_t, sparse_k), 56);
  PIN(offsetof(lmf_logits_model_t, sparse_fill), 60);
  PIN(offsetof(lmf_logits_model_t, reserved), 64);

  PIN(sizeof(lmf_logits_params_t), 168);
  PIN(offsetof(lmf_logits_params_t, struct_size), 0);
  PIN(offsetof(lmf_logits_params_t, version), 8);
  PIN(offsetof(lmf_logits_params_t, num_rows), 12);
  PIN(offsetof(lmf_logits_params_t, vocab_out), 16);
  PIN(offsetof(lmf_logits_params_t, plausibility_model), 20);
  PIN(offsetof(lmf_logits_params_t, plausibility_alpha), 24);
  PIN(offsetof(lmf_logits_params_t, nucleus_model), 28);
  PIN(offsetof(lmf_logits_params_t, nucleus_p), 32);
  PIN(offsetof(lmf_logits_params_t, bias), 40);
  PIN(offsetof(lmf_logits_params_t, bias_row_stride), 48);
  PIN(offsetof(lmf_logits_params_t, gedi_pos_model), 56);
  PIN(offsetof(lmf_logits_params_t, gedi_neg_model), 60);
  PIN(offsetof(lmf_logits_params_t, gedi_omega), 64);
  PIN(offsetof(lmf_logits_params_t, gedi_logit_scale), 68);
  PIN(offsetof(lmf_logits_params_t, gedi_bias_pos), 72);
  PIN(offsetof(lmf_logits_params_t, gedi_bias_neg), 76);
  PIN(offsetof(lmf_logits_params_t, gedi_class_bias), 80);
  PIN(offsetof(lmf_logits_params_t, gedi_filter_p), 84);
  PIN(offsetof(lmf_logits_params_t, gedi_target_p), 88);
  PIN(offsetof(lmf_logits_params_t, gedi_L_pos), 96);
  PIN(offsetof(lmf_logits_params_t, gedi_L_neg), 104);
  PIN(offsetof(lmf_logits_params_t, gedi_n), 112);
  PIN(offsetof(lmf_logits_params_t, temperature), 120);
  PIN(offsetof(lmf_logits_params_t, temperature_rows), 128);
  PIN(offsetof(lmf_logits_params_t, top_k), 136);
  PIN(offsetof(lmf_logits_params_t, top_p), 140);
  PIN(offsetof(lmf_logits_params_t, min_p), 144);
  PIN(offsetof(lmf_logits_params_t, seeds), 152);
  PIN(offsetof(lmf_logits_params_t, offsets), 160);

  PIN(sizeof(lmf_logits_outputs_t), 72);
  PIN(offsetof(lmf_logits_outputs_t, struct_size), 0);
  PIN(offsetof(lmf_logits_outputs_t, version), 8);
  PIN(offsetof(lmf_logits_outputs_t, tokens), 16);
  PIN(offsetof(lmf_logits_outputs_t, status), 24);
  PIN(offsetof(lmf_logits_outputs_t, token_logprob), 32);
  PIN(offsetof(lmf_logits_outputs_t, lse), 40);
  PIN(offsetof(lmf_logits_outputs_t, logprobs), 48);
  PIN(offsetof(lmf_logits_outputs_t, logprobs_row_stride), 56);
  PIN(offsetof(lmf_logits_outputs_t, gedi_logp_desired), 64);
  PIN(sizeof(lmf_vocab_arrays_t), 64);
  PIN(offsetof(lmf_vocab_arrays_t, struct_size), 0);
  PIN(offsetof(lmf_vocab_arrays_t, version), 8);
  PIN(offsetof(lmf_vocab_arrays_t, num_tokens), 12);
  PIN(offsetof(lmf_vocab_arrays_t, bytes), 16);
  PIN(offsetof(lmf_vocab_arrays_t, offsets), 24);
  PIN(offsetof(lmf_vocab_arrays_t, flags), 32);
  PIN(offsetof(lmf_vocab_arrays_t, num_merges), 40);
  PIN(offsetof(lmf_vocab_arrays_t, merges), 48);
  PIN(offsetof(lmf_vocab_arrays_t, pretokenizer_pattern), 56);
  PIN(sizeof(lmf_dyntok_config_t), 40);
  PIN(LMF_DYNTOK_CONFIG_SIZE_V1, 32);
  PIN(offsetof(lmf_dyntok_config_t, struct_size), 0);
  PIN(offsetof(lmf_dyntok_config_t, version), 8);
  PIN(offsetof(lmf_dyntok_config_t, max_merges), 12);
  PIN(offsetof(lmf_dyntok_config_t, boundary), 16);
  PIN(offsetof(lmf_dyntok_config_t, pattern), 24);
  PIN(offsetof(lmf_dyntok_config_t, target_reduction), 32);
  PIN(sizeof(lmf_dyntok_batch_t), 48);
  PIN(offsetof(lmf_dyntok_batch_t, struct_size), 0);
  PIN(offsetof(lmf_dyntok_batch_t, version), 8);
  PIN(offsetof(lmf_dyntok_batch_t, num_seqs), 16);
  PIN(offsetof(lmf_dyntok_batch_t, offsets), 24);
  PIN(offsetof(lmf_dyntok_batch_t, ids), 32);
  PIN(offsetof(lmf_dyntok_batch_t, word_ids), 40);

  PIN(sizeof(lmf_dyntok_embed_args_t), 184);
  PIN(offsetof(lmf_dyntok_embed_args_t, struct_size), 0);
  PIN(offsetof(lmf_dyntok_embed_args_t, version), 8);
  PIN(offsetof(lmf_dyntok_embed_args_t, method), 12);
  PIN(offsetof(lmf_dyntok_embed_args_t, hypernet), 16);
  PIN(offsetof(lmf_dyntok_embed_args_t, cache), 24);
  PIN(offsetof(lmf_dyntok_embed_args_t, lang_index), 32);
  PIN(offsetof(lmf_dyntok_embed_args_t, surface_len), 36);
  PIN(offsetof(lmf_dyntok_embed_args_t, hn_input_cache), 40);
  PIN(offsetof(lmf_dyntok_embed_args_t, hn_input_cache_valid), 48);
  PIN(offsetof(lmf_dyntok_embed_args_t, fvt_unk_id), 56);
  PIN(offsetof(lmf_dyntok_embed_args_t, n_embd), 60);
  PIN(offsetof(lmf_dyntok_embed_args_t, source_in), 64);
  PIN(offsetof(lmf_dyntok_embed_args_t, source_out), 72);
  PIN(offsetof(lmf_dyntok_embed_args_t, source_rows), 80);
  PIN(offsetof(lmf_dyntok_embed_args_t, source_row_stride), 88);
  PIN(offsetof(lmf_dyntok_embed_args_t, source_dtype), 96);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_dtype), 100);
  PIN(offsetof(lmf_dyntok_embed_args_t, pad_side), 104);
  PIN(offsetof(lmf_dyntok_embed_args_t, pad_id), 108);
  PIN(offsetof(lmf_dyntok_embed_args_t, seq_len), 112);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_embeds), 120);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_mask), 128);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_ids), 136);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_span_start), 144);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_span_len), 152);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_new_out), 160);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_new_bias), 168);
  PIN(offsetof(lmf_dyntok_embed_args_t, out_max_len), 176);

  PIN(sizeof(lmf_hypernet_surface_args_t), 96);
  PIN(offsetof(lmf_hypernet_surface_args_t, struct_size), 0);
  PIN(offsetof(lmf_hypernet_surface_args_t, version), 8);
  PIN(offsetof(lmf_hypernet_surface_args_t, num_tokens), 16);
  PIN(offsetof(lmf_hypernet_surface_args_t, ids), 24);
  PIN(offsetof(lmf_hypernet_surface_args_t, num_new), 32);
  PIN(offsetof(lmf_hypernet_surface_args_t, new_offsets), 40);
  PIN(offsetof(lmf_hypernet_surface_args_t, new_bytes), 48);
  PIN(offsetof(lmf_hypernet_surface_args_t, surface_len), 56);
  PIN(offsetof(lmf_hypernet_surface_args_t, pad_id), 60);
  PIN(offsetof(lmf_hypernet_surface_args_t, original_vocab_size), 64);
  PIN(offsetof(lmf_hypernet_surface_args_t, out_forms), 72);
  PIN(offsetof(lmf_hypernet_surface_args_t, out_copy_ids), 80);
  PIN(offsetof(lmf_hypernet_surface_args_t, out_lengths), 88);

  PIN(sizeof(lmf_embed_cache_config_t), 32);
  PIN(offsetof(lmf_embed_cache_config_t, struct_size), 0);
  PIN(offsetof(lmf_embed_cache_config_t, version), 8);
  PIN(offsetof(lmf_embed_cache_config_t, n_embd), 12);
  PIN(offsetof(lmf_embed_cache_config_t, capacity), 16);
  PIN(offsetof(lmf_embed_cache_config_t, with_out), 24);
  PIN(sizeof(lmf_hypernet_config_t), 80);
  PIN(offsetof(lmf_hypernet_config_t, struct_size), 0);
  PIN(offsetof(lmf_hypernet_config_t, version), 8);
  PIN(offsetof(lmf_hypernet_config_t, num_layers), 12);
  PIN(offsetof(lmf_hypernet_config_t, hidden_size), 16);
  PIN(offsetof(lmf_hypernet_config_t, intermediate_size), 20);
  PIN(offsetof(lmf_hypernet_config_t, num_heads), 24);
  PIN(offsetof(lmf_hypernet_config_t, n_embd), 28);
  PIN(offsetof(lmf_hypernet_config_t, surface_maxlen), 32);
  PIN(offsetof(lmf_hypernet_config_t, pad_token_id), 36);
  PIN(offsetof(lmf_hypernet_config_t, original_vocab_size), 40);
  PIN(offsetof(lmf_hypernet_config_t, n_extra_tokens), 44);
  PIN(offsetof(lmf_hypernet_config_t, separate_out_embeddings), 48);
  PIN(offsetof(lmf_hypernet_config_t, rescale_embeddings), 52);
  PIN(offsetof(lmf_hypernet_config_t, predict_bias), 56);
  PIN(offsetof(lmf_hypernet_config_t, single_head), 60);
  PIN(offsetof(lmf_hypernet_config_t, embed_lang_id), 64);
  PIN(offsetof(lmf_hypernet_config_t, n_langs), 68);
  PIN(offsetof(lmf_hypernet_config_t, max_position_embeddings), 72);
  PIN(sizeof(lmf_hypernet_tensor_t), 56);
  PIN(offsetof(lmf_hypernet_tensor_t, name), 0);
  PIN(offsetof(lmf_hypernet_tensor_t, data), 8);
  PIN(offsetof(lmf_hypernet_tensor_t, dtype), 16);
  PIN(offsetof(lmf_hypernet_tensor_t, ndim), 20);
  PIN(offsetof(lmf_hypernet_tensor_t, shape), 24);
  PIN(sizeof(lmf_hypernet_args_t), 144);
  PIN(offsetof(lmf_hypernet_args_t, struct_size), 0);
  PIN(offsetof(lmf_hypernet_args_t, version), 8);
  PIN(offsetof(lmf_hypernet_args_t, num_tokens), 16);
  PIN(offsetof(lmf_hypernet_args_t, surface_len), 24);
  PIN(offsetof(lmf_hypernet_args_t, surface_forms), 32);
  PIN(offsetof(lmf_hypernet_args_t, source_in), 40);
  PIN(offsetof(lmf_hypernet_args_t, source_out), 48);
  PIN(offsetof(lmf_hypernet_args_t, source_dtype), 56);
  PIN(offsetof(lmf_hypernet_args_t, source_rows), 64);
  PIN(offsetof(lmf_hypernet_args_t, source_row_stride), 72);
  PIN(offsetof(lmf_hypernet_args_t, lang_index), 80);
  PIN(offsetof(lmf_hypernet_args_t, copy_ids), 88);
  PIN(offsetof(lmf_hypernet_args_t, input_cache), 96);
  PIN(offsetof(lmf_hypernet_args_t, input_cache_valid), 104);
  PIN(offsetof(lmf_hypernet_args_t, out_in), 112);
  PIN(offsetof(lmf_hypernet_args_t, out_out), 120);
  PIN(offsetof(lmf_hypernet_args_t, out_bias), 128);
  PIN(offsetof(lmf_hypernet_args_t, allow_tf32), 136);
  PIN(sizeof(lmf_fvt_args_t), 112);
  PIN(offsetof(lmf_fvt_args_t, struct_size), 0);
  PIN(offsetof(lmf_fvt_args_t, version), 8);
  PIN(offsetof(lmf_fvt_args_t, num_tokens), 16);
  PIN(offsetof(lmf_fvt_args_t, offsets), 24);
  PIN(offsetof(lmf_fvt_args_t, ids), 32);
  PIN(offsetof(lmf_fvt_args_t, copy_ids), 40);
  PIN(offsetof(lmf_fvt_args_t, source_in), 48);
  PIN(offsetof(lmf_fvt_args_t, source_out), 56);
  PIN(offsetof(lmf_fvt_args_t, source_dtype), 64);
  PIN(offsetof(lmf_fvt_args_t, n_embd), 68);
  PIN(offsetof(lmf_fvt_args_t, source_rows), 72);
  PIN(offsetof(lmf_fvt_args_t, source_row_stride), 80);
  PIN(offsetof(lmf_fvt_args_t, unk_id), 88);
  PIN(offsetof(lmf_fvt_args_t, out_in), 96);
  PIN(offsetof(lmf_fvt_args_t, out_out), 104);
#endif
}

/* The _INIT macros and the _init functions agree, and struct_size/version come first. */
void test_abi_init(void) {
  lmf_context_config_t cc = LMF_CONTEXT_CONFIG_INIT;
  PIN(cc.struct_size, sizeof cc);
  PIN(cc.version, LMF_CONTEXT_CONFIG_VERSION);
  lmf_mezo_config_t mc = LMF_MEZO_CONFIG_INIT, mi;
  PIN(mc.struct_size, sizeof mc);
  PIN(mc.version, LMF_MEZO_CONFIG_VERSION);
  PIN(mc.dist, LMF_MEZO_GAUSSIAN);
  PIN(mc.rounding, LMF_ROUND_NEAREST);
  LMF_CHECK_OK(lmf_mezo_config_init(&mi, sizeof mi));
  PIN(mi.struct_size, sizeof mi);
  PIN(mi.version, LMF_MEZO_CONFIG_VERSION);
  PIN(mi.dist, LMF_MEZO_GAUSSIAN);
  PIN(mi.rounding, LMF_ROUND_NEAREST);

  lmf_mezo_step_args_t sa;
  LMF_CHECK_OK(lmf_mezo_step_args_init(&sa, sizeof sa));
  PIN(sa.struct_size, sizeof sa);
  PIN(sa.version, LMF_MEZO_STEP_ARGS_VERSION);
  LMF_CHECK(sa.grad_ptr == NULL && sa.skipped_ptr == NULL && sa.perturb_next == 0);
  LMF_CHECK(sa.lr == 0.0f && sa.weight_decay == 0.0f);
  lmf_mezo_multi_args_t ma;
  LMF_CHECK_OK(lmf_mezo_multi_args_init(&ma, sizeof ma));
  PIN(ma.struct_size, sizeof ma);
  PIN(ma.version, LMF_MEZO_MULTI_ARGS_VERSION);
  LMF_CHECK(ma.seeds == NULL && ma.coeffs == NULL && ma.coeffs_ptr == NULL && ma.skipped_ptr == NULL);
  lmf_mezo_driver_args_t da;
  LMF_CHECK_OK(lmf_mezo_driver_args_init(&da, sizeof da));
  PIN(da.struct_size, sizeof da);
  PIN(da.version, LMF_MEZO_DRIVER_ARGS_VERSION);
  LMF_CHECK(da.eps == 1e-3f); /* the documented default (spec: eps = 1e-3) */
  PIN(da.perturb_next, 0);

  /* Logits: no _INIT macros; the _init functions give every mask, GeDi and filter off. */
  lmf_logits_params_t lp;
  memset(&lp, 0x7f, sizeof lp);
  LMF_CHECK_OK(lmf_logits_params_init(&lp, sizeof lp));
  PIN(lp.struct_size, sizeof lp);
  PIN(lp.version, LMF_LOGITS_PARAMS_VERSION);
  PIN(lp.vocab_out, 0);
  PIN(lp.plausibility_model, -1);
  PIN(lp.nucleus_model, -1);
  PIN(lp.gedi_pos_model, -1);
  PIN(lp.gedi_neg_model, -1);
  PIN(lp.top_k, 0);
  LMF_CHECK(lp.top_p == 1.0f && lp.min_p == 0.0f);
  LMF_CHECK(lp.temperature >= 0.0f);
  /* GeDi's code's defaults (logits.h): omega 30, logit scale 1, biases 0, filter_p = target_p = 0.8. */
  LMF_CHECK(lp.gedi_omega == 30.0f && lp.gedi_logit_scale == 1.0f);
  LMF_CHECK(lp.gedi_bias_pos == 0.0f && lp.gedi_bias_neg == 0.0f && lp.gedi_class_bias == 0.0f);
  LMF_CHECK(lp.gedi_filter_p == 0.8f && lp.gedi_target_p == 0.8f);
  LMF_CHECK(lp.bias == NULL && lp.bias_row_stride == 0 && lp.temperature_rows == NULL);
  LMF_CHECK(lp.seeds == NULL && lp.offsets == NULL);
  LMF_CHECK(lp.gedi_L_pos == NULL && lp.gedi_L_neg == NULL && lp.gedi_n == NULL);
  lmf_logits_outputs_t lo;
  memset(&lo, 0x7f, sizeof lo);
  LMF_CHECK_OK(lmf_logits_outputs_init(&lo, sizeof lo));
  PIN(lo.struct_size, sizeof lo);
  PIN(lo.version, LMF_LOGITS_OUTPUTS_VERSION);
  LMF_CHECK(lo.tokens == NULL && lo.status == NULL && lo.token_logprob == NULL && lo.lse == NULL);
  LMF_CHECK(lo.logprobs == NULL && lo.logprobs_row_stride == 0 && lo.gedi_logp_desired == NULL);

  lmf_vocab_arrays_t va = LMF_VOCAB_ARRAYS_INIT, vi;
  memset(&vi, 0x7f, sizeof vi);
  LMF_CHECK_OK(lmf_vocab_arrays_init(&vi, sizeof vi));
  PIN(vi.num_tokens, va.num_tokens);
  PIN(vi.num_merges, va.num_merges);
  LMF_CHECK(vi.bytes == NULL && vi.offsets == NULL && vi.flags == NULL && vi.merges == NULL &&
            vi.pretokenizer_pattern == NULL);
  PIN(va.struct_size, sizeof va);
  PIN(va.version, LMF_VOCAB_ARRAYS_VERSION);
  lmf_dyntok_config_t dc = LMF_DYNTOK_CONFIG_INIT, di;
  memset(&di, 0x7f, sizeof di);
  LMF_CHECK_OK(lmf_dyntok_config_init(&di, sizeof di));
  PIN(di.struct_size, sizeof di);
  PIN(di.version, LMF_DYNTOK_CONFIG_VERSION);
  PIN(di.max_merges, dc.max_merges);
  PIN(di.boundary, LMF_DYNTOK_PRETOKENS);
  LMF_CHECK(di.pattern == NULL && dc.pattern == NULL);
  lmf_dyntok_batch_t db = LMF_DYNTOK_BATCH_INIT, bi;
  memset(&bi, 0x7f, sizeof bi);
  LMF_CHECK_OK(lmf_dyntok_batch_init(&bi, sizeof bi));
  PIN(bi.num_seqs, db.num_seqs);
  LMF_CHECK(bi.offsets == NULL && bi.ids == NULL && bi.word_ids == NULL);
  PIN(bi.struct_size, sizeof bi);
  PIN(bi.version, LMF_DYNTOK_BATCH_VERSION);
  LMF_CHECK(dc.target_reduction == 0.0f && di.target_reduction == 0.0f);

  lmf_dyntok_embed_args_t ea = LMF_DYNTOK_EMBED_ARGS_INIT, ei;
  memset(&ei, 0x7f, sizeof ei);
  LMF_CHECK_OK(lmf_dyntok_embed_args_init(&ei, sizeof ei));
  LMF_CHECK_BYTES_EQ(&ea, &ei, sizeof ea, "lmf_dyntok_embed_args_t: macro vs init (no padding holes)");
  PIN(ea.struct_size, sizeof ea);
  PIN(ea.version, LMF_DYNTOK_EMBED_ARGS_VERSION);
  PIN(ea.method, LMF_DYNTOK_EMBED_HYPERNET);
  PIN(ea.lang_index, -1);
  PIN(ea.pad_id, -1);
  PIN(ea.pad_side, LMF_DYNTOK_PAD_RIGHT);
  PIN(ea.source_dtype, LMF_DTYPE_F32);
  PIN(ea.out_dtype, LMF_DTYPE_F32);
  LMF_CHECK(ea.hypernet == NULL && ea.cache == NULL && ea.source_in == NULL && ea.out_embeds == NULL &&
            ea.out_max_len == NULL);

  lmf_hypernet_surface_args_t hs = LMF_HYPERNET_SURFACE_ARGS_INIT, si;
  memset(&si, 0x7f, sizeof si);
  LMF_CHECK_OK(lmf_hypernet_surface_args_init(&si, sizeof si));
  PIN(si.struct_size, sizeof si);
  PIN(si.num_tokens, hs.num_tokens);
  PIN(si.num_new, hs.num_new);
  PIN(si.surface_len, hs.surface_len);
  PIN(si.pad_id, hs.pad_id);
  PIN(si.original_vocab_size, hs.original_vocab_size);
  LMF_CHECK(si.ids == NULL && si.new_offsets == NULL && si.new_bytes == NULL && si.out_forms == NULL &&
            si.out_copy_ids == NULL && si.out_lengths == NULL);
  PIN(hs.struct_size, sizeof hs);
  PIN(hs.version, LMF_HYPERNET_SURFACE_ARGS_VERSION);
  PIN(hs.pad_id, -1);
  PIN(hs.surface_len, 0);

  lmf_embed_cache_config_t ca = LMF_EMBED_CACHE_CONFIG_INIT, ci;
  memset(&ci, 0x7f, sizeof ci);
  LMF_CHECK_OK(lmf_embed_cache_config_init(&ci, sizeof ci));
  PIN(ci.struct_size, sizeof ci);
  PIN(ci.version, LMF_EMBED_CACHE_CONFIG_VERSION);
  PIN(ci.capacity, 5000);
  PIN(ci.n_embd, ca.n_embd);
  PIN(ci.with_out, 0);
}

/* Only lmf_* API functions are exported; internal helpers (also named lmf_*) stay hidden. */
void test_abi_exports(void) {
  const char *public_fns[] = {"lmf_version", "lmf_version_string", "lmf_status_string", "lmf_last_error",
                              "lmf_clear_error", "lmf_dtype_size", "lmf_dtype_name", "lmf_convert_host",
                              "lmf_backend_available", "lmf_cuda_device_count", "lmf_context_config_init",
                              "lmf_context_create", "lmf_context_destroy", "lmf_context_backend",
                              "lmf_stream_synchronize", "lmf_mezo_config_init", "lmf_mezo_plan_create",
                              "lmf_mezo_plan_destroy", "lmf_mezo_plan_numel", "lmf_mezo_plan_perturbation",
                              "lmf_mezo_perturb", "lmf_mezo_restore", "lmf_mezo_step_args_init",
                              "lmf_mezo_step", "lmf_mezo_multi_args_init", "lmf_mezo_update_multi",
                              "lmf_mezo_fill_z", "lmf_mezo_driver_args_init", "lmf_mezo_train_step",
                              "lmf_philox4x32_10", "lmf_logits_params_init", "lmf_logits_outputs_init",
                              "lmf_logits_workspace_size", "lmf_logits_combine", "lmf_logits_verify_draft",
                              "lmf_vocab_bpe_encode", "lmf_hypernet_surface_args_init",
                              "lmf_hypernet_surface_forms", "lmf_embed_cache_config_init",
                              "lmf_embed_cache_create", "lmf_embed_cache_destroy", "lmf_embed_cache_get_config",
                              "lmf_embed_cache_begin_batch", "lmf_embed_cache_lookup", "lmf_embed_cache_insert",
                              "lmf_embed_cache_contains", "lmf_embed_cache_clear", "lmf_embed_cache_stats",
                              "lmf_dyntok_embed_args_init", "lmf_dyntok_embed_shape", "lmf_dyntok_embed",
                              "lmf_dyntok_pipeline"};
  for (size_t i = 0; i < sizeof public_fns / sizeof public_fns[0]; ++i)
    LMF_CHECK_MSG(dlsym(RTLD_DEFAULT, public_fns[i]) != NULL, "%s is not exported", public_fns[i]);
  const char *internal[] = {"lmf_fail", "lmf_check_struct", "lmf_struct_size_of", "lmf_is_float_dtype",
                            "lmf_cpu_mezo_pass", "lmf_cpu_mezo_multi", "lmf_cpu_mezo_fill_z",
                            "lmf_cuda_compiled", "lmf_cuda_count_devices", "lmf_mezo_run_pass",
                            "lmf_cpu_logits_workspace", "lmf_cpu_logits_run", "lmf_cuda_logits_workspace",
                            "lmf_cuda_logits_run", "lmf_vocab_bpe_get", "lmf_vocab_bpe_run",
                            "lmf_vocab_bpe_free", "lmf_vocab_bpe_scratch_free"};
  for (size_t i = 0; i < sizeof internal / sizeof internal[0]; ++i)
    LMF_CHECK_MSG(dlsym(RTLD_DEFAULT, internal[i]) == NULL, "internal symbol %s is exported", internal[i]);
}
