# photon: `make` builds the CPU tools in bin/, `make cuda` the same tools with
# the CUDA backend in bin/cuda/, `make test` runs every test, `make demo` runs
# the README's first command.
CC ?= cc
CXX ?= c++
OPT ?= -O3 -march=native -fno-math-errno
CFLAGS ?= $(OPT)
WARN = -Wall -Wextra -Werror
STD = -std=c99 -D_POSIX_C_SOURCE=200809L
LDLIBS = -lm -pthread
SAN = -O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all

TOOLS = bin/photon-train bin/photon-eval bin/photon-merge bin/photon-data bin/photon-bench bin/synthlang
HEADERS = photon.h photon_bpe.h tools/cli.h tests/check.h

.PHONY: test-build test-commit test-robust test-compress test-groups test-parties test-group-parties test-netns test-example test-layout test-hf test-integrity all cuda test-cuda test-cuda-emu bench test test-bpe test-portable test-unit test-tools test-federation test-synthlang test-reference test-cxx test-asan demo demo-parties clean
all: $(TOOLS)

bin/%: tools/%.c $(HEADERS)
	@mkdir -p bin
	$(CC) $(STD) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)

bin/test_photon: tests/test_photon.c $(HEADERS)
	@mkdir -p bin
	$(CC) $(STD) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)

# the same tests and tools under AddressSanitizer and UBSan
bin/asan/%: tools/%.c $(HEADERS)
	@mkdir -p bin/asan
	$(CC) $(STD) $(WARN) $(SAN) -o $@ $< $(LDLIBS)
bin/asan/test_photon: tests/test_photon.c $(HEADERS)
	@mkdir -p bin/asan
	$(CC) $(STD) $(WARN) $(SAN) -o $@ $< $(LDLIBS)

# without pthreads and without SIMD: the portable path passes the same tests
bin/portable/test_photon: tests/test_photon.c $(HEADERS)
	@mkdir -p bin/portable
	$(CC) $(STD) $(WARN) -O2 -DPHOTON_NO_THREADS -DPHOTON_NO_SIMD -o $@ $< -lm

test-portable: bin/portable/test_photon
	./bin/portable/test_photon

# photon.h and photon_bpe.h must build as C99 (gcc and clang) and as C++ with warnings as errors
test-cxx:
	@mkdir -p bin
	printf '#define PHOTON_IMPLEMENTATION\n#include "../photon.h"\nint main(void){return 0;}\n' > bin/impl_check.c
	cp bin/impl_check.c bin/impl_check.cpp
	$(CC) $(STD) -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_c.o
	$(CXX) -std=c++11 $(WARN) -c bin/impl_check.cpp -o bin/impl_check_cpp.o
	$(CXX) -std=c++11 $(WARN) -O2 -march=native -c bin/impl_check.cpp -o bin/impl_check_cpp_simd.o
	$(CC) -std=c99 -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_nonposix.o
	if command -v clang >/dev/null; then clang $(STD) -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_clang.o; fi
	printf '#define PHOTON_IMPLEMENTATION\n#include "../photon_bpe.h"\nint main(void){return 0;}\n' > bin/bpe_check.c
	cp bin/bpe_check.c bin/bpe_check.cpp
	$(CC) $(STD) -pedantic $(WARN) -c bin/bpe_check.c -o bin/bpe_check_c.o
	$(CXX) -std=c++11 $(WARN) -O2 -march=native -c bin/bpe_check.cpp -o bin/bpe_check_cpp.o
	$(CC) -std=c99 -pedantic $(WARN) -c bin/bpe_check.c -o bin/bpe_check_nonposix.o
	if command -v clang >/dev/null; then clang $(STD) -pedantic $(WARN) -c bin/bpe_check.c -o bin/bpe_check_clang.o; fi

test-unit: bin/test_photon
	./bin/test_photon

# the sample program in photon.h's documentation, built with photon.h alone and run
test-example: bin/photon-train bin/photon-eval bin/photon-merge bin/synthlang
	bash tests/test_example.sh bin

# photon.h's order (the spine, then the machinery), CONTENTS tags, and the docs' pointers
test-layout:
	bash tests/test_layout.sh

test-tools: $(TOOLS)
	bash tests/test_tools.sh bin

# integrity: payload hashes, checked counters, SSH-signed deltas, round records (tests/test_integrity.sh)
test-integrity: $(TOOLS)
	bash tests/test_integrity.sh bin

