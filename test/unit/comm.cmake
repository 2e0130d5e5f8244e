# runtime/comm collectives. Linked against the comm objects alone (not the
# whole of libllamart) since they need nothing else.
add_executable(comm_test comm_test.cpp $<TARGET_OBJECTS:llamart_comm>)
target_include_directories(comm_test PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(comm_test PRIVATE GTest::gtest MPI::MPI_CXX)
target_compile_definitions(comm_test PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
# Without --grid the binary lists and runs only the single-process tests.
gtest_discover_tests(comm_test)

# The grid tests: 4 ranks (oversubscribed on small machines) per grid shape.
# --allow-run-as-root is harmless for other users and needed in containers.
# The 2x2 run uses tiny staging tiles so the tiled paths run too.
set(COMM_MPIRUN ${MPIEXEC_PROGRAM} --allow-run-as-root --oversubscribe --bind-to none -n 4)
foreach(grid 4x1 1x4 2x2)
  add_test(NAME comm_test.mpi.${grid} COMMAND ${COMM_MPIRUN} $<TARGET_FILE:comm_test> --grid=${grid})
  set_tests_properties(comm_test.mpi.${grid} PROPERTIES LABELS mpi TIMEOUT 300)
endforeach()
set_tests_properties(comm_test.mpi.2x2 PROPERTIES ENVIRONMENT LLAMA_COMM_CHUNK_BYTES=1000)

# A rank that never joins a collective: the others must end the job after
# LLAMA_COMM_TIMEOUT_S with a line naming the collective (well before the
# ctest timeout; the integration test also checks the exit status and time).
add_test(NAME comm_test.mpi.timeout COMMAND ${COMM_MPIRUN} $<TARGET_FILE:comm_test> --grid=4x1 --mode=diverge)
set_tests_properties(comm_test.mpi.timeout PROPERTIES LABELS mpi TIMEOUT 30
  ENVIRONMENT LLAMA_COMM_TIMEOUT_S=2
  PASS_REGULAR_EXPRESSION "rank [0-9] \\(dp [0-9], tp 0\\): all_reduce over world \\('diverged'\\) timed out after 2 s: a peer died or diverged; ending the job")

# A 3-rank program started on 4 ranks says so on every rank.
add_test(NAME comm_test.mpi.world_size_mismatch COMMAND ${COMM_MPIRUN} $<TARGET_FILE:comm_test> --grid=3x1)
set_tests_properties(comm_test.mpi.world_size_mismatch PROPERTIES LABELS mpi TIMEOUT 60
  PASS_REGULAR_EXPRESSION "this binary is partitioned for dp=3 x tp=1 = 3 ranks but runs on 4; start it with llama-run -n 3")
