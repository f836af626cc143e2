// A call on the public port. ModelInfer reads its one message and asks the door to batch it; the cheap reads
// (reads.h) are answered here when the door knows the answer; a request the door does not take, and every other
// method, is forwarded to the Python grpc.aio server as bytes, both ways, with
// its metadata, deadline and cancellation: one port answers the whole protocol, and whatever the Python door
// would answer (errors included) is what the client gets.
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <cstring>

#include "call.h"

namespace door {

namespace {

const char kModelInfer[] = "/inference.GRPCInferenceService/ModelInfer";

}  // namespace

bool Forwardable(grpc::string_ref key) {
  std::string k(key.data(), key.size());
  return !k.empty() && k[0] != ':' && k.rfind("grpc-", 0) != 0 && k != "content-type" && k != "te" &&
         k != "user-agent";
}

bool Fits(const inference::ModelInferRequest& r, const ModelSpec& spec, Pending* pending) {
  if (r.parameters_size() || r.inputs_size() != 1 || r.raw_input_contents_size() > 1) return false;
  if (!r.model_version().empty() && r.model_version() != spec.version) return false;
  const auto& input = r.inputs(0);
  if (input.name() != spec.input || input.datatype() != "FP32" || input.parameters_size() || input.shape_size() != 2)
    return false;
  const int64_t rows = input.shape(0);
  if (rows < 1 || input.shape(1) != spec.width || rows > (int64_t{1} << 31) / std::max<int64_t>(spec.width, 1))
    return false;
  // Sizes are checked against what the message holds before anything is allocated for them.
  const size_t values = static_cast<size_t>(rows * spec.width);
  if (r.raw_input_contents_size() == 1) {
    const std::string& raw = r.raw_input_contents(0);
    if (input.has_contents() || raw.size() != values * sizeof(float)) return false;
    pending->data.resize(values);
    std::memcpy(pending->data.data(), raw.data(), raw.size());
  } else {
    if (static_cast<size_t>(input.contents().fp32_contents_size()) != values) return false;
    pending->data.assign(input.contents().fp32_contents().begin(), input.contents().fp32_contents().end());
  }
  for (const auto& output : r.outputs()) {
    if (output.parameters_size()) return false;
    bool offered = false;
    for (const auto& o : spec.outputs) offered = offered || o.name == output.name();
    if (!offered) return false;
    for (const auto& seen : pending->wanted)
      if (seen == output.name()) return false;
    pending->wanted.push_back(output.name());
  }
  if (pending->wanted.empty())
    for (const auto& o : spec.outputs) pending->wanted.push_back(o.name);
  pending->rows = rows;
  pending->version = r.model_version();
  return true;
}

Rpc::Rpc(Door* door, grpc::GenericCallbackServerContext* context) : door_(door), context_(context) {
  read_rpc_ = Reads::Answers(context_->method());
  if (context_->method() == kModelInfer || read_rpc_) {
    StartRead(&down_);
  } else {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    StartForwarding(false);
  }
}

void Rpc::OnReadDone(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!forwarding_) {  // a ModelInfer's or a read's one message
    if (!ok) {
      StartForwarding(false);  // no message: the Python door says what is wrong
      return;
    }
    if (!read_rpc_) {
      Take();
    } else if (door_->reads.Answer(context_->method(), down_, &up_)) {
      door_->answered += 1;
      StartWriteAndFinish(&up_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      StartForwarding(true);
    }
    return;
  }
  if (!ok || upstream_closed_) {
    if (!ok && !upstream_closed_ && !hold_released_) upstream_.StartWritesDone();
    ReleaseHold();
    return;
  }
  upstream_.StartWrite(&down_);
}

void Rpc::Take() {
  grpc::ByteBuffer copy(down_);
  grpc::ProtoBufferReader reader(&copy);
  Pending pending{this, context_->peer(), "", 0, {}, {}, Clock::now(), context_->deadline()};
  std::shared_ptr<const ModelSpec> spec;
  if (request_.ParseFromZeroCopyStream(&reader) && (spec = door_->Spec(request_.model_name())) &&
      Fits(request_, *spec, &pending)) {
    request_.clear_raw_input_contents();  // copied into the batch; the call keeps its bytes (down_) for forwarding
    request_.clear_inputs();
    if (door_->traceparents()) {  // Python makes the call's span (tracing on only)
      auto found = context_->client_metadata().find("traceparent");
      if (found != context_->client_metadata().end()) pending.traceparent.assign(found->second.data(), found->second.size());
    }
    door_->batched += 1;
    std::string refusal;
    if (!door_->Enqueue(request_.model_name(), std::move(pending), &refusal)) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, refusal));
    }
    return;
  }
  StartForwarding(true);
}

