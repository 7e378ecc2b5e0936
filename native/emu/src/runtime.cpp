// The kernel emulator runtime: kernel registry, bounds-checked device memory, the per-CTA fiber
// scheduler (barriers, warp collectives, cp.async groups), fault trapping and the C API.
//
// Execution model: a launch runs on the calling OS thread. CTAs run one after another; each CTA's
// threads are stackful fibers (Boost.Context fcontext, fixed stacks with a guard page, reused
// across CTAs and launches) scheduled cooperatively: a fiber runs until it finishes or blocks at
// a barrier or warp collective, then the next runnable fiber runs. When no fiber can run and
// some have not finished, the kernel has deadlocked: the scheduler names the cause (a barrier
// that threads exited from, lanes missing from a warp collective) and the launch fails.
//
// Device memory: each allocation is its own mapping with inaccessible guard pages on both sides;
// the data ends as close to the upper guard page as 256-byte alignment allows, and the few
// bytes of slack around it hold a canary that is checked after every launch. A fault in kernel
// code (guard page, wild pointer) is caught by a SIGSEGV/SIGBUS handler that redirects the
// faulting fiber to a function reporting the address relative to the nearest allocation.
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dkemu/api.h"
#include "dkemu/cuda_emu.h"
#include "dkemu/registry.h"

namespace ctx = boost::context::detail;

namespace dkemu {

__thread ThreadView* tls_thread = nullptr;
__thread CtaView* tls_cta = nullptr;

namespace {

enum : int {
  kSuccess = 0,
  kInvalidValue = 1,
  kOutOfMemory = 2,
  kInvalidHandle = 400,
  kNotFound = 500,
  kIllegalAddress = 700,
  kMisalignedAddress = 716,
  kLaunchFailed = 719,
};

constexpr size_t kAlignment = 256;
constexpr unsigned char kCanary = 0xFD;
constexpr unsigned char kPoison = 0xFF;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kDefaultDynamicSmemLimit = 48 * 1024;
constexpr int kMaxDynamicSmemOptin = 232448;  // sm_90: 227 KiB per block

thread_local std::string t_last_error;

std::string vformat(const char* fmt, va_list ap)
{
  va_list copy;
  va_copy(copy, ap);
  const int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) vsnprintf(&s[0], s.size() + 1, fmt, ap);
  return s;
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  std::string s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

int error(int code, std::string message)
{
  t_last_error = std::move(message);
  return code;
}

size_t page_size()
{
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

size_t env_size(const char* name, size_t fallback)
{
  const char* v = getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = strtoull(v, &end, 10);
  return end != v ? static_cast<size_t>(n) : fallback;
}

// ---- kernels ---------------------------------------------------------------------------------

struct Kernel {
  std::string name;
  void* fn = nullptr;
  KernelInvoker invoke = nullptr;
  std::vector<size_t> sizes;
  std::vector<std::string> param_names;
  std::vector<std::string> param_types;
  std::string registration_error;
  int max_dynamic_smem = kDefaultDynamicSmemLimit;
};

std::vector<Kernel*>& kernels()
{
  static std::vector<Kernel*> list;
  return list;
}

std::vector<std::string> split(const char* text, char sep)
{
  std::vector<std::string> parts;
  std::string cur;
  for (const char* p = text; *p; ++p) {
    if (*p == sep) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += *p;
    }
  }
  if (!cur.empty() || !parts.empty()) parts.push_back(cur);
  return parts;
}

Kernel* find_kernel(const void* handle)
{
  for (Kernel* k : kernels())
    if (k == handle) return k;
  return nullptr;
}

// ---- device memory ---------------------------------------------------------------------------

struct Allocation {
  uintptr_t ptr = 0;
  size_t size = 0;
  uintptr_t map_base = 0;
  size_t map_len = 0;
  uintptr_t data_lo = 0;  // first accessible byte (page aligned)
  uintptr_t data_hi = 0;  // one past the last accessible byte (page aligned)
};

std::mutex g_mem_mutex;
std::map<uintptr_t, Allocation> g_allocs;  // by ptr
uint64_t g_bytes_in_use = 0, g_peak_bytes = 0, g_allocation_count = 0;
std::atomic<uint64_t> g_launches{0}, g_ctas{0}, g_threads{0}, g_switches{0};

uint64_t memory_limit()
{
  static const uint64_t limit = static_cast<uint64_t>(env_size("DKEMU_MEMORY_MB", 16384)) << 20;
  return limit;
}

// The allocation that contains [p, p + n), or null (caller holds g_mem_mutex).
const Allocation* find_allocation(uintptr_t p, size_t n)
{
  auto it = g_allocs.upper_bound(p);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  if (p >= a.ptr && p - a.ptr <= a.size && n <= a.size - (p - a.ptr)) return &a;
  return nullptr;
}

std::string describe_address(uintptr_t addr)
{
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  for (const auto& entry : g_allocs) {
    const Allocation& a = entry.second;
    if (addr >= a.map_base && addr < a.map_base + a.map_len) {
      if (addr < a.ptr)
        return format("address 0x%llx is %llu bytes before the start of the %zu-byte allocation at 0x%llx",
                      (unsigned long long)addr, (unsigned long long)(a.ptr - addr), a.size, (unsigned long long)a.ptr);
      if (addr >= a.ptr + a.size)
        return format("address 0x%llx is %llu bytes past the end of the %zu-byte allocation at 0x%llx",
                      (unsigned long long)addr, (unsigned long long)(addr - (a.ptr + a.size)), a.size, (unsigned long long)a.ptr);
      return format("address 0x%llx inside the %zu-byte allocation at 0x%llx", (unsigned long long)addr, a.size, (unsigned long long)a.ptr);
    }
  }
  return format("address 0x%llx is not in any device allocation", (unsigned long long)addr);
}

// Checks the canary bytes around one allocation; returns an empty string when intact.
std::string check_canary(const Allocation& a)
{
  const unsigned char* lo = reinterpret_cast<const unsigned char*>(a.data_lo);
  const unsigned char* start = reinterpret_cast<const unsigned char*>(a.ptr);
  const unsigned char* end = start + a.size;
  const unsigned char* hi = reinterpret_cast<const unsigned char*>(a.data_hi);
  for (const unsigned char* p = end; p < hi; ++p)
    if (*p != kCanary)
      return format("out-of-bounds write %lld bytes past the end of the %zu-byte allocation at 0x%llx", (long long)(p - end), a.size,
                    (unsigned long long)a.ptr);
  for (const unsigned char* p = start; p > lo;) {
    --p;
    if (*p != kCanary)
      return format("out-of-bounds write %lld bytes before the start of the %zu-byte allocation at 0x%llx", (long long)(start - p), a.size,
                    (unsigned long long)a.ptr);
  }
  return std::string();
}

// Restores the canaries of every allocation and returns the first violation found.
std::string check_all_canaries()
{
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  std::string first;
  for (const auto& entry : g_allocs) {
    const Allocation& a = entry.second;
    std::string problem = check_canary(a);
    if (!problem.empty()) {
      if (first.empty()) first = problem;
      memset(reinterpret_cast<void*>(a.data_lo), kCanary, a.ptr - a.data_lo);
      memset(reinterpret_cast<void*>(a.ptr + a.size), kCanary, a.data_hi - (a.ptr + a.size));
    }
  }
  return first;
}

// ---- fibers and the scheduler ----------------------------------------------------------------

struct CpCopy {
  unsigned char* dst;
  unsigned char data[16];
  unsigned bytes;
  int group;
};

struct Fiber {
  ThreadView view{};
  ctx::fcontext_t self = nullptr;  // where to resume this fiber
  ctx::fcontext_t back = nullptr;  // where this fiber returns to the scheduler
  unsigned char* stack_lo = nullptr;
  size_t stack_len = 0;
  unsigned char* stack_top = nullptr;
  bool done = false;
  const unsigned* wait_word = nullptr;  // blocked while *wait_word == wait_value
  unsigned wait_value = 0;
  const char* wait_kind = nullptr;
  const char* wait_file = nullptr;
  int wait_line = 0;
  unsigned collective_done = 0;
  std::vector<CpCopy> copies;
  int cp_open_group = 0;
};

struct WarpOp {
  bool live = false;
  unsigned mask = 0;
  unsigned arrived = 0;
  const char* kind = nullptr;
  const char* file = nullptr;
  int line = 0;
  void* data[32] = {};
};

struct Warp {
  WarpOp ops[4];
  unsigned present = 0;  // lanes that exist in this warp
  unsigned exited = 0;
};

struct Worker {
  std::vector<Fiber*> fibers;
  size_t stack_bytes = 0;
  CtaView cta{};
  std::vector<Warp> warps;
  int nthreads = 0;
  int exited = 0;
  Kernel* kernel = nullptr;
  void** args = nullptr;
  // Barrier state.
  unsigned bar_gen = 0;
  int bar_arrived = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  int bar_op = 0;
  int bar_count = 0, bar_and = 1, bar_or = 0;
  int bar_result = 0;
  // Failure of the running launch.
  bool failed = false;
  int error_code = 0;
  std::string error_message;
  volatile bool in_fault = false;
  uintptr_t fault_addr = 0;
  int fault_sig = 0;
  unsigned char* smem = nullptr;
  size_t smem_capacity = 0;
  // Hopper twins, reset for every CTA.
  struct NamedBarrier {
    unsigned gen = 0, arrived = 0, count = 0;
    const char* file = nullptr;
    int line = 0;
  } named[16];
  struct Mbar {
    unsigned expected = 0, pending = 0, phase = 0;
    long long tx = 0;
  };
  std::map<void*, Mbar> mbars;
  struct TmaCopy {
    void* bar;
    std::vector<unsigned char> bytes;         // 16-byte chunks
    std::vector<unsigned char*> chunk_dst;    // destination of each chunk
  };
  std::vector<TmaCopy> tma_pending;
  struct GroupOp {
    unsigned count = 0, arrived = 0;
    const char* kind = nullptr;
    const char* file = nullptr;
    int line = 0;
    std::vector<void*> data;
  };
  std::map<unsigned, GroupOp> groups;
  bool spun = false;  // the fiber just resumed yielded from a try_wait that failed
  std::unique_ptr<char[]> alt_stack;