# the federation across hosts: network namespaces, an sshd per host (tests/test_netns.sh; needs root, else skipped)
test-netns: $(TOOLS)
	bash tests/test_netns.sh bin

# Hugging Face import and export (tests/test_hf.sh; against transformers where installed)
test-hf: $(TOOLS)
	bash tests/test_hf.sh bin

test-federation: $(TOOLS)
	bash tests/test_federation.sh bin

# photon-train's commit: faults at each rename, kill -9 during writes, the lock on --state (tests/test_commit.sh)
test-commit: $(TOOLS)
	bash tests/test_commit.sh bin

# robust merges as a user meets them: every rule, --verify, a diverged client, memory with 16 deltas (tests/test_robust.sh)
test-robust: $(TOOLS)
	bash tests/test_robust.sh bin

# federations of federations: group deltas, two levels = flat, nested --verify (tests/test_groups.sh)
test-groups: $(TOOLS)
	bash tests/test_groups.sh bin

# compressed deltas and downlink: formats, error feedback, --apply bit for bit, corrupt files, federate.sh (tests/test_compress.sh)
test-compress: $(TOOLS)
	bash tests/test_compress.sh bin

# independent parties: aggregator.sh and three client.sh through a local exchange, with kills (tests/test_parties.sh)
test-parties: $(TOOLS)
	bash tests/test_parties.sh bin

# a federation of federations by independent parties: a root, two group aggregators (aggregator.sh --parent), five clients (tests/test_group_parties.sh)
test-group-parties: $(TOOLS)
	bash tests/test_group_parties.sh bin

test-synthlang: bin/synthlang
	bash tests/test_synthlang.sh bin

bin/test_bpe: tests/test_bpe.c $(HEADERS)
	@mkdir -p bin
	$(CC) $(STD) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)
bin/asan/test_bpe: tests/test_bpe.c $(HEADERS)
	@mkdir -p bin/asan
	$(CC) $(STD) $(WARN) $(SAN) -o $@ $< $(LDLIBS)

test-bpe: bin/test_bpe $(TOOLS)
	./bin/test_bpe
	bash tests/test_data.sh bin

ASAN_TOOLS = bin/asan/photon-train bin/asan/photon-eval bin/asan/photon-merge bin/asan/photon-data bin/asan/synthlang
bin/asan/synthlang: examples/synthlang.c
	@mkdir -p bin/asan
	$(CC) $(STD) $(WARN) $(SAN) -o $@ $< $(LDLIBS)

test-asan: bin/asan/test_photon bin/asan/test_bpe $(ASAN_TOOLS)
	PHOTON_TEST_QUICK=1 ./bin/asan/test_photon
	./bin/asan/test_bpe
	bash tests/test_data.sh bin/asan
	PHOTON_TEST_QUICK=1 bash tests/test_tools.sh bin/asan
	PHOTON_TEST_QUICK=1 bash tests/test_robust.sh bin/asan
	bash tests/test_hf.sh bin/asan

# --- the CUDA backend ---
# make cuda: nvcc compiles photon_cuda.cu, the C tools link it with cuBLAS.
# CUDA_ARCH: Ampere (A100), Hopper (H100, H200) and PTX for later GPUs.
NVCC ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++14 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Werror
CUDA_LIBS = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
CUDA_TOOLS = bin/cuda/photon-train bin/cuda/photon-eval bin/cuda/photon-merge bin/cuda/photon-data bin/cuda/photon-bench

cuda: $(CUDA_TOOLS) bin/cuda/test_cuda

bin/cuda/photon_cuda.o: photon_cuda.cu photon.h
	@mkdir -p bin/cuda
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
bin/cuda/%: tools/%.c bin/cuda/photon_cuda.o $(HEADERS)
	$(CC) $(STD) $(WARN) $(CFLAGS) -DPHOTON_CUDA -o $@ $< bin/cuda/photon_cuda.o $(LDLIBS) $(CUDA_LIBS)
bin/cuda/test_cuda: tests/test_cuda.cu photon_cuda.cu $(HEADERS)
	@mkdir -p bin/cuda
	$(NVCC) $(NVCCFLAGS) -DPHOTON_NO_SIMD -D_POSIX_C_SOURCE=200809L -o $@ $< -Xlinker -rpath,$(CUDA_HOME)/lib64 \
	    -lcublas -lm

