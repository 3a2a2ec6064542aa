# Makefile — one plain Makefile for the whole runtime; everything lands in build/.
#
#   make          build libraries, programs and kernel images
#   make test     build and run every test (GPU tests print "skipped: no CUDA device" without one)
#   make bench    build and run the benchmarks
#   make fuzz     build the libFuzzer targets and run each for FUZZ_SECONDS
#   make format   clang-format every source file in place
#   make clean    remove build/
#
# Library code lives in the module folders (plan/ weights/ rt/ host/); a .c file there is
# library code unless it is listed in PROGS. Programs link build/libqrt.a; tests link a second
# copy of the library built with AddressSanitizer and UBSan, plus the CPU reference (test/ref/).
# Kernels (kern/*.cu) compile to one cubin per supported arch plus PTX for newer GPUs.

BUILD      := build
CUDA_HOME  ?= /usr/local/cuda
NVCC       ?= $(shell command -v nvcc 2>/dev/null || echo $(CUDA_HOME)/bin/nvcc)
FUZZ_CC    ?= clang
FUZZ_SECONDS ?= 60

# C: C11, every warning an error; dependency files so a header change rebuilds its users.
# cuda.h is used for types only: no CUDA library is linked (rt loads libcuda at run time).
# -Wno-format-truncation: messages go through snprintf into fixed buffers on purpose, and a
# long path cut short in an error message is the intended behaviour, not a bug.
CFLAGS     := -std=c11 -O2 -g -Wall -Wextra -Werror -Wno-format-truncation -D_GNU_SOURCE -I. \
              -isystem $(CUDA_HOME)/include
DEPFLAGS    = -MMD -MP
LDLIBS     := -lm -ldl -lpthread

# Tests: the same sources under AddressSanitizer and UBSan, stopping at the first report.
SANFLAGS   := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# Fuzzing: clang's libFuzzer, with ASan and UBSan, over the library built with coverage.
FUZZFLAGS  := -std=c11 -O1 -g -D_GNU_SOURCE -I. -isystem $(CUDA_HOME)/include \
              -fsanitize=address,undefined -fno-sanitize-recover=all

# Kernels: every kern/*.cu is compiled together (build/kern/all.cu includes them all) into one
# cubin per supported arch — sm_80 (A100), sm_86 (RTX 30xx, A10), sm_87 (Jetson Orin), sm_89
# (L4, RTX 40xx), sm_90a (H100/H200: wgmma) — plus compute_90 PTX that newer GPUs JIT. The
# planner embeds the images of the archs a plan targets; one module per arch holds every kernel.
KERN_ARCHS := sm_80 sm_86 sm_87 sm_89 sm_90a
# a register spill fails the build, except in the timeline images (KERN_TRACE=1, below), whose
# stamps cost a few registers
NVCCFLAGS  := -std=c++17 -O3 -I. $(if $(filter 1,$(KERN_TRACE)),,-Xptxas -warn-spills) -Werror all-warnings
# KERN_LINEINFO=1: line tables in the images, so compute-sanitizer names the source line of a
# hazard (tools/gpu-check rebuilds them so for its sanitizer runs). The code is the same; the
# images are about 3x larger, so plans are built without them.
ifeq ($(KERN_LINEINFO),1)
NVCCFLAGS  += -lineinfo
endif
# KERN_TRACE=1: every CTA stamps the global timer at its launch wait (kern/common.cuh), for
# rt_trace and `bench --trace`; not for plans that serve (the stamps cost time and registers).
ifeq ($(KERN_TRACE),1)
NVCCFLAGS  += -DKERN_TRACE
endif

# ---- sources -----------------------------------------------------------------------------
PROGS      := plan/planner.c tools/plandump.c tools/qcfg.c tools/bench.c tools/mkcorpus.c \
              tools/tokbench.c tools/mkmodel.c host/rt_host.c weights/converter.c tools/qerr.c