void Rpc::Answer(const inference::ModelInferResponse& response) {
  bool own = false;
  grpc::Status serialized =
      grpc::SerializationTraits<inference::ModelInferResponse>::Serialize(response, &up_, &own);
  if (!serialized.ok()) {
    Finish(serialized);
    return;
  }
  StartWriteAndFinish(&up_, grpc::WriteOptions(), grpc::Status::OK);
}

void Rpc::Refuse(const grpc::Status& status) { Finish(status); }

void Rpc::Forward() {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  StartForwarding(true);
}

void Rpc::StartForwarding(bool have_message) {
  forwarding_ = true;
  door_->forwarded += 1;
  for (const auto& [key, value] : context_->client_metadata()) {
    if (Forwardable(key))
      upstream_context_.AddMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  }
  upstream_context_.set_deadline(context_->raw_deadline());
  if (cancelled_) upstream_context_.TryCancel();
  door_->upstream().PrepareBidiStreamingCall(&upstream_context_, context_->method(), grpc::StubOptions(),
                                             &upstream_);
  upstream_.AddHold();  // released when no more client messages will be written upstream
  upstream_.StartRead(&up_);
  if (have_message) {
    upstream_.StartWrite(&down_);
  } else if (context_->method() == kModelInfer || read_rpc_) {  // the client half-closed without a message
    upstream_.StartWritesDone();
    hold_released_ = true;
    upstream_.RemoveHold();
  } else {
    StartRead(&down_);
  }
  upstream_.StartCall();
}

void Rpc::ReleaseHold() {
  if (!hold_released_) {
    hold_released_ = true;
    upstream_.RemoveHold();
  }
}

void Rpc::UpstreamWrote(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (ok && !upstream_closed_) {
    StartRead(&down_);
  } else {
    ReleaseHold();
  }
}

void Rpc::UpstreamRead(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!ok) {
    upstream_closed_ = true;
    ReleaseHold();
    return;
  }
  if (!metadata_copied_) {
    metadata_copied_ = true;
    for (const auto& [key, value] : upstream_context_.GetServerInitialMetadata())
      if (Forwardable(key))
        context_->AddInitialMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  }
  upstream_.AddHold();  // until the client has this message: the call must not finish before it is written
  StartWrite(&up_);
}

void Rpc::OnWriteDone(bool ok) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!forwarding_) return;  // our own answer (StartWriteAndFinish)
  if (ok) upstream_.StartRead(&up_);
  else upstream_context_.TryCancel();
  upstream_.RemoveHold();
}

void Rpc::UpstreamDone(const grpc::Status& status) {
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (!metadata_copied_) {
    metadata_copied_ = true;
    for (const auto& [key, value] : upstream_context_.GetServerInitialMetadata())
      if (Forwardable(key))
        context_->AddInitialMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  }
  for (const auto& [key, value] : upstream_context_.GetServerTrailingMetadata())
    if (Forwardable(key))
      context_->AddTrailingMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
  Finish(status);
}

void Rpc::OnCancel() {
  cancelled_ = true;
  std::lock_guard<std::recursive_mutex> lock(mu_);
  if (forwarding_) upstream_context_.TryCancel();
}

void Rpc::OnDone() { delete this; }

}  // namespace door
