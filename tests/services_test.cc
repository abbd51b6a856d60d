// Real layer-group and coordinator servers on loopback ports chosen by the
// kernel, driven through their gRPC stubs.
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/generic/generic_stub.h"
#include "common/checkpoint.h"
#include "common/dataset.h"
#include "common/in_process_trainer.h"
#include "common/job_spec.h"
#include "common/tensor_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/coordinator/coordinator_service.h"
#include "services/layer/layer_service.h"
#include "services/rpc_sender.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

using ::testing::HasSubstr;

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";

class ServicesTest : public ::testing::Test {
 protected:
  static constexpr int kGroups = 3;

  // Options of layer service `index`; subclasses add a checkpoint folder.
  virtual LayerServiceOptions LayerOptions(int index) { return {}; }

  void SetUp() override {
    for (int i = 0; i < kGroups; ++i) {
      layers_.push_back(std::make_unique<LayerServiceImpl>(registry_, LayerOptions(i)));
      int port = 0;
      auto server = StartServer("127.0.0.1", 0, {layers_.back().get()}, &port);
      ASSERT_TRUE(server.ok()) << server.status();
      layer_servers_.push_back(*std::move(server));
      layer_addresses_.push_back(absl::StrCat("127.0.0.1:", port));
      layer_stubs_.push_back(
          v1::LayerService::NewStub(MakeChannel(layer_addresses_.back())));
    }
    coordinator_ = std::make_unique<CoordinatorServiceImpl>(registry_);
    int port = 0;
    auto server = StartServer("127.0.0.1", 0, {coordinator_.get()}, &port);
    ASSERT_TRUE(server.ok()) << server.status();
    coordinator_server_ = *std::move(server);
    coordinator_address_ = absl::StrCat("127.0.0.1:", port);
    coordinator_->SetAdvertiseAddress(coordinator_address_);
    coordinator_stub_ =
        v1::CoordinatorService::NewStub(MakeChannel(coordinator_address_));
  }

  void TearDown() override {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(1);
    if (coordinator_server_) coordinator_server_->Shutdown(deadline);
    for (auto& server : layer_servers_) server->Shutdown(deadline);
    coordinator_.reset();
    layers_.clear();
  }

