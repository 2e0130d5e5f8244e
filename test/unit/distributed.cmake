# Training on a dp x tp grid: layout, ZeRO-1 and validation in process, and
# whole runs of the partitioned bigram fixture under mpirun against the
# single-rank run. The executable is its own rank program (`distributed_test
# bigram-grid ...`), hence its own main() and GTest::gtest.
add_executable(distributed_test distributed_test.cpp train_fixture.cpp)
target_link_libraries(distributed_test PRIVATE llamart_nomain GTest::gtest)
target_compile_definitions(distributed_test PRIVATE LLAMA_MPIEXEC="${MPIEXEC_PROGRAM}")
gtest_discover_tests(distributed_test PROPERTIES TIMEOUT 600)
