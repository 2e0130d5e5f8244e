# `cmake --install` (issue 21): the tools and the runtime llama-compile builds
# training binaries from, installed to a prefix that is then moved:
#   - the prefix holds bin/ (llama-compile, llama-opt, llama-run,
#     llama-tokenize), lib/llama-mlir (the runtime archives) and
#     include/llama-mlir/runtime (the headers generated code includes), as
#     files, not links into the build or source tree;
#   - llama-compile names neither tree (it finds its runtime relative to
#     itself), and from the moved prefix, with both trees hidden (below),
#     compiles micro, which trains;
#   - a llama-compile copied away from its runtime says which file is missing.
source "$(dirname "$0")/common.sh" "$@"

cmake --install "$BUILD" --prefix "$WORK/staged" > install.out 2>&1 ||
  { cat install.out; die "cmake --install failed"; }
mv "$WORK/staged" "$WORK/moved"
P=$WORK/moved
for f in bin/llama-compile bin/llama-opt bin/llama-run bin/llama-tokenize \
         lib/llama-mlir/libllamart.a lib/llama-mlir/libllamart_cuda_emu.a \
         include/llama-mlir/runtime/program/program.h include/llama-mlir/runtime/cpu/kernels.h \
         include/llama-mlir/runtime/cuda/kernels/flash_attention.cuh; do
  [ -f "$P/$f" ] || die "the install has no $f"
done
links=$(find "$P" -type l)
[ -z "$links" ] || die "the install holds links: $links"
for tree in "$BUILD" "$SRC"; do
  ! grep -aq "$tree" "$P/bin/llama-compile" || die "the installed llama-compile names $tree"
done
echo "installed: $(find "$P" -type f | wc -l) files, $(du -sh "$P" | cut -f1)"

# From here on the build and source trees are out of sight, as if deleted: a
# private mount namespace lays an empty tmpfs over each (the build tree first,
# since it may sit inside the source tree), so nothing reached through a
# stale path can help. That needs CAP_SYS_ADMIN (root in a container that
# allows mounts); without it the install is checked moved only, and the test
# says so.
write_shards data 64 6000 600 7
hidden=()
case "$WORK/" in "$BUILD/"* | "$SRC/"*) why="the scratch dir is inside a tree" ;; *) why="" ;; esac
if [ -z "$why" ] && unshare -m --propagation private true 2> /dev/null; then
  hidden=(unshare -m --propagation private bash -euc '
    mount -t tmpfs none "$1"; mount -t tmpfs none "$2"
    [ ! -e "$1/CMakeCache.txt" ] && [ ! -e "$2/CMakeLists.txt" ] || { echo "trees still visible" >&2; exit 9; }
    shift 2; "$@"' hide "$BUILD" "$SRC")
  echo "build and source trees hidden from here on ($BUILD, $SRC)"
else
  echo "NOTE: the trees stay visible (${why:-no mount namespace: unshare -m refused}); the install is checked moved only"
fi
"${hidden[@]}" "$P/bin/llama-opt" --help > /dev/null || die "the installed llama-opt does not run"
"${hidden[@]}" "$P/bin/llama-compile" --preset micro --batch 2 --seq-len 8 -o micro > compile.out 2>&1 ||
  { cat compile.out; die "the installed llama-compile cannot build micro"; }
"${hidden[@]}" ./micro train --data data --steps 4 --lr 1e-2 --warmup 1 --eval-every 0 --run-dir run --quiet \
  > train.out 2>&1 || { cat train.out; die "micro built from the install does not train"; }
echo "micro from the moved install: $(grep 'final train loss' train.out)"

mkdir alone && cp "$P/bin/llama-compile" alone/
! alone/llama-compile --preset micro -o m2 2> alone.err || die "a llama-compile without its runtime built a binary"
grep -q "lib/llama-mlir/libllamart.a: missing (llama-compile finds its runtime relative to itself" alone.err ||
  grep -q "include/llama-mlir/runtime/program/program.h: missing" alone.err ||
  { cat alone.err; die "a llama-compile without its runtime does not say what is missing"; }
echo "install: ok"