  // The default three-group spec pointed at this fixture's servers.
  v1::JobSpec Spec(v1::TrainingMode mode) const {
    std::ifstream file(std::string(SYNTHGRAD_SOURCE_DIR) +
                       "/configs/fashion_mnist_dni.textproto");
    std::stringstream text;
    text << file.rdbuf();
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text.str());
    EXPECT_TRUE(spec.ok()) << spec.status();
    spec->set_mode(mode);
    for (int i = 0; i < kGroups; ++i) {
      spec->mutable_groups(i)->set_address(layer_addresses_[i]);
    }
    spec->mutable_data()->set_dir(kDataDir);
    spec->set_batch_timeout_seconds(60);
    // Without checkpoints, so the drains do not change what the tests time.
    spec->set_checkpoint_interval_shards(0);
    return *spec;
  }

  grpc::Status StartJob(const v1::JobSpec& spec, std::string* job_id) {
    grpc::ClientContext context;
    v1::StartJobRequest request;
    *request.mutable_spec() = spec;
    v1::StartJobResponse response;
    grpc::Status status = coordinator_stub_->StartJob(&context, request, &response);
    *job_id = response.job_id();
    return status;
  }

  // Polls until the job ends or `timeout` passes.
  v1::JobStatus WaitForJob(const std::string& job_id,
                           std::chrono::seconds timeout = std::chrono::seconds(300)) {
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    v1::JobStatus status;
    while (std::chrono::steady_clock::now() < give_up) {
      grpc::ClientContext context;
      v1::GetJobStatusRequest request;
      request.set_job_id(job_id);
      EXPECT_TRUE(coordinator_stub_->GetJobStatus(&context, request, &status).ok());
      if (status.state() == v1::JOB_STATE_SUCCEEDED ||
          status.state() == v1::JOB_STATE_FAILED ||
          status.state() == v1::JOB_STATE_STOPPED) {
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << job_id << " did not end within "
                  << timeout.count() << " s";
    return status;
  }

  grpc::Status Configure(int group, const v1::JobSpec& spec) {
    grpc::ClientContext context;
    v1::ConfigureRequest request;
    *request.mutable_spec() = spec;
    request.set_group_index(group);
    request.set_coordinator_address(coordinator_address_);
    v1::ConfigureResponse response;
    return layer_stubs_[group]->Configure(&context, request, &response);
  }

  // Configures `group` with checkpoint run id kRunId.
  grpc::Status ConfigureRestore(int group, const v1::JobSpec& spec,
                                int64_t checkpoint_id, int64_t min_batch_id,
                                v1::ConfigureResponse* response) {
    grpc::ClientContext context;
    v1::ConfigureRequest request;
    *request.mutable_spec() = spec;
    request.set_group_index(group);
    request.set_coordinator_address(coordinator_address_);
    request.set_restore_checkpoint_id(checkpoint_id);
    request.set_min_batch_id(min_batch_id);
    request.set_checkpoint_run_id(kRunId);
    return layer_stubs_[group]->Configure(&context, request, response);
  }

  grpc::Status Checkpoint(int group, int64_t checkpoint_id,
                          v1::CheckpointResponse* response,
                          uint64_t run_id = kRunId) {
    grpc::ClientContext context;
    v1::CheckpointRequest request;
    request.set_checkpoint_id(checkpoint_id);
    request.set_run_id(run_id);
    return layer_stubs_[group]->Checkpoint(&context, request, response);
  }

  static constexpr uint64_t kRunId = 0x5eed;

  grpc::Status Forward(int group, const v1::ForwardRequest& request) {
    grpc::ClientContext context;
    v1::ForwardResponse response;
    return layer_stubs_[group]->Forward(&context, request, &response);
  }

  grpc::Status Gradient(int group, const v1::GradientRequest& request) {
    grpc::ClientContext context;
    v1::GradientResponse response;
    return layer_stubs_[group]->Gradient(&context, request, &response);
  }

  v1::GetParametersResponse Parameters(int group) {
    grpc::ClientContext context;
    v1::GetParametersResponse response;
    EXPECT_TRUE(layer_stubs_[group]
                    ->GetParameters(&context, v1::GetParametersRequest(), &response)
                    .ok());
    return response;
  }

  prometheus::Registry registry_;
  std::vector<std::unique_ptr<LayerServiceImpl>> layers_;
  std::vector<std::unique_ptr<grpc::Server>> layer_servers_;
  std::vector<std::string> layer_addresses_;
  std::vector<std::unique_ptr<v1::LayerService::Stub>> layer_stubs_;
  std::unique_ptr<CoordinatorServiceImpl> coordinator_;
  std::unique_ptr<grpc::Server> coordinator_server_;
  std::string coordinator_address_;
  std::unique_ptr<v1::CoordinatorService::Stub> coordinator_stub_;
};

TEST_F(ServicesTest, BackpropMatchesInProcessTrainerAfter50Steps) {
  constexpr int kBatch = 32;
  constexpr int kSteps = 50;
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_BACKPROP);
  spec.set_batch_size(kBatch);
  spec.set_epochs(1);
  spec.mutable_data()->set_train_limit(kBatch * kSteps);
  spec.mutable_data()->set_test_limit(64);

  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus status = WaitForJob(job_id);
  ASSERT_EQ(status.state(), v1::JOB_STATE_SUCCEEDED) << status.message();

  // The same batches, in the same order, through the in-process trainer.
  absl::StatusOr<TrainTestData> data = LoadFashionMnist(kDataDir, kBatch * kSteps, 64);
  ASSERT_TRUE(data.ok()) << data.status();
  auto trainer = InProcessTrainer::Create(spec);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const std::vector<int64_t> order = EpochOrder(data->train.size(), spec.seed(), 1);
  Matrix x;
  std::vector<int32_t> labels;
  for (int step = 0; step < kSteps; ++step) {
    GatherBatch(data->train,
                absl::MakeConstSpan(order.data() + step * kBatch, kBatch), &x,
                &labels);
    ASSERT_TRUE((*trainer)->Train(step + 1, x, labels).ok());
  }

  for (int g = 0; g < kGroups; ++g) {
    const v1::GetParametersResponse remote = Parameters(g);
    EXPECT_EQ(remote.step(), kSteps) << "group " << g;
    const std::vector<Matrix>& local = (*trainer)->group(g).parameters();
    ASSERT_EQ(remote.parameters_size(), static_cast<int>(local.size()));
    float max_difference = 0.0f;
    for (size_t p = 0; p < local.size(); ++p) {
      absl::StatusOr<Matrix> m = MatrixFromProto(remote.parameters(p), {}, "p");
      ASSERT_TRUE(m.ok());
      max_difference = std::max(max_difference, (*m - local[p]).cwiseAbs().maxCoeff());
    }
    EXPECT_LE(max_difference, 1e-4f) << "group " << g;
  }
}

