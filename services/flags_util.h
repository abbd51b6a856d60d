// Start-up shared by the synthgrad binaries: flag parsing and logging.
#ifndef SYNTHGRAD_SERVICES_FLAGS_UTIL_H_
#define SYNTHGRAD_SERVICES_FLAGS_UTIL_H_

#include <vector>

namespace synthgrad {

// Parses the command line with Abseil flags, so that --help lists the flags
// defined under services/ and bench/, and sends glog output to stderr.
// Returns the positional arguments, argv[0] first.
std::vector<char*> InitProgram(int argc, char** argv, const char* usage);

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_FLAGS_UTIL_H_
