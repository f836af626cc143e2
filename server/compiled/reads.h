// The cheap reads the door answers itself: ServerLive, ServerReady, ServerMetadata, and ModelReady and
// ModelMetadata of a model's default version. Python tells it the answers whenever they change (a swap, a load,
// an unload: the repository's on_change), the metadata as the Python door's own serialized response, so both
// doors answer byte for byte alike. What it has not been told is forwarded to the Python door; until it has been
// given the ServerMetadataResponse (Python gives none while it traces calls), every read is.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>
#include <string>

namespace door {

class Reads {
 public:
  static bool Answers(const std::string& method);  // a method answered here when the door knows the answer
  // The answer to a read call, or false: the Python door answers it (an unknown model, another version, a request
  // that is not the method's message).
  bool Answer(const std::string& method, const grpc::ByteBuffer& request, grpc::ByteBuffer* answer);

  void SetReady(bool ready);
  void SetServerMetadata(std::string response);
  // The model's default version and its serialized ModelMetadataResponse.
  void SetModel(const std::string& name, std::string version, std::string metadata);
  void DropModel(const std::string& name);

 private:
  struct Model {
    std::string version, metadata;
  };
  std::mutex mu_;
  int ready_ = -1;  // -1: not told yet
  std::string server_metadata_;
  std::map<std::string, Model> models_;
};

}  // namespace door