TEST_F(ServicesTest, MalformedRequestsRejectedThenTrains) {
  v1::ForwardRequest forward;
  forward.set_batch_id(1);
  forward.set_mode(v1::BATCH_MODE_TRAIN);
  MatrixToProto(Matrix::Constant(2, 784, 0.1f), forward.mutable_activations());
  forward.add_labels(1);
  forward.add_labels(2);

  // Before Configure.
  grpc::Status status = Forward(0, forward);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("Configure"));

  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  ApplyJobDefaults(&spec);
  for (int g = 0; g < kGroups; ++g) ASSERT_TRUE(Configure(g, spec).ok());

  struct Case {
    const char* name;
    v1::ForwardRequest request;
    grpc::StatusCode code;
    const char* message;
  };
  std::vector<Case> cases;
  {
    v1::ForwardRequest r = forward;
    MatrixToProto(Matrix::Constant(2, 100, 0.1f), r.mutable_activations());
    cases.push_back({"wrong width", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "100 columns, expected 784"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->set_data(5, std::numeric_limits<float>::quiet_NaN());
    cases.push_back({"nan", r, grpc::StatusCode::INVALID_ARGUMENT, "column 5"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->set_data(0, std::numeric_limits<float>::infinity());
    cases.push_back({"inf", r, grpc::StatusCode::INVALID_ARGUMENT, "inf"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->mutable_data()->RemoveLast();
    cases.push_back({"short data", r, grpc::StatusCode::INVALID_ARGUMENT, "got 1567"});
  }
  {
    v1::ForwardRequest r = forward;
    r.set_mode(v1::BATCH_MODE_UNSPECIFIED);
    cases.push_back({"no mode", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "has mode 0"});
  }
  {
    v1::ForwardRequest r = forward;
    MatrixToProto(Matrix::Constant(257, 784, 0.1f), r.mutable_activations());
    cases.push_back({"more rows than batch_size", r,
                     grpc::StatusCode::INVALID_ARGUMENT, "above the limit of 256"});
  }
  {
    v1::ForwardRequest r = forward;
    r.set_mode(static_cast<v1::BatchMode>(99));
    cases.push_back({"unknown mode", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "has mode 99"});
  }
  {
    v1::ForwardRequest r = forward;
    r.set_labels(1, 10);
    cases.push_back({"label out of range", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "label 10"});
  }
  {
    v1::ForwardRequest r = forward;
    r.clear_labels();
    cases.push_back({"no labels", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "0 labels for 2 rows"});
  }
  {
    v1::ForwardRequest r = forward;
    r.set_labels(0, -1);
    cases.push_back({"negative label", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "label -1"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->clear_shape();
    r.mutable_activations()->add_shape(2 * 784);
    cases.push_back({"rank 1", r, grpc::StatusCode::INVALID_ARGUMENT, "rank 2"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->add_shape(1);
    cases.push_back({"rank 3", r, grpc::StatusCode::INVALID_ARGUMENT, "rank 2"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->set_shape(0, -2);
    cases.push_back({"negative rows", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "non-positive"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->set_shape(0, int64_t{1} << 40);
    cases.push_back({"huge rows", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "above the limit of 256"});
  }
  {
    v1::ForwardRequest r = forward;
    r.mutable_activations()->clear_data();
    cases.push_back({"no data", r, grpc::StatusCode::INVALID_ARGUMENT, "got 0"});
  }
  {
    v1::ForwardRequest r = forward;
    r.clear_activations();
    cases.push_back({"no activations", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "rank 2"});
  }
  for (const Case& c : cases) {
    status = Forward(0, c.request);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
  }

  v1::GradientRequest gradient;
  gradient.set_batch_id(12345);
  MatrixToProto(Matrix::Zero(2, 256), gradient.mutable_gradient());
  status = Gradient(1, gradient);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("batch 12345"));

  MatrixToProto(Matrix::Zero(2, 3), gradient.mutable_gradient());
  status = Gradient(1, gradient);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("3 columns, expected 256"));

  Matrix nan_gradient = Matrix::Zero(2, 256);
  nan_gradient(1, 7) = std::numeric_limits<float>::quiet_NaN();
  MatrixToProto(nan_gradient, gradient.mutable_gradient());
  status = Gradient(1, gradient);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("column 7"));

  // Bad Configure calls leave the configured group in place.
  struct ConfigureCase {
    const char* name;
    std::function<void(v1::ConfigureRequest*)> mutate;
    const char* message;
  };
  const std::vector<ConfigureCase> configure_cases = {
      {"group index out of range",
       [](v1::ConfigureRequest* r) { r->set_group_index(7); }, "group_index 7"},
      {"negative group index",
       [](v1::ConfigureRequest* r) { r->set_group_index(-1); }, "group_index -1"},
      {"no coordinator for the last group",
       [](v1::ConfigureRequest* r) {
         r->set_group_index(2);
         r->clear_coordinator_address();
       },
       "coordinator_address is empty"},
      {"classes mismatch",
       [](v1::ConfigureRequest* r) { r->mutable_spec()->set_num_classes(7); },
       "num_classes is 7"},
      {"huge layer",
       [](v1::ConfigureRequest* r) {
         r->mutable_spec()->mutable_groups(1)->mutable_layers(0)->set_units(1000000000);
       },
       "units must be in"},
      {"negative batch size",
       [](v1::ConfigureRequest* r) { r->mutable_spec()->set_batch_size(-5); },
       "batch_size must be positive"},
  };
  for (const ConfigureCase& c : configure_cases) {
    v1::ConfigureRequest request;
    *request.mutable_spec() = spec;
    request.set_group_index(0);
    request.set_coordinator_address(coordinator_address_);
    c.mutate(&request);
    grpc::ClientContext context;
    v1::ConfigureResponse response;
    status = layer_stubs_[0]->Configure(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
  }

  {
    grpc::ClientContext context;
    v1::GroupStatus group_status;
    ASSERT_TRUE(layer_stubs_[0]->GetStatus(&context, {}, &group_status).ok());
    // The Forward table's cases plus the call before Configure.
    EXPECT_EQ(group_status.rejected_requests(),
              static_cast<int64_t>(cases.size()) + 1);
  }

  // The same services still train a job to the end.
  spec.set_epochs(1);
  spec.mutable_data()->set_train_limit(2048);
  spec.mutable_data()->set_test_limit(512);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus job = WaitForJob(job_id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.samples_done(), 2048);
}

TEST_F(ServicesTest, ShortTrainingOnSubsetLearns) {
  for (v1::TrainingMode mode : {v1::TRAINING_MODE_DNI, v1::TRAINING_MODE_CDNI}) {
    v1::JobSpec spec = Spec(mode);
    spec.set_epochs(2);
    spec.mutable_data()->set_train_limit(20000);
    spec.mutable_data()->set_test_limit(1000);
    std::string job_id;
    ASSERT_TRUE(StartJob(spec, &job_id).ok());
    const v1::JobStatus job = WaitForJob(job_id);
    ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
    ASSERT_EQ(job.epochs_done_size(), 2);
    EXPECT_EQ(job.samples_done(), 40000);
    // Chance is 10 %; the measured value on 2 cores is about 70 %.
    EXPECT_GT(job.epochs_done(1).test_accuracy(), 0.5)
        << v1::TrainingMode_Name(mode);

    grpc::ClientContext context;
    v1::GroupStatus group_status;
    ASSERT_TRUE(layer_stubs_[0]->GetStatus(&context, {}, &group_status).ok());
    EXPECT_EQ(group_status.forward_samples(), 40000 + 2000);
    EXPECT_EQ(group_status.gradient_batches(), group_status.step());
    EXPECT_GE(group_status.synthetic_gradient_cosine(), -1.0);
    EXPECT_LE(group_status.synthetic_gradient_cosine(), 1.0);
  }
}

TEST_F(ServicesTest, ExactGradientProbesReachEveryGroup) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_epochs(1);
  spec.set_exact_gradient_probe_interval(5);
  spec.mutable_data()->set_train_limit(256 * 20);
  spec.mutable_data()->set_test_limit(256);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus job = WaitForJob(job_id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.samples_done(), 256 * 20);

  // Batches 0, 5, 10 and 15 of the epoch are preceded by a probe.
  ASSERT_EQ(job.epochs_done_size(), 1);
  ASSERT_EQ(job.epochs_done(0).groups_size(), kGroups);
  for (int g = 0; g < kGroups - 1; ++g) {
    const v1::GroupStatus& group = job.epochs_done(0).groups(g);
    EXPECT_EQ(group.probes(), 4) << "group " << g;
    EXPECT_GE(group.probe_cosine(), -1.0) << "group " << g;
    EXPECT_LE(group.probe_cosine(), 1.0) << "group " << g;
    EXPECT_GT(group.probe_relative_error(), 0.0) << "group " << g;
    EXPECT_EQ(group.forward_samples(), 256 * 20 + 256) << "group " << g;
  }
  EXPECT_EQ(job.epochs_done(0).groups(kGroups - 1).probes(), 0);
}

// Calls a unary method by name with raw request bytes and returns the raw
// response bytes.
grpc::Status GenericUnaryCall(const std::string& address, const std::string& method,
                              const std::string& request, std::string* response) {
  grpc::GenericStub stub(MakeChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  absl::Notification done;
  grpc::Status result;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status status) {
                   result = std::move(status);
                   done.Notify();
                 });
  done.WaitForNotification();
  std::vector<grpc::Slice> slices;
  if (result.ok() && response_buffer.Dump(&slices).ok()) {
    response->clear();
    for (const grpc::Slice& s : slices) {
      response->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return result;
}

// Sends one ServerReflectionRequest asking for the service list and returns
// the raw response bytes, which contain the service names.
std::string ListServicesByReflection(const std::string& address) {
  grpc::GenericStub stub(MakeChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue queue;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &queue);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t expected) {
    return queue.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == expected;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return "";
  // Field 7 (list_services), length-delimited, empty string.
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  call->Write(request_buffer, reinterpret_cast<void*>(2));
  if (!step(2)) return "";
  grpc::ByteBuffer response_buffer;
  call->Read(&response_buffer, reinterpret_cast<void*>(3));
  if (!step(3)) return "";
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  std::vector<grpc::Slice> slices;
  std::string response;
  if (response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      response.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return response;
}

TEST_F(ServicesTest, HealthServiceReportsServing) {
  std::vector<std::string> addresses = layer_addresses_;
  addresses.push_back(coordinator_address_);
  for (const std::string& address : addresses) {
    std::string response;
    // An empty HealthCheckRequest requests the status of the whole server.
    const grpc::Status status = GenericUnaryCall(
        address, "/grpc.health.v1.Health/Check", "", &response);
    ASSERT_TRUE(status.ok()) << address << ": " << status.error_message();
    // HealthCheckResponse{status: SERVING}: field 1, varint 1.
    EXPECT_EQ(response, std::string("\x08\x01", 2)) << address;
  }
}

TEST_F(ServicesTest, ReflectionListsServices) {
  const std::string layer = ListServicesByReflection(layer_addresses_[0]);
  EXPECT_THAT(layer, HasSubstr("synthgrad.v1.LayerService"));
  EXPECT_THAT(layer, HasSubstr("grpc.health.v1.Health"));
  const std::string coordinator = ListServicesByReflection(coordinator_address_);
  EXPECT_THAT(coordinator, HasSubstr("synthgrad.v1.CoordinatorService"));
}

TEST_F(ServicesTest, StartJobRejectsInvalidSpecAndMissingData) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_num_classes(7);
  std::string job_id;
  grpc::Status status = StartJob(spec, &job_id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("num_classes is 7"));

  spec = Spec(v1::TRAINING_MODE_DNI);
  spec.mutable_data()->set_dir("/nonexistent/fashion");
  status = StartJob(spec, &job_id);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(),
              HasSubstr("/nonexistent/fashion/train-images-idx3-ubyte.gz"));
}

TEST_F(ServicesTest, StopJobEndsARunningJob) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_epochs(50);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());

  // A second job is rejected while the first runs.
  std::string second;
  EXPECT_EQ(StartJob(spec, &second).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  grpc::ClientContext context;
  v1::StopJobRequest request;
  request.set_job_id(job_id);
  v1::StopJobResponse response;
  ASSERT_TRUE(coordinator_stub_->StopJob(&context, request, &response).ok());
  const v1::JobStatus job = WaitForJob(job_id, std::chrono::seconds(30));
  EXPECT_EQ(job.state(), v1::JOB_STATE_STOPPED);
  EXPECT_THAT(job.message(), HasSubstr("StopJob"));
}

TEST_F(ServicesTest, ForgedBatchReportsAreRejected) {
  // The groups get a coordinator address where nothing listens, so no
  // genuine result arrives and the first batch stays in flight while the
  // test sends forged reports for it.
  coordinator_->SetAdvertiseAddress("127.0.0.1:1");
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_batch_timeout_seconds(30);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  // The fixture's first job numbers its batches from 2^40 + 1.
  const int64_t first_batch = (int64_t{1} << 40) + 1;
  struct Case {
    const char* name;
    int64_t batch_id;
    int examples;
    int correct;
    double loss;
    v1::BatchMode mode;
    grpc::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"unknown batch", 12345, 256, 10, 1.0, v1::BATCH_MODE_TRAIN,
       grpc::StatusCode::NOT_FOUND},
      {"wrong example count", first_batch, 1000000000, 10, 1.0,
       v1::BATCH_MODE_TRAIN, grpc::StatusCode::INVALID_ARGUMENT},
      {"more correct than examples", first_batch, 256, 300, 1.0,
       v1::BATCH_MODE_TRAIN, grpc::StatusCode::INVALID_ARGUMENT},
      {"nan loss", first_batch, 256, 10, std::nan(""), v1::BATCH_MODE_TRAIN,
       grpc::StatusCode::INVALID_ARGUMENT},
      {"negative loss", first_batch, 256, 10, -1e300, v1::BATCH_MODE_TRAIN,
       grpc::StatusCode::INVALID_ARGUMENT},
      {"eval report for a training batch", first_batch, 256, 10, 1.0,
       v1::BATCH_MODE_EVAL, grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    grpc::ClientContext context;
    v1::BatchResult report;
    report.set_batch_id(c.batch_id);
    report.set_examples(c.examples);
    report.set_correct(c.correct);
    report.set_loss(c.loss);
    report.set_mode(c.mode);
    v1::ReportBatchResponse response;
    const grpc::Status status =
        coordinator_stub_->ReportBatch(&context, report, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
  }

  grpc::ClientContext context;
  v1::GetJobStatusRequest request;
  v1::JobStatus job;
  ASSERT_TRUE(coordinator_stub_->GetJobStatus(&context, request, &job).ok());
  EXPECT_EQ(job.samples_done(), 0);
  grpc::ClientContext stop_context;
  v1::StopJobRequest stop;
  v1::StopJobResponse stopped;
  EXPECT_TRUE(coordinator_stub_->StopJob(&stop_context, stop, &stopped).ok());
  EXPECT_EQ(WaitForJob(job_id, std::chrono::seconds(60)).state(),
            v1::JOB_STATE_STOPPED);
}

TEST(RpcSender, AddedLatencyDelaysEachCallWithoutSerializing) {
  constexpr auto kLatency = std::chrono::milliseconds(100);
  const auto start = std::chrono::steady_clock::now();
  absl::Mutex mu;
  std::vector<std::chrono::steady_clock::duration> started;
  {
    RpcSender sender("test peer", 16, RetryPolicy{}, nullptr, kLatency);
    for (int i = 0; i < 10; ++i) {
      sender.Enqueue("call", [&](grpc::ClientContext*) {
        absl::MutexLock lock(&mu);
        started.push_back(std::chrono::steady_clock::now() - start);
        return grpc::Status::OK;
      });
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        absl::MutexLock lock(&mu);
        if (started.size() == 10) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  ASSERT_EQ(started.size(), 10u);
  // Every call waits the latency; queued together, they all start within
  // about one latency, not ten.
  EXPECT_GE(started.front(), kLatency);
  EXPECT_LT(started.back(), 2 * kLatency);
}

TEST(RpcSender, ShutdownDropsCallsStillWaitingForLatency) {
  std::atomic<int> calls{0};
  const auto start = std::chrono::steady_clock::now();
  {
    RpcSender sender("test peer", 16, RetryPolicy{}, nullptr,
                     std::chrono::seconds(5));
    sender.Enqueue("call", [&](grpc::ClientContext*) {
      ++calls;
      return grpc::Status::OK;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    sender.Shutdown();
  }
  EXPECT_EQ(calls.load(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST_F(ServicesTest, UnreachableGroupFailsJobNamingAddress) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  layer_servers_[1]->Shutdown(std::chrono::system_clock::now());
  spec.set_batch_timeout_seconds(3);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus job = WaitForJob(job_id, std::chrono::seconds(90));
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.message(), HasSubstr(layer_addresses_[1]));
}

// Layer services with a checkpoint folder each, under the test's temporary
// folder.
class CheckpointServicesTest : public ServicesTest {
 protected:
  LayerServiceOptions LayerOptions(int index) override {
    if (root_.empty()) {
      std::string pattern = ::testing::TempDir() + "/synthgrad-services-XXXXXX";
      EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
      root_ = pattern;
    }
    absl::StatusOr<CheckpointDirectory> directory =
        CheckpointDirectory::Open(absl::StrCat(root_, "/group-", index));
    EXPECT_TRUE(directory.ok()) << directory.status();
    LayerServiceOptions options;
    options.checkpoint_directory = *std::move(directory);
    return options;
  }

  std::string root_;
};

TEST_F(ServicesTest, CheckpointNeedsCheckpointDir) {
  v1::CheckpointResponse response;
  EXPECT_EQ(Checkpoint(0, 1, &response).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // Not configured yet.
  const v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  ASSERT_TRUE(Configure(0, spec).ok());
  const grpc::Status status = Checkpoint(0, 1, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("--checkpoint_dir"));

  v1::ConfigureResponse configured;
  const grpc::Status restore = ConfigureRestore(0, spec, 3, 0, &configured);
  EXPECT_EQ(restore.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(restore.error_message(), HasSubstr("--checkpoint_dir"));
}

TEST_F(CheckpointServicesTest, CheckpointRequestsAreValidated) {
  const v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  v1::ConfigureResponse first;
  ASSERT_TRUE(ConfigureRestore(1, spec, 0, 0, &first).ok());
  EXPECT_NE(first.configuration_id(), 0u);
  v1::CheckpointResponse response;
  for (int64_t id : {int64_t{0}, int64_t{-4}}) {
    const grpc::Status status = Checkpoint(1, id, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_THAT(status.error_message(), HasSubstr(absl::StrCat(id))) << id;
  }

  v1::ConfigureResponse configured;
  grpc::Status status = ConfigureRestore(1, spec, 9, 0, &configured);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("/9.ckpt"));
  status = ConfigureRestore(1, spec, -1, 0, &configured);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = ConfigureRestore(1, spec, 0, -1, &configured);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // Only a request with the configured run id may write, with ids that
  // increase.
  ASSERT_TRUE(ConfigureRestore(1, spec, 0, 0, &configured).ok());
  EXPECT_NE(configured.configuration_id(), first.configuration_id());
  status = Checkpoint(1, 5, &response, kRunId + 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Checkpoint(1, 5, &response).ok());
  for (int64_t id : {5, 4}) {
    status = Checkpoint(1, id, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << id;
    EXPECT_THAT(status.error_message(), HasSubstr("not above 5")) << id;
  }

  // A checkpoint of group 1 restores only into group 1 of the same spec.
  v1::JobSpec other = spec;
  other.set_seed(spec.seed() + 1);
  status = ConfigureRestore(1, other, 5, 0, &configured);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CheckpointServicesTest, RestoreReturnsSavedParametersAndFencesOldBatches) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_epochs(1);
  spec.mutable_data()->set_train_limit(2560);
  spec.mutable_data()->set_test_limit(512);
  spec.set_shard_batches(2);
  spec.set_checkpoint_interval_shards(2);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus job = WaitForJob(job_id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
  // 10 batches, a checkpoint before batches 4 and 8.
  EXPECT_EQ(job.checkpoint_id(), 2);
  EXPECT_EQ(job.batches_fed(), 10);
  EXPECT_EQ(job.batches_refed(), 0);
  EXPECT_EQ(job.recoveries(), 0);

  // The job's checkpoints belong to its own run id. From here on the test
  // configures the groups under kRunId and trains them with a few batches.
  ApplyJobDefaults(&spec);
  for (int i = 0; i < kGroups; ++i) {
    v1::ConfigureResponse configured;
    ASSERT_TRUE(ConfigureRestore(i, spec, 0, 0, &configured).ok()) << "group " << i;
  }
  for (int64_t batch = 1; batch <= 5; ++batch) {
    v1::ForwardRequest request;
    request.set_batch_id(batch);
    request.set_mode(v1::BATCH_MODE_TRAIN);
    request.mutable_activations()->add_shape(16);
    request.mutable_activations()->add_shape(784);
    for (int k = 0; k < 16 * 784; ++k) {
      request.mutable_activations()->add_data(static_cast<float>((k * batch) % 7) / 7.0f);
    }
    for (int row = 0; row < 16; ++row) request.add_labels((row + batch) % 10);
    ASSERT_TRUE(Forward(0, request).ok()) << "batch " << batch;
  }
  // Checkpoints from the last group down are consistent once no batch is on
  // its way forward, as after the coordinator's drain.
  for (int attempt = 0; attempt < 200; ++attempt) {
    grpc::ClientContext context;
    v1::GroupStatus last;
    ASSERT_TRUE(layer_stubs_[kGroups - 1]->GetStatus(&context, {}, &last).ok());
    if (last.forward_batches() == 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::vector<v1::GetParametersResponse> saved;
  for (int i = kGroups - 1; i >= 0; --i) {
    v1::CheckpointResponse response;
    ASSERT_TRUE(Checkpoint(i, 100, &response).ok()) << "group " << i;
    EXPECT_GT(response.bytes(), 0);
  }
  for (int i = 0; i < kGroups; ++i) saved.push_back(Parameters(i));

  for (int i = 0; i < kGroups; ++i) {
    v1::ConfigureResponse fresh;
    ASSERT_TRUE(ConfigureRestore(i, spec, 0, 0, &fresh).ok());
    EXPECT_EQ(fresh.step(), 0);
    v1::ConfigureResponse restored;
    ASSERT_TRUE(ConfigureRestore(i, spec, 100, 1000, &restored).ok()) << "group " << i;
    EXPECT_EQ(restored.step(), saved[i].step());
    const v1::GetParametersResponse now = Parameters(i);
    EXPECT_TRUE(now.SerializeAsString() == saved[i].SerializeAsString())
        << "group " << i << " parameters differ after the restore";
  }

  // Batch ids below min_batch_id come from before the recovery.
  v1::ForwardRequest stale;
  stale.set_batch_id(999);
  stale.set_mode(v1::BATCH_MODE_TRAIN);
  stale.mutable_activations()->add_shape(1);
  stale.mutable_activations()->add_shape(784);
  stale.mutable_activations()->mutable_data()->Resize(784, 0.0f);
  stale.add_labels(0);
  grpc::Status status = Forward(0, stale);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("batch 999"));
  v1::GradientRequest stale_gradient;
  stale_gradient.set_batch_id(998);
  status = Gradient(1, stale_gradient);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // A corrupt file is reported as DATA_LOSS and the old runtime stays.
  const uint64_t fingerprint = SpecFingerprint(spec);
  const std::string path = absl::StrCat(
      root_, "/group-2/job-", absl::Hex(fingerprint, absl::kZeroPad16), "/run-",
      absl::Hex(kRunId, absl::kZeroPad16), "/group-2/100.ckpt");
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.good()) << path;
  file.seekp(100);
  file.put('\x7f');
  file.close();
  v1::ConfigureResponse corrupt;
  status = ConfigureRestore(2, spec, 100, 1000, &corrupt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(status.error_message(), HasSubstr("CRC-32"));
  EXPECT_TRUE(Parameters(2).SerializeAsString() == saved[2].SerializeAsString())
      << "a failed restore changed group 2";
}

TEST_F(ServicesTest, ForeignConfigureStartsRecovery) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_epochs(2);
  spec.mutable_data()->set_train_limit(25600);
  spec.mutable_data()->set_test_limit(512);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  // Wait until training runs, then configure group 1 from outside the job:
  // its state is reset, so the job must roll back instead of going on.
  for (int attempt = 0; attempt < 500; ++attempt) {
    grpc::ClientContext context;
    v1::GetJobStatusRequest request;
    v1::JobStatus status;
    ASSERT_TRUE(coordinator_stub_->GetJobStatus(&context, request, &status).ok());
    if (status.samples_done() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ApplyJobDefaults(&spec);
  ASSERT_TRUE(Configure(1, spec).ok());

  const v1::JobStatus job = WaitForJob(job_id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_GE(job.recoveries(), 1);
  EXPECT_EQ(job.samples_done(), 2 * 25600);
  EXPECT_EQ(job.batches_fed(), 2 * 100 + job.batches_refed());
  EXPECT_EQ(job.checkpoint_id(), 0);
}

TEST_F(ServicesTest, GroupsWithoutCheckpointDirTurnCheckpointsOff) {
  v1::JobSpec spec = Spec(v1::TRAINING_MODE_DNI);
  spec.set_epochs(2);
  spec.mutable_data()->set_train_limit(5120);
  spec.mutable_data()->set_test_limit(512);
  spec.set_shard_batches(2);
  spec.set_checkpoint_interval_shards(1);
  std::string job_id;
  ASSERT_TRUE(StartJob(spec, &job_id).ok());
  const v1::JobStatus job = WaitForJob(job_id);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.message();
  EXPECT_EQ(job.checkpoint_id(), 0);
}

}  // namespace
}  // namespace synthgrad
