// One call on the public port: a ModelInfer taken by the batcher, or any call forwarded to the Python door.
#pragma once

#include <mutex>

#include "door.h"

namespace door {

class Call;

// The forwarded call's side towards the Python server; its reactions are the Call's.
class Upstream : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit Upstream(Call* call) : call_(call) {}
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  Call* call_;
};

class Call : public grpc::ServerGenericBidiReactor {
 public:
  Call(Door* door, grpc::GenericCallbackServerContext* context);

  // Answers for a request the batcher took (any thread).
  void Answer(const inference::ModelInferResponse& response);
  void Refuse(const grpc::Status& status);
  void Forward();  // the Python door answers it (its bytes are still here)

  const inference::ModelInferRequest& request() const { return request_; }
  bool cancelled() const { return cancelled_.load(); }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  friend class Upstream;
  void Take();  // a ModelInfer's first message: batch it, or forward it
  void StartForwarding(bool have_message);
  void ReleaseHold();
  void UpstreamRead(bool ok);
  void UpstreamWrote(bool ok);
  void UpstreamDone(const grpc::Status& status);

  Door* door_;
  grpc::GenericCallbackServerContext* context_;
  grpc::ByteBuffer down_;  // from the client (a ModelInfer's request, kept for forwarding)
  grpc::ByteBuffer up_;    // from the Python server, or our answer
  inference::ModelInferRequest request_;
  std::atomic<bool> cancelled_{false};

  std::recursive_mutex mu_;
  bool forwarding_ = false, upstream_closed_ = false, hold_released_ = false, metadata_copied_ = false;
  grpc::ClientContext upstream_context_;
  Upstream upstream_{this};
};

class Service : public grpc::CallbackGenericService {
 public:
  explicit Service(Door* door) : door_(door) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    return new Call(door_, context);
  }

 private:
  Door* door_;
};

}  // namespace door
