// The calls on the public port: a unary call (a ModelInfer the batcher takes, a read the door answers itself, or
// any call forwarded to the Python door), and a ModelStreamInfer whose messages the batcher takes one by one.
#pragma once

#include <mutex>

#include "door.h"
#include "reads.h"

namespace door {

// A request held by the door's queue: the batch answers it, refuses it, or hands it back to the Python door.
class Call {
 public:
  virtual ~Call() = default;
  virtual void Answer(const inference::ModelInferResponse& response) = 0;
  virtual void Refuse(const grpc::Status& status) = 0;
  virtual void Forward() = 0;  // the Python door answers it (its bytes are still here)
  virtual const inference::ModelInferRequest& request() const = 0;
  bool cancelled() const { return cancelled_.load(); }

 protected:
  std::atomic<bool> cancelled_{false};
};

// A forwarded call's side towards the Python server; its reactions are its owner's (an Rpc or a Stream).
template <class Owner>
class Upstream : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit Upstream(Owner* owner) : owner_(owner) {}
  void OnReadDone(bool ok) override { owner_->UpstreamRead(ok); }
  void OnWriteDone(bool ok) override { owner_->UpstreamWrote(ok); }
  void OnDone(const grpc::Status& status) override { owner_->UpstreamDone(status); }

 private:
  Owner* owner_;
};

// Any call but ModelStreamInfer.
class Rpc : public grpc::ServerGenericBidiReactor, public Call {
 public:
  Rpc(Door* door, grpc::GenericCallbackServerContext* context);

  // Answers for a request the batcher took (any thread).
  void Answer(const inference::ModelInferResponse& response) override;
  void Refuse(const grpc::Status& status) override;
  void Forward() override;
  const inference::ModelInferRequest& request() const override { return request_; }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  friend class Upstream<Rpc>;
  void Take();  // a ModelInfer's first message: batch it, or forward it
  void StartForwarding(bool have_message);
  void ReleaseHold();
  void UpstreamRead(bool ok);
  void UpstreamWrote(bool ok);
  void UpstreamDone(const grpc::Status& status);

  Door* door_;
  grpc::GenericCallbackServerContext* context_;
  bool read_rpc_ = false;  // a read the door may answer itself (reads.h)
  grpc::ByteBuffer down_;  // from the client (a ModelInfer's request, kept for forwarding)
  grpc::ByteBuffer up_;    // from the Python server, or our answer
  inference::ModelInferRequest request_;

  std::recursive_mutex mu_;
  bool forwarding_ = false, upstream_closed_ = false, hold_released_ = false, metadata_copied_ = false;
  grpc::ClientContext upstream_context_;
  Upstream<Rpc> upstream_{this};
};

grpc::ServerGenericBidiReactor* NewStream(Door* door, grpc::GenericCallbackServerContext* context);  // stream.cc

class Service : public grpc::CallbackGenericService {
 public:
  explicit Service(Door* door) : door_(door) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    // While Python traces calls a stream is forwarded whole: its span and its messages' spans are the Python door's.
    if (context->method() == "/inference.GRPCInferenceService/ModelStreamInfer" && !door_->traceparents())
      return NewStream(door_, context);
    return new Rpc(door_, context);
  }

 private:
  Door* door_;
};

// Shared by both kinds of call.
bool Forwardable(grpc::string_ref key);  // client metadata that travels to the Python door
// A tabular version's request, checked as the Python door checks it; false leaves it to the Python door.
bool Fits(const inference::ModelInferRequest& r, const ModelSpec& spec, Pending* pending);

}  // namespace door
