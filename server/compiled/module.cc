// The Python face of the door (driftline.server.compiled._door): Python builds it, tells it which models it may
// take, and answers each batch it is handed with complete(), fail() or reroute().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "door.h"

namespace py = pybind11;

namespace {

class PyDoor {
 public:
  PyDoor(const std::string& listen, const std::string& upstream, int max_message_bytes, int64_t max_queued_bytes,
         bool reuse_port, const std::map<std::string, std::string>& messages, py::object on_batch,
         const std::string& tls_cert, const std::string& tls_key, const std::string& tls_client_ca, bool traceparents)
      : on_batch_(std::move(on_batch)) {
    door::Messages texts{messages.at("queue_full"), messages.at("deadline_in_queue"), messages.at("server_busy"),
                         messages.at("flagged_parameter")};
    door_ = std::make_unique<door::Door>(listen, upstream, max_message_bytes, max_queued_bytes, reuse_port, texts,
                                         [this](uint64_t id, const std::string& model, const std::string& version,
                                                int64_t width, std::vector<door::Pending>& members) {
                                           Hand(id, model, version, width, members);
                                         },
                                         door::Options{tls_cert, tls_key, tls_client_ca, traceparents});
  }
  ~PyDoor() {
    py::gil_scoped_release release;  // the queue's thread may be waiting for the GIL to hand a batch over
    door_.reset();
  }

  int port() const { return door_->port(); }
  std::pair<uint64_t, uint64_t> counts() const { return {door_->batched.load(), door_->forwarded.load()}; }

  void set_model(const std::string& name, const std::string& version, const std::string& input, int64_t width,
                 const std::vector<std::tuple<std::string, std::string, size_t>>& outputs,
                 const std::tuple<int64_t, int64_t, int64_t, int64_t>& batching) {
    auto spec = std::make_shared<door::ModelSpec>();
    spec->version = version;
    spec->input = input;
    spec->width = width;
    for (const auto& [name, datatype, itemsize] : outputs) spec->outputs.push_back({name, datatype, itemsize});
    std::tie(spec->max_batch_size, spec->max_queue_delay_us, spec->max_queue_size, spec->max_concurrent_batches) =
        batching;
    door_->SetModel(name, spec);
  }
  void drop_model(const std::string& name) { door_->DropModel(name); }
  // The cheap reads the door answers itself (reads.h), as the Python door would answer them now.
  void set_reads(const std::string& name, const std::string& version, const py::bytes& metadata) {
    door_->reads.SetModel(name, version, metadata);
  }
  void drop_reads(const std::string& name) { door_->reads.DropModel(name); }
  void set_ready(bool ready) { door_->reads.SetReady(ready); }
  void set_server_metadata(const py::bytes& response) { door_->reads.SetServerMetadata(response); }
  uint64_t answered() const { return door_->answered.load(); }
  int64_t stream_window() const { return door_->stream_window.load(); }
  void set_stream_window(int64_t window) { door_->stream_window = std::max<int64_t>(window, 1); }
  std::map<std::string, int64_t> waiting() { return door_->Waiting(); }
  std::vector<std::tuple<std::string, std::string, int, int64_t, int64_t, int64_t>> refused() {
    std::vector<std::tuple<std::string, std::string, int, int64_t, int64_t, int64_t>> out;
    for (const auto& r : door_->TakeRefused()) out.emplace_back(r.model, r.version, r.code, r.count, r.ns, r.expired);
    return out;
  }
  int64_t admit(int64_t size) {  // -1: admitted; else the bytes held, over the bound with this request
    int64_t held = 0;
    return door_->Admit(size, &held) ? -1 : held;
  }
  void release(int64_t size) { door_->Release(size); }
  int64_t max_queued_bytes() const { return door_->max_queued_bytes(); }

  void complete(uint64_t id, const std::string& version, const std::vector<std::string>& names,
                const std::vector<std::string>& datatypes, const std::vector<py::array>& arrays,
                const std::vector<int64_t>& flagged) {
    std::vector<door::Door::Output> outputs;
    for (size_t i = 0; i < arrays.size(); ++i) {
      const py::array& a = arrays[i];
      if (!(a.flags() & py::array::c_style) || a.ndim() < 1)
        throw std::invalid_argument("outputs must be C-contiguous arrays with a batch dimension");
      std::vector<int64_t> trailing(a.shape() + 1, a.shape() + a.ndim());
      size_t row_bytes = a.itemsize();
      for (int64_t d : trailing) row_bytes *= d;
      outputs.push_back({names.at(i), datatypes.at(i), static_cast<const char*>(a.data()), row_bytes, trailing});
    }
    py::gil_scoped_release release;  // the arrays stay referenced by the caller meanwhile
    door_->Complete(id, version, outputs, flagged);
  }
  void fail(uint64_t id, int code, const std::string& message) {
    py::gil_scoped_release release;
    door_->Fail(id, static_cast<grpc::StatusCode>(code), message);
  }
  void reroute(uint64_t id) {
    py::gil_scoped_release release;
    door_->Reroute(id);
  }
  void shutdown(double grace_s) {
    py::gil_scoped_release release;
    door_->Shutdown(grace_s);
  }