# The same kernels on the CPU through tests/cuda_emu.h: tests for machines
# without a GPU (the tools in bin/emu/ take --device cuda and run it there).
EMU = -std=c++14 $(WARN) -O2 -U_FORTIFY_SOURCE -DPHOTON_CUDA_EMULATE -D_POSIX_C_SOURCE=200809L -x c++
bin/emu/photon_cuda.o: photon_cuda.cu tests/cuda_emu.h photon.h
	@mkdir -p bin/emu
	$(CXX) $(EMU) -c $< -o $@
bin/emu/%: tools/%.c bin/emu/photon_cuda.o $(HEADERS)
	$(CC) $(STD) $(WARN) $(CFLAGS) -DPHOTON_CUDA -o $@ $< bin/emu/photon_cuda.o $(LDLIBS) -lstdc++
bin/emu/test_cuda: tests/test_cuda.cu photon_cuda.cu tests/cuda_emu.h $(HEADERS)
	@mkdir -p bin/emu
	$(CXX) $(EMU) -o $@ $< -lm -pthread
EMU_TOOLS = bin/emu/photon-train bin/emu/photon-eval bin/emu/photon-merge bin/emu/photon-data

test-cuda-emu: bin/emu/test_cuda $(EMU_TOOLS)
	./bin/emu/test_cuda
	bash tests/test_cuda_tools.sh bin/emu

# CI compiles and links the CUDA build every run (PHOTON_REQUIRE_NVCC=1 makes
# a missing nvcc an error); the GPU tests run where a GPU is present.
test-cuda:
	@if command -v $(NVCC) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory cuda && ./bin/cuda/test_cuda && bash tests/test_cuda_tools.sh bin/cuda; \
	elif [ "$$PHOTON_REQUIRE_NVCC" = 1 ]; then \
	    echo "test-cuda: $(NVCC) not found, and PHOTON_REQUIRE_NVCC=1"; exit 1; \
	else \
	    echo "test-cuda: skipped: $(NVCC) not found (the CUDA build is not checked)"; \
	fi

# every binary the suites run, built first on every core (the suites then run one at a time)
TEST_BINS = $(TOOLS) bin/test_photon bin/portable/test_photon bin/test_bpe bin/asan/test_photon bin/asan/test_bpe \
            $(ASAN_TOOLS) bin/emu/test_cuda $(EMU_TOOLS) $(if $(CUDA_HOME),$(CUDA_TOOLS) bin/cuda/test_cuda)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SUITE_JOBS ?= 2
test-build:
	$(MAKE) --no-print-directory -j$(JOBS) $(TEST_BINS)

# every suite, then their summed "N passed, N failed" lines (tests/total.sh).
# The suites run two at a time (many wait on parties, deadlines and polls
# more than they compute), each one's output kept together, and all of them
# even when one fails.
SUITES = test-layout test-cxx test-unit test-example test-portable test-tools test-federation test-robust test-compress test-groups test-commit test-parties test-group-parties \
         test-synthlang test-bpe test-hf test-integrity test-netns test-asan test-cuda-emu test-cuda
test:
	@mkdir -p out
	@{ { $(MAKE) --no-print-directory test-build && $(MAKE) --no-print-directory -k -j$(SUITE_JOBS) --output-sync=target $(SUITES); } 2>&1; echo $$? >out/test.status; } | tee out/test.log
	@bash tests/total.sh out/test.log "$$(cat out/test.status)" && exit "$$(cat out/test.status)"

# speed and memory (docs/PERF.md); bench/compare_torch.sh times PyTorch the same way
bench: bin/photon-bench bin/photon-train bin/photon-eval bin/photon-data
	./bin/photon-bench --peak
	./bin/photon-bench --config small --steps 7
	./bin/photon-bench --config gpt2 --steps 5
	./bin/photon-bench --merge
	./bin/photon-bench --merge --delta-format bf16
	./bin/photon-bench --merge --delta-format int8
	./bin/photon-bench --merge --delta-format int4
	bash bench/bench_bpe.sh
	bash bench/bench_hf_import.sh bin

# libFuzzer harnesses for every reader of untrusted files: make fuzz, fuzz-ci, fuzz-crashes (tests/fuzz/fuzz.mk)
include tests/fuzz/fuzz.mk

demo: $(TOOLS)
	bash examples/demo.sh

# the aggregator and four clients as separate processes on a local exchange (examples/demo-parties.sh)
demo-parties: $(TOOLS)
	bash examples/demo-parties.sh

clean:
	rm -rf bin

bin/synthlang: examples/synthlang.c
	@mkdir -p bin
	$(CC) $(STD) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)
