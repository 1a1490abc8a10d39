// Which CUDA runtime pinning opens (cuda_host.cc), among stand-in runtimes of
// two versions (fake_cudart.cc built as libcudart.so.12 and libcudart.so.13).
// The runtime is opened once per process, so each case runs in a child of its
// own, forked before this process has opened any.
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "check.h"
#include "pyfastq/cuda_host.h"
#include "ring_helpers.h"

using namespace pyfastq;
using namespace ring_test;

namespace {

// Runs `body` in a forked child; a failed CHECK there aborts it.
void in_child(const std::function<void()>& body) {
  const pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

const std::string kOld = PYFASTQ_FAKE_CUDART_12;
const std::string kNew = PYFASTQ_FAKE_CUDART_13;

}  // namespace

TEST(tfs_version_is_taken_over_a_newer_candidate) {
  in_child([] {
    set_cudart_candidates({kNew, kOld});  // as pip's runtimes are listed: newest first
    set_cudart_version("12");
    auto m = private_ring(2, {64});
    CHECK(m->pin());
    CHECK_EQ(cudart_description(), kOld);
  });
}

TEST(tfs_version_already_loaded_is_taken_over_a_newer_one_loaded) {
  in_child([] {
    CHECK(dlopen(kNew.c_str(), RTLD_NOW | RTLD_LOCAL) != nullptr);
    CHECK(dlopen(kOld.c_str(), RTLD_NOW | RTLD_LOCAL) != nullptr);
    set_cudart_version("12");
    auto m = private_ring(2, {64});
    CHECK(m->pin());
    CHECK_EQ(cudart_description(), std::string("libcudart.so.12 (already loaded)"));
  });
}

TEST(another_version_is_never_loaded_beside_tfs) {
  in_child([] {
    set_cudart_candidates({kNew, kOld});
    set_cudart_version("99");  // a version no machine has
    auto m = private_ring(2, {64});
    std::string why;
    CHECK(!m->pin(&why));
    CHECK_EQ(why, std::string("no CUDA runtime libcudart.so.99 (TensorFlow's version) found"));
    CHECK(dlopen(kNew.c_str(), RTLD_NOW | RTLD_NOLOAD) == nullptr);  // neither was opened
    CHECK(dlopen(kOld.c_str(), RTLD_NOW | RTLD_NOLOAD) == nullptr);
  });
}

TEST(without_tfs_version_the_newest_is_taken) {
  in_child([] {
    set_cudart_candidates({kNew, kOld});
    auto m = private_ring(2, {64});
    CHECK(m->pin());
    CHECK_EQ(cudart_description(), kNew);
  });
}

int main() {
  unsetenv("PYFASTQ_CUDART");
  return run_tests();
}
