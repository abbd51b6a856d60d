// Checkpoint files: an atomic, checksummed container for one protobuf
// message, and the directory layout that confines every checkpoint path to
// one configured folder.
//
// File layout (little-endian):
//   bytes 0-7    magic "SGCKPT\0\1"
//   bytes 8-11   format version (kCheckpointFormatVersion)
//   bytes 12-15  CRC-32 (zlib) of the payload
//   bytes 16-23  payload length in bytes
//   bytes 24-    payload: the serialized message
#ifndef SYNTHGRAD_COMMON_CHECKPOINT_H_
#define SYNTHGRAD_COMMON_CHECKPOINT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

inline constexpr uint32_t kCheckpointFormatVersion = 1;
// Upper bound on a payload: protobuf cannot parse messages of 2 GiB or more.
inline constexpr uint64_t kMaxCheckpointPayloadBytes = (uint64_t{1} << 31) - 1;

// Writes `message` to `path` so that a crash at any moment leaves either the
// old file or the complete new one: it writes a temporary file next to
// `path`, fsyncs it, renames it over `path` and fsyncs the folder. Fails
// with INTERNAL naming the path and the system error.
absl::Status WriteCheckpointFile(const std::string& path,
                                 const google::protobuf::MessageLite& message);

// Reads a file written by WriteCheckpointFile into `message`. Fails with
// NOT_FOUND when there is no file, DATA_LOSS when it is truncated, has the
// wrong magic or checksum, or does not parse, and FAILED_PRECONDITION for
// another format version. Does not follow a symbolic link at `path`.
absl::Status ReadCheckpointFile(const std::string& path,
                                google::protobuf::MessageLite* message);

// Returns a 64-bit FNV-1a hash of the spec's deterministic serialization,
// with the group addresses and the data folder cleared, since those may
// change when a job is resumed on other machines. A checkpoint only
// restores into a job with the same fingerprint.
uint64_t SpecFingerprint(const v1::JobSpec& spec);

// The checkpoints under one root folder:
//   <root>/job-<fingerprint, 16 hex digits>/coordinator.ckpt
//   <root>/job-<fingerprint>/run-<run id, 16 hex digits>/group-<index>/<id>.ckpt
// Each run of a spec has its own folder, so a second run never prunes or
// overwrites the checkpoints of the first. Every name is built from
// integers, so no value from a request can name a path outside the root.
class CheckpointDirectory {
 public:
  // Creates `root` if it is missing and resolves it to an absolute path.
  // Fails with INVALID_ARGUMENT for an empty path and INTERNAL when the
  // folder cannot be created or resolved.
  static absl::StatusOr<CheckpointDirectory> Open(const std::string& root);

  const std::string& root() const { return root_; }

  std::string CoordinatorPath(uint64_t fingerprint) const;
  std::string GroupPath(uint64_t fingerprint, uint64_t run_id, int group_index,
                        int64_t checkpoint_id) const;

  // Creates the folder of the coordinator's file.
  absl::Status CreateJobFolder(uint64_t fingerprint) const;
  // Creates the folder of a group's files in one run.
  absl::Status CreateGroupFolder(uint64_t fingerprint, uint64_t run_id,
                                 int group_index) const;

  // Deletes the group's checkpoints of the run except the `keep` with the
  // highest ids. Returns how many it deleted; failures to delete are logged.
  int PruneGroupCheckpoints(uint64_t fingerprint, uint64_t run_id,
                            int group_index, int keep) const;

 private:
  explicit CheckpointDirectory(std::string root) : root_(std::move(root)) {}

  std::string JobFolder(uint64_t fingerprint) const;
  std::string GroupFolder(uint64_t fingerprint, uint64_t run_id,
                          int group_index) const;

  std::string root_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_CHECKPOINT_H_
