// ModelStreamInfer on the public port. Each message the door can take (as a unary ModelInfer: a tabular
// version's one FP32 input, checked in C++) joins the model's queue with the stream's connection as its caller
// and is batched with everything else; each message it cannot take (another model kind, parameters, an error in
// the request, an unreadable message) goes to the Python door over one forwarded stream per client stream, opened
// when first needed, whose answers come back in the order they were sent. Answers reach the client in the order
// the messages came, errors in-band (error_message), as the Python door answers (server/service.py): at most
// --stream-window messages are between read and answered, so a client that never reads is held back by gRPC's
// flow control; a stream that goes away cancels what it still has queued. While Python traces calls, streams are
// forwarded whole instead (call.h, Service).
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <deque>

#include "call.h"

namespace door {

namespace {

class Stream;

// One message of the stream: the door's queue holds it as a Call.
class Message : public Call {
 public:
  explicit Message(Stream* stream) : stream_(stream) {}
  void Answer(const inference::ModelInferResponse& response) override;
  void Refuse(const grpc::Status& status) override;
  void Forward() override;
  const inference::ModelInferRequest& request() const override { return request_; }
  void Cancel() { cancelled_ = true; }

  grpc::ByteBuffer bytes;  // as the client sent it, for the Python door
  inference::ModelInferRequest request_;
  grpc::ByteBuffer answer;  // the ModelStreamInferResponse to write, once ready
  bool ready = false;

 private:
  Stream* stream_;
};

grpc::ByteBuffer InBand(const std::string& error) {
  inference::ModelStreamInferResponse response;
  response.set_error_message(error);
  grpc::ByteBuffer bytes;
  bool own = false;
  (void)grpc::SerializationTraits<inference::ModelStreamInferResponse>::Serialize(response, &bytes, &own);
  return bytes;
}

class Stream : public grpc::ServerGenericBidiReactor {
 public:
  Stream(Door* door, grpc::GenericCallbackServerContext* context)
      : door_(door), context_(context), peer_(context->peer()), window_(door->stream_window.load()) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    Read();
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    reading_ = false;
    if (!ok) {
      reads_done_ = true;
    } else if (!cancelled_ && !finished_) {
      in_flight_ += 1;
      order_.push_back(std::make_unique<Message>(this));
      Message* message = order_.back().get();
      message->bytes = std::move(incoming_);
      incoming_.Clear();
      Take(message);
      if (in_flight_ < window_) Read();
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    writing_ = false;
    written_.reset();
    in_flight_ -= 1;
    if (!ok) Cancel();  // the client is gone
    else if (in_flight_ < window_) Read();
    Pump();
  }

  void OnCancel() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    Cancel();
    Pump();
  }

  void OnDone() override { Leave([this] { done_ = true; }); }

  // A message's answer (any thread); from_queue: it was in the door's queue until now.
  void Settle(Message* message, grpc::ByteBuffer answer, bool from_queue) {
    Leave([&] {
      if (from_queue) queued_ -= 1;
      message->answer = std::move(answer);
      message->ready = true;
      Pump();
    });
  }

  void Forwarded(Message* message) {  // a batch handed it back: the Python door answers it
    Leave([&] {
      queued_ -= 1;
      SendUp(message);
      Pump();
    });
  }

  void UpstreamRead(bool ok) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (!ok) {  // the Python door has said all it will: nothing more is written to it, UpstreamDone follows
      up_broken_ = true;
      ReleaseUpstreamHold();
      Pump();
      return;
    }
    if (!up_waiting_.empty()) {  // the Python door answers its messages in the order they were sent
      Message* message = up_waiting_.front();
      up_waiting_.pop_front();
      message->answer = std::move(up_incoming_);
      message->ready = true;
    }
    up_incoming_.Clear();
    upstream_.StartRead(&up_incoming_);
    Pump();
  }

  void UpstreamWrote(bool ok) {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    up_writing_ = false;
    if (ok) {
      up_queue_.pop_front();
    } else {  // the forwarded stream broke: UpstreamDone says why, once nothing holds it
      up_broken_ = true;
      ReleaseUpstreamHold();
    }
    Pump();
  }

  void UpstreamDone(const grpc::Status& status) {
    Leave([&] {
      up_done_ = true;
      up_status_ = status;
      ReleaseUpstreamHold();
      Pump();
    });
  }

