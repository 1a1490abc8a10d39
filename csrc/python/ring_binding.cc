// pyfastq._core's Ring: a ring bound for Python's producers (put, put_many,
// reserve, ordered turns, position tracking, writers), and its Reservation.
//
// Python hands over a flat list of components per element. The fast path here
// accepts only C-contiguous numpy arrays whose dtype and shape match the specs
// exactly and returns False for anything else, so that Python can convert the
// element (or raise the precise error) and call again. A rejected element
// leaves the ring unchanged: slots are only acquired after validation.
//
// Variable shapes: a spec dim of -1 (None) has a bound, and the slot is sized
// for the bounds. An element's data sits compact at the start of its
// component, so the op can alias it at its true shape; the true dims of every
// variable component go in one more ring component after the specs' (int64s,
// in component order), which the op reads.
#include "ring_binding.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "compat.h"
#include "errors.h"
#include "fast_put.h"
#include "gil.h"
#include "pyfastq/ring_memory.h"

namespace py = pybind11;

namespace pyfastq {
namespace {

// exact()'s rows for one element: no leading dim.
constexpr std::optional<py::ssize_t> kOneElement = std::nullopt;

// A blocked call wakes this often to let Ctrl-C (PyErr_CheckSignals) through.
constexpr auto kSignalCheck = std::chrono::milliseconds(50);

// Test hook: while above zero, the next slot fill (the step of put, put_many
// and reserve between taking slots and committing them) raises MemoryError, as
// a failed allocation there would, and counts it down. Only tests set it
// (_core._fail_next_fills): nothing else makes that step fail on demand.
std::atomic<std::uint32_t> g_failing_fills{0};

// Called with the GIL held once a put's slots are taken, before they are filled.
void fill_checkpoint() {
  std::uint32_t n = g_failing_fills.load(std::memory_order_relaxed);  // the hot path: one load of zero
  while (n != 0 && !g_failing_fills.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
  }
  if (n == 0) return;
  throw OutOfMemoryError("injected by pyfastq._core._fail_next_fills (a test hook)");
}

Deadline deadline_from(const py::object& timeout) {
  if (timeout.is_none()) return no_deadline();
  const double seconds = timeout.cast<double>();
  if (!(seconds >= 0)) throw py::value_error("timeout must be None or a number >= 0, got " + py::repr(timeout).cast<std::string>());
  if (seconds > 1e9) return no_deadline();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Slots a producer has taken and not yet handed on: given back (Ring::abort)
// unless committed, so an exception between taking and committing them (an
// array or capsule allocation, the GIL's unwind at exit) loses none. A lost
// slot would also count as a put under way for good, and consumers of the
// closed ring would wait for it forever. (The kernels' SlotLease is the
// consumers' counterpart.) Producer side, on the thread that took the slots.
class HeldSlots {
 public:
  HeldSlots(Ring* ring, const std::uint32_t* slots, std::uint32_t n) noexcept : ring_(ring), slots_(slots), n_(n) {}
  ~HeldSlots() {
    for (std::uint32_t i = 0; i < n_; ++i) ring_->abort(slots_[i]);
  }
  HeldSlots(const HeldSlots&) = delete;
  HeldSlots& operator=(const HeldSlots&) = delete;

  // Publishes the filled slots to consumers.
  void commit() noexcept {
    for (std::uint32_t i = 0; i < n_; ++i) ring_->commit(slots_[i]);
    n_ = 0;
  }
  // The slots have a new owner (a Reservation), which commits or aborts them.
  void release() noexcept { n_ = 0; }

 private:
  Ring* ring_;
  const std::uint32_t* slots_;
  std::uint32_t n_;
};

// One reserved slot, exposed as writable numpy views.
class Reservation {
 public:
  Reservation(std::shared_ptr<RingMemory> mem, std::uint32_t slot, py::list views)
      : mem_(std::move(mem)), slot_(slot), views_(std::move(views)) {}
  ~Reservation() {
    // Dropped without commit or abort (an exception, a lost reference): nothing is enqueued.
    if (active_) mem_->ring().abort(slot_);
  }
  py::list views() const { return views_; }
  bool active() const { return active_; }
  void commit() { finish(true); }
  void abort() { finish(false); }

 private:
  void finish(bool commit) {
    if (!active_) throw py::value_error("this reservation was already committed or aborted");
    active_ = false;
    HeldSlots held(&mem_->ring(), &slot_, 1);  // aborted if this raises, or unless committed
    // Once committed the slot is the consumers': the views must not write into it.
    for (auto v : views_) v.attr("setflags")(py::arg("write") = false);
    if (commit) held.commit();
  }
  std::shared_ptr<RingMemory> mem_;
  std::uint32_t slot_;
  py::list views_;
  bool active_ = true;
};

// Where each component's dims go, and the bytes of every ring component: the
// specs' (sized by their bounds), then the dims component if any is variable.
struct Shapes {
  std::vector<std::vector<py::ssize_t>> spec;    // -1 where the spec has None
  std::vector<std::vector<py::ssize_t>> bounds;  // spec with each -1 replaced by its bound
  std::vector<bool> variable;
  std::vector<std::size_t> dims_at;  // a variable component's first dim in the dims component
  std::size_t num_dims = 0;

  Shapes(std::vector<std::vector<py::ssize_t>> spec_shapes, const std::optional<std::vector<std::vector<py::ssize_t>>>& max)
      : spec(std::move(spec_shapes)), bounds(max ? *max : spec) {
    if (bounds.size() != spec.size()) throw py::value_error("shapes and bounds differ in length");
    for (std::size_t i = 0; i < spec.size(); ++i) {
      if (bounds[i].size() != spec[i].size()) throw py::value_error("a bound differs in rank from its shape");
      bool var = false;
      for (std::size_t d = 0; d < spec[i].size(); ++d) {
        if (bounds[i][d] < 0) throw py::value_error("component shapes must be fully defined or bounded");
        if (spec[i][d] < 0) {
          var = true;
        } else if (spec[i][d] != bounds[i][d]) {
          throw py::value_error("a bound differs from its shape in a defined dim");
        }
      }
      variable.push_back(var);
      dims_at.push_back(num_dims);
      if (var) num_dims += spec[i].size();
    }
  }
  bool any_variable() const { return num_dims != 0; }
};

std::vector<std::uint64_t> component_bytes(const std::vector<py::dtype>& dtypes, const Shapes& shapes) {
  if (dtypes.size() != shapes.spec.size()) throw py::value_error("dtypes and shapes differ in length");
  std::vector<std::uint64_t> nbytes;
  for (std::size_t i = 0; i < dtypes.size(); ++i) {
    // Saturating: an element too large to count makes the ring too large to allocate (a MemoryError), not a small one.
    std::uint64_t n = static_cast<std::uint64_t>(dtypes[i].itemsize());
    for (auto d : shapes.bounds[i]) {
      if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) n = kTooManyBytes;
    }
    nbytes.push_back(n);
  }
  if (shapes.any_variable()) nbytes.push_back(shapes.num_dims * sizeof(std::int64_t));
  return nbytes;
}

RingOptions ring_options(bool shuffle, std::uint32_t min_after_dequeue, std::uint64_t seed) {
  RingOptions options;
  options.shuffle = shuffle;
  options.min_after_dequeue = min_after_dequeue;
  options.seed = seed;
  return options;
}

using MaybeShapes = std::optional<std::vector<std::vector<py::ssize_t>>>;

}  // namespace

class PyRing {
 public:
  // A new ring; with `shared`, in shared memory that attach() maps in other
  // processes. `bounds`: the shapes with each -1 replaced by its bound.
  PyRing(std::uint32_t capacity, const std::vector<py::dtype>& dtypes, const std::vector<std::vector<py::ssize_t>>& shapes,
         std::string name, bool shared, const MaybeShapes& bounds, bool shuffle, std::uint32_t min_after_dequeue,
         std::uint64_t seed)
      : PyRing(capacity, dtypes, Shapes(shapes, bounds), std::move(name), shared,
               ring_options(shuffle, min_after_dequeue, seed)) {}

