// The door's queue: per model, requests wait until a batch may leave (by rows, by delay, or at once when
// nothing of that model is executing: the Python batcher's rules, server/batcher.py), then one thread hands the
// batch to Python and splits its answers back into one response per request.
#include <cstdio>
#include <algorithm>
#include <stdexcept>
#include <tuple>

#include "call.h"

namespace door {

std::string Format(std::string text, const std::map<std::string, std::string>& values) {
  for (const auto& [key, value] : values) {
    const std::string mark = "{" + key + "}";
    for (size_t at = text.find(mark); at != std::string::npos; at = text.find(mark, at + value.size()))
      text.replace(at, mark.size(), value);
  }
  return text;
}

void FairQueue::Push(Pending pending) {
  auto& queue = callers_[pending.caller];
  if (queue.empty()) {
    pending.tag = virtual_ + static_cast<double>(pending.rows);
    turns_.emplace(pending.tag, order_++, pending.caller);
  } else {
    pending.tag = std::max(virtual_, queue.back().tag) + static_cast<double>(pending.rows);
  }
  queue.push_back(std::move(pending));
  count_ += 1;
}

const Pending& FairQueue::Front() const { return callers_.at(std::get<2>(*turns_.begin())).front(); }

Pending FairQueue::Pop() {
  const std::string caller = std::get<2>(*turns_.begin());
  turns_.erase(turns_.begin());
  auto found = callers_.find(caller);
  Pending pending = std::move(found->second.front());
  found->second.pop_front();
  virtual_ = pending.tag;
  if (found->second.empty()) callers_.erase(found);
  else turns_.emplace(found->second.front().tag, order_++, caller);
  count_ -= 1;
  return pending;
}

Clock::time_point FairQueue::Oldest() const {
  auto oldest = Clock::time_point::max();
  for (const auto& [caller, queue] : callers_) oldest = std::min(oldest, queue.front().enqueued);
  return oldest;
}

std::string Mib(int64_t size) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f", static_cast<double>(size) / (1 << 20));
  std::string number(text);
  for (int at = static_cast<int>(number.find('.')) - 3; at > 0; at -= 3) number.insert(at, ",");
  return number + " MiB";
}

Door::Door(const std::string& listen, const std::string& upstream, int max_message_bytes, int64_t max_queued_bytes,
           bool reuse_port, Messages messages, BatchHandler handler, const Options& options)
    : messages_(std::move(messages)), handler_(std::move(handler)), traceparents_(options.traceparents),
      max_queued_bytes_(max_queued_bytes) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // the public port enforces the bound; the private hop passes what it took
  args.SetMaxSendMessageSize(-1);
  channel_ = grpc::CreateCustomChannel(upstream, grpc::InsecureChannelCredentials(), args);
  stub_ = std::make_unique<grpc::GenericStub>(channel_);
  service_ = std::make_unique<Service>(this);
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert.empty()) {  // the private hop to the Python door stays plaintext: a local unix socket
    grpc::SslServerCredentialsOptions ssl(options.tls_client_ca.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = options.tls_client_ca;
    ssl.pem_key_cert_pairs.push_back({options.tls_key, options.tls_cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  builder.AddListeningPort(listen, credentials, &port_);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, reuse_port ? 1 : 0);
  builder.RegisterCallbackGenericService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("cannot serve gRPC on " + listen);
  loop_ = std::thread([this] { Loop(); });
}

Door::~Door() { Shutdown(0); }

void Door::SetModel(const std::string& name, std::shared_ptr<const ModelSpec> spec) {
  std::lock_guard<std::mutex> lock(mu_);
  specs_[name] = spec;
  queues_[name].spec = std::move(spec);
}

void Door::DropModel(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  specs_.erase(name);  // queued requests still leave in batches (Python answers or forwards them)
}

std::map<std::string, int64_t> Door::Waiting() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int64_t> waiting;
  for (const auto& [model, queue] : queues_) waiting[model] = static_cast<int64_t>(queue.waiting.size());
  return waiting;
}

// Under mu_: as the Python door counts a request its batcher refused (a failure of the version it asked for).
void Door::CountRefused(const std::string& model, const Pending& pending, grpc::StatusCode code, bool expired) {
  const std::string& version = queues_[model].spec->version;
  Refused& counted = refused_[{model, version, static_cast<int>(code)}];
  if (counted.count == 0) {
    counted.model = model;
    counted.version = version;
    counted.code = static_cast<int>(code);
  }
  counted.count += 1;
  counted.ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - pending.enqueued).count();
  counted.expired += expired ? 1 : 0;
}

