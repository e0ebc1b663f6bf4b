// The CUDA logits parity cases, run on the CPU emulator of the CUDA execution model (label cuda-emu,
// tests/emu/README.md): the real kernels against the CPU backend, without a GPU.
#include "lmf_register.h"

LMF_CASE(LogitsCudaEmu, SpecVectorsMatchCpu, test_cuda_logits_spec_vectors)
LMF_CASE(LogitsCudaEmu, RandomBatchesMatchCpu, test_cuda_logits_random_batches)
LMF_CASE(LogitsCudaEmu, LayoutsMatchCpu, test_cuda_logits_layouts)
LMF_CASE(LogitsCudaEmu, BadRowsMatchCpu, test_cuda_logits_bad_rows)
LMF_CASE(LogitsCudaEmu, DenseModelsMatchCpu, test_cuda_logits_dense_models)
LMF_CASE(LogitsCudaEmu, VerifyDraftMatchesCpu, test_cuda_logits_verify)
LMF_CASE(LogitsCudaEmu, CutsMatchCpu, test_cuda_logits_cuts)
LMF_CASE(LogitsCudaEmu, FlatRowsMatchCpu, test_cuda_logits_flat_rows)
LMF_CASE(LogitsCudaEmu, TopPTargetMatchesCpu, test_cuda_logits_topp_total)
LMF_CASE(LogitsCudaEmu, GraphReplayMatchesCpu, test_cuda_logits_graph)