  ~Worker()
  {
    for (Fiber* f : fibers) {
      munmap(f->stack_lo - page_size(), f->stack_len + page_size());
      delete f;
    }
    free(smem);
  }
};

__thread Worker* t_worker = nullptr;
__thread Fiber* t_fiber = nullptr;
thread_local std::unique_ptr<Worker> t_worker_owner;

Worker* worker()
{
  if (t_worker == nullptr) {
    t_worker_owner.reset(new Worker());
    t_worker = t_worker_owner.get();
    t_worker->stack_bytes = round_up(env_size("DKEMU_STACK_KB", 64) * 1024, page_size());
  }
  return t_worker;
}

void fiber_main(ctx::transfer_t t);

void reset_fiber(Fiber* f)
{
  f->self = ctx::make_fcontext(f->stack_top, f->stack_len, &fiber_main);
  f->back = nullptr;
}

Fiber* new_fiber(size_t stack_bytes)
{
  const size_t guard = page_size();
  void* mem = mmap(nullptr, stack_bytes + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  mprotect(mem, guard, PROT_NONE);  // stack overflow faults instead of corrupting a neighbour
  Fiber* f = new Fiber();
  f->stack_lo = static_cast<unsigned char*>(mem) + guard;
  f->stack_len = stack_bytes;
  f->stack_top = f->stack_lo + stack_bytes;
  reset_fiber(f);
  return f;
}

void fiber_main(ctx::transfer_t t)
{
  Fiber* f = static_cast<Fiber*>(t.data);
  f->back = t.fctx;
  for (;;) {
    Worker* w = t_worker;
    w->kernel->invoke(w->kernel->fn, w->args);
    f->done = true;
    ctx::transfer_t r = ctx::jump_fcontext(f->back, nullptr);
    f->back = r.fctx;
  }
}

void yield_fiber(Fiber* f)
{
  ctx::transfer_t r = ctx::jump_fcontext(f->back, nullptr);
  f->back = r.fctx;
}

void resume_fiber(Fiber* f)
{
  t_fiber = f;
  tls_thread = &f->view;
  ctx::transfer_t r = ctx::jump_fcontext(f->self, f);
  f->self = r.fctx;
  t_fiber = nullptr;
  g_switches.fetch_add(1, std::memory_order_relaxed);
}

Fiber* current_fiber(const char* what)
{
  Fiber* f = t_fiber;
  if (f == nullptr) {
    fprintf(stderr, "dkemu: %s called outside an emulated kernel\n", what);
    abort();
  }
  return f;
}

std::string where(const Worker* w, const Fiber* f)
{
  return format("block (%u,%u,%u) thread (%u,%u,%u)", w->cta.block_idx.x, w->cta.block_idx.y, w->cta.block_idx.z, f->view.thread_idx.x,
                f->view.thread_idx.y, f->view.thread_idx.z);
}

std::string thread_name(const Worker* w, int linear)
{
  const unsigned bx = w->cta.block_dim.x, by = w->cta.block_dim.y;
  return format("(%u,%u,%u)", linear % bx, (linear / bx) % by, linear / (bx * by));
}

[[noreturn]] void abort_fiber(Fiber* f, int code, std::string message)
{
  Worker* w = t_worker;
  if (!w->failed) {
    w->failed = true;
    w->error_code = code;
    w->error_message = std::move(message);
  }
  // Back to the scheduler for good; the scheduler resets this fiber's stack.
  ctx::jump_fcontext(f->back, nullptr);
  abort();  // unreachable: an aborted fiber is never resumed
}

void block_on(Fiber* f, const unsigned* word, unsigned value, const char* kind, const char* file, int line)
{
  f->wait_word = word;
  f->wait_value = value;
  f->wait_kind = kind;
  f->wait_file = file;
  f->wait_line = line;
  yield_fiber(f);
}

[[noreturn]] void fault_trampoline()
{
  Fiber* f = t_fiber;
  Worker* w = t_worker;
  const char* kind = w->fault_sig == SIGBUS ? "bus error" : "illegal memory access";
  if (w->fault_addr >= reinterpret_cast<uintptr_t>(f->stack_lo) - page_size() && w->fault_addr < reinterpret_cast<uintptr_t>(f->stack_lo))
    abort_fiber(f, kLaunchFailed,
                format("%s: stack overflow of the emulated thread (stack %zu KiB; set DKEMU_STACK_KB)", where(w, f).c_str(), f->stack_len / 1024));
  abort_fiber(f, kIllegalAddress, format("%s: %s: %s", where(w, f).c_str(), kind, describe_address(w->fault_addr).c_str()));
}

struct sigaction g_prev_segv, g_prev_bus;

void on_fault(int sig, siginfo_t* info, void* uctx)
{
  Fiber* f = t_fiber;
  Worker* w = t_worker;
  if (f != nullptr && w != nullptr && !w->in_fault) {
    w->in_fault = true;
    w->fault_addr = reinterpret_cast<uintptr_t>(info->si_addr);
    w->fault_sig = sig;
    // Continue the faulting fiber in dkemu_fault_trampoline, on a fresh frame at the top of its
    // own stack: the kernel's frames are abandoned (the fiber is reset after the launch).
    auto* uc = static_cast<ucontext_t*>(uctx);
    const uintptr_t sp = ((reinterpret_cast<uintptr_t>(f->stack_top) - 1024) & ~static_cast<uintptr_t>(15)) - 8;
#if defined(__x86_64__)
    uc->uc_mcontext.gregs[REG_RSP] = static_cast<greg_t>(sp);
    uc->uc_mcontext.gregs[REG_RIP] = reinterpret_cast<greg_t>(&fault_trampoline);
    return;
#elif defined(__aarch64__)
    uc->uc_mcontext.sp = sp + 8;
    uc->uc_mcontext.pc = reinterpret_cast<uintptr_t>(&fault_trampoline);
    return;
#endif
  }
  struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
  if (prev->sa_flags & SA_SIGINFO) {
    if (prev->sa_sigaction != nullptr) prev->sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev->sa_handler == SIG_IGN) return;
  if (prev->sa_handler == SIG_DFL) {
    signal(sig, SIG_DFL);  // the faulting instruction runs again and gets the default action
    return;
  }
  prev->sa_handler(sig);
}

void install_fault_handlers()
{
  if (getenv("DKEMU_NO_SIGNALS") != nullptr) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = &on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_prev_segv);
  sigaction(SIGBUS, &sa, &g_prev_bus);
}

void ensure_initialized()
{
  static std::once_flag once;
  std::call_once(once, install_fault_handlers);
}

// The handler must not run on a fiber stack that just overflowed: give this thread an
// alternate signal stack unless it already has one (the .NET runtime installs its own).
void ensure_alt_stack(Worker* w)
{
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
  const size_t size = 64 * 1024;
  w->alt_stack.reset(new char[size]);
  stack_t ss;
  ss.ss_sp = w->alt_stack.get();
  ss.ss_size = size;
  ss.ss_flags = 0;
  sigaltstack(&ss, nullptr);
}

std::string describe_deadlock(Worker* w)
{
  const std::string& kname = w->kernel->name;
  (void)kname;
  int at_barrier = 0;
  for (int i = 0; i < w->nthreads; ++i) {
    Fiber* f = w->fibers[i];
    if (!f->done && f->wait_word == &w->bar_gen) ++at_barrier;
  }
  std::string cta = format("block (%u,%u,%u)", w->cta.block_idx.x, w->cta.block_idx.y, w->cta.block_idx.z);
  if (at_barrier > 0 && w->exited > 0) {
    int first_exited = -1;
    for (int i = 0; i < w->nthreads && first_exited < 0; ++i)
      if (w->fibers[i]->done) first_exited = i;
    return format("%s: barrier divergence: %d thread(s) (first: thread %s) exited while %d thread(s) wait at __syncthreads (%s:%d)",
                  cta.c_str(), w->exited, thread_name(w, first_exited).c_str(), at_barrier, w->bar_file, w->bar_line);
  }
  for (size_t wi = 0; wi < w->warps.size(); ++wi) {
    for (const WarpOp& op : w->warps[wi].ops) {
      if (!op.live) continue;
      const unsigned missing = op.mask & ~op.arrived;
      const unsigned gone = missing & w->warps[wi].exited;
      return format("%s: warp %zu deadlocked in %s (%s:%d) with mask 0x%08x: lanes 0x%08x never arrived%s", cta.c_str(), wi, op.kind,
                    op.file, op.line, op.mask, missing,
                    gone ? format(" (0x%08x exited)", gone).c_str() : (at_barrier ? " (they wait at __syncthreads)" : ""));
    }
  }
  if (at_barrier > 0)
    return format("%s: deadlock: %d of %d thread(s) wait at __syncthreads (%s:%d) and the rest are blocked elsewhere", cta.c_str(), at_barrier,
                  w->nthreads, w->bar_file, w->bar_line);
  for (int i = 0; i < w->nthreads; ++i) {
    const Fiber* f = w->fibers[i];
    if (f->done) continue;
    return format("%s: deadlock: thread %s waits in %s (%s:%d) and no thread can make progress%s", cta.c_str(), thread_name(w, i).c_str(),
                  f->wait_kind ? f->wait_kind : "mbarrier try_wait", f->wait_file ? f->wait_file : "?", f->wait_line,
                  w->exited ? format(" (%d thread(s) exited)", w->exited).c_str() : "");
  }
  return format("%s: deadlock: no emulated thread can make progress", cta.c_str());
}

bool any_spinning(Worker* w)
{
  for (int i = 0; i < w->nthreads; ++i)
    if (!w->fibers[i]->done && w->fibers[i]->wait_word == nullptr) return true;
  return false;
}

void mbar_complete_phase_if_done(Worker::Mbar& m)
{
  if (m.pending == 0 && m.tx == 0) {
    ++m.phase;
    m.pending = m.expected;
  }
}

// Lands pending TMA loads (all, or those signalling `bar`) and completes their bytes.
void complete_tma(Worker* w, void* bar)
{
  size_t keep = 0;
  for (size_t i = 0; i < w->tma_pending.size(); ++i) {
    Worker::TmaCopy& c = w->tma_pending[i];
    if (bar != nullptr && c.bar != bar) {
      if (keep != i) w->tma_pending[keep] = std::move(c);
      ++keep;
      continue;
    }
    for (size_t k = 0; k < c.chunk_dst.size(); ++k) memcpy(c.chunk_dst[k], &c.bytes[k * 16], 16);
    auto it = w->mbars.find(c.bar);
    if (it != w->mbars.end()) {
      it->second.tx -= static_cast<long long>(c.bytes.size());
      mbar_complete_phase_if_done(it->second);
    }
  }
  w->tma_pending.resize(keep);
}

bool run_cta(Worker* w)
{
  const int n = w->nthreads;
  const unsigned bx = w->cta.block_dim.x, by = w->cta.block_dim.y;
  for (int i = 0; i < n; ++i) {
    Fiber* f = w->fibers[i];
    f->view.thread_idx = uint3{static_cast<unsigned>(i) % bx, (static_cast<unsigned>(i) / bx) % by, static_cast<unsigned>(i) / (bx * by)};
    f->view.lane = static_cast<unsigned>(i) & 31u;
    f->view.warp = static_cast<unsigned>(i) >> 5;
    f->done = false;
    f->wait_word = nullptr;
    f->copies.clear();
    f->cp_open_group = 0;
  }
  const size_t nwarps = (static_cast<size_t>(n) + 31) / 32;
  w->warps.assign(nwarps, Warp());
  for (size_t wi = 0; wi < nwarps; ++wi) {
    const int lanes = std::min(32, n - static_cast<int>(wi) * 32);
    w->warps[wi].present = lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
  }
  w->bar_arrived = 0;
  w->exited = 0;
  for (auto& nb : w->named) nb = Worker::NamedBarrier();
  w->mbars.clear();
  w->tma_pending.clear();
  w->groups.clear();
  int live = n;
  int idle_passes = 0;
  while (live > 0) {
    bool progressed = false;
    for (int i = 0; i < n; ++i) {
      Fiber* f = w->fibers[i];
      if (f->done) continue;
      if (f->wait_word != nullptr && *f->wait_word == f->wait_value) continue;
      f->wait_word = nullptr;
      w->spun = false;
      resume_fiber(f);
      if (!w->spun) progressed = true;
      if (w->failed) return false;
      if (f->done) {
        --live;
        ++w->exited;
        w->warps[f->view.warp].exited |= 1u << f->view.lane;
      }
    }
    if (progressed) {
      idle_passes = 0;
      continue;
    }
    // Everyone is blocked or spinning: the asynchronous copy engine catches up first.
    if (!w->tma_pending.empty()) {
      complete_tma(w, nullptr);
      continue;
    }
    if (++idle_passes < 1000 && any_spinning(w)) continue;
    w->failed = true;
    w->error_code = kLaunchFailed;
    w->error_message = describe_deadlock(w);
    return false;
  }
  return true;
}

int launch(Kernel* k, const dim3& grid, const dim3& block, uint32_t smem_bytes, void** args)
{
  Worker* w = worker();
  ensure_alt_stack(w);
  const int n = static_cast<int>(block.x * block.y * block.z);
  while (static_cast<int>(w->fibers.size()) < n) {
    Fiber* f = new_fiber(w->stack_bytes);
    if (f == nullptr) return error(kOutOfMemory, format("%s: cannot allocate stacks for %d emulated threads", k->name.c_str(), n));
    w->fibers.push_back(f);
  }
  if (w->smem_capacity < smem_bytes || w->smem == nullptr) {
    free(w->smem);
    w->smem_capacity = std::max<size_t>(round_up(smem_bytes, 1024), 1024);
    // 1024-byte aligned, as the 128-byte TMA/wgmma swizzle requires.
    w->smem = static_cast<unsigned char*>(aligned_alloc(1024, w->smem_capacity));
    if (w->smem == nullptr) return error(kOutOfMemory, "cannot allocate emulated shared memory");
  }
  w->kernel = k;
  w->args = args;
  w->nthreads = n;
  w->failed = false;
  w->in_fault = false;
  w->cta.block_dim = block;
  w->cta.grid_dim = grid;
  w->cta.dynamic_smem = w->smem;
  w->cta.dynamic_smem_bytes = smem_bytes;
  tls_cta = &w->cta;
  g_launches.fetch_add(1, std::memory_order_relaxed);
  bool ok = true;
  for (unsigned z = 0; z < grid.z && ok; ++z)
    for (unsigned y = 0; y < grid.y && ok; ++y)
      for (unsigned x = 0; x < grid.x && ok; ++x) {
        w->cta.block_idx = uint3{x, y, z};
        memset(w->smem, kPoison, smem_bytes);
        ok = run_cta(w);
        g_ctas.fetch_add(1, std::memory_order_relaxed);
        g_threads.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      }
  tls_cta = nullptr;
  tls_thread = nullptr;
  if (!ok) {
    for (Fiber* f : w->fibers) reset_fiber(f);
    const int code = w->error_code;
    std::string msg = k->name + ": " + w->error_message;
    // Writes past an allocation's end that did not fault are still worth naming.
    std::string canary = check_all_canaries();
    if (!canary.empty()) msg += "; also " + canary;
    return error(code, msg);
  }
  std::string canary = check_all_canaries();
  if (!canary.empty()) return error(kIllegalAddress, k->name + ": " + canary);
  return kSuccess;
}

}  // namespace

// ---- entry points used by kernel code (declared in cuda_emu.h) -------------------------------

void register_kernel(const char* name, void* fn, KernelInvoker invoke, std::vector<size_t> actual_sizes, const char* param_names,
                     const char* param_types, std::vector<size_t> parsed_sizes)
{
  Kernel* k = new Kernel();
  k->name = name;
  k->fn = fn;
  k->invoke = invoke;
  k->sizes = actual_sizes;
  k->param_names = split(param_names, ',');
  k->param_types = split(param_types, '|');
  if (actual_sizes != parsed_sizes || k->param_names.size() != actual_sizes.size())
    k->registration_error = format("%s: the parameter list parsed from the source (%zu parameters) does not match the compiled function (%zu)",
                                   name, parsed_sizes.size(), actual_sizes.size());
  kernels().push_back(k);
}

void fail(int code, const char* fmt, ...)
{
  Fiber* f = current_fiber("dkemu::fail");
  va_list ap;
  va_start(ap, fmt);
  std::string msg = vformat(fmt, ap);
  va_end(ap);
  abort_fiber(f, code, where(t_worker, f) + ": " + msg);
}

int barrier(int op, int predicate, const char* file, int line)
{
  Fiber* f = current_fiber("__syncthreads");
  Worker* w = t_worker;
  if (w->bar_arrived == 0) {
    w->bar_file = file;
    w->bar_line = line;
    w->bar_op = op;
    w->bar_count = 0;
    w->bar_and = 1;
    w->bar_or = 0;
  } else if (w->bar_line != line || w->bar_op != op || (w->bar_file != file && strcmp(w->bar_file, file) != 0)) {
    abort_fiber(f, kLaunchFailed,
                format("%s: barrier divergence: this thread reached the barrier at %s:%d while %d thread(s) wait at %s:%d",
                       where(w, f).c_str(), file, line, w->bar_arrived, w->bar_file, w->bar_line));
  }
  w->bar_count += predicate != 0;
  w->bar_and &= predicate != 0;
  w->bar_or |= predicate != 0;
  if (++w->bar_arrived == w->nthreads) {
    w->bar_result = op == 1 ? w->bar_count : op == 2 ? w->bar_and : op == 3 ? w->bar_or : 0;
    w->bar_arrived = 0;
    ++w->bar_gen;
    return w->bar_result;
  }
  block_on(f, &w->bar_gen, w->bar_gen, "__syncthreads", file, line);
  return w->bar_result;
}

void warp_collective(unsigned mask, const char* kind, void* data, WarpCompute compute, void* context, const char* file, int line)
{
  Fiber* f = current_fiber(kind);
  Worker* w = t_worker;
  Warp& warp = w->warps[f->view.warp];
  const unsigned bit = 1u << f->view.lane;
  if (!(mask & bit))
    abort_fiber(f, kLaunchFailed, format("%s: %s (%s:%d) called with mask 0x%08x that does not include the calling lane %u", where(w, f).c_str(),
                                         kind, file, line, mask, f->view.lane));
  if (mask & ~warp.present)
    abort_fiber(f, kLaunchFailed, format("%s: %s (%s:%d) mask 0x%08x names lanes that do not exist (warp %u has lanes 0x%08x)",
                                         where(w, f).c_str(), kind, file, line, mask, f->view.warp, warp.present));
  WarpOp* op = nullptr;
  for (WarpOp& o : warp.ops) {
    if (!o.live || !(o.mask & mask)) continue;
    if (o.mask != mask || (o.kind != kind && strcmp(o.kind, kind) != 0))
      abort_fiber(f, kLaunchFailed,
                  format("%s: warp divergence: lane %u calls %s (%s:%d) with mask 0x%08x while lanes 0x%08x wait in %s (%s:%d) with mask 0x%08x",
                         where(w, f).c_str(), f->view.lane, kind, file, line, mask, o.arrived, o.kind, o.file, o.line, o.mask));
    op = &o;
    break;
  }
  if (op == nullptr) {
    for (WarpOp& o : warp.ops)
      if (!o.live) {
        op = &o;
        break;
      }
    if (op == nullptr) abort_fiber(f, kLaunchFailed, format("%s: more than 4 concurrent warp collectives in one warp", where(w, f).c_str()));
    op->live = true;
    op->mask = mask;
    op->arrived = 0;
    op->kind = kind;
    op->file = file;
    op->line = line;
  }
  op->data[f->view.lane] = data;
  op->arrived |= bit;
  f->collective_done = 0;
  if (op->arrived == mask) {
    if (compute != nullptr) compute(op->data, mask, context);
    op->live = false;
    const size_t base = static_cast<size_t>(f->view.warp) * 32;
    for (unsigned l = 0; l < 32; ++l)
      if ((mask >> l & 1u) && l != f->view.lane) w->fibers[base + l]->collective_done = 1;
    return;
  }
  block_on(f, &f->collective_done, 0, kind, file, line);
}

unsigned active_mask()
{
  Fiber* f = current_fiber("__activemask");
  const Warp& warp = t_worker->warps[f->view.warp];
  return warp.present & ~warp.exited;
}

namespace {
void shuffle_compute(void* const* lanes, unsigned mask, void* context)
{
  const size_t bytes = reinterpret_cast<size_t>(context);
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    auto* me = static_cast<ShuffleLane*>(lanes[l]);
    const int s = me->source;
    const ShuffleLane* src = (s >= 0 && s < 32 && (mask >> s & 1u)) ? static_cast<const ShuffleLane*>(lanes[s]) : me;
    memcpy(me->out, src->in, bytes);
  }
}
}  // namespace

