// A minimal PrivateUse1 backend for sdc's test suite, modelled on PyTorch's OpenReg.
//
// Two devices whose memory is host memory: a device guard (the current device is thread
// local), an allocator that tags each block with its device and counts the bytes in use per
// device (capped, so "device memory" is a real limit a probe must size itself to), the
// kernels every backend must own (empty, empty_strided, copies between the host and a
// device, views, resize, set_), and a boxed CPU fallback for every other operator.
// Nothing else: no streams beyond the default one, no events, no fused kernels, no compiler
// backend, no c10d backend, no float64 abs -- the gaps a young vendor backend has.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/as_strided_cpu_dispatch.h>
#include <ATen/ops/set_cpu_dispatch.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

namespace sdc_testdev {

constexpr c10::DeviceIndex kDevices = 2;
thread_local c10::DeviceIndex current = 0;
std::array<std::atomic<int64_t>, kDevices> in_use{};
// Whether the devices are "plugged in": discovery (torch.accelerator, the device module) sees
// them only then, so a test process can hide them again after a test that used them.
std::atomic<bool> plugged{true};

// $SDC_TESTDEV_DELAY_US: each operator through the fallback waits this long first, so the
// device can be made as slow as a young accelerator (sizing and budget tests).
int64_t delay_us() {
  static const int64_t us = [] {
    const char* v = std::getenv("SDC_TESTDEV_DELAY_US");
    return v ? std::atoll(v) : 0;
  }();
  return us;
}

int64_t capacity_bytes() {
  static const int64_t bytes = [] {
    const char* mib = std::getenv("SDC_TESTDEV_MEMORY_MIB");
    return (mib ? std::atoll(mib) : 2048) << 20;
  }();
  return bytes;
}

void check_index(c10::DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < kDevices, "testdev: no device ", int(index), " (there are ", int(kDevices), ")");
}

// ---- device guard -------------------------------------------------------------------
struct GuardImpl final : c10::impl::DeviceGuardImplInterface {
  GuardImpl() = default;
  explicit GuardImpl(c10::DeviceType t) { TORCH_CHECK(t == c10::DeviceType::PrivateUse1); }
  c10::DeviceType type() const override { return c10::DeviceType::PrivateUse1; }
  c10::Device exchangeDevice(c10::Device d) const override {
    auto old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(c10::DeviceType::PrivateUse1, current); }
  void setDevice(c10::Device d) const override {
    check_index(d.index());
    current = d.index();
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0 && d.index() < kDevices) current = d.index();
  }
  c10::Stream getStream(c10::Device d) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream getDefaultStream(c10::Device d) const override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream exchangeStream(c10::Stream s) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, s.device()); }
  c10::DeviceIndex deviceCount() const noexcept override { return kDevices; }
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
};
C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

// ---- allocator: host memory, tagged with its device, capped per device --------------
struct Block {
  void* data;
  size_t bytes;
  c10::DeviceIndex device;
};

void release(void* context) {
  auto* block = static_cast<Block*>(context);
  in_use[block->device] -= static_cast<int64_t>(block->bytes);
  std::free(block->data);
  delete block;
}

struct HostMemoryAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t bytes) override {
    const c10::DeviceIndex device = current;
    const c10::Device where(c10::DeviceType::PrivateUse1, device);
    if (bytes == 0) return {nullptr, nullptr, &c10::detail::deleteNothing, where};
    const int64_t after = in_use[device] += static_cast<int64_t>(bytes);
    if (after > capacity_bytes()) {
      in_use[device] -= static_cast<int64_t>(bytes);
      TORCH_CHECK_WITH(OutOfMemoryError, false, "testdev: out of memory on device ", int(device), " (", bytes,
                       " bytes asked, ", capacity_bytes() - (after - static_cast<int64_t>(bytes)), " free)");
    }
    void* data = nullptr;
    TORCH_CHECK_WITH(OutOfMemoryError, posix_memalign(&data, 64, bytes) == 0, "testdev: host allocation of ", bytes, " bytes failed");
    return {data, new Block{data, bytes, device}, &release, where};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
};
HostMemoryAllocator allocator;
REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &allocator);

