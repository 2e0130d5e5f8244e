//===- Driver.h - the llama-compile driver ----------------------*- C++ -*-===//
#pragma once

namespace llama {
/// Parses the command line, builds or reads the model, runs the training
/// pipeline, and prints IR, a report or source, or builds an executable.
/// Returns the process exit code; every failure prints one clear line.
int compileMain(int argc, char **argv);
} // namespace llama