void shuffle(unsigned mask, ShuffleLane* lane, unsigned bytes, const char* kind, const char* file, int line)
{
  warp_collective(mask, kind, lane, &shuffle_compute, reinterpret_cast<void*>(static_cast<size_t>(bytes)), file, line);
}

void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const char* file, int line)
{
  Fiber* f = current_fiber("cp.async");
  Worker* w = t_worker;
  if (bytes != 4 && bytes != 8 && bytes != 16)
    abort_fiber(f, kLaunchFailed, format("%s: cp.async (%s:%d) of %u bytes (must be 4, 8 or 16)", where(w, f).c_str(), file, line, bytes));
  if (src_bytes > bytes)
    abort_fiber(f, kLaunchFailed, format("%s: cp.async (%s:%d) src-size %u exceeds cp-size %u", where(w, f).c_str(), file, line, src_bytes, bytes));
  if (reinterpret_cast<uintptr_t>(dst) % bytes != 0 || (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % bytes != 0))
    abort_fiber(f, kMisalignedAddress, format("%s: cp.async (%s:%d) of %u bytes with misaligned address (dst %p, src %p)", where(w, f).c_str(),
                                              file, line, bytes, dst, src));
  CpCopy c;
  c.dst = static_cast<unsigned char*>(dst);
  c.bytes = bytes;
  c.group = f->cp_open_group;
  memset(c.data, 0, sizeof c.data);
  if (src_bytes > 0) memcpy(c.data, src, src_bytes);  // faults here are the kernel's out-of-bounds reads
  memset(dst, kPoison, bytes);
  f->copies.push_back(c);
}