LIB_SRC    := $(filter-out $(PROGS),$(wildcard plan/*.c weights/*.c rt/*.c host/*.c))
REF_SRC    := $(wildcard test/ref/*.c)
TEST_SRC   := $(wildcard test/test_*.c)
FUZZ_SRC   := $(wildcard test/fuzz/fuzz_*.c)
KERN_SRC   := $(wildcard kern/*.cu)

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SAN_OBJ    := $(LIB_SRC:%.c=$(BUILD)/san/%.o) $(REF_SRC:%.c=$(BUILD)/san/%.o)
FZL_OBJ    := $(LIB_SRC:%.c=$(BUILD)/fuzzobj/%.o)
PROG_BIN   := $(addprefix $(BUILD)/,$(notdir $(PROGS:.c=)))
TEST_BIN   := $(TEST_SRC:test/%.c=$(BUILD)/test/%)
FUZZ_BIN   := $(FUZZ_SRC:test/fuzz/%.c=$(BUILD)/fuzz/%)
KERN_BIN   := $(KERN_ARCHS:%=$(BUILD)/kern/%.cubin) $(BUILD)/kern/compute_90.ptx
TEST_KERN_SRC := $(wildcard test/kern/*.cu) kern/fill.cu
TEST_KERN_BIN := $(KERN_ARCHS:%=$(BUILD)/kern/test/%.cubin)

.PHONY: all test bench fuzz format clean gpu-plain demo FORCE
all: $(BUILD)/libqrt.a $(PROG_BIN) $(KERN_BIN) $(TEST_KERN_BIN) $(TEST_BIN)

# ---- libraries and programs -----------------------------------------------------------------
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SANFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/libqrt.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/san/libqrt.a: $(SAN_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/%: tools/%.c $(BUILD)/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/libqrt.a $(LDLIBS)

# mkmodel's generator sits with the CPU reference (the tests call it in-process), so the
# program links its two objects besides the library.
MKMODEL_OBJ := $(BUILD)/obj/test/ref/mkmodel_gen.o $(BUILD)/obj/test/ref/mkmodel_cfg.o
$(BUILD)/mkmodel: tools/mkmodel.c $(MKMODEL_OBJ) $(BUILD)/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< $(MKMODEL_OBJ) -o $@ $(BUILD)/libqrt.a $(LDLIBS)

$(BUILD)/%: plan/%.c $(BUILD)/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/libqrt.a $(LDLIBS)

$(BUILD)/%: weights/%.c $(BUILD)/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/libqrt.a $(LDLIBS)

$(BUILD)/%: host/%.c $(BUILD)/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/libqrt.a $(LDLIBS)

# rt_host once more with the sanitizers: the host tests drive this copy (test/test_host.h), so
# hostile input that upsets memory fails a test instead of passing unnoticed.
$(BUILD)/san/rt_host: host/rt_host.c $(BUILD)/san/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SANFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/san/libqrt.a $(LDLIBS)

# ---- kernels ----------------------------------------------------------------------------------
# all.cu is rewritten only when the list of kernel files changes. nvcc's own error message
# stops the build; -MD/-MF record the headers each image depends on.
$(BUILD)/kern/all.cu: $(KERN_SRC) Makefile
	@mkdir -p $(@D)
	@printf '#include "%s"\n' $(KERN_SRC) > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

# The flags the images were built with: a change (KERN_LINEINFO, KERN_TRACE) rebuilds them,
# so images with line tables or timeline records never outlive the make that asked for them.
$(BUILD)/kern/nvccflags: FORCE
	@mkdir -p $(@D)
	@echo '$(NVCCFLAGS)' > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@
FORCE:

$(BUILD)/kern/sm_%.cubin: $(BUILD)/kern/all.cu $(BUILD)/kern/nvccflags
	$(NVCC) $(NVCCFLAGS) -arch=sm_$* -cubin -MD -MF $(@:.cubin=.d) $< -o $@

# Test kernels (test/kern/*.cu, with the fill kernels rt uses for synthetic weights): images
# for rt's own tests, which build plans around them.
$(BUILD)/kern/test/all.cu: $(TEST_KERN_SRC) Makefile
	@mkdir -p $(@D)
	@printf '#include "%s"\n' $(TEST_KERN_SRC) > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

$(BUILD)/kern/test/sm_%.cubin: $(BUILD)/kern/test/all.cu $(BUILD)/kern/nvccflags
	$(NVCC) $(NVCCFLAGS) -arch=sm_$* -cubin -MD -MF $(@:.cubin=.d) $< -o $@

$(BUILD)/kern/compute_90.ptx: $(BUILD)/kern/all.cu $(BUILD)/kern/nvccflags
	$(NVCC) $(NVCCFLAGS) -arch=compute_90 -ptx -MD -MF $(@:.ptx=.d) $< -o $@

# ---- tests ------------------------------------------------------------------------------------
$(BUILD)/test/%: test/%.c $(BUILD)/san/libqrt.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SANFLAGS) $(DEPFLAGS) $< -o $@ $(BUILD)/san/libqrt.a $(LDLIBS)

test: $(TEST_BIN) $(KERN_BIN) $(TEST_KERN_BIN) $(PROG_BIN) $(BUILD)/san/rt_host
	@RT_HOST=$(BUILD)/san/rt_host sh test/run $(TEST_BIN)

# GPU tests once more without the host sanitizers, for compute-sanitizer (which cannot run
# under ASan): tools/gpu-check builds and runs these on the GPU machine.
GPU_PLAIN  := $(patsubst test/%.c,$(BUILD)/plain/%,$(wildcard test/test_gpu_*.c))
REF_OBJ    := $(REF_SRC:%.c=$(BUILD)/obj/%.o)
$(BUILD)/plain/%: test/%.c $(BUILD)/libqrt.a $(REF_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(DEPFLAGS) $< -o $@ $(REF_OBJ) $(BUILD)/libqrt.a $(LDLIBS)

gpu-plain: $(GPU_PLAIN) $(KERN_BIN) $(TEST_KERN_BIN)

# Plan the default model; on a CUDA machine benchmark rt_host on synthetic weights
# (tools/demo says what is missing and exits 0 without a GPU).
demo: $(BUILD)/planner $(BUILD)/rt_host $(KERN_BIN)
	@BUILD=$(BUILD) sh tools/demo

# ---- benchmarks -------------------------------------------------------------------------------
bench: $(BUILD)/bench $(KERN_BIN)
	$(BUILD)/bench

# ---- fuzzing ----------------------------------------------------------------------------------
$(BUILD)/fuzzobj/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZFLAGS) -fsanitize=fuzzer-no-link $(DEPFLAGS) -c $< -o $@

$(BUILD)/fuzz/%: test/fuzz/%.c $(FZL_OBJ)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZFLAGS) -fsanitize=fuzzer $(DEPFLAGS) $< $(FZL_OBJ) -o $@ $(LDLIBS)

# keep the instrumented objects: they are intermediates of the fuzz binaries only
.SECONDARY: $(FZL_OBJ)

fuzz: $(FUZZ_BIN) $(BUILD)/mkcorpus
	@sh test/fuzz/run $(FUZZ_SECONDS) $(FUZZ_BIN)

# ---- housekeeping -------------------------------------------------------------------------------
format:
	clang-format -i $(wildcard */*.c */*.h */*/*.c */*/*.h kern/*.cu kern/*.cuh)

clean:
	rm -rf $(BUILD)

-include $(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d $(BUILD)/*/*/*/*.d)
