// The vocabulary cases (label cpu): include/lmfuse/vocab.h.
#include "lmf_register.h"

// From plain arrays (vocab/test_vocab_arrays.c)
LMF_CASE(VocabArrays, Basic, test_vocab_arrays_basic)
LMF_CASE(VocabArrays, CanonicalLookup, test_vocab_canonical_lookup)
LMF_CASE(VocabArrays, InitFunction, test_vocab_arrays_init_fn)
LMF_CASE(VocabArrays, BadInput, test_vocab_arrays_bad_input)
LMF_CASE(VocabArrays, AccessorsBadInput, test_vocab_accessors_bad_input)

// tokenizer.json (vocab/test_vocab_json.c)
LMF_CASE(VocabJson, MistralSizesFlagsSpotChecks, test_vocab_json_mistral)
LMF_CASE(VocabJson, Gpt4oSizesFlagsSpotChecks, test_vocab_json_gpt4o)
LMF_CASE(VocabJson, MistralEveryTokenAndMerge, test_vocab_json_mistral_every_token_and_merge)
LMF_CASE(VocabJson, Gpt4oEveryTokenAndMerge, test_vocab_json_gpt4o_every_token_and_merge)
LMF_CASE(VocabJson, MistralMultilingualRoundTrip, test_vocab_json_mistral_round_trip)
LMF_CASE(VocabJson, Gpt4oMultilingualRoundTrip, test_vocab_json_gpt4o_round_trip)
LMF_CASE(VocabJson, MetaspaceByteFallback, test_vocab_json_metaspace_byte_fallback)
LMF_CASE(VocabJson, ByteLevelAllBytes, test_vocab_json_byte_level_all_bytes)
LMF_CASE(VocabJson, AddedTokensHolesPattern, test_vocab_json_added_tokens)
LMF_CASE(VocabJson, BadStrings, test_vocab_json_bad_strings)
LMF_CASE(VocabJson, BadFiles, test_vocab_json_bad_files)
LMF_CASE(VocabJson, CorruptedRealFile, test_vocab_json_corrupted_real_file)
LMF_CASE(VocabJson, RandomCorruptionsNeverCrash, test_vocab_json_random_corruptions)