void cp_async_commit()
{
  Fiber* f = current_fiber("cp.async.commit_group");
  ++f->cp_open_group;
}

void cp_async_wait(int pending_groups)
{
  Fiber* f = current_fiber("cp.async.wait_group");
  const int limit = f->cp_open_group - pending_groups;  // committed groups below this index complete
  size_t keep = 0;
  for (size_t i = 0; i < f->copies.size(); ++i) {
    CpCopy& c = f->copies[i];
    if (c.group < limit) memcpy(c.dst, c.data, c.bytes);
    else f->copies[keep++] = c;
  }
  f->copies.resize(keep);
}


// ---- Hopper twins ------------------------------------------------------------------------------

namespace {
// The emulator's tensor map, stored in the 128 bytes of a CUtensorMap.
struct TensorMap {
  uint64_t magic;
  uint64_t global;
  uint32_t rank;
  uint32_t elem_bytes;
  uint64_t dims[5];
  uint64_t strides[4];  // bytes between consecutive indices of dims 1..rank-1
  uint32_t box[5];
  uint32_t swizzle;     // 0, 32, 64 or 128 (bytes)
};
static_assert(sizeof(TensorMap) <= 128, "TensorMap must fit a CUtensorMap");
constexpr uint64_t kTensorMapMagic = 0x50414d524f534e54ull;  // "TNSORMAP"

// Shared-memory address bits after the TMA/wgmma swizzle: 16-byte chunk bits [4:4+b) ^= [7:7+b).
uintptr_t swizzle_address(uintptr_t a, uint32_t swizzle_bytes)
{
  const unsigned bits = swizzle_bytes == 128 ? 3 : swizzle_bytes == 64 ? 2 : swizzle_bytes == 32 ? 1 : 0;
  return a ^ (((a >> 7) & ((1u << bits) - 1u)) << 4);
}

const TensorMap* checked_map(Fiber* f, const void* tensor_map, const char* file, int line)
{
  const auto* map = static_cast<const TensorMap*>(tensor_map);
  if (map == nullptr || map->magic != kTensorMapMagic)
    abort_fiber(f, kInvalidValue, format("%s: TMA (%s:%d) with a tensor map the emulator did not encode (use dkemu_tensor_map_encode)",
                                         where(t_worker, f).c_str(), file, line));
  return map;
}

// Visits the box at `coords` in row-major box order, calling fn(global_ptr or null when out of
// bounds, smem_offset_bytes) for each element.
template <class Fn>
void for_each_box_element(const TensorMap& m, const int* coords, Fn fn)
{
  uint32_t idx[5] = {0, 0, 0, 0, 0};
  const uint64_t total = static_cast<uint64_t>(m.box[0]) * m.box[1] * m.box[2] * m.box[3] * m.box[4];
  for (uint64_t e = 0; e < total; ++e) {
    uint64_t rem = e;
    for (uint32_t d = 0; d < 5; ++d) {
      idx[d] = static_cast<uint32_t>(rem % m.box[d]);
      rem /= m.box[d];
    }
    bool inside = true;
    uint64_t offset = 0;
    for (uint32_t d = 0; d < m.rank; ++d) {
      const long long c = static_cast<long long>(coords[d]) + idx[d];
      if (c < 0 || static_cast<uint64_t>(c) >= m.dims[d]) inside = false;
      offset += d == 0 ? static_cast<uint64_t>(c) * m.elem_bytes : static_cast<uint64_t>(c) * m.strides[d - 1];
    }
    fn(inside ? reinterpret_cast<unsigned char*>(m.global + offset) : nullptr, e * m.elem_bytes);
  }
}

Worker::Mbar& checked_mbar(Fiber* f, void* bar, const char* what, const char* file, int line)
{
  Worker* w = t_worker;
  auto it = w->mbars.find(bar);
  if (it == w->mbars.end())
    abort_fiber(f, kLaunchFailed, format("%s: %s (%s:%d) on %p, which is not an initialised mbarrier", where(w, f).c_str(), what, file, line, bar));
  return it->second;
}
}  // namespace

