// The hypernet cases (label cpu): ZeTT hypernetwork configs, loading, forward pass vs the double
// reference, exact properties, FVT, bad inputs. C functions in tests/hypernet/.
#include "lmf_register.h"

// Configs and the name table
LMF_CASE(Hypernet, ParamCountsOfReleasedConfigs, test_hn_param_counts_released)
LMF_CASE(Hypernet, NameTableMatchesZeTT, test_hn_name_table)
LMF_CASE(Hypernet, ConfigJson, test_hn_config_json)

// Forward pass vs the double reference
LMF_CASE(Hypernet, ForwardXlmrShapeFull, test_hn_forward_xlmr_full)
LMF_CASE(Hypernet, ForwardMistralReducedWidth, test_hn_forward_mistral_reduced)
LMF_CASE(Hypernet, ForwardVariants, test_hn_forward_variants)
LMF_CASE(Hypernet, ForwardEveryKernel, test_hn_forward_kernels)
LMF_CASE(Hypernet, ToleranceSeparatesVariants, test_hn_sensitivity)

// Exact properties, cache, workspace, sources, files
LMF_CASE(Hypernet, ExactProperties, test_hn_exact_properties)
LMF_CASE(Hypernet, CacheWorkspaceSources, test_hn_cache_workspace_sources)
LMF_CASE(Hypernet, SafetensorsRoundTrip, test_hn_safetensors_roundtrip)

// FVT
LMF_CASE(Hypernet, Fvt, test_hn_fvt)

// Bad inputs
LMF_CASE(Hypernet, BadFiles, test_hn_bad_files)
LMF_CASE(Hypernet, BadCreate, test_hn_bad_create)
LMF_CASE(Hypernet, BadPredict, test_hn_bad_predict)
