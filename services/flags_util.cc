#include "services/flags_util.h"

#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "glog/logging.h"

namespace synthgrad {
namespace {

bool IsProjectFlagFile(absl::string_view path) {
  return absl::StrContains(path, "services/") || absl::StrContains(path, "bench/");
}

}  // namespace

std::vector<char*> InitProgram(int argc, char** argv, const char* usage) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsProjectFlagFile;
  config.contains_helpshort_flags = IsProjectFlagFile;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);

  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return positional;
}

}  // namespace synthgrad
