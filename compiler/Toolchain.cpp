//===- Toolchain.cpp - building a training binary from emitted source ----===//
//
// The compiler and linker invocations of llama-compile, and where it finds
// the runtime it links (compiler/Toolchain.h).
#include "compiler/Toolchain.h"

#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <optional>

using namespace llvm;

namespace {

int fail(const Twine &msg) {
  errs() << "llama-compile: " << msg << "\n";
  return 1;
}

bool writeFile(StringRef path, StringRef text) {
  std::string err;
  auto out = mlir::openOutputFile(path, &err);
  if (!out) {
    errs() << "llama-compile: " << err << "\n";
    return false;
  }
  out->os() << text;
  out->keep();
  return true;
}

/// Runs a build command; a failure names the tool and its exit status.
int runTool(const std::string &tool, std::vector<std::string> args, const llvm::Twine &what) {
  auto found = llvm::sys::findProgramByName(tool);
  if (!found)
    return fail("'" + tool + "' not found (building " + what + ")");
  args.insert(args.begin(), *found);
  std::vector<StringRef> argRefs(args.begin(), args.end());
  std::string errMsg;
  int rc = llvm::sys::ExecuteAndWait(*found, argRefs, std::nullopt, {}, 0, 0, &errMsg);
  if (rc != 0)
    return fail("building " + what + " failed (" + tool + " exited with " +
                std::to_string(rc) + (errMsg.empty() ? "" : ": " + errMsg) + ")");
  return 0;
}

/// A source file of the build: OUT<suffix> with --keep-source, else a
/// temporary file removed when the build ends.
struct BuildFile {
  SmallString<128> path;
  bool temporary = false;
  ~BuildFile() {
    if (temporary && !path.empty())
      llvm::sys::fs::remove(path);
  }
};
int makeBuildFile(BuildFile &f, StringRef out, StringRef suffix, bool keep) {
  if (keep) {
    f.path = out;
    f.path += suffix;
    return 0;
  }
  if (auto ec = llvm::sys::fs::createTemporaryFile("llama-program", suffix.drop_front(),
                                                   f.path))
    return fail("cannot create a temporary file: " + ec.message());
  f.temporary = true;
  return 0;
}

/// What training binaries are built from, found relative to this executable
/// (PREFIX/bin/llama-compile): the runtime headers under
/// PREFIX/include/llama-mlir and the runtime archives in PREFIX/lib/llama-mlir.
/// The build tree has the same layout of links, and `cmake --install` writes
/// it as files, so an installed tree works wherever it is moved. Empty
/// (after an error message) when the layout is not there.
struct ToolchainDirs {
  std::string include, lib;
};
std::optional<ToolchainDirs> findToolchain(const std::string &mainExecutable) {
  SmallString<256> prefix(mainExecutable);
  llvm::sys::path::remove_filename(prefix); // bin/
  llvm::sys::path::remove_filename(prefix); // PREFIX
  ToolchainDirs d;
  SmallString<256> p(prefix);
  llvm::sys::path::append(p, "include", "llama-mlir");
  d.include = p.str().str();
  p = prefix;
  llvm::sys::path::append(p, "lib", "llama-mlir");
  d.lib = p.str().str();
  for (const std::string &need :
       {d.include + "/runtime/program/program.h", d.lib + "/" LLAMA_RUNTIME_LIB})
    if (!llvm::sys::fs::exists(need)) {
      fail(need + ": missing (llama-compile finds its runtime relative to itself, in "
                  "../include/llama-mlir and ../lib/llama-mlir; reinstall, or run it from "
                  "its build or install tree)");
      return std::nullopt;
    }
  return d;
}

} // namespace

