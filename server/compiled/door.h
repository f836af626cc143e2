// The compiled gRPC front end: one C++ server owns the public port. ModelInfer requests (and ModelStreamInfer
// messages: stream.cc) it can check against a served version's signature are decoded, queued and batched here and
// handed to Python once per batch; the cheap reads are answered here (reads.h); every other call (and every
// request it does not take: errors, parameters, other model kinds) is forwarded byte for byte to the Python
// grpc.aio server on a private socket, so both doors answer alike.
#pragma once

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "grpc_service.pb.h"
#include "reads.h"

namespace door {

using Clock = std::chrono::steady_clock;

struct OutputSpec {
  std::string name, datatype;
  size_t itemsize = 4;
};

// What a request must look like to be taken here: a tabular version's one FP32 [rows, width] input.
struct ModelSpec {
  std::string version;  // the default version's number: a request naming another one is forwarded
  std::string input;
  int64_t width = 0;
  std::vector<OutputSpec> outputs;
  int64_t max_batch_size = 256, max_queue_delay_us = 500, max_queue_size = 1024, max_concurrent_batches = 2;
};

// The messages both doors use (server/door_messages.py), with {placeholders}.
struct Messages {
  std::string queue_full, deadline_in_queue, server_busy, flagged_parameter;
};

class Call;

struct Pending {
  Call* call;
  std::string caller;   // the gRPC connection (its peer), which shares the queue with the others by rows
  std::string version;  // as asked ("" for the default)
  int64_t rows;
  std::vector<float> data;
  std::vector<std::string> wanted;  // output names, in the order asked
  Clock::time_point enqueued;
  std::chrono::system_clock::time_point deadline;
  double tag = 0;  // its place in the fair order between callers
  std::string traceparent;  // the caller's W3C traceparent, kept only while Python traces (Options::traceparents)
};

// A model's waiting requests. Callers share it by rows, as the Python batcher shares its queue (server/batcher.py,
// fair queuing): a request's tag is where its caller's rows would end if every caller with requests waiting were
// served at the same rate, and the smallest tag goes next; within a caller, first come first served.
class FairQueue {
 public:
  void Push(Pending pending);
  const Pending& Front() const;
  Pending Pop();
  bool empty() const { return count_ == 0; }
  size_t size() const { return count_; }
  Clock::time_point Oldest() const;  // when the longest-waiting request came (each caller's first is its oldest)

 private:
  std::map<std::string, std::deque<Pending>> callers_;
  std::set<std::tuple<double, uint64_t, std::string>> turns_;  // (a caller's first tag, arrival order, caller)
  double virtual_ = 0;  // the tag of the request taken last: "now" in the fair order
  uint64_t order_ = 0;
  size_t count_ = 0;
};

struct Batch {
  std::string model;
  std::vector<Pending> members;
};

// A batch ready for Python: the Python side answers with Door::Complete, Fail or Reroute.
using BatchHandler = std::function<void(uint64_t id, const std::string& model, const std::string& version,
                                        int64_t width, std::vector<Pending>& members)>;

// How the public port listens, beyond the address: TLS from PEM text (empty: plaintext; a client CA: mutual TLS,
// a verified client certificate required, as the Python door's ssl_server_credentials), and whether requests keep
// their traceparent for Python's spans.
struct Options {
  std::string tls_cert, tls_key, tls_client_ca;
  bool traceparents = false;
};

// Requests the queue refused for one model version with one status, since the last read (ModelStatistics and the
// failure metrics count them in Python, read every 0.25 s: no Python call per refusal).
struct Refused {
  std::string model, version;
  int code;
  int64_t count = 0, ns = 0, expired = 0;  // ns: their time in the door, summed; expired: deadlines passed in queue
};

class Door {
 public:
  Door(const std::string& listen, const std::string& upstream, int max_message_bytes, int64_t max_queued_bytes,
       bool reuse_port, Messages messages, BatchHandler handler, const Options& options = {});
  ~Door();
  int port() const { return port_; }
  bool traceparents() const { return traceparents_; }
  void SetModel(const std::string& name, std::shared_ptr<const ModelSpec> spec);
  void DropModel(const std::string& name);
  std::map<std::string, int64_t> Waiting();  // requests queued per model, for the queue-depth metric
  std::vector<Refused> TakeRefused();         // refusals counted since the last call
  // --max-queued-bytes is one budget for both doors: the Python door's queued requests draw on this count too.
  bool Admit(int64_t size, int64_t* held);    // false (and what is held) when over the bound
  void Release(int64_t size);
  int64_t max_queued_bytes() const { return max_queued_bytes_; }
  // The batch's answers: outputs as contiguous row-major bytes, one per spec output, with their trailing dims.
  struct Output {
    std::string name, datatype;
    const char* bytes;
    size_t row_bytes;
    std::vector<int64_t> trailing;
  };
  void Complete(uint64_t id, const std::string& version, const std::vector<Output>& outputs,
                const std::vector<int64_t>& flagged);
  void Fail(uint64_t id, grpc::StatusCode code, const std::string& message);
  void Reroute(uint64_t id);  // the Python door answers each of the batch's requests itself
  void Shutdown(double grace_s);

  // for Call
  std::shared_ptr<const ModelSpec> Spec(const std::string& model);
  bool Enqueue(const std::string& model, Pending pending, std::string* refusal);
  grpc::GenericStub& upstream() { return *stub_; }
  // Calls (and stream messages) taken here, those the Python door answered, reads answered here (reads.h).
  std::atomic<uint64_t> batched{0}, forwarded{0}, answered{0};
  std::atomic<int64_t> stream_window{16};  // --stream-window: a stream's messages between read and answered
  Reads reads;  // the cheap reads' answers, as Python last told them
  void Dequeued(Call* call);

 private:
  struct Queue {
    std::shared_ptr<const ModelSpec> spec;
    FairQueue waiting;
    int64_t rows = 0;
    int running = 0;
  };
  void Loop();
  Batch Take(const std::string& model, Queue& queue, std::vector<std::pair<Call*, grpc::Status>>* refused);
  std::unique_ptr<Batch> Claim(uint64_t id);
  void CountRefused(const std::string& model, const Pending& pending, grpc::StatusCode code, bool expired);

  Messages messages_;
  BatchHandler handler_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  std::unique_ptr<grpc::CallbackGenericService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool traceparents_ = false;

  std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, Queue> queues_;
  std::map<std::string, std::shared_ptr<const ModelSpec>> specs_;  // models whose requests are taken here
  std::map<uint64_t, std::unique_ptr<Batch>> running_;
  uint64_t next_id_ = 1;
  int64_t max_queued_bytes_, held_bytes_ = 0;  // input bytes of requests queued or executing (--max-queued-bytes)
  bool stopping_ = false;
  std::map<std::tuple<std::string, std::string, int>, Refused> refused_;  // (model, version, code): since last read
  std::thread loop_;
};

std::string Mib(int64_t size);  // as the Python door writes a size: "1,234.5 MiB"
std::string Format(std::string text, const std::map<std::string, std::string>& values);

}  // namespace door