 private:
  // Runs `change` under the lock; the stream is deleted once gRPC is done with it and nothing refers to it (the
  // door's queue, a batch, the forwarded stream).
  template <typename Change>
  void Leave(Change change) {
    bool gone = false;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      change();
      gone = done_ && queued_ == 0 && (!up_started_ || up_done_) && !deleting_;
      if (gone) deleting_ = true;
    }
    if (gone) delete this;
  }

  void Read() {
    if (reading_ || reads_done_ || cancelled_ || finished_) return;
    reading_ = true;
    StartRead(&incoming_);
  }

  void Take(Message* message) {
    grpc::ByteBuffer copy(message->bytes);
    grpc::ProtoBufferReader reader(&copy);
    inference::ModelInferRequest& request = message->request_;
    Pending pending{message, peer_, "", 0, {}, {}, Clock::now(), std::chrono::system_clock::time_point::max()};
    std::shared_ptr<const ModelSpec> spec;
    if (!(request.ParseFromZeroCopyStream(&reader) && (spec = door_->Spec(request.model_name())) &&
          Fits(request, *spec, &pending))) {
      SendUp(message);
      return;
    }
    request.clear_raw_input_contents();  // copied into the batch; the message keeps its bytes for forwarding
    request.clear_inputs();
    door_->batched += 1;
    queued_ += 1;
    std::string refusal;
    if (!door_->Enqueue(request.model_name(), std::move(pending), &refusal)) {
      queued_ -= 1;
      message->answer = InBand(refusal);  // the Python door's stream says it in-band too, in the same words
      message->ready = true;
    }
  }

  void SendUp(Message* message) {
    if (cancelled_ || up_done_ || finished_) return;  // the stream is ending: no one waits for this answer
    door_->forwarded += 1;
    if (!up_started_) {
      up_started_ = true;
      for (const auto& [key, value] : context_->client_metadata())
        if (Forwardable(key))
          up_context_.AddMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
      up_context_.set_deadline(context_->raw_deadline());
      door_->upstream().PrepareBidiStreamingCall(&up_context_, context_->method(), grpc::StubOptions(),
                                                 &upstream_);
      upstream_.AddHold();  // released when no more messages will be written upstream
      upstream_.StartRead(&up_incoming_);
      upstream_.StartCall();
    }
    up_queue_.push_back(message);
    up_waiting_.push_back(message);
  }

  void Cancel() {
    if (cancelled_) return;
    cancelled_ = true;
    for (auto& message : order_) message->Cancel();  // the door's queue drops them
    if (up_started_ && !up_done_) up_context_.TryCancel();
    ReleaseUpstreamHold();
  }

  void ReleaseUpstreamHold() {
    if (up_started_ && !up_hold_released_) {
      up_hold_released_ = true;
      upstream_.RemoveHold();
    }
  }

  // Moves whatever can move: the next answer to the client, the next message to the Python door, the end.
  void Pump() {
    if (!writing_ && !finished_ && !cancelled_ && !order_.empty() && order_.front()->ready) {
      writing_ = true;
      written_ = std::move(order_.front());
      order_.pop_front();
      StartWrite(&written_->answer);
    }
    if (up_started_ && !up_done_ && !up_broken_ && !up_writing_ && !up_queue_.empty() && !cancelled_) {
      up_writing_ = true;
      upstream_.StartWrite(&up_queue_.front()->bytes);
    }
    if (up_started_ && !up_closed_ && !up_done_ && !up_broken_ && !cancelled_ && reads_done_ && queued_ == 0 &&
        up_queue_.empty() && !up_writing_) {
      up_closed_ = true;
      upstream_.StartWritesDone();
      ReleaseUpstreamHold();
    }
    if (finished_ || writing_) return;
    // The forwarded stream ended before answering all it was sent: its status ends this stream too.
    const bool up_failed = up_done_ && (!up_status_.ok() || !up_waiting_.empty());
    const bool complete = reads_done_ && order_.empty() && (!up_started_ || up_done_);
    if (!(cancelled_ || up_failed || complete)) return;
    finished_ = true;
    grpc::Status status = grpc::Status::OK;
    if (cancelled_) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    } else if (up_started_) {
      for (const auto& [key, value] : up_context_.GetServerTrailingMetadata())
        if (Forwardable(key))
          context_->AddTrailingMetadata(std::string(key.data(), key.size()), std::string(value.data(), value.size()));
      status = up_status_;
      if (up_failed && status.ok())
        status = grpc::Status(grpc::StatusCode::INTERNAL, "the Python door ended the stream before answering it all");
    }
    if (up_failed) Cancel();
    Finish(status);
  }

  Door* door_;
  grpc::GenericCallbackServerContext* context_;
  const std::string peer_;
  const int64_t window_;

  std::recursive_mutex mu_;
  grpc::ByteBuffer incoming_;
  std::deque<std::unique_ptr<Message>> order_;  // read and not yet written to the client, in arrival order
  std::unique_ptr<Message> written_;            // the one being written
  int64_t in_flight_ = 0;                       // read and not yet written (the window)
  int64_t queued_ = 0;                          // held by the door's queue or a batch
  bool reading_ = false, reads_done_ = false, writing_ = false, cancelled_ = false, finished_ = false,
       done_ = false, deleting_ = false;

  grpc::ClientContext up_context_;
  Upstream<Stream> upstream_{this};
  grpc::ByteBuffer up_incoming_;
  std::deque<Message*> up_queue_;    // to write to the Python door
  std::deque<Message*> up_waiting_;  // written there, answer not yet back, in the order sent
  grpc::Status up_status_;
  bool up_started_ = false, up_writing_ = false, up_closed_ = false, up_done_ = false, up_broken_ = false,
       up_hold_released_ = false;
};

void Message::Answer(const inference::ModelInferResponse& response) {
  inference::ModelStreamInferResponse streamed;
  *streamed.mutable_infer_response() = response;
  grpc::ByteBuffer bytes;
  bool own = false;
  grpc::Status serialized =
      grpc::SerializationTraits<inference::ModelStreamInferResponse>::Serialize(streamed, &bytes, &own);
  stream_->Settle(this, serialized.ok() ? std::move(bytes) : InBand(serialized.error_message()), true);
}

// The batch failed, or the queue dropped it (cancelled): in-band, as the Python door's stream reports an error.
void Message::Refuse(const grpc::Status& status) { stream_->Settle(this, InBand(status.error_message()), true); }

void Message::Forward() { stream_->Forwarded(this); }

}  // namespace

grpc::ServerGenericBidiReactor* NewStream(Door* door, grpc::GenericCallbackServerContext* context) {
  return new Stream(door, context);
}

}  // namespace door