int llama::buildExecutable(StringRef source, StringRef out, StringRef cudaSource,
                           const ToolchainOptions &o) {
  const std::optional<ToolchainDirs> dirs = findToolchain(o.mainExecutable);
  if (!dirs)
    return 1;
  const std::string include = "-I" + dirs->include;
  auto lib = [&](StringRef name) { return dirs->lib + "/" + name.str(); };
  BuildFile src, cu, obj;
  if (makeBuildFile(src, out, ".cpp", o.keepSource) || !writeFile(src.path, source))
    return 1;
  std::string compiler = o.cxx;
  if (compiler.empty())
    if (const char *env = std::getenv("CXX"))
      compiler = env;
  if (compiler.empty())
    compiler = "c++";
  std::vector<std::string> link = {"-std=c++17", "-O2", "-fopenmp", include,
                                   src.path.str().str()};
  if (!cudaSource.empty()) {
    if (makeBuildFile(cu, out, ".cu", o.keepSource) || !writeFile(cu.path, cudaSource) ||
        makeBuildFile(obj, out, ".cuda.o", false))
      return 1;
    if (o.cudaEmulate) {
      if (int rc = runTool(compiler,
                           {"-std=c++17", "-O2", "-fopenmp", "-x", "c++",
                            "-DLLAMA_CUDA_EMULATE", include, "-c",
                            cu.path.str().str(), "-o", obj.path.str().str()},
                           out + " (emulated CUDA source)"))
        return rc;
    } else {
      std::string nvcc = o.nvcc.empty() ? std::string(LLAMA_NVCC) : o.nvcc;
      if (nvcc.empty() || StringRef(LLAMA_CUDA_RUNTIME_LIB).empty())
        return fail("--target cuda: this llama-compile was built without CUDA "
                    "(no nvcc at build time); --cuda-emulate builds a CPU-emulated binary");
      if (int rc = runTool(nvcc,
                           {"-std=c++17", "-O3", "-arch=" + o.cudaArch, "-Xcompiler", "-fPIC",
                            include, "-c", cu.path.str().str(), "-o",
                            obj.path.str().str()},
                           out + " (CUDA source)"))
        return rc;
    }
    link.push_back(obj.path.str().str());
    // The CUDA runtime library, ahead of the runtime archive whose MPI layer
    // and ZeRO-1 partition it calls: the session and the collectives
    // compiled against the emulator for --cuda-emulate; on the GPU the
    // session's library and, for a partitioned binary, NCCL collectives.
    if (o.cudaEmulate) {
      link.push_back(lib(LLAMA_CUDA_EMU_LIB));
    } else {
      if (o.partitioned) {
        if (StringRef(LLAMA_CUDA_NCCL_LIB).empty())
          return fail("--target cuda --dp/--tp: this llama-compile was built without NCCL "
                      "(no nccl.h beside nvcc); --cuda-emulate builds an emulated binary");
        link.push_back(lib(LLAMA_CUDA_NCCL_LIB));
      }
      link.push_back(lib(LLAMA_CUDA_RUNTIME_LIB)); // the session, cuBLASLt GEMMs, device probe
    }
  }
  link.insert(link.end(), {"-o", out.str(), lib(LLAMA_RUNTIME_LIB)});
  if (!cudaSource.empty() && !o.cudaEmulate) {
    SmallVector<StringRef> libs;
    StringRef(LLAMA_CUDA_LINK_LIBS).split(libs, ',', -1, /*KeepEmpty=*/false);
    for (StringRef lib : libs)
      link.push_back(lib.str());
    // Partitioned programs talk NCCL (runtime/cuda/collectives_nccl.cu).
    if (o.partitioned)
      link.insert(link.end(), {"-L" LLAMA_CUDA_LIB_DIR, "-lnccl"});
    link.push_back("-Wl,-rpath," LLAMA_CUDA_LIB_DIR);
    link.insert(link.end(), {"-ldl", "-lrt", "-lpthread"});
  }
  SmallVector<StringRef> libs;
  StringRef(LLAMA_RUNTIME_LINK_LIBS).split(libs, ',', -1, /*KeepEmpty=*/false);
  for (StringRef lib : libs)
    link.push_back(lib.str());
  if (StringRef(LLAMA_RUNTIME_RPATH).size())
    link.push_back("-Wl,-rpath," LLAMA_RUNTIME_RPATH);
  return runTool(compiler, link, out);
}
