// main() of every compiled training binary: the generated source provides
// llamart_program(); everything else is the runtime's driver.
#include "runtime/cli/cli.h"

int main(int argc, char **argv) {
  return llamart::run_main(argc, argv, llamart_program());
}
