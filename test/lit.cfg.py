# lit configuration: tests under Dialect/, Passes/ and Tools/.
import os
import lit.formats

config.name = "llama-mlir"
config.test_format = lit.formats.ShTest(not lit_config.isWindows)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["lit", "unit", "integration", "Inputs", "lit.cfg.py"]

# Our tools first, then FileCheck/not/count from LLVM 22.
config.environment["PATH"] = os.pathsep.join(
    [config.llama_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%llama_src", config.llama_src_root))
