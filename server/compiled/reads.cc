#include "reads.h"

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "grpc_service.pb.h"

namespace door {

namespace {

const std::string kService = "/inference.GRPCInferenceService/";

template <typename Message>
bool Parse(const grpc::ByteBuffer& bytes, Message* message) {
  grpc::ByteBuffer copy(bytes);
  grpc::ProtoBufferReader reader(&copy);
  return message->ParseFromZeroCopyStream(&reader);
}

template <typename Message>
bool Serialize(const Message& message, grpc::ByteBuffer* answer) {
  bool own = false;
  return grpc::SerializationTraits<Message>::Serialize(message, answer, &own).ok();
}

bool Bytes(const std::string& bytes, grpc::ByteBuffer* answer) {
  grpc::Slice slice(bytes);
  *answer = grpc::ByteBuffer(&slice, 1);
  return true;
}

}  // namespace

bool Reads::Answers(const std::string& method) {
  return method == kService + "ServerLive" || method == kService + "ServerReady" ||
         method == kService + "ServerMetadata" || method == kService + "ModelReady" ||
         method == kService + "ModelMetadata";
}

bool Reads::Answer(const std::string& method, const grpc::ByteBuffer& request, grpc::ByteBuffer* answer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (method == kService + "ServerLive") {
    inference::ServerLiveRequest asked;
    if (server_metadata_.empty() || !Parse(request, &asked)) return false;  // not told to answer reads
    inference::ServerLiveResponse response;
    response.set_live(true);
    return Serialize(response, answer);
  }
  if (method == kService + "ServerReady") {
    inference::ServerReadyRequest asked;
    if (ready_ < 0 || !Parse(request, &asked)) return false;
    inference::ServerReadyResponse response;
    response.set_ready(ready_ == 1);
    return Serialize(response, answer);
  }
  if (method == kService + "ServerMetadata") {
    inference::ServerMetadataRequest asked;
    if (server_metadata_.empty() || !Parse(request, &asked)) return false;
    return Bytes(server_metadata_, answer);
  }
  const bool ready = method == kService + "ModelReady";
  std::string name, version;
  if (ready) {
    inference::ModelReadyRequest asked;
    if (!Parse(request, &asked)) return false;
    name = asked.name();
    version = asked.version();
  } else {
    inference::ModelMetadataRequest asked;
    if (!Parse(request, &asked)) return false;
    name = asked.name();
    version = asked.version();
  }
  auto found = models_.find(name);
  if (found == models_.end() || !(version.empty() || version == found->second.version)) return false;
  if (!ready) return Bytes(found->second.metadata, answer);
  inference::ModelReadyResponse response;
  response.set_ready(true);
  return Serialize(response, answer);
}

void Reads::SetReady(bool ready) {
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = ready ? 1 : 0;
}

void Reads::SetServerMetadata(std::string response) {
  std::lock_guard<std::mutex> lock(mu_);
  server_metadata_ = std::move(response);
}

void Reads::SetModel(const std::string& name, std::string version, std::string metadata) {
  std::lock_guard<std::mutex> lock(mu_);
  models_[name] = {std::move(version), std::move(metadata)};
}

void Reads::DropModel(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  models_.erase(name);
}

}  // namespace door
