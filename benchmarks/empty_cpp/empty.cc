// The C++ floor for server CPU per request (issue 18): a gRPC C++ server (callback API) whose inference
// handlers do nothing. One CallbackGenericService serves every method as raw bytes, so no protobuf code is
// generated or linked: each answer is a constant, pre-serialized message read from --answers DIR/<Method>.bin
// (written by benchmarks/empty_cpp_server.py with the protobuf classes, the same bytes empty_server.py sends).
//
// "Empty-ish": ModelInfer receives the whole request message but does NOT parse it (a generic server without
// codegen has no parser; the Python empty server does parse), then answers its constant. ModelStreamInfer
// answers every message of a stream with one constant. Any other method: UNIMPLEMENTED.
//
// Threads: gRPC's defaults. No SetSyncServerOption, no ResourceQuota, no completion queues of our own: the
// callback API runs every reaction on gRPC's internal threads (its callback poller and executor), sized by gRPC.
//
//   empty --answers DIR [--host 127.0.0.1] [--port 0]   prints "serving empty-cpp on HOST:PORT" once listening
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace {

const char* const kService = "/inference.GRPCInferenceService/";
const char* const kMethods[] = {"ModelInfer", "ModelStreamInfer", "ModelMetadata",
                                "ServerLive", "ServerReady", "ModelReady"};

// One reactor per call. Unary and bidi calls look alike to a generic service; the difference is only whether
// the answer ends the call (unary: write and finish in one batch) or the next read follows (ModelStreamInfer).
class Answer final : public grpc::ServerGenericBidiReactor {
 public:
  Answer(const grpc::Slice* answer, bool stream) : answer_(answer), stream_(stream) {
    if (answer_ == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "empty-cpp serves only the inference methods"));
    } else {
      StartRead(&request_);
    }
  }
  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (end of a stream) or the call broke
      Finish(grpc::Status::OK);
      return;
    }
    request_.Clear();  // received in full, never parsed: the point of the floor
    response_ = grpc::ByteBuffer(answer_, 1);  // a reference to the constant slice, not a copy
    if (stream_) {
      StartWrite(&response_);
    } else {
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
  }
  void OnWriteDone(bool ok) override {  // streams only
    if (ok) {
      StartRead(&request_);
    } else {
      Finish(grpc::Status::OK);
    }
  }
  void OnDone() override { delete this; }

 private:
  const grpc::Slice* answer_;
  bool stream_;
  grpc::ByteBuffer request_, response_;
};

class EmptyService final : public grpc::CallbackGenericService {
 public:
  explicit EmptyService(std::map<std::string, grpc::Slice> answers) : answers_(std::move(answers)) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    auto it = answers_.find(ctx->method());
    return new Answer(it == answers_.end() ? nullptr : &it->second,
                      ctx->method() == std::string(kService) + "ModelStreamInfer");
  }

 private:
  const std::map<std::string, grpc::Slice> answers_;  // full method path -> serialized answer
};

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", port = "0", dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--host") host = argv[i + 1];
    else if (flag == "--port") port = argv[i + 1];
    else if (flag == "--answers") dir = argv[i + 1];
    else { std::cerr << "unknown flag " << flag << "\n"; return 2; }
  }
  if (dir.empty()) { std::cerr << "usage: empty --answers DIR [--host H] [--port P]\n"; return 2; }
  std::map<std::string, grpc::Slice> answers;
  for (const char* method : kMethods) {
    std::ifstream file(dir + "/" + method + ".bin", std::ios::binary);
    if (!file) { std::cerr << "missing " << dir << "/" << method << ".bin\n"; return 2; }
    std::stringstream bytes;
    bytes << file.rdbuf();
    answers.emplace(std::string(kService) + method, grpc::Slice(bytes.str()));
  }

  // Block SIGTERM/SIGINT before gRPC starts its threads (they inherit the mask), so that only sigwait below
  // sees them and the shutdown runs on this thread, not in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  EmptyService service(std::move(answers));
  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(host + ":" + port, grpc::InsecureServerCredentials(), &selected_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // as empty_server.py: port 0 never shares a port
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || selected_port == 0) { std::cerr << "cannot listen on " << host << ":" << port << "\n"; return 1; }
  std::printf("serving empty-cpp on %s:%d\n", host.c_str(), selected_port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));  // then open streams are cancelled
  return 0;
}