// ---- hooks: what torch.accelerator asks a PrivateUse1 backend ------------------------
struct Hooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return plugged; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override { return plugged ? kDevices : 0; }
  void setCurrentDevice(c10::DeviceIndex d) const override {
    check_index(d);
    current = d;
  }
  c10::DeviceIndex getCurrentDevice() const override { return current; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex d) const override {
    auto old = current;
    setCurrentDevice(d);
    return old;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex d) const override { return exchangeDevice(d); }
  bool isPinnedPtr(const void*) const override { return false; }
  // Random ops fall back to the CPU, so they draw from the CPU's generator.
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override { return at::detail::getDefaultCPUGenerator(); }
};
static bool hooks_registered [[maybe_unused]] = [] {
  at::RegisterPrivateUse1HooksInterface(new Hooks());
  return true;
}();

// ---- the kernels a backend must own ---------------------------------------------------
at::Tensor as_host(const at::Tensor& t) {
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(at::kCPU));
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool> pin_memory, std::optional<c10::MemoryFormat> memory_format) {
  const auto where = c10::device_or_default(device);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "testdev: only strided tensors");
  const c10::DeviceGuard guard(where);
  constexpr c10::DispatchKeySet keys(c10::DispatchKey::PrivateUse1);
  return at::detail::empty_generic(size, &allocator, keys, c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool> pin_memory) {
  const auto where = c10::device_or_default(device);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "testdev: only strided tensors");
  const c10::DeviceGuard guard(where);
  constexpr c10::DispatchKeySet keys(c10::DispatchKey::PrivateUse1);
  return at::detail::empty_strided_generic(size, stride, &allocator, keys, c10::dtype_or_default(dtype));
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  // Device memory is host memory: every direction is a host copy of the right bytes.
  at::Tensor target = dst.is_cpu() ? dst : as_host(dst);
  at::native::copy_(target, self.is_cpu() ? self : as_host(self), non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  at::native::resize_(dst, self.sizes(), std::nullopt);
  return at::native::copy_(const_cast<at::Tensor&>(dst), self, false);
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride,
                      std::optional<c10::SymInt> offset) {
  return at::cpu::as_strided_symint(self, size, stride, offset);
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size, std::optional<at::MemoryFormat> format) {
  const c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), format);
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Scalar local_scalar_dense(const at::Tensor& self) { return at::native::_local_scalar_dense_cpu(as_host(self)); }

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) { return at::native::set_tensor_(self, source); }
at::Tensor& set_storage(at::Tensor& self, at::Storage source) { return at::native::set_(self, source); }
at::Tensor& set_storage_offset(at::Tensor& self, at::Storage source, int64_t offset, c10::IntArrayRef size,
                               c10::IntArrayRef stride) {
  return at::cpu::set_(self, source, offset, size, stride);
}

// Like OpenReg (which blocks aten::abs), one gap on purpose: abs of a float64 tensor.
void cpu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& name = op.schema().operator_name().name;
  const auto& args = op.schema().arguments();
  if ((name == "aten::abs" || name == "aten::abs_") && !args.empty()) {
    const auto& self = (*stack)[stack->size() - args.size()];
    TORCH_CHECK_NOT_IMPLEMENTED(!(self.isTensor() && self.toTensor().scalar_type() == at::kDouble),
                                "Operator '", name, "' is not implemented for float64 on device testdev");
  }
  if (delay_us() > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us()));
  at::native::cpu_fallback(op, stack);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("as_strided", as_strided);
  m.impl("resize_", resize_);
  m.impl("_reshape_alias", reshape_alias);
  m.impl("view", view);
  m.impl("_local_scalar_dense", local_scalar_dense);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Storage_storage_offset", set_storage_offset);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&cpu_fallback>()); }

// ---- what the Python device module calls -----------------------------------------------
int64_t device_count() { return plugged ? kDevices : 0; }
bool is_available() { return plugged; }
void set_plugged(bool value) { plugged = value; }
int64_t current_device() { return current; }
void set_device(int64_t index) {
  check_index(static_cast<c10::DeviceIndex>(index));
  current = static_cast<c10::DeviceIndex>(index);
}
std::tuple<int64_t, int64_t> mem_get_info(int64_t index) {
  check_index(static_cast<c10::DeviceIndex>(index));
  return {capacity_bytes() - in_use[index].load(), capacity_bytes()};
}

}  // namespace sdc_testdev

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("device_count", &sdc_testdev::device_count);
  m.def("is_available", &sdc_testdev::is_available);
  m.def("set_plugged", &sdc_testdev::set_plugged);
  m.def("current_device", &sdc_testdev::current_device);
  m.def("set_device", &sdc_testdev::set_device);
  m.def("mem_get_info", &sdc_testdev::mem_get_info);
}
