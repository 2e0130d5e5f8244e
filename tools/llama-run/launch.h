// The launcher of llama-run: starts the ranks of a partitioned training
// binary through mpirun (local) or srun (Slurm), and restarts a failed job
// from its latest checkpoint. Takes the whole command line (argv[0] is
// llama-run) and returns the process exit status.
#pragma once

int run_launch(int argc, char **argv);