  // RingMemory::create, its system errors (no room in /dev/shm) as OSError with their errno, and a ring
  // too large for memory as MemoryError saying how many bytes it needs (RingAllocError's what()).
  static std::shared_ptr<RingMemory> create_memory(std::uint32_t capacity, const std::vector<std::uint64_t>& nbytes,
                                                   bool shared, const RingOptions& options, const std::string& name) {
    try {
      return RingMemory::create(capacity, nbytes, shared, options);
    } catch (const std::bad_alloc& e) {
      throw OutOfMemoryError("queue '" + name + "': " + e.what());
    } catch (const std::system_error& e) {
      throw SystemCallError(e.code().value(), e.what());
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }

  // The shared ring behind `fd` (made by another process's PyRing(shared=true)), checked against the specs.
  static std::unique_ptr<PyRing> attach(int fd, const std::vector<py::dtype>& dtypes,
                                        const std::vector<std::vector<py::ssize_t>>& spec_shapes, std::string name,
                                        const MaybeShapes& bounds) {
    Shapes shapes(spec_shapes, bounds);
    const auto nbytes = component_bytes(dtypes, shapes);
    std::shared_ptr<RingMemory> mem;
    try {
      mem = RingMemory::attach(fd);
    } catch (const std::runtime_error& e) {
      throw py::value_error("cannot attach to queue '" + name + "': " + e.what());
    }
    const Ring& ring = mem->ring();
    bool same = ring.num_components() == nbytes.size();
    for (std::uint32_t i = 0; same && i < nbytes.size(); ++i) same = ring.component(i).nbytes == nbytes[i];
    if (!same) throw py::value_error("cannot attach to queue '" + name + "': its ring holds other components than the specs");
    return std::unique_ptr<PyRing>(new PyRing(std::move(mem), dtypes, shapes, std::move(name)));
  }

  // Puts one element; False (and nothing done) if a component is not an exact-match array.
  // With a ticket (ordered producers) it first waits for the ticket's turn.
  // With a tag, the element reads that position of a run (Ring::set_tag).
  bool put(const py::sequence& comps, const py::object& timeout, std::optional<std::uint64_t> ticket,
           std::optional<std::uint64_t> tag) {
    std::vector<py::array> arrays;
    if (!exact(comps, kOneElement, &arrays)) return false;
    put_arrays(arrays, timeout, ticket, tag);
    return true;
  }

  // put() for a ring of one component, given the array itself: the producer's hot path.
  // One element of a one-component ring, for Queue.put's builtin (make_fast_put),
  // without pybind11's argument handling in the way: an exact array goes into
  // the ring, and anything else returns false before anything is done, for the
  // caller to convert.
  // With a tag, the element reads that position of a run (Ring::set_tag).
  bool put_exact(PyObject* obj, PyObject* timeout, std::optional<std::uint64_t> tag = std::nullopt) {
    if (dtypes_.size() != 1) return false;
    compat::ArrayView a;
    if (!compat::exact_array(obj, dtypes_[0].ptr(), &a)) return false;
    if (!fits(0, a.shape, static_cast<std::size_t>(a.ndim))) return false;
    std::size_t nbytes = itemsize_;
    for (int d = 0; d < a.ndim; ++d) nbytes *= static_cast<std::size_t>(a.shape[d]);
    const Deadline deadline =
        timeout == Py_None ? no_deadline() : deadline_from(py::reinterpret_borrow<py::object>(timeout));
    std::uint32_t slot;
    acquire(&slot, 1, false, deadline);
    HeldSlots held(ring_, &slot, 1);
    fill_checkpoint();
    std::uint8_t* dst = ring_->slot_data(slot) + ring_->component(0).offset;
    copy_releasing_gil_if_large(nbytes, [&] { std::memcpy(dst, a.data, nbytes); });
    if (shapes_.variable[0]) write_dims(slot, 0, a.shape);
    if (tag) ring_->set_tag(slot, *tag);
    held.commit();
    return true;
  }

  void put_arrays(const std::vector<py::array>& arrays, const py::object& timeout, std::optional<std::uint64_t> ticket,
                  std::optional<std::uint64_t> tag = std::nullopt) {
    const Deadline deadline = deadline_from(timeout);
    if (ticket) wait_turn(*ticket, deadline);
    std::uint32_t slot;
    acquire(&slot, 1, false, deadline);
    HeldSlots held(ring_, &slot, 1);
    copy_rows(&slot, 1, arrays, 0);
    if (tag) ring_->set_tag(slot, *tag);
    held.commit();
    if (ticket) ring_->pass_turn(*ticket);
  }

  void begin_turns(std::uint32_t workers, std::uint64_t first) {
    if (!ring_->begin_turns_at(workers, first)) {
      throw py::value_error("ordered producers: 1 to " + std::to_string(kMaxTurnWorkers) + " workers, got " +
                            std::to_string(workers));
    }
  }
  void finish_turns(std::uint32_t worker, std::uint64_t count) { ring_->finish_turns(worker, count); }
  // A producer that puts several elements (put_many) in one turn takes the turn itself:
  // wait_turn_until, its puts, then pass_turn.
  void wait_turn_until(std::uint64_t ticket, const py::object& timeout) { wait_turn(ticket, deadline_from(timeout)); }
  void pass_turn(std::uint64_t ticket) { ring_->pass_turn(ticket); }

  // Puts every row along dim 0. With a timeout, all rows or none: their slots
  // are taken at once, none held while waiting. Without one, rows go in as
  // slots come free (as TF's enqueue_many), so a consumer waiting for a batch
  // is never starved by a producer holding half of the ring.
  // With a tag, the last row reads that position of a run: the row whose taking completes the item.
  bool put_many(const py::sequence& comps, const py::object& timeout, std::optional<std::uint64_t> tag) {
    if (comps.size() == 0) return false;
    const py::object first = comps[0];
    if (!py::isinstance<py::array>(first) || first.cast<py::array>().ndim() < 1) return false;
    const py::ssize_t rows = first.cast<py::array>().shape(0);
    std::vector<py::array> arrays;
    if (!exact(comps, rows, &arrays)) return false;
    const Deadline deadline = deadline_from(timeout);
    const std::uint32_t cap = ring_->capacity();
    const bool all_or_nothing = !timeout.is_none();
    if (all_or_nothing && static_cast<std::uint64_t>(rows) > cap) {
      throw py::value_error("put_many of " + std::to_string(rows) + " elements into '" + name_ + "' of capacity " +
                            std::to_string(cap) + " cannot be all-or-nothing within a timeout; pass timeout=None");
    }
    std::vector<std::uint32_t> slots(std::min<std::uint64_t>(rows, cap));
    // One put for all its rows: a close() while it waits lets every row in.
    PutUnderWay put(*this);
    for (py::ssize_t done = 0; done < rows;) {
      const std::uint32_t want = static_cast<std::uint32_t>(std::min<py::ssize_t>(rows - done, cap));
      const std::uint32_t got = acquire_begun(slots.data(), want, !all_or_nothing, deadline, done);
      HeldSlots held(ring_, slots.data(), got);
      copy_rows(slots.data(), got, arrays, done);
      if (tag && done + got == rows) ring_->set_tag(slots[got - 1], *tag);
      held.commit();
      done += got;
    }
    return true;
  }

  // One slot as writable views: of the specs' shapes, or for a queue with
  // variable dims, of `shapes` (one per component, each within its bound).
  std::unique_ptr<Reservation> reserve(const py::object& timeout, const MaybeShapes& shapes) {
    std::vector<std::vector<py::ssize_t>> view_shapes = shapes_.spec;
    if (shapes_.any_variable()) {
      if (!shapes) {
        throw py::value_error("queue '" + name_ + "' has components of variable shape: reserve(shapes=...) needs the element's shapes");
      }
      if (shapes->size() != dtypes_.size()) throw py::value_error("reserve(shapes=...) needs one shape per component");
      for (std::size_t i = 0; i < dtypes_.size(); ++i) {
        if (!fits(i, (*shapes)[i].data(), (*shapes)[i].size())) {
          throw py::value_error("reserve: component " + std::to_string(i) + " cannot have shape " +
                                shape_string((*shapes)[i]) + " (spec " + shape_string(shapes_.spec[i]) + ", bound " +
                                shape_string(shapes_.bounds[i]) + ")");
        }
      }
      view_shapes = *shapes;
    }
    const Deadline deadline = deadline_from(timeout);
    std::uint32_t slot;
    acquire(&slot, 1, false, deadline);
    HeldSlots held(ring_, &slot, 1);
    py::list views;
    // Each view keeps the ring's memory alive, whatever happens to the queue.
    auto* keep = new std::shared_ptr<RingMemory>(mem_);
    py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<RingMemory>*>(p); });
    for (std::size_t i = 0; i < dtypes_.size(); ++i) {
      void* data = ring_->slot_data(slot) + ring_->component(static_cast<std::uint32_t>(i)).offset;
      fill_checkpoint();
      views.append(py::array(dtypes_[i], view_shapes[i], data, owner));
      if (shapes_.variable[i]) write_dims(slot, i, view_shapes[i].data());
    }
    auto reservation = std::make_unique<Reservation>(mem_, slot, std::move(views));
    held.release();
    return reservation;
  }

