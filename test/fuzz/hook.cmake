# Adds the fuzz targets to a configure of the top-level project without the
# top level knowing about them: tools/fuzz passes this file as
# CMAKE_PROJECT_INCLUDE, and targets.cmake is included at the end of the
# top-level CMakeLists.txt (deferred), when every library they link exists.
# (Deferred calls expand their arguments late, hence the variable.)
set(LLAMA_FUZZ_TARGETS ${CMAKE_CURRENT_LIST_DIR}/targets.cmake)
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR}
  CALL include ${LLAMA_FUZZ_TARGETS})