void named_barrier(unsigned id, unsigned count, const char* file, int line)
{
  Fiber* f = current_fiber("bar.sync");
  Worker* w = t_worker;
  if (id >= 16 || count == 0 || count % 32 != 0 || count > static_cast<unsigned>(w->nthreads))
    abort_fiber(f, kLaunchFailed, format("%s: bar.sync %u, %u (%s:%d): id must be < 16 and the count a multiple of 32 up to the block size",
                                         where(w, f).c_str(), id, count, file, line));
  Worker::NamedBarrier& b = w->named[id];
  if (b.arrived == 0) {
    b.count = count;
    b.file = file;
    b.line = line;
  } else if (b.count != count) {
    abort_fiber(f, kLaunchFailed, format("%s: bar.sync %u with count %u (%s:%d) while %u thread(s) wait with count %u (%s:%d)",
                                         where(w, f).c_str(), id, count, file, line, b.arrived, b.count, b.file, b.line));
  }
  if (++b.arrived == b.count) {
    b.arrived = 0;
    ++b.gen;
    return;
  }
  block_on(f, &b.gen, b.gen, "bar.sync", file, line);
}

void mbar_init(void* bar, unsigned count, const char* file, int line)
{
  Fiber* f = current_fiber("mbarrier.init");
  if ((reinterpret_cast<uintptr_t>(bar) & 7u) != 0 || count == 0)
    abort_fiber(f, kMisalignedAddress, format("%s: mbarrier.init (%s:%d) at %p with count %u (8-byte alignment, count >= 1)",
                                              where(t_worker, f).c_str(), file, line, bar, count));
  Worker::Mbar m;
  m.expected = m.pending = count;
  t_worker->mbars[bar] = m;
  memset(bar, 0, 8);
}

void mbar_expect_tx(void* bar, unsigned bytes, const char* file, int line)
{
  Fiber* f = current_fiber("mbarrier.expect_tx");
  checked_mbar(f, bar, "mbarrier.expect_tx", file, line).tx += bytes;
}

void mbar_arrive(void* bar, unsigned expect_tx_bytes, const char* file, int line)
{
  Fiber* f = current_fiber("mbarrier.arrive");
  Worker::Mbar& m = checked_mbar(f, bar, "mbarrier.arrive", file, line);
  m.tx += expect_tx_bytes;
  if (m.pending == 0)
    abort_fiber(f, kLaunchFailed, format("%s: mbarrier.arrive (%s:%d) on %p: more arrivals than its count %u in this phase", where(t_worker, f).c_str(),
                                         file, line, bar, m.expected));
  --m.pending;
  mbar_complete_phase_if_done(m);
}

