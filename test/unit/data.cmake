# runtime/data (token shards, Dataset) and runtime/checkpoint (safetensors,
# atomic file writes). They link the two object libraries directly so that
# they build without the kernels or the training driver.
add_executable(shards_test ${CMAKE_CURRENT_SOURCE_DIR}/shards_test.cpp
  $<TARGET_OBJECTS:llamart_data> $<TARGET_OBJECTS:llamart_ckpt>)
target_include_directories(shards_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(shards_test PRIVATE GTest::gtest_main)
gtest_discover_tests(shards_test)

add_executable(safetensors_test ${CMAKE_CURRENT_SOURCE_DIR}/safetensors_test.cpp
  $<TARGET_OBJECTS:llamart_ckpt>)
target_include_directories(safetensors_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(safetensors_test PRIVATE GTest::gtest_main nlohmann_json::nlohmann_json)
gtest_discover_tests(safetensors_test)
