# Package tests (CTest, labels cpu;package): install the built project into a temporary prefix, then
# build and run a small C consumer against it, with find_package(lmfuse) + lmfuse::lmfuse
# (LMF_MODE=cmake) or with the flags pkg-config gives for lmfuse.pc (LMF_MODE=pkgconfig). Run with
# cmake -P; the variables come from tests/CMakeLists.txt:
#   LMF_MODE LMF_BUILD_DIR LMF_CONSUMER_DIR LMF_WORK_DIR LMF_GENERATOR LMF_C_COMPILER LMF_EXTRA_FLAGS
#   LMF_EXPECT_VERSION
cmake_minimum_required(VERSION 3.24)

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${ARGN}\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${LMF_WORK_DIR}/prefix)
file(REMOVE_RECURSE ${LMF_WORK_DIR})
file(MAKE_DIRECTORY ${LMF_WORK_DIR})

# 1. Install.
run_step("cmake --install" ${CMAKE_COMMAND} --install ${LMF_BUILD_DIR} --prefix ${prefix})
file(GLOB_RECURSE config_file ${prefix}/*/lmfuseConfig.cmake)
file(GLOB_RECURSE pc_file ${prefix}/*/lmfuse.pc)
if(NOT config_file OR NOT pc_file OR NOT EXISTS ${prefix}/include/lmfuse/lmfuse.h)
  message(FATAL_ERROR "the install lacks lmfuseConfig.cmake, lmfuse.pc or the headers")
endif()
get_filename_component(pc_dir ${pc_file} DIRECTORY)
get_filename_component(libdir ${pc_dir} DIRECTORY)

set(extra "${LMF_EXTRA_FLAGS}")
if(LMF_MODE STREQUAL "cmake")
# 2. find_package(lmfuse) + lmfuse::lmfuse.
run_step("configure the find_package consumer" ${CMAKE_COMMAND} -S ${LMF_CONSUMER_DIR}
  -B ${LMF_WORK_DIR}/cmake-consumer -G ${LMF_GENERATOR} -DCMAKE_C_COMPILER=${LMF_C_COMPILER}
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_FLAGS=${extra}"
  "-DCMAKE_EXE_LINKER_FLAGS=${extra}")
run_step("build the find_package consumer" ${CMAKE_COMMAND} --build ${LMF_WORK_DIR}/cmake-consumer)
run_step("run the find_package consumer" ${LMF_WORK_DIR}/cmake-consumer/consumer)
if(NOT step_output MATCHES "lmfuse ${LMF_EXPECT_VERSION} OK")
  message(FATAL_ERROR "the find_package consumer printed '${step_output}', expected 'lmfuse ${LMF_EXPECT_VERSION} OK'")
endif()
message(STATUS "find_package consumer: ${step_output}")
return()
endif()

# 3. pkg-config.
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} ${pc_dir})
run_step("pkg-config --modversion" ${PKG_CONFIG} --modversion lmfuse)
string(STRIP "${step_output}" pc_version)
if(NOT pc_version STREQUAL LMF_EXPECT_VERSION)
  message(FATAL_ERROR "pkg-config reports version ${pc_version}, expected ${LMF_EXPECT_VERSION}")
endif()
# The .pc file must describe where it was installed (a relocatable prefix, e.g. ${pcfiledir}/../..):
# cmake --install --prefix installs somewhere other than CMAKE_INSTALL_PREFIX.
set(problems "")
run_step("pkg-config --variable=prefix" ${PKG_CONFIG} --variable=prefix lmfuse)
string(STRIP "${step_output}" pc_prefix)
get_filename_component(pc_prefix_real "${pc_prefix}" REALPATH)
get_filename_component(prefix_real "${prefix}" REALPATH)
if(NOT pc_prefix_real STREQUAL prefix_real)
  string(APPEND problems "lmfuse.pc installed under ${prefix} says prefix=${pc_prefix}: it was configured "
    "with CMAKE_INSTALL_PREFIX at configure time (cmake/lmfuse.pc.in, configure_file in CMakeLists.txt) "
    "and is wrong for cmake --install --prefix; a pkg-config user gets -I${pc_prefix}/include.\n")
endif()
# Build the consumer anyway (prefix overridden), to check the rest of the .pc file.
run_step("pkg-config --cflags --libs" ${PKG_CONFIG} --define-variable=prefix=${prefix} --cflags --libs lmfuse)
separate_arguments(pc_flags UNIX_COMMAND "${step_output}")
separate_arguments(extra_list UNIX_COMMAND "${extra}")
run_step("compile the pkg-config consumer" ${LMF_C_COMPILER} ${extra_list} ${LMF_CONSUMER_DIR}/main.c
  -o ${LMF_WORK_DIR}/pkgconfig-consumer ${pc_flags} -Wl,-rpath,${libdir})
run_step("run the pkg-config consumer" ${LMF_WORK_DIR}/pkgconfig-consumer)
if(NOT step_output MATCHES "lmfuse ${LMF_EXPECT_VERSION} OK")
  message(FATAL_ERROR "the pkg-config consumer printed '${step_output}'")
endif()
message(STATUS "pkg-config consumer (prefix overridden): ${step_output}")
if(problems)
  message(FATAL_ERROR "${problems}")
endif()
