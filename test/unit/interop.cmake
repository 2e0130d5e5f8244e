# Hugging Face folder import/export and evaluation (runtime/checkpoint/hf_folder,
# runtime/interop/hf_weights, runtime/cli/{export,eval,eval_tasks}), against the hand-written
# bigram program that train_test uses too.
add_executable(hf_folder_test hf_folder_test.cpp train_fixture.cpp)
target_link_libraries(hf_folder_test PRIVATE llamart_nomain GTest::gtest_main)
gtest_discover_tests(hf_folder_test)