bool mbar_try_wait_parity(void* bar, unsigned parity, const char* file, int line)
{
  Fiber* f = current_fiber("mbarrier.try_wait");
  Worker* w = t_worker;
  checked_mbar(f, bar, "mbarrier.try_wait", file, line);
  complete_tma(w, bar);
  if ((w->mbars[bar].phase & 1u) != (parity & 1u)) return true;
  // Not yet: let the other threads run, as a spinning warp would.
  f->wait_kind = "mbarrier.try_wait";
  f->wait_file = file;
  f->wait_line = line;
  w->spun = true;
  yield_fiber(f);
  return (w->mbars[bar].phase & 1u) != (parity & 1u);
}

void mbar_wait_parity(void* bar, unsigned parity, const char* file, int line)
{
  Fiber* f = current_fiber("mbarrier.wait");
  Worker* w = t_worker;
  checked_mbar(f, bar, "mbarrier.try_wait", file, line);
  for (;;) {
    complete_tma(w, bar);
    Worker::Mbar& m = w->mbars[bar];
    if ((m.phase & 1u) != (parity & 1u)) return;
    block_on(f, &m.phase, m.phase, "mbarrier.try_wait.parity", file, line);
  }
}

void tma_load(void* smem_dst, const void* tensor_map, const int* coords, unsigned rank, void* bar, const char* file, int line)
{
  Fiber* f = current_fiber("cp.async.bulk.tensor");
  Worker* w = t_worker;
  const TensorMap& m = *checked_map(f, tensor_map, file, line);
  if (rank != m.rank)
    abort_fiber(f, kInvalidValue, format("%s: %uD TMA load (%s:%d) with a %uD tensor map", where(w, f).c_str(), rank, file, line, m.rank));
  const uintptr_t dst = reinterpret_cast<uintptr_t>(smem_dst);
  const uintptr_t align = m.swizzle == 0 ? 128 : m.swizzle * 8;
  if (dst % align != 0)
    abort_fiber(f, kMisalignedAddress, format("%s: TMA load (%s:%d) to %p: the destination must be %zu-byte aligned for swizzle %u",
                                              where(w, f).c_str(), file, line, smem_dst, static_cast<size_t>(align), m.swizzle));
  checked_mbar(f, bar, "TMA load completion", file, line);
  Worker::TmaCopy c;
  c.bar = bar;
  const size_t box_bytes = static_cast<size_t>(m.box[0]) * m.box[1] * m.box[2] * m.box[3] * m.box[4] * m.elem_bytes;
  c.bytes.assign(box_bytes, 0);
  for_each_box_element(m, coords, [&](const unsigned char* g, uint64_t off) {
    if (g != nullptr) memcpy(&c.bytes[off], g, m.elem_bytes);  // out-of-bounds elements stay zero
  });
  c.chunk_dst.resize(box_bytes / 16);
  for (size_t k = 0; k < c.chunk_dst.size(); ++k) {
    auto* p = reinterpret_cast<unsigned char*>(swizzle_address(dst + k * 16, m.swizzle));
    c.chunk_dst[k] = p;
    memset(p, kPoison, 16);
  }
  w->tma_pending.push_back(std::move(c));
}

void tma_store(const void* tensor_map, const int* coords, unsigned rank, const void* smem_src, const char* file, int line)
{
  Fiber* f = current_fiber("cp.async.bulk.tensor (store)");
  const TensorMap& m = *checked_map(f, tensor_map, file, line);
  if (rank != m.rank)
    abort_fiber(f, kInvalidValue, format("%s: %uD TMA store (%s:%d) with a %uD tensor map", where(t_worker, f).c_str(), rank, file, line, m.rank));
  const uintptr_t src = reinterpret_cast<uintptr_t>(smem_src);
  for_each_box_element(m, coords, [&](unsigned char* g, uint64_t off) {
    if (g == nullptr) return;  // out-of-bounds elements are not written
    const uintptr_t chunk = swizzle_address(src + (off & ~15ull), m.swizzle);
    memcpy(g, reinterpret_cast<const unsigned char*>(chunk) + (off & 15u), m.elem_bytes);
  });
}

void group_collective(unsigned first, unsigned count, const char* kind, void* data, GroupCompute compute, void* context, const char* file, int line)
{
  Fiber* f = current_fiber(kind);
  Worker* w = t_worker;
  const unsigned me = f->view.warp * 32 + f->view.lane;
  if (me < first || me >= first + count || first + count > static_cast<unsigned>(w->nthreads))
    abort_fiber(f, kLaunchFailed, format("%s: %s (%s:%d) needs threads %u..%u of a %d-thread block", where(w, f).c_str(), kind, file, line, first,
                                         first + count - 1, w->nthreads));
  Worker::GroupOp& op = w->groups[first];
  if (op.arrived == 0) {
    op.count = count;
    op.kind = kind;
    op.file = file;
    op.line = line;
    op.data.assign(count, nullptr);
  } else if (op.count != count || (op.kind != kind && strcmp(op.kind, kind) != 0)) {
    abort_fiber(f, kLaunchFailed, format("%s: warpgroup divergence: %s (%s:%d) while %u thread(s) wait in %s (%s:%d)", where(w, f).c_str(), kind, file,
                                         line, op.arrived, op.kind, op.file, op.line));
  }
  op.data[me - first] = data;
  f->collective_done = 0;
  if (++op.arrived == count) {
    if (compute != nullptr) compute(op.data.data(), count, context);
    op.arrived = 0;
    for (unsigned t = first; t < first + count; ++t)
      if (t != me) w->fibers[t]->collective_done = 1;
    return;
  }
  block_on(f, &f->collective_done, 0, kind, file, line);
}

unsigned shared_offset(const void* p, const char* what)
{
  Fiber* f = current_fiber(what);
  Worker* w = t_worker;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(w->smem);
  if (a < base || a >= base + w->smem_capacity || a - base >= (1u << 18))
    abort_fiber(f, kIllegalAddress, format("%s: %s: %p is not in the CTA's dynamic shared memory (the emulator's descriptors address only "
                                           "DK_DYNAMIC_SHARED memory)", where(w, f).c_str(), what, p));
  return static_cast<unsigned>(a - base);
}

void* shared_pointer(unsigned offset) { return t_worker->smem + offset; }

