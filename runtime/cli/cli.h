// The command line of a compiled training binary:
//   OUT train    --data DIR --steps N [...]   train or resume
//   OUT verify   --weights W --batch-file I --out G   loss + gradients of one step
//   OUT generate --checkpoint DIR --tokenizer M --prompt TEXT [...]
//   OUT eval     --checkpoint P --data DIR | --tokenizer M --tasks F.jsonl
//                                             loss/perplexity or task accuracy
//   OUT export   --checkpoint P --format hf --out DIR [...]   HF model folder
//   OUT info     [--json]                     model facts for scripts
// Exit status: 0 success, 1 runtime error, 2 usage error, 128 + signal when
// SIGINT/SIGTERM stopped training (after writing a checkpoint); every error
// is one line on stderr naming the flag or file at fault.
//
// A partitioned program (one rank of a dp x tp grid, program.h) runs `train`
// as one rank of an MPI job (llama-run -n dp*tp, or mpirun), and `info`
// anywhere; every other subcommand is refused with a pointer to the
// single-rank binary of the same model, which reads the same checkpoints.
#pragma once
#include "runtime/program/program.h"

namespace llamart {

int run_main(int argc, char **argv, const ProgramInfo *program);

} // namespace llamart
