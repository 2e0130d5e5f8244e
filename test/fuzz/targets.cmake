# libFuzzer targets for every parser of untrusted input. Included only by
# tools/fuzz's configure (clang++-22, see hook.cmake), never by the default
# build: the whole tree is then compiled with
# -fsanitize=fuzzer-no-link,address,undefined and these executables add the
# libFuzzer driver.
set(LLAMA_FUZZ_LINK -fsanitize=fuzzer,address,undefined)

function(llama_fuzz_target name)
  set(dir ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  add_executable(${name} ${dir}/${name}.cpp ${ARGN})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_options(${name} PRIVATE ${LLAMA_FUZZ_LINK})
endfunction()

# runtime/checkpoint: read_safetensors.
llama_fuzz_target(safetensors_fuzz $<TARGET_OBJECTS:llamart_ckpt>)
target_link_libraries(safetensors_fuzz PRIVATE nlohmann_json::nlohmann_json)

# runtime/checkpoint: torch.save archives (TorchFile: zip, data.pkl,
# storages) and the Meta folder they form, or data.pkl alone.
llama_fuzz_target(torch_pickle_fuzz $<TARGET_OBJECTS:llamart_ckpt>)
target_link_libraries(torch_pickle_fuzz PRIVATE nlohmann_json::nlohmann_json)

# runtime/data: Shard (mmap + header/size/checksum validation).
llama_fuzz_target(shard_fuzz
  $<TARGET_OBJECTS:llamart_data> $<TARGET_OBJECTS:llamart_ckpt>)
target_link_libraries(shard_fuzz PRIVATE nlohmann_json::nlohmann_json)

# models: HF config.json / Meta params.json import.
llama_fuzz_target(config_fuzz)
target_link_libraries(config_fuzz PRIVATE LlamaConfig)

# SentencePiece model loading as generate.cpp and llama-tokenize do it.
llama_fuzz_target(tokenizer_fuzz $<TARGET_OBJECTS:llamart_tokenizer>)
target_link_libraries(tokenizer_fuzz PRIVATE PkgConfig::SENTENCEPIECE nlohmann_json::nlohmann_json)

# MLIR: parse + verify + training pipeline. No RTTI, like MLIR itself.
llama_fuzz_target(mlir_fuzz)
llama_mlir_target(mlir_fuzz)
target_link_libraries(mlir_fuzz PRIVATE LlamaRegistration MLIRParser MLIRPass MLIRIR)