long long clock_ticks()
{
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace dkemu

// ---- C API -----------------------------------------------------------------------------------

using namespace dkemu;

extern "C" {

DKEMU_API int dkemu_version(void) { return 1; }

DKEMU_API const char* dkemu_last_error(void) { return t_last_error.c_str(); }

DKEMU_API int dkemu_device_get_properties(dkemu_device_properties* props)
{
  if (props == nullptr) return error(kInvalidValue, "dkemu_device_get_properties: null pointer");
  memset(props, 0, sizeof *props);
  snprintf(props->name, sizeof props->name, "DeepKernels CUDA emulator (sm_90)");
  props->cc_major = 9;
  props->cc_minor = 0;
  props->multiprocessor_count = static_cast<int32_t>(env_size("DKEMU_SM_COUNT", 8));
  props->max_shared_per_block_optin = kMaxDynamicSmemOptin;
  props->l2_bytes = 50 * 1024 * 1024;
  props->max_threads_per_block = kMaxThreadsPerBlock;
  props->total_memory = memory_limit();
  return kSuccess;
}

DKEMU_API int dkemu_kernel_count(void) { return static_cast<int>(kernels().size()); }

DKEMU_API const char* dkemu_kernel_name(int index)
{
  if (index < 0 || index >= static_cast<int>(kernels().size())) return nullptr;
  return kernels()[static_cast<size_t>(index)]->name.c_str();
}

DKEMU_API int dkemu_get_function(const char* name, void** function)
{
  ensure_initialized();
  if (name == nullptr || function == nullptr) return error(kInvalidValue, "dkemu_get_function: null argument");
  for (Kernel* k : kernels()) {
    if (k->name == name) {
      if (!k->registration_error.empty()) return error(kInvalidValue, k->registration_error);
      *function = k;
      return kSuccess;
    }
  }
  return error(kNotFound, format("kernel '%s' is not in the emulator library (%zu kernels registered)", name, kernels().size()));
}

DKEMU_API int dkemu_function_param_count(void* function, int* count)
{
  Kernel* k = find_kernel(function);
  if (k == nullptr || count == nullptr) return error(kInvalidHandle, "dkemu_function_param_count: invalid function handle");
  *count = static_cast<int>(k->sizes.size());
  return kSuccess;
}

DKEMU_API int dkemu_function_param(void* function, int index, const char** name, const char** type, uint64_t* size)
{
  Kernel* k = find_kernel(function);
  if (k == nullptr) return error(kInvalidHandle, "dkemu_function_param: invalid function handle");
  if (index < 0 || index >= static_cast<int>(k->sizes.size())) return error(kInvalidValue, "dkemu_function_param: index out of range");
  const size_t i = static_cast<size_t>(index);
  if (name != nullptr) *name = i < k->param_names.size() ? k->param_names[i].c_str() : "";
  if (type != nullptr) *type = i < k->param_types.size() ? k->param_types[i].c_str() : "";
  if (size != nullptr) *size = k->sizes[i];
  return kSuccess;
}

// Attribute numbers are CUfunction_attribute values.
DKEMU_API int dkemu_func_get_attribute(void* function, int attribute, int* value)
{
  Kernel* k = find_kernel(function);
  if (k == nullptr || value == nullptr) return error(kInvalidHandle, "dkemu_func_get_attribute: invalid function handle");
  switch (attribute) {
    case 0: *value = kMaxThreadsPerBlock; return kSuccess;   // MAX_THREADS_PER_BLOCK
    case 1: *value = 0; return kSuccess;                     // SHARED_SIZE_BYTES (static; not known here)
    case 2: *value = 0; return kSuccess;                     // CONST_SIZE_BYTES
    case 3: *value = 0; return kSuccess;                     // LOCAL_SIZE_BYTES
    case 4: *value = 0; return kSuccess;                     // NUM_REGS (not known here)
    case 5: *value = 90; return kSuccess;                    // PTX_VERSION
    case 6: *value = 90; return kSuccess;                    // BINARY_VERSION
    case 8: *value = k->max_dynamic_smem; return kSuccess;  // MAX_DYNAMIC_SHARED_SIZE_BYTES
    default: return error(kInvalidValue, format("dkemu_func_get_attribute: unsupported attribute %d", attribute));
  }
}

DKEMU_API int dkemu_func_set_attribute(void* function, int attribute, int value)
{
  Kernel* k = find_kernel(function);
  if (k == nullptr) return error(kInvalidHandle, "dkemu_func_set_attribute: invalid function handle");
  if (attribute != 8) return error(kInvalidValue, format("dkemu_func_set_attribute: unsupported attribute %d", attribute));
  if (value < 0 || value > kMaxDynamicSmemOptin)
    return error(kInvalidValue, format("%s: MaxDynamicSharedSizeBytes %d exceeds the device limit of %d bytes", k->name.c_str(), value,
                                       kMaxDynamicSmemOptin));
  k->max_dynamic_smem = value;
  return kSuccess;
}

DKEMU_API int dkemu_launch(void* function, uint32_t gx, uint32_t gy, uint32_t gz, uint32_t bx, uint32_t by, uint32_t bz, uint32_t smem,
                           void** args, const uint64_t* arg_sizes, int32_t arg_count)
{
  ensure_initialized();
  Kernel* k = find_kernel(function);
  if (k == nullptr) return error(kInvalidHandle, "dkemu_launch: invalid function handle");
  const char* name = k->name.c_str();
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
    return error(kInvalidValue, format("%s: grid (%u,%u,%u) and block (%u,%u,%u) must not have a zero extent", name, gx, gy, gz, bx, by, bz));
  if (gx > 2147483647u || gy > 65535u || gz > 65535u)
    return error(kInvalidValue, format("%s: grid (%u,%u,%u) exceeds the limits (2^31-1, 65535, 65535)", name, gx, gy, gz));
  const uint64_t threads = static_cast<uint64_t>(bx) * by * bz;
  if (bx > 1024u || by > 1024u || bz > 64u || threads > static_cast<uint64_t>(kMaxThreadsPerBlock))
    return error(kInvalidValue, format("%s: block (%u,%u,%u) has %llu threads; at most %d per block (x, y <= 1024, z <= 64)", name, bx, by, bz,
                                       (unsigned long long)threads, kMaxThreadsPerBlock));
  if (smem > static_cast<uint32_t>(k->max_dynamic_smem)) {
    if (smem > static_cast<uint32_t>(kMaxDynamicSmemOptin))
      return error(kInvalidValue, format("%s: %u bytes of dynamic shared memory exceed the device limit of %d bytes per block", name, smem,
                                         kMaxDynamicSmemOptin));
    return error(kInvalidValue, format("%s: %u bytes of dynamic shared memory exceed the kernel's limit of %d bytes "
                                       "(raise it with MaxDynamicSharedSizeBytes, up to %d)",
                                       name, smem, k->max_dynamic_smem, kMaxDynamicSmemOptin));
  }
  const size_t nparams = k->sizes.size();
  if (arg_count >= 0) {
    if (static_cast<size_t>(arg_count) != nparams) {
      std::string list;
      for (size_t i = 0; i < nparams; ++i) list += (i ? ", " : "") + k->param_types[i] + " " + k->param_names[i];
      return error(kInvalidValue, format("%s expects %zu arguments (%s), got %d", name, nparams, list.c_str(), arg_count));
    }
    if (arg_sizes != nullptr)
      for (size_t i = 0; i < nparams; ++i)
        if (arg_sizes[i] != k->sizes[i])
          return error(kInvalidValue, format("%s: argument %zu (%s %s) is %zu bytes, got %llu", name, i, k->param_types[i].c_str(),
                                             k->param_names[i].c_str(), k->sizes[i], (unsigned long long)arg_sizes[i]));
  }
  if (nparams > 0) {
    if (args == nullptr) return error(kInvalidValue, format("%s: null argument array for %zu parameters", name, nparams));
    for (size_t i = 0; i < nparams; ++i)
      if (args[i] == nullptr) return error(kInvalidValue, format("%s: argument %zu (%s) points to null", name, i, k->param_names[i].c_str()));
  }
  if (t_fiber != nullptr) return error(kInvalidValue, "dkemu_launch: launches from kernel code are not supported");
  return launch(k, dim3(gx, gy, gz), dim3(bx, by, bz), smem, args);
}

DKEMU_API int dkemu_malloc(uint64_t bytes, uint64_t* pointer)
{
  ensure_initialized();
  if (pointer == nullptr) return error(kInvalidValue, "dkemu_malloc: null result pointer");
  if (bytes == 0) return error(kInvalidValue, "dkemu_malloc: zero bytes requested");
  {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (bytes > memory_limit() || g_bytes_in_use + bytes > memory_limit())
      return error(kOutOfMemory, format("dkemu_malloc: %llu bytes requested, %llu of %llu in use (DKEMU_MEMORY_MB)", (unsigned long long)bytes,
                                        (unsigned long long)g_bytes_in_use, (unsigned long long)memory_limit()));
  }
  const size_t page = page_size();
  const size_t padded = round_up(static_cast<size_t>(bytes), kAlignment);
  const size_t data_len = round_up(padded, page);
  const size_t map_len = data_len + 2 * page;
  void* base = mmap(nullptr, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return error(kOutOfMemory, format("dkemu_malloc: cannot map %zu bytes", map_len));
  auto* data = static_cast<unsigned char*>(base) + page;
  if (mprotect(data, data_len, PROT_READ | PROT_WRITE) != 0) {
    munmap(base, map_len);
    return error(kOutOfMemory, "dkemu_malloc: mprotect failed");
  }
  Allocation a;
  a.map_base = reinterpret_cast<uintptr_t>(base);
  a.map_len = map_len;
  a.data_lo = reinterpret_cast<uintptr_t>(data);
  a.data_hi = a.data_lo + data_len;
  a.ptr = a.data_hi - padded;
  a.size = static_cast<size_t>(bytes);
  // Fresh device memory is garbage on a GPU: poison it so reads before writes show up as NaN.
  memset(data, kCanary, a.ptr - a.data_lo);
  memset(reinterpret_cast<void*>(a.ptr), kPoison, a.size);
  memset(reinterpret_cast<void*>(a.ptr + a.size), kCanary, padded - a.size);
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  g_allocs[a.ptr] = a;
  g_bytes_in_use += a.size;
  g_peak_bytes = std::max(g_peak_bytes, g_bytes_in_use);
  ++g_allocation_count;
  *pointer = a.ptr;
  return kSuccess;
}

DKEMU_API int dkemu_free(uint64_t pointer)
{
  Allocation a;
  {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_allocs.find(static_cast<uintptr_t>(pointer));
    if (it == g_allocs.end())
      return error(kInvalidValue, format("dkemu_free: 0x%llx is not a live device allocation (double free or foreign pointer)",
                                         (unsigned long long)pointer));
    a = it->second;
    g_allocs.erase(it);
    g_bytes_in_use -= a.size;
  }
  std::string problem = check_canary(a);
  munmap(reinterpret_cast<void*>(a.map_base), a.map_len);
  if (!problem.empty()) return error(kIllegalAddress, "dkemu_free: " + problem);
  return kSuccess;
}

DKEMU_API int dkemu_memcpy(uint64_t destination, uint64_t source, uint64_t bytes, int32_t kind)
{
  if (bytes == 0) return kSuccess;
  if (destination == 0 || source == 0) return error(kInvalidValue, "dkemu_memcpy: null pointer");
  {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    const bool dst_device = kind == DKEMU_COPY_HOST_TO_DEVICE || kind == DKEMU_COPY_DEVICE_TO_DEVICE;
    const bool src_device = kind == DKEMU_COPY_DEVICE_TO_HOST || kind == DKEMU_COPY_DEVICE_TO_DEVICE;
    if (!dst_device && !src_device) return error(kInvalidValue, format("dkemu_memcpy: unknown copy kind %d", kind));
    if (dst_device && find_allocation(destination, bytes) == nullptr)
      return error(kInvalidValue, format("dkemu_memcpy: destination range [0x%llx, +%llu) is not inside one device allocation",
                                         (unsigned long long)destination, (unsigned long long)bytes));
    if (src_device && find_allocation(source, bytes) == nullptr)
      return error(kInvalidValue, format("dkemu_memcpy: source range [0x%llx, +%llu) is not inside one device allocation",
                                         (unsigned long long)source, (unsigned long long)bytes));
  }
  memmove(reinterpret_cast<void*>(destination), reinterpret_cast<const void*>(source), bytes);
  return kSuccess;
}

DKEMU_API int dkemu_memset(uint64_t destination, int32_t value, uint64_t bytes)
{
  if (bytes == 0) return kSuccess;
  {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (find_allocation(destination, bytes) == nullptr)
      return error(kInvalidValue, format("dkemu_memset: range [0x%llx, +%llu) is not inside one device allocation",
                                         (unsigned long long)destination, (unsigned long long)bytes));
  }
  memset(reinterpret_cast<void*>(destination), value, bytes);
  return kSuccess;
}

DKEMU_API int dkemu_malloc_host(uint64_t bytes, void** pointer)
{
  if (pointer == nullptr || bytes == 0) return error(kInvalidValue, "dkemu_malloc_host: zero bytes or null result pointer");
  void* p = nullptr;
  if (posix_memalign(&p, 4096, static_cast<size_t>(bytes)) != 0) return error(kOutOfMemory, "dkemu_malloc_host: out of memory");
  *pointer = p;
  return kSuccess;
}

DKEMU_API int dkemu_free_host(void* pointer)
{
  free(pointer);
  return kSuccess;
}

DKEMU_API int dkemu_check_memory(void)
{
  std::string problem = check_all_canaries();
  if (!problem.empty()) return error(kIllegalAddress, problem);
  return kSuccess;
}

// Encodes a tiled tensor map (cuTensorMapEncodeTiled's job on the real driver) into the 128
// bytes at `tensor_map`: rank 1..5, dims in elements (innermost first), strides in bytes for
// dims 1..rank-1 (multiples of 16), box extents (1..256; inner box bytes a multiple of 16, at
// most the swizzle span when swizzled), swizzle 0/32/64/128 bytes. Out-of-bounds box elements
// load as zero and are not stored.
DKEMU_API int dkemu_tensor_map_encode(void* tensor_map, uint32_t elem_bytes, uint32_t rank, uint64_t global, const uint64_t* dims,
                                      const uint64_t* strides, const uint32_t* box, uint32_t swizzle)
{
  if (tensor_map == nullptr || dims == nullptr || box == nullptr || (rank > 1 && strides == nullptr))
    return error(kInvalidValue, "dkemu_tensor_map_encode: null argument");
  if (rank < 1 || rank > 5) return error(kInvalidValue, format("dkemu_tensor_map_encode: rank %u (must be 1..5)", rank));
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    return error(kInvalidValue, format("dkemu_tensor_map_encode: element size %u (must be 1, 2, 4 or 8)", elem_bytes));
  if (global % 16 != 0) return error(kInvalidValue, format("dkemu_tensor_map_encode: global address 0x%llx is not 16-byte aligned", (unsigned long long)global));
  if (swizzle != 0 && swizzle != 32 && swizzle != 64 && swizzle != 128)
    return error(kInvalidValue, format("dkemu_tensor_map_encode: swizzle %u (must be 0, 32, 64 or 128)", swizzle));
  TensorMap m;
  memset(&m, 0, sizeof m);
  m.magic = kTensorMapMagic;
  m.global = global;
  m.rank = rank;
  m.elem_bytes = elem_bytes;
  for (uint32_t d = 0; d < 5; ++d) {
    m.dims[d] = d < rank ? dims[d] : 1;
    m.box[d] = d < rank ? box[d] : 1;
    if (d < rank && (m.dims[d] == 0 || m.box[d] == 0 || m.box[d] > 256))
      return error(kInvalidValue, format("dkemu_tensor_map_encode: dim %u = %llu, box %u (dims >= 1, box 1..256)", d, (unsigned long long)m.dims[d], m.box[d]));
  }
  for (uint32_t d = 1; d < rank; ++d) {
    if (strides[d - 1] % 16 != 0)
      return error(kInvalidValue, format("dkemu_tensor_map_encode: stride %llu of dim %u is not a multiple of 16 bytes", (unsigned long long)strides[d - 1], d));
    m.strides[d - 1] = strides[d - 1];
  }
  const uint64_t inner = static_cast<uint64_t>(m.box[0]) * elem_bytes;
  if (inner % 16 != 0) return error(kInvalidValue, format("dkemu_tensor_map_encode: inner box of %llu bytes is not a multiple of 16", (unsigned long long)inner));
  if (swizzle != 0 && inner > swizzle)
    return error(kInvalidValue, format("dkemu_tensor_map_encode: inner box of %llu bytes exceeds the %u-byte swizzle span", (unsigned long long)inner, swizzle));
  m.swizzle = swizzle;
  memset(tensor_map, 0, 128);
  memcpy(tensor_map, &m, sizeof m);
  return kSuccess;
}

DKEMU_API void dkemu_get_stats(dkemu_stats* stats)
{
  if (stats == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  stats->launches = g_launches.load();
  stats->ctas = g_ctas.load();
  stats->threads = g_threads.load();
  stats->fiber_switches = g_switches.load();
  stats->bytes_in_use = g_bytes_in_use;
  stats->peak_bytes = g_peak_bytes;
  stats->allocations = g_allocation_count;
  stats->live_allocations = g_allocs.size();
}

}  // extern "C"
