// Kernel registration for the emulator: each generated unit (cmake/dk_kernels.py emu-unit)
// includes one kernel source and registers its `extern "C"` entry points here. The parameter
// types come from the function type itself; the names and sizes parsed from the source are
// checked against them when the library loads.
#pragma once
#include <cstddef>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace dkemu {

using KernelInvoker = void (*)(void* fn, void** args);

void register_kernel(const char* name, void* fn, KernelInvoker invoke, std::vector<size_t> actual_sizes,
                     const char* param_names, const char* param_types, std::vector<size_t> parsed_sizes);

template <class... A>
struct KernelThunk {
  // Each fiber copies the arguments into properly aligned locals (the caller's argument storage
  // need not be aligned for, say, a 64-byte aligned CUtensorMap).
  template <class T>
  static T load(const void* p)
  {
    std::remove_cv_t<T> v;
    memcpy(static_cast<void*>(&v), p, sizeof(T));
    return v;
  }
  template <size_t... I>
  static void call(void (*fn)(A...), void** args, std::index_sequence<I...>)
  {
    fn(load<std::remove_reference_t<A>>(args[I])...);
  }
  static void invoke(void* fn, void** args)
  {
    call(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
  }
};

struct Registrar {
  template <class... A>
  Registrar(const char* name, void (*fn)(A...), const char* names, const char* types, std::vector<size_t> parsed)
  {
    static_assert((std::is_trivially_copyable<std::remove_reference_t<A>>::value && ...), "kernel parameters must be trivially copyable");
    register_kernel(name, reinterpret_cast<void*>(fn), &KernelThunk<A...>::invoke, std::vector<size_t>{sizeof(A)...}, names, types,
                    std::move(parsed));
  }
};

}  // namespace dkemu

#define DKEMU_SIZES(...) std::vector<size_t>{__VA_ARGS__}
#define DKEMU_REGISTER_KERNEL(fn, names, types, sizes) \
  static ::dkemu::Registrar dkemu_registrar_##fn(#fn, &fn, names, types, sizes);
