#include "common/job_spec.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/optimizer.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace synthgrad {
namespace {

// Output width of a list of layers fed `width` inputs.
int OutputWidth(const v1::GroupSpec& group, int width) {
  for (const v1::LayerSpec& layer : group.layers()) {
    if (layer.kind() == v1::LayerSpec::KIND_LINEAR) width = layer.units();
  }
  return width;
}

absl::Status CheckPositive(const char* field, int64_t value) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be positive, got ", value));
  }
  return absl::OkStatus();
}

// Checks a stack of layers fed `width` inputs without allocating it, and
// stores its output width and parameter count. `where` prefixes errors.
absl::Status CheckLayers(const std::string& where,
                         const google::protobuf::RepeatedPtrField<v1::LayerSpec>& layers,
                         int64_t width, int64_t batch_size,
                         int64_t* output_width, int64_t* parameter_count) {
  *parameter_count = 0;
  // The forward trace keeps the input of every layer, plus the output.
  int64_t activations = 0;
  for (int i = 0; i < layers.size(); ++i) {
    const v1::LayerSpec& layer = layers.Get(i);
    activations += batch_size * width;
    switch (layer.kind()) {
      case v1::LayerSpec::KIND_LINEAR:
        if (layer.units() <= 0 || layer.units() > kMaxUnits) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ".layers[", i, "].units must be in [1, ", kMaxUnits,
              "], got ", layer.units()));
        }
        *parameter_count += (width + 1) * layer.units();
        width = layer.units();
        break;
      case v1::LayerSpec::KIND_LAYER_NORM:
        *parameter_count += 2 * width;
        break;
      case v1::LayerSpec::KIND_RELU:
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            where, ".layers[", i, "].kind ",
            v1::LayerSpec::Kind_Name(layer.kind()),
            " is not supported; use KIND_LINEAR, KIND_RELU or KIND_LAYER_NORM"));
    }
  }
  activations += batch_size * width;
  if (*parameter_count > kMaxParametersPerGroup) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " has ", *parameter_count, " parameters, above the limit of ",
        kMaxParametersPerGroup));
  }
  if (activations > kMaxActivationFloatsPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " would keep ", activations, " activations per batch of ",
        batch_size, ", above the limit of ", kMaxActivationFloatsPerBatch,
        "; use fewer or narrower layers or a smaller batch_size"));
  }
  if (batch_size * width > kMaxTensorFloats) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, " outputs ", width, " values per example; a batch of ", batch_size,
        " would exceed the message limit of ", kMaxTensorFloats, " floats"));
  }
  *output_width = width;
  return absl::OkStatus();
}

absl::Status CheckGroups(const v1::JobSpec& spec) {
  if (spec.groups().empty()) {
    return absl::InvalidArgumentError("groups is empty; list at least one group");
  }
  const bool synthetic = spec.mode() != v1::TRAINING_MODE_BACKPROP;
  int64_t width = spec.input_dim();
  if (spec.batch_size() * width > kMaxTensorFloats) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a batch of ", spec.batch_size(), " examples of input_dim ", width,
        " would exceed the message limit of ", kMaxTensorFloats, " floats"));
  }
  std::set<std::string> addresses;
  for (int g = 0; g < spec.groups_size(); ++g) {
    const v1::GroupSpec& group = spec.groups(g);
    const std::string where = absl::StrCat("groups[", g, "]");
    if (group.address().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".address is empty"));
    }
    if (!addresses.insert(group.address()).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".address ", group.address(),
          " is also used by an earlier group; give every group its own"));
    }
    if (group.layers().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " has no layers"));
    }
    int64_t parameters = 0;
    absl::Status status = CheckLayers(where, group.layers(), width,
                                      spec.batch_size(), &width, &parameters);
    if (!status.ok()) return status;

    // The synthetic-gradient model of every group but the last: hidden
    // Linear + ReLU layers, then a linear layer back to `width`.
    if (synthetic && g + 1 < spec.groups_size()) {
      google::protobuf::RepeatedPtrField<v1::LayerSpec> model;
      for (int units : spec.synthetic_gradient().hidden_units()) {
        v1::LayerSpec* layer = model.Add();
        layer->set_kind(v1::LayerSpec::KIND_LINEAR);
        layer->set_units(units);
      }
      v1::LayerSpec* output = model.Add();
      output->set_kind(v1::LayerSpec::KIND_LINEAR);
      output->set_units(static_cast<int>(width));
      const int64_t conditioning =
          spec.mode() == v1::TRAINING_MODE_CDNI ? spec.num_classes() : 0;
      int64_t model_width = 0;
      status = CheckLayers(absl::StrCat("synthetic_gradient of ", where), model,
                           width + conditioning, spec.batch_size(), &model_width,
                           &parameters);
      if (!status.ok()) return status;
    }
  }
  if (width != spec.num_classes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the last group outputs ", width, " values per example but num_classes is ",
        spec.num_classes(), "; end the last group with a linear layer of ",
        spec.num_classes(), " units"));
  }
  return absl::OkStatus();
}

}  // namespace

