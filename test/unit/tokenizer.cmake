# runtime/tokenizer: Tokenizer over tokenizer.model and tokenizer.json, checked
# against golden ids of the real Llama-2/3 files and against libsentencepiece.
# The golden ids and configs are in Inputs/tokenizer; the tokenizer.json files
# themselves are Meta's and not redistributed: tools/fetch-tokenizer-data
# (run by tools/install-deps --tests) builds them into LLAMA_TOKENIZER_DATA_DIR, its
# default folder. The environment variable LLAMA_TOKENIZER_DATA, when set at
# run time, names another folder.
find_package(Threads REQUIRED)
if(NOT "$ENV{LLAMA_DATA_DIR}" STREQUAL "")
  set(_llama_data_dir "$ENV{LLAMA_DATA_DIR}")
else()
  set(_llama_data_dir "$ENV{HOME}/.cache/llama-mlir")
endif()
set(LLAMA_TOKENIZER_DATA_DIR "${_llama_data_dir}/tokenizers" CACHE PATH
  "Folder of the Llama-2/3 tokenizer.json files that tools/fetch-tokenizer-data builds")
add_executable(tokenizer_test ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer_test.cpp
  $<TARGET_OBJECTS:llamart_tokenizer>)
target_include_directories(tokenizer_test PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_definitions(tokenizer_test PRIVATE
  LLAMA_TOKENIZER_INPUTS="${CMAKE_CURRENT_SOURCE_DIR}/Inputs/tokenizer"
  LLAMA_TOKENIZER_DATA_DIR="${LLAMA_TOKENIZER_DATA_DIR}")
target_link_libraries(tokenizer_test PRIVATE GTest::gtest_main PkgConfig::SENTENCEPIECE
  nlohmann_json::nlohmann_json Threads::Threads)
gtest_discover_tests(tokenizer_test)
