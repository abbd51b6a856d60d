#include "common/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace synthgrad {
namespace {

constexpr char kMagic[8] = {'S', 'G', 'C', 'K', 'P', 'T', '\0', '\1'};
constexpr size_t kHeaderBytes = 24;

absl::Status SystemError(absl::string_view action, const std::string& path) {
  return absl::InternalError(
      absl::StrCat("cannot ", action, " ", path, ": ", std::strerror(errno)));
}

void PutLittleEndian(uint64_t value, int bytes, char* out) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<char>(value >> (8 * i));
}

uint64_t GetLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  }
  return value;
}

uint32_t Crc32(const std::string& data) {
  // zlib's crc32 takes a uInt length, so feed it in pieces.
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t offset = 0;
  while (offset < data.size()) {
    const size_t piece = std::min<size_t>(data.size() - offset, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data() + offset),
                static_cast<uInt>(piece));
    offset += piece;
  }
  return static_cast<uint32_t>(crc);
}

absl::Status WriteAll(int fd, const char* data, size_t size,
                      const std::string& path) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return SystemError("write", path);
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status MakeFolder(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) {
    return absl::OkStatus();
  }
  return SystemError("create the folder", path);
}

}  // namespace

absl::Status WriteCheckpointFile(const std::string& path,
                                 const google::protobuf::MessageLite& message) {
  std::string payload;
  if (!message.SerializeToString(&payload)) {
    return absl::InternalError(
        absl::StrCat("cannot serialize the checkpoint for ", path));
  }
  if (payload.size() > kMaxCheckpointPayloadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint for ", path, " has ", payload.size(),
                     " bytes, above the limit of ", kMaxCheckpointPayloadBytes));
  }
  char header[kHeaderBytes];
  std::memcpy(header, kMagic, sizeof(kMagic));
  PutLittleEndian(kCheckpointFormatVersion, 4, header + 8);
  PutLittleEndian(Crc32(payload), 4, header + 12);
  PutLittleEndian(payload.size(), 8, header + 16);

  const std::string temporary = absl::StrCat(path, ".tmp-", ::getpid());
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return SystemError("create", temporary);
  absl::Status status = WriteAll(fd, header, kHeaderBytes, temporary);
  if (status.ok()) {
    status = WriteAll(fd, payload.data(), payload.size(), temporary);
  }
  if (status.ok() && ::fsync(fd) != 0) status = SystemError("fsync", temporary);
  if (::close(fd) != 0 && status.ok()) status = SystemError("close", temporary);
  if (status.ok() && ::rename(temporary.c_str(), path.c_str()) != 0) {
    status = SystemError("rename to " + path, temporary);
  }
  if (!status.ok()) {
    ::unlink(temporary.c_str());
    return status;
  }

  // The rename is durable only once the folder's entry is on disk.
  const std::string folder = Dirname(path);
  const int folder_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder_fd < 0) return SystemError("open the folder", folder);
  const bool synced = ::fsync(folder_fd) == 0;
  ::close(folder_fd);
  if (!synced) return SystemError("fsync the folder", folder);
  return absl::OkStatus();
}

absl::Status ReadCheckpointFile(const std::string& path,
                                google::protobuf::MessageLite* message) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat("no checkpoint at ", path));
    }
    return SystemError("open", path);
  }
  std::string contents;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      const absl::Status status = SystemError("read", path);
      ::close(fd);
      return status;
    }
    if (got == 0) break;
    contents.append(buffer, static_cast<size_t>(got));
    if (contents.size() > kHeaderBytes + kMaxCheckpointPayloadBytes) {
      ::close(fd);
      return absl::DataLossError(
          absl::StrCat(path, " is larger than any checkpoint can be"));
    }
  }
  ::close(fd);

  if (contents.size() < kHeaderBytes ||
      std::memcmp(contents.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a synthgrad checkpoint (bad header)"));
  }
  const uint64_t version = GetLittleEndian(contents.data() + 8, 4);
  if (version != kCheckpointFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has checkpoint format version ", version,
        "; this build reads version ", kCheckpointFormatVersion));
  }
  const uint64_t crc = GetLittleEndian(contents.data() + 12, 4);
  const uint64_t length = GetLittleEndian(contents.data() + 16, 8);
  if (length != contents.size() - kHeaderBytes) {
    return absl::DataLossError(absl::StrCat(
        path, " is truncated or padded: the header gives ", length,
        " payload bytes but the file has ", contents.size() - kHeaderBytes));
  }
  contents.erase(0, kHeaderBytes);
  if (Crc32(contents) != crc) {
    return absl::DataLossError(
        absl::StrCat(path, " fails its CRC-32 check; the file is corrupt"));
  }
  if (!message->ParseFromString(contents)) {
    return absl::DataLossError(
        absl::StrCat(path, " passes its checksum but does not parse"));
  }
  return absl::OkStatus();
}

