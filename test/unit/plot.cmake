# metrics.png (PNG encoder, font, renderer, metrics.jsonl reader) and the
# TensorBoard event writer; the PNG and zlib streams are decoded by Python's
# zlib as the independent reference.
add_executable(plot_test plot_test.cpp)
target_link_libraries(plot_test PRIVATE llamart_nomain GTest::gtest_main)
gtest_discover_tests(plot_test)
