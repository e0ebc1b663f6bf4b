// The dynamic-tokenization pipeline cases (label cpu): BPE with a vocabulary's merges (vocab.h),
// surface forms and the embedding cache (hypernet.h), inputs_embeds from a merged batch and
// target_reduction (dyntok.h).
#include "lmf_register.h"

// BPE encoding (vocab/test_vocab_bpe.c)
LMF_CASE(VocabBpe, Gpt4oEveryLineEqualsTokenizer, test_vocab_bpe_gpt4o_real)
LMF_CASE(VocabBpe, MistralEveryLineEqualsTokenizer, test_vocab_bpe_mistral_real)
LMF_CASE(VocabBpe, MistralEveryTokenEncodesToItself, test_vocab_bpe_every_token_mistral)
LMF_CASE(VocabBpe, Gpt4oEveryTokenEncodesToItself, test_vocab_bpe_every_token_gpt4o)
LMF_CASE(VocabBpe, SmallVocabularies, test_vocab_bpe_small)
LMF_CASE(VocabBpe, MetaspaceByteFallback, test_vocab_bpe_metaspace)
LMF_CASE(VocabBpe, BadInput, test_vocab_bpe_bad_input)
LMF_CASE(VocabBpe, ConcurrentFirstUse, test_vocab_bpe_concurrent_first_use)

// Surface forms (hypernet/test_hypernet_surface.c)
LMF_CASE(HypernetSurface, RealGpt4oWholePiecesEqualTokenizer, test_hn_surface_real_gpt4o)
LMF_CASE(HypernetSurface, RealMistral, test_hn_surface_real_mistral)
LMF_CASE(HypernetSurface, SpecialsTruncationVocabTokens, test_hn_surface_cases)
LMF_CASE(HypernetSurface, BpeReencodingNotTheMergedParts, test_hn_surface_not_the_parts)
LMF_CASE(HypernetSurface, BadInput, test_hn_surface_bad_input)

// The embedding cache (hypernet/test_embed_cache.c)
LMF_CASE(EmbedCache, HitsMisses, test_embed_cache_hits_misses)
LMF_CASE(EmbedCache, LruOrder, test_embed_cache_lru_order)
LMF_CASE(EmbedCache, Pinning, test_embed_cache_pinning)
LMF_CASE(EmbedCache, CapacityZeroAndGrowth, test_embed_cache_capacity_zero_and_growth)
LMF_CASE(EmbedCache, BadInput, test_embed_cache_bad_input)

// From a merged batch to inputs_embeds (dyntok/test_dyntok_embed.c)
LMF_CASE(DyntokEmbed, M0IsEmbeddingLookupMistral, test_dt_embed_m0_mistral)
LMF_CASE(DyntokEmbed, M0IsEmbeddingLookupGpt4o, test_dt_embed_m0_gpt4o)
LMF_CASE(DyntokEmbed, Fvt, test_dt_embed_fvt)
LMF_CASE(DyntokEmbed, HypernetMistral, test_dt_embed_hypernet_mistral)
LMF_CASE(DyntokEmbed, HypernetGpt4oTiedLanguage, test_dt_embed_hypernet_gpt4o_tied_lang)
LMF_CASE(DyntokEmbed, CacheReuseSameBits, test_dt_embed_cache_reuse)
LMF_CASE(DyntokEmbed, PipelineEqualsTwoCalls, test_dt_embed_pipeline_equals_two_calls)
LMF_CASE(DyntokEmbed, TargetReduction, test_dt_target_reduction)
LMF_CASE(DyntokEmbed, BadInput, test_dt_embed_bad_input)