void ApplyJobDefaults(v1::JobSpec* spec) {
  if (spec->max_in_flight() == 0) spec->set_max_in_flight(4);
  if (spec->mode() == v1::TRAINING_MODE_BACKPROP) spec->set_max_in_flight(1);
  if (spec->shard_batches() == 0) spec->set_shard_batches(20);
  if (spec->cache_capacity() == 0) spec->set_cache_capacity(64);
  if (spec->batch_timeout_seconds() == 0) spec->set_batch_timeout_seconds(60);
  if (spec->recovery_timeout_seconds() == 0) {
    spec->set_recovery_timeout_seconds(300);
  }
  if (spec->max_recoveries() == 0) spec->set_max_recoveries(5);
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec) {
  if (spec.mode() != v1::TRAINING_MODE_BACKPROP &&
      spec.mode() != v1::TRAINING_MODE_DNI &&
      spec.mode() != v1::TRAINING_MODE_CDNI) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mode ", v1::TrainingMode_Name(spec.mode()),
        " is not supported; use TRAINING_MODE_BACKPROP, TRAINING_MODE_DNI or "
        "TRAINING_MODE_CDNI"));
  }
  for (absl::Status status :
       {CheckPositive("input_dim", spec.input_dim()),
        CheckPositive("num_classes", spec.num_classes()),
        CheckPositive("batch_size", spec.batch_size()),
        CheckPositive("epochs", spec.epochs()),
        CheckPositive("max_in_flight", spec.max_in_flight()),
        CheckPositive("shard_batches", spec.shard_batches()),
        CheckPositive("cache_capacity", spec.cache_capacity()),
        CheckPositive("batch_timeout_seconds", spec.batch_timeout_seconds()),
        CheckPositive("recovery_timeout_seconds",
                      spec.recovery_timeout_seconds()),
        CheckPositive("max_recoveries", spec.max_recoveries())}) {
    if (!status.ok()) return status;
  }
  if (spec.input_dim() > kMaxUnits || spec.num_classes() > kMaxUnits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input_dim ", spec.input_dim(), " and num_classes ", spec.num_classes(),
        " must be at most ", kMaxUnits));
  }
  if (spec.checkpoint_interval_shards() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint_interval_shards is ", spec.checkpoint_interval_shards(),
        "; use 0 to disable checkpoints or a positive number of shards"));
  }
  if (spec.cache_capacity() > kMaxCacheCapacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cache_capacity ", spec.cache_capacity(), " is above the limit of ",
        kMaxCacheCapacity));
  }
  if (spec.batch_size() > kMaxBatchSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", spec.batch_size(), " is above the limit of ",
        kMaxBatchSize));
  }
  // A group can await gradients for more batches than max_in_flight: the
  // coordinator counts a batch done when the last group reports it, while
  // the gradients of that batch may still be travelling down.
  if (2 * static_cast<int64_t>(spec.max_in_flight()) > spec.cache_capacity()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_in_flight ", spec.max_in_flight(), " is more than half of cache_capacity ",
        spec.cache_capacity(),
        ", so groups could evict batches still awaiting a gradient"));
  }
  if (spec.exact_gradient_probe_interval() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "exact_gradient_probe_interval must not be negative, got ",
        spec.exact_gradient_probe_interval()));
  }
  if (spec.data().train_limit() < 0 || spec.data().test_limit() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.train_limit and data.test_limit must not be negative, got ",
        spec.data().train_limit(), " and ", spec.data().test_limit()));
  }

  absl::Status status = CheckGroups(spec);
  if (!status.ok()) return status;

  absl::StatusOr<std::unique_ptr<Optimizer>> optimizer =
      Optimizer::Create(spec.optimizer());
  if (!optimizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer: ", optimizer.status().message()));
  }
  if (spec.mode() != v1::TRAINING_MODE_BACKPROP && spec.groups_size() > 1) {
    optimizer = Optimizer::Create(spec.synthetic_gradient().optimizer());
    if (!optimizer.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "synthetic_gradient.optimizer: ", optimizer.status().message()));
    }
  }
  return absl::OkStatus();
}

int GroupInputDim(const v1::JobSpec& spec, int index) {
  int width = spec.input_dim();
  for (int g = 0; g < index; ++g) width = OutputWidth(spec.groups(g), width);
  return width;
}

int GroupOutputDim(const v1::JobSpec& spec, int index) {
  return OutputWidth(spec.groups(index), GroupInputDim(spec, index));
}

absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text) {
  class Collector : public google::protobuf::io::ErrorCollector {
   public:
    void AddError(int line, int column, const std::string& message) override {
      errors.push_back(
          absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message));
    }
    std::vector<std::string> errors;
  };
  Collector collector;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  v1::JobSpec spec;
  if (!parser.ParseFromString(text, &spec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid job spec: ", absl::StrJoin(collector.errors, "; ")));
  }
  return spec;
}

}  // namespace synthgrad
