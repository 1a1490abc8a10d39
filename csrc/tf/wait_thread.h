// The thread the waiting dequeue kernels hand their waits to.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "pyfastq/interrupt.h"
#include "slots.h"

namespace tensorflow {
namespace pyfastq_tf {

// Waits served in arrival order by one thread, kept between waits: starting
// a thread per starved dequeue (Env::SchedClosure) costs more than a batch
// takes to arrive. Not one of TF's pools either: a wait may last the whole
// run. The thread ends after kIdle without work and starts again on demand.
class WaitThread : public std::enable_shared_from_this<WaitThread> {
 public:
  struct Job {
    // Waits at most one slice, ending early once `attention` is raised; kTimeout: not yet.
    std::function<RingStatus(const std::atomic<bool>* attention)> wait;
    const std::atomic<bool>* abandon;  // the job's own flag, raised when its step is cancelled
    std::function<void(RingStatus, bool interrupted)> finish;  // runs on the thread, with no lock held
  };

  // any thread.
  void Add(Job job) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    if (!running_) {
      running_ = true;
      std::thread([self = shared_from_this()] { self->Serve(); }).detach();
    } else if (idle_) {
      ready_.notify_one();
    }
  }
  // any thread, after raising a job's abandon flag and waking the ring: look at every job, not only the first.
  void Attend() { attention_.store(true, std::memory_order_release); }
  // owner only, when no job is left: the thread ends.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    ready_.notify_one();
  }

 private:
  static constexpr auto kIdle = std::chrono::seconds(1);

  void Serve() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (jobs_.empty()) {
        idle_ = true;
        const bool work = ready_.wait_for(lock, kIdle, [this] { return !jobs_.empty() || stop_; });
        idle_ = false;
        if (!work || jobs_.empty()) {
          running_ = false;
          return;
        }
      }
      Job& head = jobs_.front();
      lock.unlock();
      const RingStatus st = head.wait(&attention_);
      std::vector<std::pair<Job, bool>> done;  // (job, interrupted), finished outside the lock
      lock.lock();
      if (st == RingStatus::kAbandoned) {
        attention_.store(false, std::memory_order_release);  // before looking: a later raise is seen next time
        for (auto it = jobs_.begin(); it != jobs_.end();) {
          if (it->abandon->load(std::memory_order_acquire)) {
            done.emplace_back(std::move(*it), false);
            it = jobs_.erase(it);
          } else {
            ++it;
          }
        }
      } else if (st != RingStatus::kTimeout) {
        done.emplace_back(std::move(jobs_.front()), false);
        jobs_.pop_front();
      } else if (pyfastq::take_consumer_interrupt()) {
        while (!jobs_.empty()) {  // Ctrl-C ends every waiting dequeue
          done.emplace_back(std::move(jobs_.front()), true);
          jobs_.pop_front();
        }
      }
      lock.unlock();
      for (auto& [job, interrupted] : done) job.finish(interrupted ? RingStatus::kAbandoned : st, interrupted);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Job> jobs_;
  std::atomic<bool> attention_{false};
  bool running_ = false;
  bool idle_ = false;
  bool stop_ = false;
};

}  // namespace pyfastq_tf
}  // namespace tensorflow