uint64_t SpecFingerprint(const v1::JobSpec& spec) {
  v1::JobSpec copy = spec;
  for (v1::GroupSpec& group : *copy.mutable_groups()) group.clear_address();
  copy.mutable_data()->clear_dir();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&coded);
  }
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

absl::StatusOr<CheckpointDirectory> CheckpointDirectory::Open(
    const std::string& root) {
  if (root.empty()) {
    return absl::InvalidArgumentError("the checkpoint folder path is empty");
  }
  // Creates missing parents too, like mkdir -p.
  for (size_t slash = root.find('/', 1); slash != std::string::npos;
       slash = root.find('/', slash + 1)) {
    absl::Status status = MakeFolder(root.substr(0, slash));
    if (!status.ok()) return status;
  }
  absl::Status status = MakeFolder(root);
  if (!status.ok()) return status;
  char resolved[PATH_MAX];
  if (::realpath(root.c_str(), resolved) == nullptr) {
    return SystemError("resolve the checkpoint folder", root);
  }
  return CheckpointDirectory(resolved);
}

std::string CheckpointDirectory::JobFolder(uint64_t fingerprint) const {
  return absl::StrFormat("%s/job-%016x", root_, fingerprint);
}

std::string CheckpointDirectory::GroupFolder(uint64_t fingerprint,
                                             uint64_t run_id,
                                             int group_index) const {
  return absl::StrFormat("%s/run-%016x/group-%d", JobFolder(fingerprint),
                         run_id, group_index);
}

std::string CheckpointDirectory::CoordinatorPath(uint64_t fingerprint) const {
  return absl::StrCat(JobFolder(fingerprint), "/coordinator.ckpt");
}

std::string CheckpointDirectory::GroupPath(uint64_t fingerprint, uint64_t run_id,
                                           int group_index,
                                           int64_t checkpoint_id) const {
  return absl::StrCat(GroupFolder(fingerprint, run_id, group_index), "/",
                      checkpoint_id, ".ckpt");
}

absl::Status CheckpointDirectory::CreateJobFolder(uint64_t fingerprint) const {
  return MakeFolder(JobFolder(fingerprint));
}

absl::Status CheckpointDirectory::CreateGroupFolder(uint64_t fingerprint,
                                                    uint64_t run_id,
                                                    int group_index) const {
  absl::Status status = MakeFolder(JobFolder(fingerprint));
  if (status.ok()) {
    status = MakeFolder(absl::StrFormat("%s/run-%016x", JobFolder(fingerprint),
                                        run_id));
  }
  if (status.ok()) status = MakeFolder(GroupFolder(fingerprint, run_id, group_index));
  return status;
}

int CheckpointDirectory::PruneGroupCheckpoints(uint64_t fingerprint,
                                               uint64_t run_id, int group_index,
                                               int keep) const {
  const std::string folder = GroupFolder(fingerprint, run_id, group_index);
  DIR* dir = ::opendir(folder.c_str());
  if (dir == nullptr) return 0;
  std::vector<int64_t> ids;
  while (const dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (!absl::ConsumeSuffix(&name, ".ckpt")) continue;
    int64_t id = 0;
    if (absl::SimpleAtoi(name, &id)) ids.push_back(id);
  }
  ::closedir(dir);
  std::sort(ids.begin(), ids.end());
  int deleted = 0;
  for (size_t i = 0; i + keep < ids.size(); ++i) {
    const std::string path = GroupPath(fingerprint, run_id, group_index, ids[i]);
    if (::unlink(path.c_str()) == 0) {
      ++deleted;
    } else {
      LOG(WARNING) << "cannot delete the old checkpoint " << path << ": "
                   << std::strerror(errno);
    }
  }
  return deleted;
}

}  // namespace synthgrad
