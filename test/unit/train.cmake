# Training driver (runtime/train) tests, against a hand-written bigram program.
add_executable(train_test train_test.cpp train_fixture.cpp)
target_link_libraries(train_test PRIVATE llamart_nomain GTest::gtest_main)
# ProgramAbi.DocsNameTheCurrentVersion reads docs/formats.md.
target_compile_definitions(train_test PRIVATE LLAMA_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(train_test)
