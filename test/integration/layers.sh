# The runtime's libraries depend on each other as a DAG (issue 21), one
# folder each. Every `#include "runtime/X/..."` of a file under runtime/Y must
# name a library Y may use, per the table below; a new folder must be added
# to it. Two deliberate violations (an include of the trainer from program/,
# of the CLI from train/) are checked to fail, so the check cannot pass
# vacuously.
source "$(dirname "$0")/common.sh" "$@"

# library: the libraries it may include (besides itself)
declare -A ALLOWED=(
  [checkpoint]=""
  [comm]=""
  [cpu]=""
  [tokenizer]=""
  [data]="checkpoint"
  [program]="checkpoint data"
  [observe]=""
  [interop]="program checkpoint tokenizer"
  [train]="program observe interop checkpoint data comm cpu"
  [cli]="train program observe interop checkpoint data comm cpu tokenizer"
  [cuda]="program comm cpu"
)

# check_tree ROOT: prints one line per violation, returns 1 when there is one.
check_tree() {
  local root=$1 bad=0 lib file dep
  for dir in "$root"/runtime/*/; do
    lib=$(basename "$dir")
    if [ -z "${ALLOWED[$lib]+set}" ]; then
      echo "runtime/$lib: not in layers.sh's table of libraries"; bad=1; continue
    fi
    while IFS=: read -r file dep; do
      case " ${ALLOWED[$lib]} $lib " in
        *" $dep "*) ;;
        *) echo "${file#"$root"/}: includes runtime/$dep/, which runtime/$lib may not use"; bad=1 ;;
      esac
    done < <(grep -rHoE '#include "runtime/[a-z_]+/' "$dir" |
             sed -E 's#:\#include "runtime/#:#; s#/$##')
  done
  return $bad
}

check_tree "$SRC" > violations.txt || { cat violations.txt; die "layering violated"; }
echo "runtime layering: $(ls -d "$SRC"/runtime/*/ | wc -l) libraries, no violation"

# The check must catch what it is for.
mkdir -p copy/runtime
cp -r "$SRC"/runtime/* copy/runtime/
echo '#include "runtime/train/trainer.h"' >> copy/runtime/program/param_store.cpp
echo '#include "runtime/cli/flags.h"' >> copy/runtime/train/schedule.cpp
if check_tree "$WORK/copy" > seeded.txt; then die "seeded layering violations not found"; fi
grep -q "runtime/program/param_store.cpp: includes runtime/train/" seeded.txt ||
  { cat seeded.txt; die "program -> train not reported"; }
grep -q "runtime/train/schedule.cpp: includes runtime/cli/" seeded.txt ||
  { cat seeded.txt; die "train -> cli not reported"; }
echo "seeded violations reported: $(wc -l < seeded.txt)"
