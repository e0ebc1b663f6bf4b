// The CPU cases (label cpu). Each line: LMF_CASE(Suite, Name, C function in core/, mezo/ or abi/).
#include "lmf_register.h"

// Core API
LMF_CASE(Core, Version, test_version)
LMF_CASE(Core, StatusStringNeverNull, test_status_string)
LMF_CASE(Core, LastErrorThreadLocal, test_last_error)
LMF_CASE(Core, DtypeSizeAndName, test_dtype_size_name)
LMF_CASE(Core, ConvertHostRoundTripAndTies, test_convert_host)
LMF_CASE(Core, ConvertHostBadInput, test_convert_host_bad_input)
LMF_CASE(Core, BackendAvailable, test_backend_available)
LMF_CASE(Core, ContextDefaults, test_context_defaults)
LMF_CASE(Core, ContextBadInput, test_context_bad_input)

// ABI
LMF_CASE(Abi, EnumValues, test_abi_enums)
LMF_CASE(Abi, StructLayoutX86_64, test_abi_structs)
LMF_CASE(Abi, InitMacrosAndFunctions, test_abi_init)
LMF_CASE(Abi, OnlyPublicSymbolsExported, test_abi_exports)

// Philox and z
LMF_CASE(MezoSpec, V01_PhiloxKnownAnswers, test_spec01_philox_known_answers)
LMF_CASE(MezoZ, PhiloxMatchesReference, test_philox_matches_reference)
LMF_CASE(MezoZ, FillZMatchesDoubleReference, test_fill_z_matches_double_reference)
LMF_CASE(MezoZ, FillZWindows, test_fill_z_windows)

// Spec test vector 8
LMF_CASE(MezoSpec, V08_ConvergenceGaussianF32, test_spec08_convergence_gaussian_f32)
LMF_CASE(MezoSpec, V08_ConvergenceRademacherF32, test_spec08_convergence_rademacher_f32)
LMF_CASE(MezoSpec, V08_Bf16StallsWithoutMaster, test_spec08_bf16_stalls_without_master)
LMF_CASE(MezoSpec, V08_Bf16MasterConverges, test_spec08_bf16_master_converges)

// Spec test vectors 2-7, 9-11 (vector 11 on a GPU: lmfuse_cuda_tests)
LMF_CASE(MezoSpec, V02_ZStatistics, test_spec02_z_statistics)
LMF_CASE(MezoSpec, V03_InvarianceShardsGeometryOrder, test_spec03_invariance)
LMF_CASE(MezoSpec, V04_Reproducibility100Steps, test_spec04_reproducibility)
LMF_CASE(MezoSpec, V05_DyadicExactRestore, test_spec05_dyadic_exact_restore)
LMF_CASE(MezoSpec, V05_GaussianRestoreWithin2Ulp, test_spec05_gaussian_restore_2ulp)
LMF_CASE(MezoSpec, V05_MasterWorkingCopyExact, test_spec05_master_exact_restore)
LMF_CASE(MezoSpec, V06_FusedVsUnfused, test_spec06_fused_vs_unfused)
LMF_CASE(MezoSpec, V06_FusedVsUnfusedDyadic, test_spec06_fused_vs_unfused_dyadic)
LMF_CASE(MezoSpec, V07_WeightDecay, test_spec07_weight_decay)
LMF_CASE(MezoSpec, V09_MultiSeedVsSingles, test_spec09_multi_vs_singles)
LMF_CASE(MezoSpec, V10_SharedSeedRanks, test_spec10_shared_seed_ranks)
LMF_CASE(MezoSpec, V10_PerRankSeedsMulti, test_spec10_per_rank_seeds)
LMF_CASE(MezoSpec, V11_SmallNumel, test_spec11_small_numel)
LMF_CASE(MezoSpec, V11_OddElementOffset, test_spec11_odd_element_offset)
LMF_CASE(MezoSpec, V11_NonFiniteGrad, test_spec11_nonfinite_grad)
LMF_CASE(MezoSpec, V11_NonFiniteGradDriver, test_spec11_nonfinite_grad_driver)
LMF_CASE(MezoSpec, V11_StepOverflowSkips, test_spec11_step_overflow_skips)
LMF_CASE(MezoSpec, V11_EmptyParameterList, test_spec11_empty_plan)
LMF_CASE(MezoSpec, V11_LargeGlobalOffsetCpu, test_spec11_large_global_offset)

// 16-bit parameters and precision modes
LMF_CASE(MezoPrecision, Step16BitVsDouble, test_precision_16bit_vs_double)
LMF_CASE(MezoPrecision, MasterStepVsDouble, test_precision_master_step)
LMF_CASE(MezoPrecision, StochasticRoundingUnbiasedFreshReproducible, test_precision_stochastic_rounding)
LMF_CASE(MezoPrecision, StochasticRoundingLeavesF32Alone, test_precision_stochastic_f32_unaffected)

// Properties
LMF_CASE(MezoProperties, DeterministicAcrossThreadCounts, test_determinism_across_threads)
LMF_CASE(MezoProperties, PlanBookkeeping, test_plan_bookkeeping)
LMF_CASE(MezoProperties, DriverSemantics, test_driver_semantics)

// Bad input: status, message naming the argument, nothing changed
LMF_CASE(MezoBadInput, PlanCreate, test_bad_input_plan_create)
LMF_CASE(MezoBadInput, Passes, test_bad_input_passes)
LMF_CASE(MezoBadInput, InitFunctions, test_bad_input_init_functions)
LMF_CASE(MezoBadInput, FillZ, test_bad_input_fill_z)
LMF_CASE(MezoBadInput, TrainStep, test_bad_input_train_step)
LMF_CASE(MezoBadInput, TrainStepArgumentsThatFailLate, test_bad_input_train_step_late_failures)
