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
         bool reuse_port, const std::map<std::string, std::string>& messages, py::object on_batch)
      : on_batch_(std::move(on_batch)) {
    door::Messages texts{messages.at("queue_full"), messages.at("deadline_in_queue"), messages.at("server_busy"),
                         messages.at("flagged_parameter")};
    door_ = std::make_unique<door::Door>(listen, upstream, max_message_bytes, max_queued_bytes, reuse_port, texts,
                                         [this](uint64_t id, const std::string& model, const std::string& version,
                                                int64_t width, std::vector<door::Pending>& members) {
                                           Hand(id, model, version, width, members);
                                         });
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
  std::map<std::string, int64_t> waiting() { return door_->Waiting(); }

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
      const auto now = door::Clock::now();
      for (const auto& m : members) {
        std::memcpy(out, m.data.data(), m.data.size() * sizeof(float));
        out += m.data.size();
        counts.append(m.rows);
        waited.append(std::chrono::duration_cast<std::chrono::nanoseconds>(now - m.enqueued).count());
      }
      try {
        on_batch_(id, model, version, inputs, counts, waited);
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
                    const std::map<std::string, std::string>&, py::object>(),
           py::arg("listen"), py::arg("upstream"), py::arg("max_message_bytes"), py::arg("max_queued_bytes"),
           py::arg("reuse_port"),
           py::arg("messages"), py::arg("on_batch"))
      .def_property_readonly("port", &PyDoor::port)
      .def("counts", &PyDoor::counts, "(calls batched here, calls forwarded to the Python door)")
      .def("set_model", &PyDoor::set_model)
      .def("drop_model", &PyDoor::drop_model)
      .def("waiting", &PyDoor::waiting, "requests queued per model")
      .def("complete", &PyDoor::complete)
      .def("fail", &PyDoor::fail)
      .def("reroute", &PyDoor::reroute)
      .def("shutdown", &PyDoor::shutdown);
}
