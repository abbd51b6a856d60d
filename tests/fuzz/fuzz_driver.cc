// A main for the fuzz targets when they are built without libFuzzer (the
// regular test build): runs every file given on the command line, then
// pseudo-random inputs for the given number of seconds, through
// LLVMFuzzerTestOneInput. Usage: TARGET SECONDS [FILE...]
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SECONDS [FILE...]\n", argv[0]);
    return 2;
  }
  const double seconds = std::atof(argv[1]);
  std::vector<std::vector<uint8_t>> seeds;
  for (int i = 2; i < argc; ++i) {
    std::ifstream file(argv[i], std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "cannot read seed file %s; check the path\n", argv[i]);
      return 2;
    }
    seeds.emplace_back(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(seeds.back().data(), seeds.back().size());
  }

  // Mutate the seeds (or random bytes) by flipping, inserting and cutting.
  std::mt19937_64 rng(1);
  const auto stop = std::chrono::steady_clock::now() +
                    std::chrono::duration<double>(seconds);
  long runs = 0;
  while (std::chrono::steady_clock::now() < stop) {
    std::vector<uint8_t> input =
        seeds.empty() ? std::vector<uint8_t>(rng() % 64) : seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits; ++e) {
      const uint64_t choice = rng() % 3;
      if (choice == 0 && !input.empty()) {
        input[rng() % input.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
      } else if (choice == 1) {
        input.insert(input.begin() + (input.empty() ? 0 : rng() % input.size()),
                     static_cast<uint8_t>(rng()));
      } else if (!input.empty()) {
        input.erase(input.begin() + rng() % input.size());
      }
    }
    LLVMFuzzerTestOneInput(input.data(), input.size());
    ++runs;
  }
  std::printf("PASSED: %ld inputs without a crash\n", runs);
  return 0;
}
