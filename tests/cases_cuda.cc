// The CUDA cases (label cuda): each compares the CUDA backend with the CPU backend and is reported
// SKIPPED when no CUDA device is usable (or the build has no CUDA backend).
#include "lmf_register.h"

LMF_CASE(Cuda, ContextAndDevices, test_cuda_context)
LMF_CASE(Cuda, PhiloxViaFillZ, test_cuda_philox_via_fill_z)
LMF_CASE(Cuda, PassesMatchCpu, test_cuda_passes_match_cpu)
LMF_CASE(Cuda, UserStream, test_cuda_user_stream)
LMF_CASE(Cuda, DeviceGradAndSkipFlags, test_cuda_device_grad_and_skip_flags)
LMF_CASE(Cuda, TrainStepsMatchCpu, test_cuda_train_steps_match_cpu)
LMF_CASE(Cuda, EmptyPlan, test_cuda_empty_plan)
LMF_CASE(MezoSpec, V11_MoreThan2e31ElementsCuda, test_cuda_more_than_2e31_elements)
LMF_CASE(LogitsCuda, SpecVectorsMatchCpu, test_cuda_logits_spec_vectors)
LMF_CASE(LogitsCuda, RandomBatchesMatchCpu, test_cuda_logits_random_batches)
LMF_CASE(LogitsCuda, LayoutsMatchCpu, test_cuda_logits_layouts)
LMF_CASE(LogitsCuda, VerifyDraftMatchesCpu, test_cuda_logits_verify)
LMF_CASE(DyntokCuda, SpecVectorsMatchCpu, test_cuda_dyntok_spec_vectors)
LMF_CASE(DyntokCuda, RealDataMatchesCpu, test_cuda_dyntok_real_data)
LMF_CASE(DyntokCuda, Batch32x128MatchesCpu, test_cuda_dyntok_batch_32x128)
LMF_CASE(DyntokCuda, LargeBatchesMatchCpu, test_cuda_dyntok_large_batches)
LMF_CASE(DyntokCuda, LongRunsMatchCpu, test_cuda_dyntok_long_runs)
LMF_CASE(DyntokCuda, RandomBatchesMatchCpu, test_cuda_dyntok_random_batches)
LMF_CASE(DyntokCuda, VocabCacheAcrossCalls, test_cuda_dyntok_vocab_cache)
LMF_CASE(DyntokCuda, CustomPatternRefused, test_cuda_dyntok_custom_pattern)