 private:
  // On the queue's thread: one GIL acquisition per batch, its rows copied into one contiguous array.
  void Hand(uint64_t id, const std::string& model, const std::string& version, int64_t width,
            std::vector<door::Pending>& members) {
    bool handed = false;
    {
      py::gil_scoped_acquire gil;
      int64_t rows = 0;
      for (const auto& m : members) rows += m.rows;
      py::array_t<float> inputs({rows, width});
      float* out = inputs.mutable_data();
      py::list counts, waited;
      py::object traceparents = py::none();  // each request's, while Python traces
      if (door_->traceparents()) {
        py::list kept;
        for (const auto& m : members)  // Latin-1 cannot fail to decode: a hostile header reaches Python as text
          kept.append(py::reinterpret_steal<py::str>(
              PyUnicode_DecodeLatin1(m.traceparent.data(), static_cast<Py_ssize_t>(m.traceparent.size()), nullptr)));
        traceparents = kept;
      }
      const auto now = door::Clock::now();
      for (const auto& m : members) {
        std::memcpy(out, m.data.data(), m.data.size() * sizeof(float));
        out += m.data.size();
        counts.append(m.rows);
        waited.append(std::chrono::duration_cast<std::chrono::nanoseconds>(now - m.enqueued).count());
      }
      try {
        on_batch_(id, model, version, inputs, counts, waited, traceparents);
        handed = true;
      } catch (py::error_already_set& error) {
        error.discard_as_unraisable("driftline compiled door: handing a batch to Python");
      }
    }
    if (!handed) door_->Fail(id, grpc::StatusCode::UNAVAILABLE, "server is shutting down");
  }

  py::object on_batch_;
  std::unique_ptr<door::Door> door_;
};

}  // namespace

PYBIND11_MODULE(_door, m) {
  m.doc() = "driftline's compiled gRPC front end (server/compiled/)";
  py::class_<PyDoor>(m, "Door")
      .def(py::init<const std::string&, const std::string&, int, int64_t, bool,
                    const std::map<std::string, std::string>&, py::object, const std::string&, const std::string&,
                    const std::string&, bool>(),
           py::arg("listen"), py::arg("upstream"), py::arg("max_message_bytes"), py::arg("max_queued_bytes"),
           py::arg("reuse_port"),
           py::arg("messages"), py::arg("on_batch"), py::arg("tls_cert") = "", py::arg("tls_key") = "",
           py::arg("tls_client_ca") = "", py::arg("traceparents") = false)
      .def_property_readonly("port", &PyDoor::port)
      .def("counts", &PyDoor::counts, "(calls batched here, calls forwarded to the Python door)")
      .def("set_model", &PyDoor::set_model)
      .def("drop_model", &PyDoor::drop_model)
      .def("set_reads", &PyDoor::set_reads, "a model's default version and its serialized ModelMetadataResponse")
      .def("drop_reads", &PyDoor::drop_reads)
      .def("set_ready", &PyDoor::set_ready, "what ServerReady answers")
      .def("set_server_metadata", &PyDoor::set_server_metadata, "the serialized ServerMetadataResponse")
      .def("answered", &PyDoor::answered, "read calls answered by the door itself")
      .def_property("stream_window", &PyDoor::stream_window, &PyDoor::set_stream_window,
                    "a ModelStreamInfer's messages between read and answered (--stream-window)")
      .def("waiting", &PyDoor::waiting, "requests queued per model")
      .def("refused", &PyDoor::refused,
           "[(model, version, grpc code, count, ns, expired)] refused by the queue since the last call")
      .def("admit", &PyDoor::admit, "-1 when these bytes fit the --max-queued-bytes budget (now held), else what is held")
      .def("release", &PyDoor::release)
      .def_property_readonly("max_queued_bytes", &PyDoor::max_queued_bytes)
      .def("complete", &PyDoor::complete)
      .def("fail", &PyDoor::fail)
      .def("reroute", &PyDoor::reroute)
      .def("shutdown", &PyDoor::shutdown);
}