  // Positions (Ring::begin_tracking): every one below watermark taken, and those of `taken` too.
  void begin_tracking(std::uint64_t watermark, const std::vector<std::uint64_t>& taken) {
    for (auto p : taken) {
      if (p < watermark || p - watermark >= kTakenWindow) {
        throw py::value_error("a taken position " + std::to_string(p) + " is not within " +
                              std::to_string(kTakenWindow) + " above the watermark " + std::to_string(watermark));
      }
    }
    ring_->begin_tracking(watermark);
    for (auto p : taken) ring_->mark_taken(p);
  }
  // (watermark, positions taken above it, overflowed): what consumers have taken so far.
  py::tuple taken_state() const {
    std::vector<std::uint64_t> above;
    std::uint64_t last;
    {
      ReleaseGil nogil;  // a scan of kTakenWindow bits
      const std::uint64_t first = ring_->taken_watermark();
      for (std::uint64_t p = first; p < first + kTakenWindow; ++p) {
        if (ring_->taken(p)) above.push_back(p);
      }
      // Positions below the watermark read now are taken whatever the scan saw of them.
      last = ring_->taken_watermark();
    }
    above.erase(std::remove_if(above.begin(), above.end(), [&](std::uint64_t p) { return p < last; }), above.end());
    return py::make_tuple(last, above, ring_->tracking_overflowed());
  }
  // This process's puts are writer `writer`'s (Ring::set_writer); each slot it commits
  // adds one to the uint64 at word `word` of `counter` (shared memory the caller keeps mapped).
  void set_writer(std::uint32_t writer, const py::object& counter, std::size_t word) {
    std::atomic<std::uint64_t>* commits = nullptr;
    if (!counter.is_none()) {
      const py::buffer_info info = counter.cast<py::buffer>().request(true);
      if (static_cast<std::size_t>(info.size * info.itemsize) < (word + 1) * 8) throw py::value_error("counter too small");
      commits = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<std::uint64_t*>(info.ptr) + word);
      counter_ = counter;  // the word must outlive the writer
    }
    if (!ring_->set_writer(writer, commits)) {
      throw py::value_error("writer must be below " + std::to_string(kMaxWriters) + ", got " + std::to_string(writer));
    }
  }
  std::uint32_t reclaim_writer(std::uint32_t writer) {
    ReleaseGil nogil;
    return ring_->reclaim_writer(writer);
  }
  std::uint64_t turn() const { return ring_->turn(); }
  bool close(bool cancel) { return ring_->close(cancel); }
  bool fail(const std::string& message) { return ring_->fail(message.data(), message.size()); }
  std::uint64_t size() const { return ring_->size(); }
  std::uint32_t capacity() const { return ring_->capacity(); }
  std::uint64_t id() const { return mem_->id(); }
  int fd() const { return mem_->fd(); }
  // (pinned, why not): the GPU kernel pins the ring at its first dequeue; tests and tools may ask sooner.
  std::pair<bool, std::string> pin() {
    std::string why;
    bool pinned;
    {
      ReleaseGil release;  // registering a large block with the CUDA runtime takes a while
      pinned = mem_->pin(&why);
    }
    return {pinned, why};
  }
  std::string state() const {
    switch (ring_->state()) {
      case State::kOpen: return "open";
      case State::kClosed: return "closed";
      case State::kCancelled: return "cancelled";
      case State::kFailed: return "failed";
    }
    return "unknown";
  }
  std::string fail_message() const { return ring_->fail_message(); }
  py::dict stats() const {
    const Counters c = ring_->counters();
    py::dict d;
    d["puts"] = c.puts;
    d["gets"] = c.gets;
    d["size"] = c.size;
    d["put_wait_s"] = c.put_wait_ns * 1e-9;
    d["get_wait_s"] = c.get_wait_ns * 1e-9;
    d["put_blocked_s"] = c.put_blocked_ns * 1e-9;
    d["get_blocked_s"] = c.get_blocked_ns * 1e-9;
    d["put_waiters"] = c.put_waiters;
    d["get_waiters"] = c.get_waiters;
    py::list hist;
    for (std::uint64_t bin : c.fill_hist) hist.append(bin);
    d["fill_histogram"] = hist;
    d["capacity"] = ring_->capacity();
    d["slot_bytes"] = ring_->slot_bytes();
    d["memory_bytes"] = mem_->bytes();
    d["shared"] = mem_->fd() >= 0;
    d["shuffle"] = ring_->shuffled();
    d["min_after_dequeue"] = ring_->min_after_dequeue();
    d["pinned"] = mem_->pinned();
    return d;
  }

 private:
  PyRing(std::uint32_t capacity, const std::vector<py::dtype>& dtypes, const Shapes& shapes, std::string name,
         bool shared, const RingOptions& options)
      // name is copied, not moved: create_memory reads it, and arguments are evaluated in no set order.
      : PyRing(create_memory(capacity, component_bytes(dtypes, shapes), shared, options, name), dtypes, shapes, name) {}
  PyRing(std::shared_ptr<RingMemory> mem, const std::vector<py::dtype>& dtypes, const Shapes& shapes, std::string name)
      : mem_(std::move(mem)),
        ring_(&mem_->ring()),
        dtypes_(dtypes),
        itemsize_(dtypes_.empty() ? 0 : static_cast<std::size_t>(dtypes_[0].itemsize())),
        shapes_(shapes),
        name_(std::move(name)) {}

  static std::string shape_string(const std::vector<py::ssize_t>& shape) {
    std::string out = "[";
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (d) out += ", ";
      out += shape[d] < 0 ? "None" : std::to_string(shape[d]);
    }
    return out + "]";
  }

  // Whether `dims` (rank `rank`) is a shape component i may have: its spec's
  // rank, the spec's defined dims, and within the bound where the spec has None.
  bool fits(std::size_t i, const py::ssize_t* dims, std::size_t rank) const {
    const auto& spec = shapes_.spec[i];
    if (rank != spec.size()) return false;
    for (std::size_t d = 0; d < rank; ++d) {
      if (spec[d] >= 0 ? dims[d] != spec[d] : dims[d] < 0 || dims[d] > shapes_.bounds[i][d]) return false;
    }
    return true;
  }

  // A variable component's true dims, into the slot's dims component.
  void write_dims(std::uint32_t slot, std::size_t i, const py::ssize_t* dims) {
    const std::uint32_t dims_component = static_cast<std::uint32_t>(dtypes_.size());
    auto* out = reinterpret_cast<std::int64_t*>(ring_->slot_data(slot) + ring_->component(dims_component).offset) +
                shapes_.dims_at[i];
    for (std::size_t d = 0; d < shapes_.spec[i].size(); ++d) out[d] = static_cast<std::int64_t>(dims[d]);
  }

  // True if every component is a C-contiguous array of exactly the spec's
  // dtype and shape (for put_many, with a leading dim of `rows` rows).
  bool exact(const py::sequence& comps, std::optional<py::ssize_t> rows, std::vector<py::array>* out) const {
    if (comps.size() != dtypes_.size()) return false;
    out->reserve(dtypes_.size());
    for (std::size_t i = 0; i < dtypes_.size(); ++i) {
      if (!exact_item(i, comps[i], rows, out)) return false;
    }
    return true;
  }

  bool exact_item(std::size_t i, const py::handle& obj, std::optional<py::ssize_t> rows, std::vector<py::array>* out) const {
    if (!py::isinstance<py::array>(obj)) return false;
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!(a.flags() & py::array::c_style) || !a.dtype().equal(dtypes_[i])) return false;
    const py::ssize_t lead = rows ? 1 : 0;
    if (a.ndim() < lead || (rows && a.shape(0) != *rows)) return false;
    if (!fits(i, a.shape() + lead, static_cast<std::size_t>(a.ndim() - lead))) return false;
    out->push_back(std::move(a));
    return true;
  }

  // Takes n free slots (with allow_smaller, at least one) and returns how
  // many, waiting with the GIL released in slices so Ctrl-C gets through.
  // The fast path is try_acquire; a put that must wait begins (Ring::begin_put)
  // first, so a close() while it waits lets it complete, as in TF's FIFOQueue.
  std::uint32_t acquire(std::uint32_t* slots, std::uint32_t n, bool allow_smaller, Deadline deadline) {
    Status why;
    if (n == 1 && ring_->try_acquire(slots, &why)) return 1;
    if (n == 1 && why != Status::kTimeout) raise_ended();
    PutUnderWay put(*this);
    return acquire_begun(slots, n, allow_smaller, deadline, 0);
  }

  // acquire() for a put already begun; `done` rows of it went in before (for the error).
  std::uint32_t acquire_begun(std::uint32_t* slots, std::uint32_t n, bool allow_smaller, Deadline deadline,
                              std::uint64_t done) {
    std::uint32_t got = 0;
    const Status st = ring_->acquire_begun(n, slots, &got, allow_smaller, Clock::now());
    if (st == Status::kOk) return got;
    if (st != Status::kTimeout) raise_ended(done);
    wait_sliced(
        deadline, "no free slot in queue '" + name_ + "' before the timeout",
        [&](Deadline slice) { return ring_->acquire_begun(n, slots, &got, allow_smaller, slice); }, done);
    return got;
  }

  // A put under way (Ring::begin_put) for the lifetime of this object.
  class PutUnderWay {
   public:
    explicit PutUnderWay(const PyRing& owner) : ring_(owner.ring_) {
      if (!ring_->begin_put()) owner.raise_ended();
    }
    ~PutUnderWay() { ring_->end_put(); }
    PutUnderWay(const PutUnderWay&) = delete;
    PutUnderWay& operator=(const PutUnderWay&) = delete;

   private:
    Ring* ring_;
  };

  // An ordered producer's wait for its ticket's turn.
  void wait_turn(std::uint64_t ticket, Deadline deadline) {
    if (ring_->turn() == ticket) return;
    wait_sliced(deadline, "queue '" + name_ + "': ticket " + std::to_string(ticket) + "'s turn did not come before the timeout",
                [&](Deadline slice) { return ring_->wait_turn(ticket, slice); });
  }

  // Calls wait(slice) with the GIL released in slices up to the deadline, so
  // Ctrl-C gets through, until it returns kOk; raises TimeoutError or QueueClosed otherwise.
  template <typename F>
  void wait_sliced(Deadline deadline, const std::string& timeout_message, F wait, std::uint64_t done = 0) {
    for (;;) {
      const Deadline slice = std::min(deadline, Clock::now() + kSignalCheck);
      Status st;
      {
        ReleaseGil nogil;  // parked: let other threads run
        st = wait(slice);
      }
      if (st == Status::kOk) return;
      if (st != Status::kTimeout) raise_ended(done);
      if (Clock::now() >= deadline) {
        throw TimeoutError(timeout_message);
      }
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  // QueueClosed for a put the ring refused; `enqueued`: rows of a put_many that went in before.
  [[noreturn]] void raise_ended(std::uint64_t enqueued = 0) const {
    const State s = ring_->state();
    const char* why = s == State::kFailed ? "has failed" : s == State::kCancelled ? "was cancelled" : "is closed";
    std::string message = "queue '" + name_ + "' " + why + ": no more puts";
    if (enqueued != 0) message += " (" + std::to_string(enqueued) + " rows of this put_many went in before)";
    throw QueueClosedError(message, enqueued);
  }

  // Copies rows first_row.. of `arrays` (one row per slot), each compact at
  // the start of its component, and writes the dims of variable components.
  void copy_rows(const std::uint32_t* slots, std::uint32_t n, const std::vector<py::array>& arrays,
                 py::ssize_t first_row) {
    fill_checkpoint();
    const py::ssize_t lead = arrays.empty() ? 0 : arrays[0].ndim() - static_cast<py::ssize_t>(shapes_.spec[0].size());
    std::vector<std::uint64_t> row_bytes(arrays.size());
    std::size_t total = 0;
    for (std::uint32_t c = 0; c < arrays.size(); ++c) {
      row_bytes[c] = static_cast<std::uint64_t>(arrays[c].nbytes()) /
                     static_cast<std::uint64_t>(lead ? std::max<py::ssize_t>(arrays[c].shape(0), 1) : 1);
      total += row_bytes[c] * n;
    }
    auto copy = [&] {
      for (std::uint32_t c = 0; c < arrays.size(); ++c) {
        const std::uint64_t nbytes = row_bytes[c];
        const auto* src = static_cast<const std::uint8_t*>(arrays[c].data()) + first_row * nbytes;
        for (std::uint32_t r = 0; r < n; ++r) {
          std::memcpy(ring_->slot_data(slots[r]) + ring_->component(c).offset, src + r * nbytes, nbytes);
        }
      }
    };
    copy_releasing_gil_if_large(total, copy);
    for (std::uint32_t c = 0; c < arrays.size(); ++c) {
      if (!shapes_.variable[c]) continue;
      for (std::uint32_t r = 0; r < n; ++r) write_dims(slots[r], c, arrays[c].shape() + lead);
    }
  }

  std::shared_ptr<RingMemory> mem_;
  Ring* ring_ = nullptr;
  py::object counter_;  // set_writer's counter, kept mapped
  std::vector<py::dtype> dtypes_;
  std::size_t itemsize_;  // the first component's, for put_exact
  Shapes shapes_;
  std::string name_;
};

bool put_exact(PyRing* ring, PyObject* element, PyObject* timeout, std::optional<std::uint64_t> tag) {
  return ring->put_exact(element, timeout, tag);
}

void register_ring(py::module_& m) {
  m.def(
      "_fail_next_fills", [](std::uint32_t n) { g_failing_fills.store(n, std::memory_order_relaxed); }, py::arg("n"),
      "Test hook: the next n slot fills of put, put_many and reserve (after their slots are taken) raise MemoryError");

  py::class_<Reservation>(m, "Reservation")
      .def_property_readonly("views", &Reservation::views)
      .def_property_readonly("active", &Reservation::active)
      .def("commit", &Reservation::commit)
      .def("abort", &Reservation::abort);

  py::class_<PyRing>(m, "Ring")
      .def(py::init<std::uint32_t, const std::vector<py::dtype>&, const std::vector<std::vector<py::ssize_t>>&,
                    std::string, bool, const MaybeShapes&, bool, std::uint32_t, std::uint64_t>(),
           py::arg("capacity"), py::arg("dtypes"), py::arg("shapes"), py::arg("name"), py::arg("shared") = false,
           py::kw_only(), py::arg("bounds") = py::none(), py::arg("shuffle") = false,
           py::arg("min_after_dequeue") = 0, py::arg("seed") = 0)
      .def_static("attach", &PyRing::attach, py::arg("fd"), py::arg("dtypes"), py::arg("shapes"), py::arg("name"),
                  py::kw_only(), py::arg("bounds") = py::none())
      .def("put", &PyRing::put, py::arg("components"), py::arg("timeout") = py::none(), py::arg("ticket") = py::none(),
           py::arg("tag") = py::none())
      .def("put_many", &PyRing::put_many, py::arg("components"), py::arg("timeout") = py::none(),
           py::arg("tag") = py::none())
      .def("fast_put",
           [](py::object self, py::object slow, std::string doc, bool tagged) {
             PyRing* ring = self.cast<PyRing*>();
             return make_fast_put(std::move(self), ring, std::move(slow), std::move(doc), tagged);
           },
           py::arg("slow"), py::arg("doc"), py::arg("tagged") = false,
           "put(element, timeout=None) as a builtin (tagged: put(element, timeout, tag)): exact arrays straight "
           "into the ring, anything else to slow")
      .def("reserve", &PyRing::reserve, py::arg("timeout") = py::none(), py::arg("shapes") = py::none())
      .def("begin_turns", &PyRing::begin_turns, py::arg("workers"), py::arg("first") = 0)
      .def("begin_tracking", &PyRing::begin_tracking, py::arg("watermark") = 0,
           py::arg("taken") = std::vector<std::uint64_t>{},
           "Consumers record the positions they take from now on (tags of put/put_many); those given count as taken")
      .def("taken_state", &PyRing::taken_state, "(watermark, [positions taken above it], overflowed)")
      .def("set_writer", &PyRing::set_writer, py::arg("writer"), py::arg("counter") = py::none(), py::arg("word") = 0,
           "This process's puts are writer `writer`'s; each committed slot adds one to counter's uint64 `word`")
      .def("reclaim_writer", &PyRing::reclaim_writer, py::arg("writer"),
           "Once writer `writer` is dead: its held slots go back to the free queue, its puts under way end")
      .def_property_readonly("turn", &PyRing::turn)
      .def("finish_turns", &PyRing::finish_turns, py::arg("worker"), py::arg("count"))
      .def("wait_turn", &PyRing::wait_turn_until, py::arg("ticket"), py::arg("timeout") = py::none(),
           "Waits until ticket may commit; TimeoutError after timeout, QueueClosed once the ring has ended")
      .def("pass_turn", &PyRing::pass_turn, py::arg("ticket"))
      .def("close", &PyRing::close, py::arg("cancel") = false)
      .def("fail", &PyRing::fail, py::arg("message"))
      .def("size", &PyRing::size)
      .def("stats", &PyRing::stats)
      .def("pin", &PyRing::pin)
      .def("fail_message", &PyRing::fail_message)
      .def_property_readonly("capacity", &PyRing::capacity)
      .def_property_readonly("id", &PyRing::id)
      .def_property_readonly("fd", &PyRing::fd)
      .def_property_readonly("state", &PyRing::state);
}

}  // namespace pyfastq