std::vector<Refused> Door::TakeRefused() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Refused> taken;
  for (auto& [key, counted] : refused_) taken.push_back(std::move(counted));
  refused_.clear();
  return taken;
}

bool Door::Admit(int64_t size, int64_t* held) {
  std::lock_guard<std::mutex> lock(mu_);
  *held = held_bytes_;
  if (held_bytes_ && held_bytes_ + size > max_queued_bytes_) return false;  // a lone request always gets in
  held_bytes_ += size;
  return true;
}

void Door::Release(int64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  held_bytes_ -= size;
}

std::shared_ptr<const ModelSpec> Door::Spec(const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = specs_.find(model);
  return found == specs_.end() ? nullptr : found->second;
}

bool Door::Enqueue(const std::string& model, Pending pending, std::string* refusal) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      *refusal = "server is shutting down";
      return false;
    }
    Queue& queue = queues_[model];
    if (static_cast<int64_t>(queue.waiting.size()) >= queue.spec->max_queue_size) {
      *refusal = Format(messages_.queue_full, {{"model", model},
                                               {"version", queue.spec->version},
                                               {"waiting", std::to_string(queue.waiting.size())}});
      CountRefused(model, pending, grpc::StatusCode::UNAVAILABLE, false);
      return false;
    }
    const int64_t size = static_cast<int64_t>(pending.data.size() * sizeof(float));
    if (held_bytes_ && held_bytes_ + size > max_queued_bytes_) {  // a lone request always gets in
      *refusal = Format(messages_.server_busy,
                        {{"held", Mib(held_bytes_)}, {"size", Mib(size)}, {"limit", Mib(max_queued_bytes_)}});
      CountRefused(model, pending, grpc::StatusCode::UNAVAILABLE, false);
      return false;
    }
    held_bytes_ += size;
    queue.rows += pending.rows;
    queue.waiting.Push(std::move(pending));
  }
  wake_.notify_one();
  return true;
}

Batch Door::Take(const std::string& model, Queue& queue, std::vector<std::pair<Call*, grpc::Status>>* refused) {
  Batch batch{model, {}};
  int64_t rows = 0;
  const auto now = std::chrono::system_clock::now();
  while (!queue.waiting.empty()) {
    const Pending& head = queue.waiting.Front();
    // One version asked per batch; a request that does not fit starts the next batch.
    if (!batch.members.empty() &&
        (rows + head.rows > queue.spec->max_batch_size || head.version != batch.members[0].version))
      break;
    Pending taken = queue.waiting.Pop();
    queue.rows -= taken.rows;
    if (taken.call->cancelled() || now >= taken.deadline) held_bytes_ -= taken.data.size() * sizeof(float);
    if (taken.call->cancelled()) {
      CountRefused(model, taken, grpc::StatusCode::CANCELLED, false);
      refused->emplace_back(taken.call, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      continue;
    }
    if (now >= taken.deadline) {
      CountRefused(model, taken, grpc::StatusCode::DEADLINE_EXCEEDED, true);
      char waited[32];
      std::snprintf(waited, sizeof waited, "%.1f",
                    std::chrono::duration<double, std::milli>(Clock::now() - taken.enqueued).count());
      refused->emplace_back(taken.call, grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                                     Format(messages_.deadline_in_queue, {{"waited_ms", waited}})));
      continue;
    }
    rows += taken.rows;
    batch.members.push_back(std::move(taken));
  }
  return batch;
}

