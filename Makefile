# photon: `make` builds the CPU tools in bin/, `make test` runs every test,
# `make demo` runs the README's first command.
CC ?= cc
CXX ?= c++
OPT ?= -O3 -march=native -fno-math-errno
CFLAGS ?= $(OPT)
WARN = -Wall -Wextra -Werror
STD = -std=c99 -D_POSIX_C_SOURCE=200809L
LDLIBS = -lm -pthread
SAN = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

TOOLS = bin/photon-train bin/photon-eval bin/photon-merge bin/photon-data bin/photon-bench bin/synthlang
HEADERS = photon.h tools/cli.h tests/check.h

.PHONY: all bench test test-bpe test-portable test-unit test-tools test-federation test-synthlang test-reference test-cxx test-asan demo clean
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

# photon.h must build as C99 (gcc and clang) and as C++ with warnings as errors
test-cxx:
	@mkdir -p bin
	printf '#define PHOTON_IMPLEMENTATION\n#include "../photon.h"\nint main(void){return 0;}\n' > bin/impl_check.c
	cp bin/impl_check.c bin/impl_check.cpp
	$(CC) $(STD) -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_c.o
	$(CXX) -std=c++11 $(WARN) -c bin/impl_check.cpp -o bin/impl_check_cpp.o
	$(CXX) -std=c++11 $(WARN) -O2 -march=native -c bin/impl_check.cpp -o bin/impl_check_cpp_simd.o
	$(CC) -std=c99 -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_nonposix.o
	if command -v clang >/dev/null; then clang $(STD) -pedantic $(WARN) -c bin/impl_check.c -o bin/impl_check_clang.o; fi

test-unit: bin/test_photon
	./bin/test_photon

test-tools: $(TOOLS)
	bash tests/test_tools.sh bin

test-federation: $(TOOLS)
	bash tests/test_federation.sh bin

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
	./bin/asan/test_photon
	./bin/asan/test_bpe
	bash tests/test_data.sh bin/asan
	PHOTON_TEST_QUICK=1 bash tests/test_tools.sh bin/asan
	bash tests/test_federation.sh bin/asan

test: test-cxx test-unit test-portable test-tools test-federation test-synthlang test-bpe test-asan

# speed and memory (docs/PERF.md); bench/compare_torch.sh times PyTorch the same way
bench: bin/photon-bench
	./bin/photon-bench --peak
	./bin/photon-bench --config small --steps 7
	./bin/photon-bench --config gpt2 --steps 5
	./bin/photon-bench --merge
	bash bench/bench_bpe.sh

demo: $(TOOLS)
	bash examples/demo.sh

clean:
	rm -rf bin

bin/synthlang: examples/synthlang.c
	@mkdir -p bin
	$(CC) $(STD) $(WARN) $(CFLAGS) -o $@ $< $(LDLIBS)
