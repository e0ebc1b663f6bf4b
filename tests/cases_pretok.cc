// The CUDA backend's regex-free pre-tokenizer matcher against PCRE2 (label cpu).
#include "lmf_register.h"

LMF_CASE(PretokMatch, SpecT5, test_pretok_match_spec_t5)
LMF_CASE(PretokMatch, CodePointPairs, test_pretok_match_code_point_pairs)
LMF_CASE(PretokMatch, MistralTokenConcatenations, test_pretok_match_mistral_tokens)
LMF_CASE(PretokMatch, Gpt4oTokenConcatenations, test_pretok_match_gpt4o_tokens)