void Door::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    auto wake_at = Clock::time_point::max();
    std::vector<std::tuple<uint64_t, Batch*, int64_t>> ready;  // id, batch, its model's row width
    std::vector<std::pair<Call*, grpc::Status>> refused;
    const auto now = Clock::now();
    for (auto& [model, queue] : queues_) {
      while (!queue.waiting.empty() && queue.running < queue.spec->max_concurrent_batches) {
        const auto delay = std::chrono::microseconds(queue.spec->max_queue_delay_us);
        const bool full = queue.rows >= queue.spec->max_batch_size;
        const auto oldest = queue.waiting.Oldest();
        if (!(full || queue.running == 0 || now - oldest >= delay)) {
          wake_at = std::min(wake_at, oldest + delay);
          break;
        }
        auto batch = std::make_unique<Batch>(Take(model, queue, &refused));
        if (batch->members.empty()) continue;
        queue.running += 1;
        const uint64_t id = next_id_++;
        ready.emplace_back(id, batch.get(), queue.spec->width);
        running_[id] = std::move(batch);
      }
    }
    if (!ready.empty() || !refused.empty()) {
      lock.unlock();
      for (auto& [call, status] : refused) call->Refuse(status);
      // The batch stays in running_ until Python answers; Python cannot answer before the handler returns (it
      // needs the GIL the handler holds), so the members are read here safely.
      for (auto& [id, batch, width] : ready) handler_(id, batch->model, batch->members[0].version, width, batch->members);
      lock.lock();
      continue;
    }
    if (wake_at == Clock::time_point::max()) wake_.wait(lock);
    else wake_.wait_until(lock, wake_at);
  }
}

std::unique_ptr<Batch> Door::Claim(uint64_t id) {
  std::unique_ptr<Batch> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = running_.find(id);
    if (found == running_.end()) return nullptr;
    batch = std::move(found->second);
    running_.erase(found);
    for (const Pending& member : batch->members) held_bytes_ -= member.data.size() * sizeof(float);
    queues_[batch->model].running -= 1;
  }
  wake_.notify_one();
  return batch;
}

void Door::Complete(uint64_t id, const std::string& version, const std::vector<Output>& outputs,
                    const std::vector<int64_t>& flagged) {
  auto batch = Claim(id);
  if (!batch) return;
  int64_t offset = 0;
  size_t next_flag = 0;
  for (Pending& member : batch->members) {
    inference::ModelInferResponse response;
    response.set_model_name(batch->model);
    response.set_model_version(version);
    response.set_id(member.call->request().id());
    bool answered = true;
    for (const std::string& name : member.wanted) {
      const Output* output = nullptr;
      for (const Output& o : outputs)
        if (o.name == name) output = &o;
      if (output == nullptr) {  // the version that ran has no such output (swapped meanwhile)
        answered = false;
        break;
      }
      auto* tensor = response.add_outputs();
      tensor->set_name(output->name);
      tensor->set_datatype(output->datatype);
      tensor->add_shape(member.rows);
      for (int64_t dim : output->trailing) tensor->add_shape(dim);
      response.add_raw_output_contents()->assign(output->bytes + offset * output->row_bytes,
                                                 member.rows * output->row_bytes);
    }
    std::string rows;
    for (; next_flag < flagged.size() && flagged[next_flag] < offset + member.rows; ++next_flag) {
      if (flagged[next_flag] < offset) continue;
      rows += (rows.empty() ? "" : ",") + std::to_string(flagged[next_flag] - offset);
    }
    if (!rows.empty()) (*response.mutable_parameters())[messages_.flagged_parameter].set_string_param(rows);
    offset += member.rows;
    if (answered) member.call->Answer(response);
    else member.call->Forward();
  }
}

void Door::Fail(uint64_t id, grpc::StatusCode code, const std::string& message) {
  auto batch = Claim(id);
  if (!batch) return;
  for (Pending& member : batch->members) member.call->Refuse(grpc::Status(code, message));
}

void Door::Reroute(uint64_t id) {
  auto batch = Claim(id);
  if (!batch) return;
  for (Pending& member : batch->members) member.call->Forward();
}

void Door::Shutdown(double grace_s) {
  if (server_) {
    // The queue keeps running meanwhile: calls already taken are answered within the grace, then cancelled.
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(grace_s * 1e6)));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (loop_.joinable()) loop_.join();
  server_.reset();
}

}  // namespace door
